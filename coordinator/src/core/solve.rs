//! From stored measurement rows to the engine's answer. Used both live and by
//! [`crate::Coordinator::recompute`], so a recomputed result equals the stored one.
use std::collections::BTreeMap;

use geoloc_engine::{GeoIpRecord, Kind, LatLon, Measurement, Solution, SolveOptions};
use serde::{Deserialize, Serialize};

use crate::core::measurement::{MeasurementResult, RttKind};
use crate::core::rows::MeasurementRow;

/// JSON form of the GeoIP record stored with a result (`results.geoip_json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoIpJson {
    pub lat: f64,
    pub lon: f64,
    pub city: Option<String>,
    pub country: Option<String>,
    pub accuracy_radius_km: Option<f64>,
}

impl From<&GeoIpRecord> for GeoIpJson {
    fn from(r: &GeoIpRecord) -> Self {
        GeoIpJson {
            lat: r.lat,
            lon: r.lon,
            city: r.city.clone(),
            country: r.country.clone(),
            accuracy_radius_km: r.accuracy_radius_km,
        }
    }
}

impl From<&GeoIpJson> for GeoIpRecord {
    fn from(r: &GeoIpJson) -> Self {
        GeoIpRecord {
            lat: r.lat,
            lon: r.lon,
            city: r.city.clone(),
            country: r.country.clone(),
            accuracy_radius_km: r.accuracy_radius_km,
        }
    }
}

/// Per-probe summary of the rows of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeRtt {
    pub probe_id: String,
    pub pos: LatLon,
    pub rtt_ms: f64,
    pub kind: RttKind,
}

/// What the rows of one run give the engine.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub measurements: Vec<Measurement>,
    pub per_probe: Vec<ProbeRtt>,
    pub packets_sent: u64,
    pub probes_asked: usize,
}

impl Inputs {
    /// Smallest RTT and its probe.
    pub fn nearest(&self) -> Option<(&str, f64)> {
        self.per_probe
            .iter()
            .filter(|p| p.kind == RttKind::Echo)
            .chain(self.per_probe.iter().filter(|p| p.kind == RttKind::LastHop))
            .min_by(|a, b| {
                // echo before last-hop at equal RTT
                a.rtt_ms
                    .total_cmp(&b.rtt_ms)
                    .then((a.kind == RttKind::LastHop).cmp(&(b.kind == RttKind::LastHop)))
            })
            .map(|p| (p.probe_id.as_str(), p.rtt_ms))
    }
}

/// Reduces raw rows to one RTT per probe: the best echo over its rows, else its best last
/// hop. Rows marked `excluded` are counted (packets) but not used.
pub fn inputs_from_rows(rows: &[MeasurementRow]) -> crate::Result<Inputs> {
    let parsed = rows
        .iter()
        .map(MeasurementRow::result)
        .collect::<crate::Result<Vec<_>>>()?;
    Ok(inputs_from_parsed(rows, &parsed))
}

/// [`inputs_from_rows`] for rows whose answers are already parsed (`results[i]` is the
/// answer of `rows[i]`): a live run keeps what it received instead of parsing the JSON it
/// just wrote.
pub fn inputs_from_parsed(rows: &[MeasurementRow], results: &[MeasurementResult]) -> Inputs {
    debug_assert_eq!(rows.len(), results.len());
    let mut best: BTreeMap<&str, ProbeRtt> = BTreeMap::new();
    let mut asked: BTreeMap<&str, ()> = BTreeMap::new();
    let mut packets = 0u64;
    for (row, raw) in rows.iter().zip(results) {
        asked.insert(&row.probe_id, ());
        packets += raw.packets_sent();
        if !row.excluded.is_empty() {
            continue;
        }
        let Some((rtt_ms, kind)) = raw.best_rtt() else {
            continue;
        };
        match best.get(row.probe_id.as_str()) {
            Some(cur) if !better_than(rtt_ms, kind, cur) => {}
            _ => {
                best.insert(
                    &row.probe_id,
                    ProbeRtt {
                        probe_id: row.probe_id.clone(),
                        pos: LatLon {
                            lat: row.probe_lat,
                            lon: row.probe_lon,
                        },
                        rtt_ms,
                        kind,
                    },
                );
            }
        }
    }
    let per_probe: Vec<ProbeRtt> = best.into_values().collect();
    let measurements = per_probe
        .iter()
        .map(|p| Measurement {
            landmark: p.probe_id.clone(),
            pos: p.pos,
            rtt_ms: p.rtt_ms,
            kind: match p.kind {
                RttKind::Echo => Kind::Echo,
                RttKind::LastHop => Kind::LastHop,
            },
        })
        .collect();
    Inputs {
        measurements,
        per_probe,
        packets_sent: packets,
        probes_asked: asked.len(),
    }
}

/// An RTT of `kind` beats `b`: an echo beats a last hop, else the smaller RTT.
fn better_than(rtt_ms: f64, kind: RttKind, b: &ProbeRtt) -> bool {
    match (kind, b.kind) {
        (RttKind::Echo, RttKind::LastHop) => true,
        (RttKind::LastHop, RttKind::Echo) => false,
        _ => rtt_ms < b.rtt_ms,
    }
}

/// What the GeoIP database said, as stored with a result: `None` = no database configured,
/// `Some(None)` = consulted, no record, `Some(Some(r))` = its record.
pub type GeoIpLookup = Option<Option<GeoIpJson>>;

/// Runs the engine. `at_unix_s` fixes the instant of UTC offsets, so recomputing gives the
/// same answer.
pub fn solve(
    inputs: &Inputs,
    geoip: &GeoIpLookup,
    at_unix_s: i64,
    calibration: Option<geoloc_engine::Calibration>,
) -> Result<Solution, String> {
    if inputs.measurements.is_empty() {
        return Err("no probe got an answer from the target".into());
    }
    let opts = SolveOptions {
        geoip: geoip
            .as_ref()
            .and_then(|g| g.as_ref())
            .map(GeoIpRecord::from),
        geoip_checked: geoip.is_some(),
        at_unix_s: Some(at_unix_s),
        calibration,
        ..Default::default()
    };
    geoloc_engine::solve(&inputs.measurements, &opts).map_err(|e| e.to_string())
}
