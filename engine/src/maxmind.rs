//! Comparing a GeoIP database's answer with the measured region.
//!
//! The verdict uses only sound bounds (2/3 c), so `provably-wrong` is a proof: some
//! landmark's RTT is too short for the target to be at the database's point.

use serde::{Deserialize, Serialize};

use crate::anycast::Instance;
use crate::enrich::round1;
use crate::region::Constraint;
use crate::sphere::{distance_km, LatLon};

/// What a GeoIP City database says about an address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeoIpRecord {
    pub lat: f64,
    pub lon: f64,
    pub city: Option<String>,
    /// ISO 3166-1 alpha-2 code.
    pub country: Option<String>,
    pub accuracy_radius_km: Option<f64>,
}

/// The verdict on a GeoIP record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The database's point is inside the feasible region.
    Consistent,
    /// The database's point is outside a sound-bound disc: it cannot be right.
    ProvablyWrong,
    /// The database has no position for this address.
    NoData,
}

/// The database's answer next to ours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaxmindComparison {
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub city: Option<String>,
    pub country: Option<String>,
    pub accuracy_radius_km: Option<f64>,
    /// Distance from the database's point to our estimate, km.
    pub distance_km: Option<f64>,
    pub verdict: Verdict,
    /// For `provably-wrong`: the landmark whose RTT rules the point out...
    pub ruled_out_by: Option<String>,
    /// ...and by how many km the point lies beyond that landmark's sound bound.
    pub excess_km: Option<f64>,
}

impl MaxmindComparison {
    /// The database had nothing for the address.
    pub fn no_data() -> Self {
        Self {
            lat: None,
            lon: None,
            city: None,
            country: None,
            accuracy_radius_km: None,
            distance_km: None,
            verdict: Verdict::NoData,
            ruled_out_by: None,
            excess_km: None,
        }
    }
}

/// Judges `rec` against the sound discs (`names[i]` names `sound[i]`). For an anycast
/// target, a point within any instance's disc is consistent.
pub fn compare(
    rec: &GeoIpRecord,
    estimate: LatLon,
    sound: &[Constraint],
    names: &[&str],
    instances: &[Instance],
) -> MaxmindComparison {
    let p = LatLon::new(rec.lat, rec.lon);
    let worst = sound
        .iter()
        .enumerate()
        .map(|(i, c)| (i, distance_km(c.center, p) - c.max_km))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let in_instance = instances
        .iter()
        .any(|x| distance_km(LatLon::new(x.lat, x.lon), p) <= x.radius_km);
    let (verdict, ruled_out_by, excess_km) = match worst {
        Some((i, excess)) if excess > 0.0 && !in_instance => (
            Verdict::ProvablyWrong,
            Some(names[i].to_string()),
            Some(round1(excess)),
        ),
        _ => (Verdict::Consistent, None, None),
    };
    MaxmindComparison {
        lat: Some(rec.lat),
        lon: Some(rec.lon),
        city: rec.city.clone(),
        country: rec.country.clone(),
        accuracy_radius_km: rec.accuracy_radius_km,
        distance_km: Some(round1(distance_km(p, estimate))),
        verdict,
        ruled_out_by,
        excess_km,
    }
}
