//! Reading measurement data from text (the caller reads the files): the `nodes.csv` +
//! `rtts.csv` format of evaluation data sets, and the one-target CSV of `geoloc solve`.
//!
//! Every error names the source and the line.

use std::collections::HashMap;

use crate::error::{EngineError, Result};
use crate::solve::{Kind, Measurement};
use crate::sphere::LatLon;

/// A host with a known position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub id: String,
    pub pos: LatLon,
    pub label: String,
    pub ip: String,
}

/// `src` measured `dst` (indices into [`Dataset::nodes`]) with minimum RTT `rtt_ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rtt {
    pub src: usize,
    pub dst: usize,
    pub rtt_ms: f64,
}

/// Nodes and the RTTs measured between them.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub nodes: Vec<Node>,
    pub rtts: Vec<Rtt>,
}

fn perr(source: &str, line: u64, reason: impl Into<String>) -> EngineError {
    EngineError::Parse {
        source_name: source.to_string(),
        line: line as usize,
        reason: reason.into(),
    }
}

fn records<'a>(
    text: &'a str,
    source: &'a str,
) -> impl Iterator<Item = Result<(u64, csv::StringRecord)>> + 'a {
    let rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    rdr.into_records().filter_map(move |r| match r {
        Ok(rec) => {
            let line = rec.position().map_or(0, |p| p.line());
            if rec.iter().all(|f| f.is_empty()) || rec.get(0).is_some_and(|f| f.starts_with('#')) {
                None
            } else {
                Some(Ok((line, rec)))
            }
        }
        Err(e) => {
            let line = e.position().map_or(0, |p| p.line());
            Some(Err(perr(source, line, format!("not valid CSV: {e}"))))
        }
    })
}

fn number(source: &str, line: u64, field: &str, value: &str) -> Result<f64> {
    let v: f64 = value
        .parse()
        .map_err(|_| perr(source, line, format!("{field} {value:?} is not a number")))?;
    if !v.is_finite() {
        return Err(perr(
            source,
            line,
            format!("{field} {value:?} is not a finite number"),
        ));
    }
    Ok(v)
}

fn position(source: &str, line: u64, lat: &str, lon: &str) -> Result<LatLon> {
    let (lat, lon) = (
        number(source, line, "latitude", lat)?,
        number(source, line, "longitude", lon)?,
    );
    LatLon::checked(lat, lon).map_err(|e| perr(source, line, e))
}

fn rtt(source: &str, line: u64, value: &str) -> Result<f64> {
    let v = number(source, line, "rtt_ms", value)?;
    if v < 0.0 {
        return Err(perr(source, line, format!("rtt_ms {value} is negative")));
    }
    Ok(v)
}

/// Parses `nodes.csv`: `id,lat,lon,label,ip` with a header line.
pub fn parse_nodes(text: &str, source: &str) -> Result<Vec<Node>> {
    let mut nodes = Vec::new();
    let mut seen = HashMap::new();
    for (k, r) in records(text, source).enumerate() {
        let (line, rec) = r?;
        if k == 0 && rec.get(0) == Some("id") {
            continue;
        }
        if rec.len() < 3 {
            return Err(perr(
                source,
                line,
                format!(
                    "expected id,lat,lon[,label,ip], found {} field(s)",
                    rec.len()
                ),
            ));
        }
        let id = rec[0].to_string();
        if seen.insert(id.clone(), line).is_some() {
            return Err(perr(source, line, format!("node id {id:?} appears twice")));
        }
        let pos = position(source, line, &rec[1], &rec[2])?;
        nodes.push(Node {
            id,
            pos,
            label: rec.get(3).unwrap_or("").to_string(),
            ip: rec.get(4).unwrap_or("").to_string(),
        });
    }
    if nodes.is_empty() {
        return Err(perr(source, 1, "no nodes"));
    }
    Ok(nodes)
}

/// Parses `rtts.csv`: `src,dst,rtt_ms` with a header line; ids refer to `nodes`.
pub fn parse_rtts(text: &str, source: &str, nodes: &[Node]) -> Result<Vec<Rtt>> {
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let mut out = Vec::new();
    for (k, r) in records(text, source).enumerate() {
        let (line, rec) = r?;
        if k == 0 && rec.get(0) == Some("src") {
            continue;
        }
        if rec.len() < 3 {
            return Err(perr(
                source,
                line,
                format!("expected src,dst,rtt_ms, found {} field(s)", rec.len()),
            ));
        }
        let node = |f: &str| {
            index
                .get(f)
                .copied()
                .ok_or_else(|| perr(source, line, format!("unknown node id {f:?}")))
        };
        let (src, dst) = (node(&rec[0])?, node(&rec[1])?);
        out.push(Rtt {
            src,
            dst,
            rtt_ms: rtt(source, line, &rec[2])?,
        });
    }
    Ok(out)
}

/// Parses the one-target CSV of `geoloc solve`: `landmark,lat,lon,rtt_ms[,kind]` (kind:
/// `echo`, the default, or `last-hop`), with or without a header line.
pub fn parse_measurements(text: &str, source: &str) -> Result<Vec<Measurement>> {
    let mut out = Vec::new();
    for (k, r) in records(text, source).enumerate() {
        let (line, rec) = r?;
        if k == 0 && rec.get(0) == Some("landmark") {
            continue;
        }
        if !(4..=5).contains(&rec.len()) {
            return Err(perr(
                source,
                line,
                format!(
                    "expected landmark,lat,lon,rtt_ms[,kind], found {} field(s)",
                    rec.len()
                ),
            ));
        }
        if rec[0].is_empty() {
            return Err(perr(source, line, "empty landmark name"));
        }
        let kind: Kind = rec
            .get(4)
            .unwrap_or("")
            .parse()
            .map_err(|e: String| perr(source, line, e))?;
        out.push(Measurement {
            landmark: rec[0].to_string(),
            pos: position(source, line, &rec[1], &rec[2])?,
            rtt_ms: rtt(source, line, &rec[3])?,
            kind,
        });
    }
    if out.is_empty() {
        return Err(perr(
            source,
            1,
            "no measurements (expected lines of landmark,lat,lon,rtt_ms[,kind])",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse_measurements(text, "in.csv").unwrap_err().to_string()
    }

    #[test]
    fn measurements_with_and_without_header() {
        let m = parse_measurements(
            "landmark,lat,lon,rtt_ms,kind\na,1,2,3.5,echo\nb,-1,-2,4,last-hop\n",
            "x",
        )
        .unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].kind, Kind::LastHop);
        assert_eq!(parse_measurements("a,1,2,3\n", "x").unwrap()[0].rtt_ms, 3.0);
    }

    #[test]
    fn bad_input_names_the_line() {
        assert_eq!(
            err(""),
            "in.csv line 1: no measurements (expected lines of landmark,lat,lon,rtt_ms[,kind])"
        );
        assert_eq!(
            err("a,1,2,3\nb,95,0,3\n"),
            "in.csv line 2: latitude 95 is outside [-90, 90]"
        );
        assert_eq!(
            err("a,1,2,NaN\n"),
            "in.csv line 1: rtt_ms \"NaN\" is not a finite number"
        );
        assert_eq!(err("a,1,2,-3\n"), "in.csv line 1: rtt_ms -3 is negative");
        assert_eq!(
            err("a,1,2\n"),
            "in.csv line 1: expected landmark,lat,lon,rtt_ms[,kind], found 3 field(s)"
        );
        assert_eq!(
            err("a,x,2,3\n"),
            "in.csv line 1: latitude \"x\" is not a number"
        );
        assert_eq!(
            err("a,1,2,3,ping\n"),
            "in.csv line 1: unknown kind \"ping\" (expected echo or last-hop)"
        );
        assert!(err("a,\"1,2,3\n").starts_with("in.csv line 1"));
        assert_eq!(
            err("\u{0}\u{1},1,2,3,4,5,6\n"),
            "in.csv line 1: expected landmark,lat,lon,rtt_ms[,kind], found 7 field(s)"
        );
    }

    #[test]
    fn nodes_and_rtts() {
        let nodes = parse_nodes(
            "id,lat,lon,label,ip\n1,-37.78,144.97,\"Melbourne, Australia\",\n8,-36.84,174.74,x,\n",
            "n",
        )
        .unwrap();
        assert_eq!(nodes[0].label, "Melbourne, Australia");
        let r = parse_rtts("src,dst,rtt_ms\n1,8,34.4\n", "r", &nodes).unwrap();
        assert_eq!(
            r[0],
            Rtt {
                src: 0,
                dst: 1,
                rtt_ms: 34.4
            }
        );
        let e = parse_rtts("src,dst,rtt_ms\n1,9,3\n", "r", &nodes)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "r line 2: unknown node id \"9\"");
        let e = parse_nodes("id,lat,lon\n1,0,0\n1,1,1\n", "n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "n line 3: node id \"1\" appears twice");
    }
}
