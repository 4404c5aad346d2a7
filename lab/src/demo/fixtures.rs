//! Canned `geoloc locate --json` answers for the demo's unit tests.
use geoloc_client::{Located, Mode};
use geoloc_engine::enrich::{format_offset, utc_offset_s};
use geoloc_engine::{MaxmindComparison, Method, Place, Solution, Timezone, Verdict};
use serde_json::Value;

/// When the canned answers were made: 2026-01-01 00:00 UTC.
pub(crate) const AT_UNIX_S: i64 = 1_767_225_600;

/// A located answer with the fields `compare` reads (its UTC offset that of `tz` at
/// [`AT_UNIX_S`]); the rest empty.
#[allow(clippy::too_many_arguments)]
pub(crate) fn answer(
    lat: f64,
    lon: f64,
    tz: &str,
    city: &str,
    country: &str,
    instances: &[(f64, f64)],
    verdict: Verdict,
    probes_used: u32,
) -> Located {
    let offset_s = utc_offset_s(tz, AT_UNIX_S).unwrap_or(0);
    Located {
        ip: "x".into(),
        result_id: String::new(),
        created_at_unix_ms: AT_UNIX_S * 1000,
        cached: false,
        requested_by: String::new(),
        atlas_credits: 0,
        atlas_probes_asked: 0,
        mode: Mode::All,
        probes_asked: probes_used,
        probes_used,
        packets_sent: 0,
        min_rtt_ms: None,
        nearest_probe: String::new(),
        probe_rtts: vec![],
        solution: Solution {
            method: Method::Bestline,
            estimate: geoloc_engine::LatLon { lat, lon },
            radius_km: 0.0,
            region_km2: 0.0,
            radius_50_km: None,
            radius_90_km: None,
            timezone: Timezone {
                iana: tz.into(),
                utc_offset: format_offset(offset_s),
                utc_offset_s: offset_s,
            },
            timezones: vec![],
            place: Place {
                city: city.into(),
                country: country.into(),
                distance_km: 0.0,
            },
            anycast: instances.len() > 1,
            instances: instances
                .iter()
                .map(|&(lat, lon)| geoloc_engine::Instance {
                    lat,
                    lon,
                    city: String::new(),
                    country: String::new(),
                    landmark: String::new(),
                    radius_km: 0.0,
                })
                .collect(),
            collusion: None,
            dropped: vec![],
            loosened: vec![],
            maxmind: Some(MaxmindComparison {
                verdict,
                ..MaxmindComparison::no_data()
            }),
            landmarks: probes_used as usize,
            used: probes_used as usize,
            min_rtt_ms: 0.0,
            nearest_landmark: String::new(),
            region: Value::Null,
            region_constraints: vec![],
            region_tolerance: 0,
        },
    }
}
