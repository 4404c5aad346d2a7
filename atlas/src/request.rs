//! One-off measurement requests (`POST /api/v2/measurements/`) and their credit cost.
//!
//! A request is `{"definitions": [..], "probes": [..], "is_oneoff": true}`: each definition
//! says what to measure (`type` `ping` or `traceroute`, `af` 4 or 6, `target`,
//! `description`, `packets`, `size`), each probe specification where from (`type`
//! `probes` with a comma-separated id list, `area` (`WW`, `West`, `North-Central`,
//! `South-Central`, `North-East`, `South-East`), `country` (ISO code) or `asn`; `value`;
//! `requested` probes). Everything is checked here before a request is sent or its cost
//! shown.
//!
//! # Credits
//! RIPE Atlas charges per result delivered (the "unit cost"), documented as:
//! - ping: `N × (floor(S / 1500) + 1)`, N packets (default 3), S packet size in bytes
//!   (default 48): 3 credits by default;
//! - traceroute: `10 × N × (floor(S / 1500) + 1)` (default 30);
//! - one-off measurements cost twice as much per result.
//!
//! The estimate is the unit cost × the probes requested (each gives at most one result in a
//! one-off measurement) × 2. It is an upper bound: probes that do not answer cost nothing.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{AtlasError, Result};

/// Ping packets allowed by Atlas per result.
pub const MAX_PACKETS: u32 = 16;
/// Largest packet size Atlas accepts, bytes.
pub const MAX_SIZE_BYTES: u32 = 2048;
/// Most probes one request may ask for (Atlas' own cap per measurement is 1,000).
pub const MAX_REQUESTED: u32 = 1000;
/// Multiplier of one-off measurements' unit cost.
pub const ONE_OFF_FACTOR: u64 = 2;

/// The measurement type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MeasurementType {
    Ping,
    Traceroute,
}

impl MeasurementType {
    /// Name in the API.
    pub fn name(self) -> &'static str {
        match self {
            MeasurementType::Ping => "ping",
            MeasurementType::Traceroute => "traceroute",
        }
    }
    /// Default packet size, bytes.
    pub fn default_size(self) -> u32 {
        48
    }
}

impl std::str::FromStr for MeasurementType {
    type Err = AtlasError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ping" => Ok(MeasurementType::Ping),
            "traceroute" => Ok(MeasurementType::Traceroute),
            other => Err(AtlasError::InvalidRequest(format!(
                "measurement type {other:?} (expected ping or traceroute)"
            ))),
        }
    }
}

/// What to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    pub kind: MeasurementType,
    pub target: IpAddr,
    /// Packets per result (ping: echo requests; traceroute: packets per hop), 1 to 16.
    pub packets: u32,
    /// Packet size, bytes, 1 to 2048.
    pub size_bytes: u32,
    pub description: String,
}

impl Definition {
    /// A definition with Atlas' defaults (3 packets of 48 bytes).
    pub fn new(kind: MeasurementType, target: IpAddr) -> Self {
        Self {
            kind,
            target,
            packets: 3,
            size_bytes: kind.default_size(),
            description: format!("geoloc {} {target}", kind.name()),
        }
    }
    /// Address family, 4 or 6.
    pub fn af(&self) -> u8 {
        if self.target.is_ipv4() {
            4
        } else {
            6
        }
    }
    /// Credits per result (see the module docs), before the one-off factor.
    pub fn unit_cost(&self) -> u64 {
        let per_packet = (self.size_bytes / 1500 + 1) as u64;
        let base = self.packets as u64 * per_packet;
        match self.kind {
            MeasurementType::Ping => base,
            MeasurementType::Traceroute => 10 * base,
        }
    }
    fn check(&self) -> Result<()> {
        if !(1..=MAX_PACKETS).contains(&self.packets) {
            return Err(AtlasError::InvalidRequest(format!(
                "packets {} is not between 1 and {MAX_PACKETS}",
                self.packets
            )));
        }
        if !(1..=MAX_SIZE_BYTES).contains(&self.size_bytes) {
            return Err(AtlasError::InvalidRequest(format!(
                "size {} bytes is not between 1 and {MAX_SIZE_BYTES}",
                self.size_bytes
            )));
        }
        if self.description.trim().is_empty() || self.description.len() > 256 {
            return Err(AtlasError::InvalidRequest(
                "the description must be 1 to 256 bytes".into(),
            ));
        }
        Ok(())
    }
    fn to_json(&self) -> Value {
        json!({
            "type": self.kind.name(),
            "af": self.af(),
            "target": self.target.to_string(),
            "description": self.description,
            "packets": self.packets,
            "size": self.size_bytes,
            "resolve_on_probe": false,
        })
    }
}

/// Where to measure from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeSpec {
    /// These probes (`type: probes`); `requested` is their number.
    Ids(Vec<u32>),
    /// An area: `WW`, `West`, `North-Central`, `South-Central`, `North-East`, `South-East`.
    Area { area: String, requested: u32 },
    /// A country (ISO 3166-1 alpha-2).
    Country { code: String, requested: u32 },
    /// An autonomous system.
    Asn { asn: u32, requested: u32 },
}

/// The areas the API knows.
pub const AREAS: &[&str] = &[
    "WW",
    "West",
    "North-Central",
    "South-Central",
    "North-East",
    "South-East",
];

impl ProbeSpec {
    /// Probes this specification asks for.
    pub fn requested(&self) -> u32 {
        match self {
            ProbeSpec::Ids(ids) => ids.len() as u32,
            ProbeSpec::Area { requested, .. }
            | ProbeSpec::Country { requested, .. }
            | ProbeSpec::Asn { requested, .. } => *requested,
        }
    }
    fn check(&self) -> Result<()> {
        let n = self.requested();
        if n == 0 || n > MAX_REQUESTED {
            return Err(AtlasError::InvalidRequest(format!(
                "{n} probes requested; between 1 and {MAX_REQUESTED} per specification"
            )));
        }
        match self {
            ProbeSpec::Ids(ids) => {
                let mut s = ids.clone();
                s.sort_unstable();
                s.dedup();
                if s.len() != ids.len() || ids.contains(&0) {
                    return Err(AtlasError::InvalidRequest(
                        "probe ids must be distinct and non-zero".into(),
                    ));
                }
            }
            ProbeSpec::Area { area, .. } if !AREAS.contains(&area.as_str()) => {
                return Err(AtlasError::InvalidRequest(format!(
                    "area {area:?} (expected one of {})",
                    AREAS.join(", ")
                )))
            }
            ProbeSpec::Country { code, .. }
                if !(code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase())) =>
            {
                return Err(AtlasError::InvalidRequest(format!(
                    "country {code:?} is not an upper-case ISO 3166-1 alpha-2 code"
                )))
            }
            ProbeSpec::Asn { asn: 0, .. } => {
                return Err(AtlasError::InvalidRequest("AS number 0".into()))
            }
            _ => {}
        }
        Ok(())
    }
    fn to_json(&self) -> Value {
        let (t, value) = match self {
            ProbeSpec::Ids(ids) => (
                "probes",
                Value::String(ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")),
            ),
            ProbeSpec::Area { area, .. } => ("area", Value::String(area.clone())),
            ProbeSpec::Country { code, .. } => ("country", Value::String(code.clone())),
            ProbeSpec::Asn { asn, .. } => ("asn", json!(asn)),
        };
        json!({"type": t, "value": value, "requested": self.requested()})
    }
}

/// A one-off measurement request.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasurementRequest {
    pub definitions: Vec<Definition>,
    pub probes: Vec<ProbeSpec>,
}

/// What a request may cost, shown before anything is spent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CostEstimate {
    /// One line per definition.
    pub items: Vec<CostItem>,
    /// Upper bound of credits for the whole request.
    pub total_credits: u64,
}

/// The cost of one definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CostItem {
    pub kind: MeasurementType,
    pub target: String,
    /// Credits per result (packets and size), before the one-off factor.
    pub unit_cost: u64,
    pub one_off_factor: u64,
    /// Probes requested (at most one result each).
    pub probes: u64,
    pub credits: u64,
}

impl std::fmt::Display for CostEstimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for i in &self.items {
            writeln!(
                f,
                "{} {}: {} probes x {} credits/result x {} (one-off) = {} credits",
                i.kind.name(),
                i.target,
                i.probes,
                i.unit_cost,
                i.one_off_factor,
                i.credits
            )?;
        }
        write!(f, "total: at most {} credits", self.total_credits)
    }
}

impl MeasurementRequest {
    /// Checks every field (see the module docs).
    pub fn check(&self) -> Result<()> {
        if self.definitions.is_empty() || self.definitions.len() > 100 {
            return Err(AtlasError::InvalidRequest(
                "between 1 and 100 definitions".into(),
            ));
        }
        if self.probes.is_empty() || self.probes.len() > 100 {
            return Err(AtlasError::InvalidRequest(
                "between 1 and 100 probe specifications".into(),
            ));
        }
        self.definitions.iter().try_for_each(Definition::check)?;
        self.probes.iter().try_for_each(ProbeSpec::check)?;
        let total: u64 = self.probes.iter().map(|p| p.requested() as u64).sum();
        if total > MAX_REQUESTED as u64 {
            return Err(AtlasError::InvalidRequest(format!(
                "{total} probes requested in all; at most {MAX_REQUESTED}"
            )));
        }
        Ok(())
    }

    /// The credit estimate (see the module docs).
    pub fn estimate(&self) -> Result<CostEstimate> {
        self.check()?;
        let probes: u64 = self.probes.iter().map(|p| p.requested() as u64).sum();
        let items: Vec<CostItem> = self
            .definitions
            .iter()
            .map(|d| CostItem {
                kind: d.kind,
                target: d.target.to_string(),
                unit_cost: d.unit_cost(),
                one_off_factor: ONE_OFF_FACTOR,
                probes,
                credits: d.unit_cost() * ONE_OFF_FACTOR * probes,
            })
            .collect();
        let total_credits = items.iter().map(|i| i.credits).sum();
        Ok(CostEstimate {
            items,
            total_credits,
        })
    }

    /// The documented JSON body.
    pub fn to_json(&self) -> Result<Value> {
        self.check()?;
        Ok(json!({
            "definitions": self.definitions.iter().map(Definition::to_json).collect::<Vec<_>>(),
            "probes": self.probes.iter().map(ProbeSpec::to_json).collect::<Vec<_>>(),
            "is_oneoff": true,
        }))
    }

    /// The estimate, or [`AtlasError::OverBudget`] when it exceeds `max_credits`.
    pub fn check_budget(&self, max_credits: u64) -> Result<CostEstimate> {
        let est = self.estimate()?;
        if est.total_credits > max_credits {
            return Err(AtlasError::OverBudget {
                estimated: est.total_credits,
                max_credits,
                detail: est.to_string().replace('\n', "; "),
            });
        }
        Ok(est)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ping(n: u32) -> MeasurementRequest {
        MeasurementRequest {
            definitions: vec![Definition::new(
                MeasurementType::Ping,
                "192.0.2.1".parse().unwrap(),
            )],
            probes: vec![ProbeSpec::Area {
                area: "WW".into(),
                requested: n,
            }],
        }
    }

    #[test]
    fn documented_unit_costs() {
        let t: IpAddr = "2001:db8::1".parse().unwrap();
        let mut p = Definition::new(MeasurementType::Ping, t);
        assert_eq!(p.unit_cost(), 3);
        p.size_bytes = 1500;
        assert_eq!(p.unit_cost(), 6);
        p.packets = 16;
        p.size_bytes = 2048;
        assert_eq!(p.unit_cost(), 32);
        let tr = Definition::new(MeasurementType::Traceroute, t);
        assert_eq!(tr.unit_cost(), 30);
        assert_eq!(tr.af(), 6);
    }

    #[test]
    fn fifty_probe_one_off_ping_costs_300_and_a_budget_refuses_more() {
        let r = ping(50);
        assert_eq!(r.estimate().unwrap().total_credits, 300);
        assert!(r.check_budget(300).is_ok());
        match r.check_budget(299) {
            Err(AtlasError::OverBudget {
                estimated: 300,
                max_credits: 299,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_requests_are_refused_before_sending() {
        assert!(ping(0).check().is_err());
        assert!(ping(1001).check().is_err());
        let mut r = ping(5);
        r.probes = vec![ProbeSpec::Area {
            area: "Mars".into(),
            requested: 3,
        }];
        assert!(r.check().is_err());
        r.probes = vec![ProbeSpec::Ids(vec![1, 1])];
        assert!(r.check().is_err());
        r.probes = vec![ProbeSpec::Country {
            code: "fr".into(),
            requested: 3,
        }];
        assert!(r.check().is_err());
        let body = ping(5).to_json().unwrap();
        assert_eq!(body["probes"][0]["type"], "area");
        assert_eq!(body["definitions"][0]["af"], 4);
        assert_eq!(body["is_oneoff"], true);
    }
}
