//! Landmark definitions (`landmarks/README.md`): a CSV `id,lat,lon,ip,kind` where kind is
//! `probe` (the expected declared position of a probe agent) or `passive` (a host with a known
//! position that probes can measure but that runs no agent).
use std::net::IpAddr;
use std::path::Path;

use crate::error::{CoordinatorError, Result};

/// What a landmark is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LandmarkKind {
    Probe,
    Passive,
}

/// One known landmark.
#[derive(Debug, Clone, PartialEq)]
pub struct Landmark {
    pub id: String,
    pub lat: f64,
    pub lon: f64,
    pub ip: Option<IpAddr>,
    pub kind: LandmarkKind,
}

/// Longest accepted landmark id (same rule as probe ids).
pub const MAX_ID_LEN: usize = 64;

/// Probe and landmark ids: 1..=64 characters of `[A-Za-z0-9._-]`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Reads a landmarks file.
pub fn load(path: &Path) -> Result<Vec<Landmark>> {
    let text = std::fs::read_to_string(path).map_err(|source| CoordinatorError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text).map_err(|(line, message)| CoordinatorError::Landmarks {
        path: path.to_path_buf(),
        line,
        message,
    })
}

/// Parses landmarks CSV text; errors carry the 1-based line number.
pub fn parse(text: &str) -> std::result::Result<Vec<Landmark>, (usize, String)> {
    let mut out: Vec<Landmark> = Vec::new();
    let mut header_seen = false;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if !header_seen {
            header_seen = true;
            if fields != ["id", "lat", "lon", "ip", "kind"] {
                return Err((
                    line_no,
                    format!("expected the header `id,lat,lon,ip,kind`, found `{line}`"),
                ));
            }
            continue;
        }
        if fields.len() != 5 {
            return Err((
                line_no,
                format!(
                    "expected 5 fields (id,lat,lon,ip,kind), found {}",
                    fields.len()
                ),
            ));
        }
        let id = fields[0];
        if !valid_id(id) {
            return Err((
                line_no,
                format!("bad id {id:?}: 1..=64 characters of A-Z a-z 0-9 . _ -"),
            ));
        }
        let lat: f64 = fields[1]
            .parse()
            .map_err(|_| (line_no, format!("bad lat {:?}", fields[1])))?;
        let lon: f64 = fields[2]
            .parse()
            .map_err(|_| (line_no, format!("bad lon {:?}", fields[2])))?;
        if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
            return Err((line_no, format!("position {lat},{lon} out of range")));
        }
        let ip = if fields[3].is_empty() {
            None
        } else {
            Some(
                fields[3]
                    .parse::<IpAddr>()
                    .map_err(|_| (line_no, format!("bad ip {:?}", fields[3])))?,
            )
        };
        let kind = match fields[4] {
            "probe" => LandmarkKind::Probe,
            "passive" => LandmarkKind::Passive,
            other => {
                return Err((
                    line_no,
                    format!("bad kind {other:?}: expected probe or passive"),
                ))
            }
        };
        if kind == LandmarkKind::Passive && ip.is_none() {
            return Err((line_no, format!("passive landmark {id} needs an ip")));
        }
        if out.iter().any(|l| l.id == id) {
            return Err((line_no, format!("duplicate id {id}")));
        }
        out.push(Landmark {
            id: id.to_string(),
            lat,
            lon,
            ip,
            kind,
        });
    }
    if !header_seen {
        return Err((
            1,
            "empty landmarks file: expected the header `id,lat,lon,ip,kind`".into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_sample() {
        let text = include_str!("../../../landmarks/landmarks.csv");
        let l = parse(text).unwrap();
        assert!(l.iter().any(|l| l.kind == LandmarkKind::Passive));
        assert!(l.iter().any(|l| l.kind == LandmarkKind::Probe));
    }

    #[test]
    fn clear_errors() {
        assert_eq!(
            parse("").unwrap_err().1,
            "empty landmarks file: expected the header `id,lat,lon,ip,kind`"
        );
        let e = parse("id,lat,lon,ip,kind\nx,91,0,,probe\n").unwrap_err();
        assert_eq!(e.0, 2);
        assert!(e.1.contains("out of range"), "{}", e.1);
        let e = parse("id,lat,lon,ip,kind\nx,1,0,,passive\n").unwrap_err();
        assert!(e.1.contains("needs an ip"));
        let e = parse("id,lat,lon,ip,kind\nx,1,0,300.1.1.1,probe\n").unwrap_err();
        assert!(e.1.contains("bad ip"));
        let e = parse("id,lat,lon,ip,kind\na,1,0,,probe\na,1,0,,probe\n").unwrap_err();
        assert!(e.1.contains("duplicate"));
    }
}
