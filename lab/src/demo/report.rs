//! The demo's outputs: the JSON summary (`--json`), the GeoJSON (`--geojson`) and the
//! printed table.
use serde::Serialize;
use serde_json::Value;

use super::args::DemoArgs;
use super::plan::{TargetKind, TargetPlan};
use super::score::TargetRow;

/// Durations of the demo's stages, ms.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub lab_up_ms: f64,
    pub coordinator_ready_ms: f64,
    pub probes_ready_ms: f64,
    pub locate_total_ms: f64,
    pub locate_median_ms: f64,
    pub teardown_ms: f64,
}

/// The JSON summary (`--json`). Schema: lab/README.md.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    pub seed: u64,
    pub probes: usize,
    pub targets: usize,
    pub located: usize,
    pub median_km: Option<f64>,
    pub p80_km: Option<f64>,
    /// Targets whose true position is inside the reported region.
    pub contained: usize,
    /// Targets whose reported time zone has a true zone's UTC offset (see [`TargetRow::tz_match`]).
    pub tz_match: usize,
    /// Targets whose MaxMind entry came out `provably-wrong`.
    pub maxmind_flagged: usize,
    /// Targets given a deliberately wrong MaxMind entry.
    pub maxmind_wrong: usize,
    pub rows: Vec<TargetRow>,
    pub timings: Timings,
    pub emulator: crate::emulator::StatsSnapshot,
}

/// Percentile (nearest rank) of a sorted slice.
pub(super) fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Builds the summary from the rows.
pub fn summarize(
    a: &DemoArgs,
    rows: Vec<TargetRow>,
    timings: Timings,
    emulator: crate::emulator::StatsSnapshot,
) -> DemoReport {
    let mut errs: Vec<f64> = rows
        .iter()
        .filter(|r| r.kind != TargetKind::Anycast)
        .filter_map(|r| r.error_km)
        .collect();
    errs.sort_by(f64::total_cmp);
    DemoReport {
        seed: a.seed,
        probes: a.probes,
        targets: rows.len(),
        located: rows.iter().filter(|r| r.error_km.is_some()).count(),
        median_km: percentile(&errs, 0.5),
        p80_km: percentile(&errs, 0.8),
        contained: rows.iter().filter(|r| r.contained).count(),
        tz_match: rows.iter().filter(|r| r.tz_match).count(),
        maxmind_flagged: rows
            .iter()
            .filter(|r| r.maxmind_verdict.as_deref() == Some("provably-wrong"))
            .count(),
        maxmind_wrong: rows.iter().filter(|r| r.maxmind_wrong).count(),
        rows,
        timings,
        emulator,
    }
}

/// Properties of one feature of `--geojson` (schema: lab/README.md).
#[derive(Serialize)]
struct FeatureProps<'a> {
    /// `truth`, `estimate` or `region`.
    feature: &'a str,
    target: &'a str,
    ip: &'a str,
    /// The true city (`truth` features only).
    #[serde(skip_serializing_if = "Option::is_none")]
    city: Option<&'a str>,
    /// Distance to the truth, km (`estimate` features only; null when unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    error_km: Option<Option<f64>>,
}

/// The GeoJSON written by `--geojson`: per target a `truth` point (each anycast instance),
/// an `estimate` point and its `region` (a region that is not valid GeoJSON is left out).
pub fn geojson(
    rows: &[TargetRow],
    plans: &[TargetPlan],
    regions: &[Value],
) -> geojson::FeatureCollection {
    let feature = |geometry: geojson::Geometry, props: FeatureProps| geojson::Feature {
        bbox: None,
        geometry: Some(geometry),
        id: None,
        properties: match serde_json::to_value(props) {
            Ok(Value::Object(m)) => Some(m),
            _ => None,
        },
        foreign_members: None,
    };
    let point = |lat: f64, lon: f64| geojson::Geometry::new(geojson::Value::Point(vec![lon, lat]));
    let mut features = Vec::new();
    for ((r, p), region) in rows.iter().zip(plans).zip(regions) {
        let props = |feature: &'static str| FeatureProps {
            feature,
            target: &r.name,
            ip: &r.ip,
            city: None,
            error_km: None,
        };
        for c in &p.cities {
            let city = Some(c.name.as_str());
            features.push(feature(
                point(c.pos.lat, c.pos.lon),
                FeatureProps {
                    city,
                    ..props("truth")
                },
            ));
        }
        if let (Some(lat), Some(lon)) = (r.estimate_lat, r.estimate_lon) {
            let error_km = Some(r.error_km);
            features.push(feature(
                point(lat, lon),
                FeatureProps {
                    error_km,
                    ..props("estimate")
                },
            ));
        }
        if let Ok(region) = geojson::Geometry::try_from(region.clone()) {
            features.push(feature(region, props("region")));
        }
    }
    geojson::FeatureCollection {
        bbox: None,
        features,
        foreign_members: None,
    }
}

pub fn print_table(report: &DemoReport) {
    println!(
        "{:<4} {:<9} {:<22} {:<24} {:>8} {:>11} {:<5} {:<22}",
        "tgt", "kind", "true city", "estimate", "err km", "region km2", "tz", "MaxMind (verdict)"
    );
    for r in &report.rows {
        let kind = serde_json::to_value(r.kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let est = match (r.estimate_city.as_deref(), r.estimate_lat) {
            (Some(c), _) => c.to_string(),
            (None, Some(lat)) => format!("{lat:.2},{:.2}", r.estimate_lon.unwrap_or(0.0)),
            _ => format!("FAILED: {}", r.error.as_deref().unwrap_or("?")),
        };
        let mut est = if r.anycast_reported {
            format!("anycast x{} ({est})", r.instances_reported)
        } else {
            est
        };
        est.truncate(24);
        let mut city = r.true_city.clone();
        city.truncate(22);
        println!(
            "{:<4} {:<9} {:<22} {:<24} {:>8} {:>11} {:<5} {:<22}",
            r.name,
            kind,
            city,
            est,
            r.error_km.map_or("-".into(), |e| format!("{e:.0}")),
            r.region_km2.map_or("-".into(), |a| format!("{a:.0}")),
            if r.tz_match { "ok" } else { "wrong" },
            format!(
                "{}{} ({})",
                r.maxmind_city,
                if r.maxmind_wrong { "*" } else { "" },
                r.maxmind_verdict.as_deref().unwrap_or("-")
            ),
        );
    }
    let f = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.0} km"));
    println!(
        "\n{} targets, {} located; median error {}, p80 {} (unicast); truth inside region: {}; time zone right: {}; \
         MaxMind flagged provably-wrong: {} (deliberately wrong, marked *: {})",
        report.targets,
        report.located,
        f(report.median_km),
        f(report.p80_km),
        report.contained,
        report.tz_match,
        report.maxmind_flagged,
        report.maxmind_wrong
    );
    let t = &report.timings;
    println!(
        "timings: lab up {:.0} ms, coordinator {:.0} ms, probes {:.0} ms, locating {:.0} ms (median {:.0} ms per target), teardown {:.0} ms",
        t.lab_up_ms, t.coordinator_ready_ms, t.probes_ready_ms, t.locate_total_ms, t.locate_median_ms, t.teardown_ms
    );
}

#[cfg(test)]
mod tests {
    use geoloc_client::LocateLine;
    use geoloc_engine::Verdict;

    use super::*;
    use crate::demo::fixtures::answer;
    use crate::demo::plan::plan_targets;
    use crate::demo::score::compare;
    use crate::geo;

    /// The `--json` summary's schema (lab/README.md): a snapshot of a canned report.
    #[test]
    fn summary_json_snapshot() {
        let pool = geo::builtin_cities();
        let plans = plan_targets(&pool, 3, 3, 9).unwrap();
        let answer = |p: &TargetPlan, dlat: f64, verdict: Verdict| {
            let c = &p.cities[0];
            let instances: Vec<(f64, f64)> =
                p.cities.iter().map(|c| (c.pos.lat, c.pos.lon)).collect();
            let mut v = answer(
                c.pos.lat + dlat,
                c.pos.lon,
                &c.tz,
                &c.name,
                &c.country,
                &instances,
                verdict,
                20,
            );
            v.solution.radius_km = 250.0;
            v.solution.region_km2 = 196000.0;
            LocateLine::Located(Box::new(v))
        };
        let rows = vec![
            compare(
                &plans[0],
                "10.77.1.10".parse().unwrap(),
                Some(&answer(&plans[0], 0.5, Verdict::Consistent)),
                1200.0,
                None,
            ),
            compare(
                &plans[1],
                "10.77.1.11".parse().unwrap(),
                Some(&answer(&plans[1], 2.0, Verdict::ProvablyWrong)),
                1500.0,
                None,
            ),
            compare(
                &plans[2],
                "10.77.1.12".parse().unwrap(),
                None,
                3000.0,
                Some("no-probes: none".into()),
            ),
        ];
        let timings = Timings {
            lab_up_ms: 500.0,
            coordinator_ready_ms: 250.0,
            probes_ready_ms: 2000.0,
            locate_total_ms: 5700.0,
            locate_median_ms: 1500.0,
            teardown_ms: 900.0,
        };
        let report = summarize(
            &DemoArgs {
                probes: 20,
                targets: 3,
                seed: 9,
                ..DemoArgs::default()
            },
            rows,
            timings,
            Default::default(),
        );
        insta::assert_json_snapshot!(report);
    }

    /// The `--geojson` output as the demo built it with `json!` before the typed features
    /// (kept here as the reference: the output must not change).
    fn old_geojson(rows: &[TargetRow], plans: &[TargetPlan], regions: &[Value]) -> Value {
        use serde_json::json;
        let mut features = Vec::new();
        for ((r, p), region) in rows.iter().zip(plans).zip(regions) {
            for c in &p.cities {
                features.push(json!({"type": "Feature", "geometry": {"type": "Point", "coordinates": [c.pos.lon, c.pos.lat]},
                    "properties": {"feature": "truth", "target": r.name, "ip": r.ip, "city": c.name}}));
            }
            if let (Some(lat), Some(lon)) = (r.estimate_lat, r.estimate_lon) {
                features.push(json!({"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
                    "properties": {"feature": "estimate", "target": r.name, "ip": r.ip, "error_km": r.error_km}}));
            }
            if !region.is_null() {
                features.push(json!({"type": "Feature", "geometry": region, "properties": {"feature": "region", "target": r.name, "ip": r.ip}}));
            }
        }
        json!({"type": "FeatureCollection", "features": features})
    }

    /// The `--geojson` schema (lab/README.md): a snapshot of a canned collection (an
    /// estimate with an unknown error, an anycast target's three truths, a failed
    /// target), written as the demo writes it (through a `Value`: keys sorted), and the
    /// same text as before the `geojson` crate.
    #[test]
    fn geojson_snapshot() {
        let pool = geo::builtin_cities();
        let plans = plan_targets(&pool, 3, 3, 9).unwrap();
        let located = |p: &TargetPlan| {
            let c = &p.cities[0];
            let v = answer(
                c.pos.lat + 0.5,
                c.pos.lon,
                &c.tz,
                &c.name,
                &c.country,
                &[],
                Verdict::Consistent,
                20,
            );
            LocateLine::Located(Box::new(v))
        };
        let mut rows = vec![
            compare(
                &plans[0],
                "10.77.1.10".parse().unwrap(),
                Some(&located(&plans[0])),
                1200.0,
                None,
            ),
            compare(
                &plans[1],
                "10.77.1.11".parse().unwrap(),
                Some(&located(&plans[1])),
                1500.0,
                None,
            ),
            compare(
                &plans[2],
                "10.77.1.12".parse().unwrap(),
                None,
                3000.0,
                Some("no-probes: none".into()),
            ),
        ];
        rows[1].error_km = None;
        let regions = vec![
            serde_json::json!({"type": "MultiPolygon", "coordinates": [[[[-22.5, 63.5], [-21.0, 63.5], [-21.0, 64.9], [-22.5, 63.5]]]]}),
            Value::Null,
            Value::Null,
        ];
        let fc = serde_json::to_value(geojson(&rows, &plans, &regions)).unwrap();
        assert_eq!(
            serde_json::to_string(&fc).unwrap(),
            serde_json::to_string(&old_geojson(&rows, &plans, &regions)).unwrap()
        );
        insta::assert_json_snapshot!(fc);
    }
}
