//! Probe metadata: id, self-reported position, status, ASNs, country, anchor flag and
//! addresses, from the API's `/api/v2/probes/` pages or a downloaded probe archive file.
//!
//! Both formats are read by one lenient reader that checks every field it keeps:
//! - an API page: `{"count": .., "next": url|null, "previous": .., "results": [probe, ..]}`
//!   with `geometry: {"type": "Point", "coordinates": [lon, lat]}` and
//!   `status: {"id": 1, "name": "Connected", ..}`;
//! - the daily archive (`https://ftp.ripe.net/ripe/atlas/probes/archive/YYYY/MM/YYYYMMDD.json.bz2`,
//!   decompressed): `{"objects": [probe, ..], ..}` with `latitude`/`longitude` (and often
//!   `geometry` too) and `status` as a number with `status_name`;
//! - a plain JSON array of probe objects.
//!
//! A probe object that cannot be read is reported (index, id if known, what was wrong) and
//! skipped; the file is refused only when it is not JSON or has none of these shapes.
//!
//! # Units
//! Positions in decimal degrees (WGS84). Atlas obfuscates public positions to about 1 km.
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use geoloc_engine::LatLon;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{AtlasError, Result};

/// Largest probe file or API page accepted, bytes (the whole archive is ~15 MB).
pub const MAX_PROBE_FILE_BYTES: usize = 256 * 1024 * 1024;
/// Most probes read from one file.
pub const MAX_PROBES: usize = 200_000;
/// Largest probe id accepted (ids are below 10^7 today).
pub const MAX_PROBE_ID: u64 = 100_000_000;

/// A probe's connection status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeStatus {
    NeverConnected,
    Connected,
    Disconnected,
    Abandoned,
    /// Any other status name (kept, never trusted to mean connected).
    Other(String),
}

impl ProbeStatus {
    fn from_id(id: u64) -> Self {
        match id {
            0 => ProbeStatus::NeverConnected,
            1 => ProbeStatus::Connected,
            2 => ProbeStatus::Disconnected,
            3 => ProbeStatus::Abandoned,
            other => ProbeStatus::Other(format!("status {other}")),
        }
    }
    fn from_name(name: &str) -> Self {
        match name.trim().to_ascii_lowercase().as_str() {
            "never connected" => ProbeStatus::NeverConnected,
            "connected" => ProbeStatus::Connected,
            "disconnected" => ProbeStatus::Disconnected,
            "abandoned" => ProbeStatus::Abandoned,
            _ => ProbeStatus::Other(printable(name, 40)),
        }
    }
    /// Display name, as Atlas writes it.
    pub fn name(&self) -> &str {
        match self {
            ProbeStatus::NeverConnected => "Never Connected",
            ProbeStatus::Connected => "Connected",
            ProbeStatus::Disconnected => "Disconnected",
            ProbeStatus::Abandoned => "Abandoned",
            ProbeStatus::Other(s) => s,
        }
    }
}

/// One probe, as far as this crate uses it. Every field was checked on reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub id: u32,
    /// Self-reported position (not trusted blindly: see [`crate::vet`]); `None` when the
    /// probe has none or it was out of range.
    pub pos: Option<LatLon>,
    pub status: ProbeStatus,
    pub asn_v4: Option<u32>,
    pub asn_v6: Option<u32>,
    /// ISO 3166-1 alpha-2, upper case.
    pub country: Option<String>,
    pub is_anchor: bool,
    pub address_v4: Option<Ipv4Addr>,
    pub address_v6: Option<Ipv6Addr>,
}

impl Probe {
    /// The engine's landmark name for this probe: `atlas:<id>`.
    pub fn landmark(&self) -> String {
        landmark(self.id)
    }
    /// True when `ip` is one of the probe's own addresses.
    pub fn has_address(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.address_v4 == Some(a),
            IpAddr::V6(a) => self.address_v6 == Some(a),
        }
    }
}

/// The engine's landmark name for probe `id`.
pub fn landmark(id: u32) -> String {
    format!("atlas:{id}")
}

/// A probe object that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeIssue {
    /// Position in the file's probe list.
    pub index: usize,
    pub probe_id: Option<u64>,
    pub problem: String,
}

/// Probes read from one source, by id, with what was skipped.
#[derive(Debug, Clone, Default)]
pub struct ProbeSet {
    pub probes: BTreeMap<u32, Probe>,
    pub issues: Vec<ProbeIssue>,
}

impl ProbeSet {
    /// The probe with this id.
    pub fn get(&self, id: u32) -> Option<&Probe> {
        self.probes.get(&id)
    }
    /// Adds probes from another page (a later entry for the same id replaces the earlier).
    pub fn extend(&mut self, other: ProbeSet) {
        let offset = self.probes.len();
        self.probes.extend(other.probes);
        self.issues.extend(other.issues.into_iter().map(|mut i| {
            i.index += offset;
            i
        }));
    }
    /// Number of probes.
    pub fn len(&self) -> usize {
        self.probes.len()
    }
    /// True when there is no probe.
    pub fn is_empty(&self) -> bool {
        self.probes.is_empty()
    }
}

/// One API page: its probes and the URL of the next page.
#[derive(Debug, Clone, Default)]
pub struct ProbePage {
    pub probes: ProbeSet,
    pub next: Option<String>,
    pub count: Option<u64>,
}

/// Reads a probe file: an API page, an archive dump or a plain array (see the module docs).
pub fn parse_probe_file(bytes: &[u8], what: &str) -> Result<ProbePage> {
    if bytes.len() > MAX_PROBE_FILE_BYTES {
        return Err(AtlasError::TooLarge {
            what: what.to_string(),
            limit_bytes: MAX_PROBE_FILE_BYTES,
        });
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| AtlasError::Malformed {
        what: what.to_string(),
        reason: format!("not JSON: {e}"),
    })?;
    let (list, next, count) = match &v {
        Value::Array(a) => (a, None, None),
        Value::Object(o) => {
            let list = o
                .get("results")
                .or_else(|| o.get("objects"))
                .and_then(Value::as_array)
                .ok_or_else(|| AtlasError::Malformed {
                    what: what.to_string(),
                    reason: "neither an API page (\"results\": [..]) nor a probe archive (\"objects\": [..]) nor an array of probes".into(),
                })?;
            let next = o.get("next").and_then(Value::as_str).map(str::to_string);
            (list, next, o.get("count").and_then(Value::as_u64))
        }
        _ => {
            return Err(AtlasError::Malformed {
                what: what.to_string(),
                reason: "not a JSON object or array".into(),
            })
        }
    };
    if list.len() > MAX_PROBES {
        return Err(AtlasError::Malformed {
            what: what.to_string(),
            reason: format!("{} probes, more than {MAX_PROBES}", list.len()),
        });
    }
    let mut set = ProbeSet::default();
    for (index, item) in list.iter().enumerate() {
        match probe_from_json(item) {
            Ok(p) => {
                set.probes.insert(p.id, p);
            }
            Err(problem) => set.issues.push(ProbeIssue {
                index,
                probe_id: item.get("id").and_then(Value::as_u64),
                problem,
            }),
        }
    }
    Ok(ProbePage {
        probes: set,
        next,
        count,
    })
}

/// Text from a hostile source made safe to print: control characters replaced, at most
/// `max` characters.
pub fn printable(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

fn opt_asn(v: Option<&Value>, field: &str) -> std::result::Result<Option<u32>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(a) if a > 0 && a <= u32::MAX as u64 => Ok(Some(a as u32)),
            _ => Err(format!("{field} {n} is not an AS number (1 to 4294967295)")),
        },
        Some(other) => Err(format!("{field} {} is not a number", short_json(other))),
    }
}

fn opt_addr<T: std::str::FromStr>(
    v: Option<&Value>,
    field: &str,
) -> std::result::Result<Option<T>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| format!("{field} {:?} is not an address", printable(s, 60))),
        Some(other) => Err(format!("{field} {} is not a string", short_json(other))),
    }
}

/// A JSON value shortened for an error message.
pub(crate) fn short_json(v: &Value) -> String {
    printable(&v.to_string(), 60)
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        // The archive has written coordinates as strings in some years.
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn position(o: &serde_json::Map<String, Value>) -> std::result::Result<Option<LatLon>, String> {
    let (lat, lon) = match o.get("geometry") {
        Some(Value::Object(g)) => match g.get("coordinates") {
            Some(Value::Array(c)) if c.len() == 2 => (
                number(&c[1]).ok_or("geometry latitude is not a number")?,
                number(&c[0]).ok_or("geometry longitude is not a number")?,
            ),
            Some(Value::Null) | None => return Ok(None),
            Some(other) => {
                return Err(format!(
                    "geometry coordinates {} are not [lon, lat]",
                    short_json(other)
                ))
            }
        },
        Some(Value::Null) | None => match (o.get("latitude"), o.get("longitude")) {
            (None | Some(Value::Null), None | Some(Value::Null)) => return Ok(None),
            (Some(la), Some(lo)) => (
                number(la).ok_or("latitude is not a number")?,
                number(lo).ok_or("longitude is not a number")?,
            ),
            _ => return Err("only one of latitude and longitude".into()),
        },
        Some(other) => return Err(format!("geometry {} is not an object", short_json(other))),
    };
    LatLon::checked(lat, lon).map(Some)
}

/// One probe object (API or archive shape), every field checked.
pub fn probe_from_json(v: &Value) -> std::result::Result<Probe, String> {
    let o = v.as_object().ok_or("not a JSON object")?;
    let id = o
        .get("id")
        .and_then(Value::as_u64)
        .filter(|&i| i > 0 && i <= MAX_PROBE_ID)
        .ok_or_else(|| match o.get("id") {
            None => "no id".to_string(),
            Some(x) => format!(
                "id {} is not a probe id (1 to {MAX_PROBE_ID})",
                short_json(x)
            ),
        })? as u32;
    let status = match o.get("status") {
        Some(Value::Object(s)) => match (s.get("name").and_then(Value::as_str), s.get("id")) {
            (Some(name), _) => ProbeStatus::from_name(name),
            (None, Some(i)) => ProbeStatus::from_id(i.as_u64().ok_or("status id is not a number")?),
            _ => return Err("status has neither name nor id".into()),
        },
        Some(Value::Number(n)) => match o.get("status_name").and_then(Value::as_str) {
            Some(name) => ProbeStatus::from_name(name),
            None => ProbeStatus::from_id(n.as_u64().ok_or("status is not a whole number")?),
        },
        Some(Value::String(name)) => ProbeStatus::from_name(name),
        None | Some(Value::Null) => match o.get("status_name").and_then(Value::as_str) {
            Some(name) => ProbeStatus::from_name(name),
            None => ProbeStatus::Other("unknown".into()),
        },
        Some(other) => return Err(format!("status {} is not readable", short_json(other))),
    };
    let country = match o.get("country_code") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) if c.is_empty() => None,
        Some(Value::String(c)) if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) => {
            Some(c.to_ascii_uppercase())
        }
        Some(other) => {
            return Err(format!(
                "country_code {} is not two letters",
                short_json(other)
            ))
        }
    };
    let is_anchor = match o.get("is_anchor") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(format!("is_anchor {} is not a boolean", short_json(other))),
    };
    Ok(Probe {
        id,
        pos: position(o)?,
        status,
        asn_v4: opt_asn(o.get("asn_v4"), "asn_v4")?,
        asn_v6: opt_asn(o.get("asn_v6"), "asn_v6")?,
        country,
        is_anchor,
        address_v4: opt_addr(o.get("address_v4"), "address_v4")?,
        address_v6: opt_addr(o.get("address_v6"), "address_v6")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_page_and_archive_shapes_read_the_same_probe() {
        let api = br#"{"count": 1, "next": "https://atlas.ripe.net/api/v2/probes/?page=2", "previous": null,
          "results": [{"id": 6025, "address_v4": "213.225.160.239", "address_v6": null, "asn_v4": 8839,
            "asn_v6": null, "country_code": "FR", "is_anchor": true, "is_public": true,
            "geometry": {"type": "Point", "coordinates": [7.7485, 48.5795]},
            "status": {"id": 1, "name": "Connected", "since": "2026-11-01T00:00:00Z"}, "type": "Probe"}]}"#;
        let archive = br#"{"meta": {}, "objects": [{"id": 6025, "address_v4": "213.225.160.239", "asn_v4": 8839,
            "country_code": "FR", "is_anchor": true, "latitude": 48.5795, "longitude": 7.7485,
            "status": 1, "status_name": "Connected"}]}"#;
        let a = parse_probe_file(api, "api").unwrap();
        let b = parse_probe_file(archive, "archive").unwrap();
        assert_eq!(
            a.next.as_deref(),
            Some("https://atlas.ripe.net/api/v2/probes/?page=2")
        );
        assert_eq!(a.probes.probes, b.probes.probes);
        let p = a.probes.get(6025).unwrap();
        assert_eq!(p.pos, Some(LatLon::new(48.5795, 7.7485)));
        assert_eq!(p.status, ProbeStatus::Connected);
        assert!(p.is_anchor && p.country.as_deref() == Some("FR") && p.asn_v4 == Some(8839));
    }

    #[test]
    fn bad_probe_objects_are_reported_and_skipped() {
        let text = br#"[{"id": 1, "latitude": 91.0, "longitude": 0},
            {"id": -3}, {"id": 2, "asn_v4": "AS1"}, "probe", {"id": 3, "country_code": "FRA"},
            {"id": 4, "address_v4": "999.1.1.1"}, {"id": 5, "status": 2}]"#;
        let p = parse_probe_file(text, "t").unwrap();
        assert_eq!(p.probes.len(), 1);
        assert_eq!(p.probes.get(5).unwrap().status, ProbeStatus::Disconnected);
        let problems: Vec<String> = p.probes.issues.iter().map(|i| i.problem.clone()).collect();
        assert_eq!(problems.len(), 6, "{problems:?}");
        assert!(problems[0].contains("latitude 91"), "{problems:?}");
        assert!(problems[1].contains("id -3"), "{problems:?}");
        assert!(parse_probe_file(b"{\"x\": 1}", "t").is_err());
        assert!(parse_probe_file(b"not json", "t").is_err());
    }
}
