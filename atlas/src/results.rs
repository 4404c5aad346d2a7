//! Atlas result JSON (ping and traceroute, IPv4 and IPv6) → one minimum RTT per probe.
//!
//! Input: the API's `/api/v2/measurements/{id}/results/` body (a JSON array) or a
//! downloaded file, either that array or one result object per line (`format=txt`).
//!
//! A ping result (fields used): `type: "ping"`, `prb_id`, `msm_id`, `af`, `dst_addr`,
//! `sent`, `rcvd`, `result: [{"rtt": ms} | {"x": "*"} | {"error": ..}, ..]`. The minimum
//! RTT is computed from `result` (the summary `min` is not trusted, and is -1 with no
//! reply).
//!
//! A traceroute result: `type: "traceroute"`, `prb_id`, `msm_id`, `af`, `dst_addr`,
//! `result: [{"hop": n, "result": [{"from": addr, "rtt": ms, "size": .., "ttl": ..} |
//! {"x": "*"} | {"err": ..}, ..]} | {"hop": n, "error": ..}, ..]`. When `dst_addr`
//! answered, the RTT is the minimum over its replies ([`RttKind::Echo`]); otherwise the
//! minimum RTT of the last hop that answered ([`RttKind::LastHop`], its address kept).
//!
//! Every result is hostile: type, probe id, address family, `dst_addr` (which must be the
//! target asked for, when given), RTTs (finite, 0 to [`MAX_RTT_MS`]) and sizes (at most
//! [`MAX_RESULTS`] results, [`MAX_REPLIES`] replies, [`MAX_HOPS`] hops) are checked. A
//! malformed result is reported — its position, its probe if known, what was wrong — and
//! skipped; a probe that answered nothing is reported as such. Nothing panics.
use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;
use serde_json::Value;

use crate::error::{AtlasError, Result};
use crate::probes::{printable, short_json, MAX_PROBE_ID};

/// Largest results body or file accepted, bytes.
pub const MAX_RESULTS_BYTES: usize = 256 * 1024 * 1024;
/// Most results read from one body or file.
pub const MAX_RESULTS: usize = 1_000_000;
/// Most replies read in one ping result or one traceroute hop.
pub const MAX_REPLIES: usize = 64;
/// Most hops read in one traceroute result (TTL is 8 bits).
pub const MAX_HOPS: usize = 255;
/// Largest RTT accepted, ms (Atlas waits seconds at most).
pub const MAX_RTT_MS: f64 = 60_000.0;

/// What the RTT was measured to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RttKind {
    /// The target itself answered.
    Echo,
    /// The last router that answered a traceroute toward a silent target.
    LastHop,
}

/// The best RTT one probe measured to the target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeRtt {
    pub probe_id: u32,
    pub msm_id: u64,
    /// 4 or 6.
    pub af: u8,
    pub dst_addr: IpAddr,
    /// Minimum RTT, ms.
    pub rtt_ms: f64,
    pub kind: RttKind,
    /// For [`RttKind::LastHop`]: the router that answered.
    pub hop_addr: Option<IpAddr>,
}

/// One result left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResultIssue {
    /// Position of the result in the body or file (0-based).
    pub index: usize,
    pub probe_id: Option<u64>,
    pub problem: String,
}

/// What parsing found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ParseReport {
    /// Results read.
    pub results: usize,
    /// Probes with an RTT kept.
    pub probes: usize,
    /// Results that gave an RTT (several results of one probe count once in `probes`).
    pub accepted: usize,
    /// Results without any reply (not malformed: the probe got no answer).
    pub no_reply: Vec<ResultIssue>,
    /// Malformed results, skipped.
    pub malformed: Vec<ResultIssue>,
}

impl std::fmt::Display for ParseReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} results: {} probes with an RTT, {} without reply, {} malformed (skipped)",
            self.results,
            self.probes,
            self.no_reply.len(),
            self.malformed.len()
        )?;
        for i in &self.malformed {
            match i.probe_id {
                Some(p) => write!(f, "\n  result {} (probe {p}): {}", i.index, i.problem)?,
                None => write!(f, "\n  result {}: {}", i.index, i.problem)?,
            }
        }
        Ok(())
    }
}

/// What the results must match.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// The address that was measured: results to any other `dst_addr` are malformed.
    pub target: Option<IpAddr>,
    /// Only results of these measurements (empty: any).
    pub msm_ids: Vec<u64>,
}

/// Parsed results: each probe's best RTT per destination and kind, and the report.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub rtts: Vec<ProbeRtt>,
    pub report: ParseReport,
}

/// Splits a body into result values: a JSON array, or one JSON object per line.
fn values(bytes: &[u8], what: &str) -> Result<Vec<std::result::Result<Value, String>>> {
    if bytes.len() > MAX_RESULTS_BYTES {
        return Err(AtlasError::TooLarge {
            what: what.to_string(),
            limit_bytes: MAX_RESULTS_BYTES,
        });
    }
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
    match first {
        None => Ok(vec![]),
        Some(b'[') => {
            let v: Vec<Value> =
                serde_json::from_slice(bytes).map_err(|e| AtlasError::Malformed {
                    what: what.to_string(),
                    reason: format!("not a JSON array of results: {e}"),
                })?;
            if v.len() > MAX_RESULTS {
                return Err(AtlasError::Malformed {
                    what: what.to_string(),
                    reason: format!("{} results, more than {MAX_RESULTS}", v.len()),
                });
            }
            Ok(v.into_iter().map(Ok).collect())
        }
        Some(b'{') => {
            // Objects one after the other (usually one per line); when the stream does not
            // read through, line by line, so one broken line costs only itself.
            let stream: std::result::Result<Vec<Value>, _> =
                serde_json::Deserializer::from_slice(bytes)
                    .into_iter::<Value>()
                    .take(MAX_RESULTS + 1)
                    .collect();
            if let Ok(v) = stream {
                if v.len() > MAX_RESULTS {
                    return Err(AtlasError::Malformed {
                        what: what.to_string(),
                        reason: format!("more than {MAX_RESULTS} results"),
                    });
                }
                return Ok(v.into_iter().map(Ok).collect());
            }
            let mut out = Vec::new();
            for line in bytes.split(|&b| b == b'\n') {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if out.len() >= MAX_RESULTS {
                    return Err(AtlasError::Malformed {
                        what: what.to_string(),
                        reason: format!("more than {MAX_RESULTS} results"),
                    });
                }
                out.push(serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}")));
            }
            Ok(out)
        }
        Some(_) => Err(AtlasError::Malformed {
            what: what.to_string(),
            reason: "neither a JSON array of results nor one result object per line".into(),
        }),
    }
}

/// Parses results (see the module docs).
pub fn parse_results(bytes: &[u8], what: &str, expect: &Expect) -> Result<Parsed> {
    let vals = values(bytes, what)?;
    let mut report = ParseReport {
        results: vals.len(),
        ..ParseReport::default()
    };
    // Best RTT per (probe, destination, kind).
    let mut best: BTreeMap<(u32, IpAddr, u8), ProbeRtt> = BTreeMap::new();
    for (index, v) in vals.into_iter().enumerate() {
        let v = match v {
            Ok(v) => v,
            Err(problem) => {
                report.malformed.push(ResultIssue {
                    index,
                    probe_id: None,
                    problem,
                });
                continue;
            }
        };
        let probe_id = v.get("prb_id").and_then(Value::as_u64);
        match parse_one(&v, expect) {
            Ok(Some(r)) => {
                report.accepted += 1;
                let key = (r.probe_id, r.dst_addr, r.kind as u8);
                match best.get(&key) {
                    Some(b) if b.rtt_ms <= r.rtt_ms => {}
                    _ => {
                        best.insert(key, r);
                    }
                }
            }
            Ok(None) => report.no_reply.push(ResultIssue {
                index,
                probe_id,
                problem: "no reply".into(),
            }),
            Err(problem) => report.malformed.push(ResultIssue {
                index,
                probe_id,
                problem,
            }),
        }
    }
    let rtts: Vec<ProbeRtt> = best.into_values().collect();
    report.probes = rtts
        .iter()
        .map(|r| r.probe_id)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    Ok(Parsed { rtts, report })
}

fn rtt_of(reply: &Value) -> std::result::Result<Option<f64>, String> {
    match reply.get("rtt") {
        None => Ok(None),
        Some(Value::Number(n)) => {
            let r = n.as_f64().ok_or("rtt is not a number")?;
            if !(r.is_finite() && (0.0..=MAX_RTT_MS).contains(&r)) {
                return Err(format!("rtt {n} ms is not between 0 and {MAX_RTT_MS}"));
            }
            Ok(Some(r))
        }
        Some(other) => Err(format!("rtt {} is not a number", short_json(other))),
    }
}

fn array<'a>(v: &'a Value, field: &str, max: usize) -> std::result::Result<&'a [Value], String> {
    match v.get(field) {
        Some(Value::Array(a)) if a.len() <= max => Ok(a),
        Some(Value::Array(a)) => Err(format!("{field} has {} entries, more than {max}", a.len())),
        None => Err(format!("no {field}")),
        Some(other) => Err(format!("{field} {} is not an array", short_json(other))),
    }
}

/// One result: `Ok(Some)` with an RTT, `Ok(None)` when nothing answered, `Err` malformed.
fn parse_one(v: &Value, expect: &Expect) -> std::result::Result<Option<ProbeRtt>, String> {
    let o = v.as_object().ok_or("not a JSON object")?;
    let kind = match o.get("type") {
        Some(Value::String(t)) if t == "ping" || t == "traceroute" => t.as_str(),
        Some(Value::String(t)) => {
            return Err(format!(
                "type {:?} is neither ping nor traceroute",
                printable(t, 30)
            ))
        }
        _ => return Err("no type".into()),
    };
    let probe_id = match o.get("prb_id").and_then(Value::as_u64) {
        Some(p) if p > 0 && p <= MAX_PROBE_ID => p as u32,
        _ => {
            return Err(match o.get("prb_id") {
                None => "no prb_id".into(),
                Some(x) => format!("prb_id {} is not a probe id", short_json(x)),
            })
        }
    };
    let msm_id = o
        .get("msm_id")
        .and_then(Value::as_u64)
        .ok_or("no msm_id (a whole number)")?;
    if !expect.msm_ids.is_empty() && !expect.msm_ids.contains(&msm_id) {
        return Err(format!("msm_id {msm_id} is not a measurement asked for"));
    }
    let af = match o.get("af").and_then(Value::as_u64) {
        Some(4) => 4u8,
        Some(6) => 6u8,
        _ => {
            return Err(format!(
                "af {} is neither 4 nor 6",
                o.get("af").map_or("missing".into(), short_json)
            ))
        }
    };
    let dst_addr: IpAddr = match o.get("dst_addr") {
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| format!("dst_addr {:?} is not an address", printable(s, 60)))?,
        _ => return Err("no dst_addr".into()),
    };
    if (af == 4) != dst_addr.is_ipv4() {
        return Err(format!("dst_addr {dst_addr} does not match af {af}"));
    }
    if let Some(t) = expect.target {
        if t != dst_addr {
            return Err(format!("dst_addr {dst_addr} is not the target {t}"));
        }
    }
    let out = |rtt_ms: f64, kind: RttKind, hop_addr: Option<IpAddr>| ProbeRtt {
        probe_id,
        msm_id,
        af,
        dst_addr,
        rtt_ms,
        kind,
        hop_addr,
    };
    if kind == "ping" {
        let mut min: Option<f64> = None;
        for reply in array(v, "result", MAX_REPLIES)? {
            if !reply.is_object() {
                return Err(format!("reply {} is not an object", short_json(reply)));
            }
            if let Some(r) = rtt_of(reply)? {
                min = Some(min.map_or(r, |m: f64| m.min(r)));
            }
        }
        return Ok(min.map(|m| out(m, RttKind::Echo, None)));
    }
    // Traceroute.
    let hops = array(v, "result", MAX_HOPS)?;
    let mut echo: Option<f64> = None;
    let mut last: Option<(u64, f64, IpAddr)> = None;
    for hop in hops {
        let h = hop
            .get("hop")
            .and_then(Value::as_u64)
            .filter(|h| (1..=255).contains(h))
            .ok_or_else(|| format!("hop {} has no hop number 1-255", short_json(hop)))?;
        if hop.get("error").is_some() {
            continue;
        }
        let replies = array(hop, "result", MAX_REPLIES).map_err(|e| format!("hop {h}: {e}"))?;
        let mut hop_best: Option<(f64, IpAddr)> = None;
        for reply in replies {
            let Some(rtt) = rtt_of(reply).map_err(|e| format!("hop {h}: {e}"))? else {
                continue;
            };
            let from: IpAddr = match reply.get("from") {
                Some(Value::String(s)) => s.parse().map_err(|_| {
                    format!("hop {h}: from {:?} is not an address", printable(s, 60))
                })?,
                _ => return Err(format!("hop {h}: a reply with an rtt has no from")),
            };
            if from == dst_addr {
                echo = Some(echo.map_or(rtt, |m| m.min(rtt)));
            } else if hop_best.is_none_or(|(b, _)| rtt < b) {
                hop_best = Some((rtt, from));
            }
        }
        if let Some((rtt, from)) = hop_best {
            if last.is_none_or(|(lh, _, _)| h >= lh) {
                last = Some((h, rtt, from));
            }
        }
    }
    Ok(match (echo, last) {
        (Some(e), _) => Some(out(e, RttKind::Echo, None)),
        (None, Some((_, rtt, from))) => Some(out(rtt, RttKind::LastHop, Some(from))),
        (None, None) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_minimum_comes_from_replies_not_the_summary() {
        let body = br#"[{"type":"ping","prb_id":7,"msm_id":5,"af":4,"dst_addr":"192.0.2.1",
           "min":1.0,"result":[{"rtt":12.5},{"x":"*"},{"rtt":11.25}]}]"#;
        let p = parse_results(body, "t", &Expect::default()).unwrap();
        assert_eq!(p.rtts.len(), 1);
        assert_eq!(p.rtts[0].rtt_ms, 11.25);
    }

    #[test]
    fn traceroute_without_destination_gives_last_hop() {
        let body = br#"{"type":"traceroute","prb_id":9,"msm_id":5,"af":6,"dst_addr":"2001:db8::1","result":[
           {"hop":1,"result":[{"from":"2001:db8:1::1","rtt":1.2},{"x":"*"}]},
           {"hop":2,"result":[{"from":"2001:db8:2::1","rtt":30.0},{"from":"2001:db8:2::1","rtt":29.0}]},
           {"hop":255,"result":[{"x":"*"},{"x":"*"},{"x":"*"}]}]}"#;
        let p = parse_results(body, "t", &Expect::default()).unwrap();
        assert_eq!(p.rtts[0].kind, RttKind::LastHop);
        assert_eq!(p.rtts[0].rtt_ms, 29.0);
        assert_eq!(p.rtts[0].hop_addr, Some("2001:db8:2::1".parse().unwrap()));
    }
}
