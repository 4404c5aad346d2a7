//! Scoring: one `geoloc locate --json` answer checked against the truth of its target.
use std::net::IpAddr;

use serde::Serialize;

use geoloc_client::LocateLine;

use super::plan::{TargetKind, TargetPlan};
use super::region::region_contains;
use geoloc_engine::enrich::utc_offset_s;

use crate::geo::{distance_km, LatLon};

/// One located target (a row of the table and of the JSON `rows`).
#[derive(Debug, Clone, Serialize)]
pub struct TargetRow {
    pub name: String,
    pub ip: String,
    pub kind: TargetKind,
    pub true_city: String,
    pub true_lat: f64,
    pub true_lon: f64,
    pub true_tz: String,
    pub estimate_lat: Option<f64>,
    pub estimate_lon: Option<f64>,
    pub estimate_city: Option<String>,
    /// Distance from the estimate to the truth (anycast: to the nearest instance), km.
    pub error_km: Option<f64>,
    pub radius_km: Option<f64>,
    pub region_km2: Option<f64>,
    /// The true position lies inside the reported region (anycast: any instance).
    pub contained: bool,
    pub tz: Option<String>,
    /// The reported zone's UTC offset is a true zone's at the answer's time (the local time
    /// is right even when the zone's name is not: Europe/Zurich for a target in Rome).
    pub tz_match: bool,
    pub anycast_reported: bool,
    pub instances_true: usize,
    pub instances_reported: usize,
    pub maxmind_city: String,
    pub maxmind_wrong: bool,
    pub maxmind_verdict: Option<String>,
    pub probes_used: Option<u64>,
    pub locate_ms: f64,
    pub error: Option<String>,
}

/// The first line of `geoloc locate --json` output, typed; None when there is none or it
/// does not parse.
pub fn json_line(out: &str) -> Option<LocateLine> {
    out.lines()
        .find(|l| l.trim_start().starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
}

/// Checks one `geoloc locate --json` answer against the plan.
pub fn compare(
    t: &TargetPlan,
    ip: IpAddr,
    line: Option<&LocateLine>,
    locate_ms: f64,
    error: Option<String>,
) -> TargetRow {
    let (located, failure) = match line {
        Some(LocateLine::Located(l)) => (Some(l.as_ref()), None),
        Some(LocateLine::Failed { error, .. }) => (None, Some(error.message.clone())),
        None => (None, None),
    };
    let s = located.map(|l| &l.solution);
    let est = s.map(|s| LatLon {
        lat: s.estimate.lat,
        lon: s.estimate.lon,
    });
    let error_km = est.map(|e| {
        t.cities
            .iter()
            .map(|c| distance_km(e, c.pos))
            .fold(f64::INFINITY, f64::min)
    });
    let contained = s.is_some_and(|s| {
        !s.region.is_null() && t.cities.iter().any(|c| region_contains(&s.region, c.pos))
    });
    let tz = s.map(|s| s.timezone.iana.clone());
    let error = error.or(failure).or_else(|| {
        est.is_none()
            .then(|| "no estimate in the answer".to_string())
    });
    TargetRow {
        name: t.name.clone(),
        ip: ip.to_string(),
        kind: t.kind,
        true_city: t
            .cities
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(" + "),
        true_lat: t.cities[0].pos.lat,
        true_lon: t.cities[0].pos.lon,
        true_tz: t.cities[0].tz.clone(),
        estimate_lat: est.map(|e| e.lat),
        estimate_lon: est.map(|e| e.lon),
        estimate_city: s.map(|s| s.place.city.clone()),
        error_km,
        radius_km: s.map(|s| s.radius_km),
        region_km2: s.map(|s| s.region_km2),
        contained,
        tz_match: located.is_some_and(|l| {
            offset_matches(
                t.cities.iter().map(|c| c.tz.as_str()),
                l.solution.timezone.utc_offset_s,
                l.created_at_unix_ms,
            )
        }),
        tz,
        anycast_reported: s.is_some_and(|s| s.anycast),
        instances_true: t.cities.len(),
        instances_reported: s.map_or(0, |s| s.instances.len()),
        maxmind_city: t.maxmind.name.clone(),
        maxmind_wrong: t.maxmind_wrong,
        maxmind_verdict: s
            .and_then(|s| s.maxmind.as_ref())
            .and_then(|m| serde_json::to_value(m.verdict).ok())
            .and_then(|v| v.as_str().map(String::from)),
        probes_used: located.map(|l| u64::from(l.probes_used)),
        locate_ms,
        error,
    }
}

/// Whether `reported_offset_s` (the answer's UTC offset, seconds) is the UTC offset of one
/// of `true_zones` (IANA names) at `at_unix_ms` (the answer's creation time; `0` or less:
/// now), as `geoloc eval` scores time zones. An unknown zone name matches nothing.
pub fn offset_matches<'a>(
    mut true_zones: impl Iterator<Item = &'a str>,
    reported_offset_s: i32,
    at_unix_ms: i64,
) -> bool {
    let at_unix_s = if at_unix_ms > 0 {
        at_unix_ms / 1000
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    };
    true_zones.any(|z| utc_offset_s(z, at_unix_s) == Some(reported_offset_s))
}

#[cfg(test)]
mod tests {
    use geoloc_client::LocateLine;
    use geoloc_engine::Verdict;
    use serde_json::json;

    use super::*;
    use crate::demo::args::DemoArgs;
    use crate::demo::fixtures::answer;
    use crate::demo::plan::plan_targets;
    use crate::demo::report::{summarize, Timings};
    use crate::geo;

    #[test]
    fn compare_scores_an_answer() {
        let pool = geo::builtin_cities();
        let mut plans = plan_targets(&pool, 2, 3, 3).unwrap();
        let t = plans.remove(1);
        let c = t.cities[0].clone();
        let mut v = answer(
            c.pos.lat + 0.5,
            c.pos.lon,
            &c.tz,
            "X",
            "Y",
            &[],
            Verdict::ProvablyWrong,
            12,
        );
        v.solution.radius_km = 100.0;
        v.solution.region_km2 = 31400.0;
        v.solution.region = json!({"type": "Polygon", "coordinates": [[[c.pos.lon - 1.0, c.pos.lat - 1.0], [c.pos.lon + 1.0, c.pos.lat - 1.0],
                [c.pos.lon + 1.0, c.pos.lat + 1.0], [c.pos.lon - 1.0, c.pos.lat + 1.0], [c.pos.lon - 1.0, c.pos.lat - 1.0]]]});
        let v = LocateLine::Located(Box::new(v));
        let row = compare(&t, "10.77.1.9".parse().unwrap(), Some(&v), 1234.0, None);
        assert!((row.error_km.unwrap() - 55.6).abs() < 1.0, "{row:?}");
        assert!(row.contained && row.tz_match && row.error.is_none());
        assert_eq!(row.maxmind_verdict.as_deref(), Some("provably-wrong"));
        let report = summarize(
            &DemoArgs::default(),
            vec![row.clone(), row],
            Timings::default(),
            Default::default(),
        );
        assert_eq!(
            (
                report.contained,
                report.tz_match,
                report.maxmind_flagged,
                report.located
            ),
            (2, 2, 2, 2)
        );
        let failed = compare(
            &t,
            "10.77.1.9".parse().unwrap(),
            None,
            5.0,
            Some("timeout".into()),
        );
        assert_eq!(failed.error.as_deref(), Some("timeout"));
        assert!(failed.error_km.is_none() && !failed.contained);
    }

    /// Issue 10: the time zone is scored by UTC offset, as `geoloc eval` does: Europe/Zurich
    /// for a target in Rome is the right local time, Europe/London (an hour behind all
    /// year) is not, in winter and in summer.
    #[test]
    fn time_zone_is_scored_by_utc_offset() {
        let pool = geo::builtin_cities();
        let mut plans = plan_targets(&pool, 5, 3, 3).unwrap();
        let mut t = plans.remove(4);
        let rome = crate::geo::City {
            name: "Rome".into(),
            country: "IT".into(),
            pos: LatLon {
                lat: 41.9,
                lon: 12.5,
            },
            tz: "Europe/Rome".into(),
            population: 0,
        };
        t.cities = vec![rome.clone()];
        // 2026-01-15 and 2026-07-15, 12:00 UTC: winter (+01:00) and summer (+02:00).
        for (at_ms, rome_s) in [(1_768_478_400_000_i64, 3600), (1_784_116_800_000, 7200)] {
            let row = |tz: &str, offset_s: i32| {
                let mut v = answer(41.9, 12.5, tz, "X", "IT", &[], Verdict::Consistent, 5);
                v.created_at_unix_ms = at_ms;
                v.solution.timezone.utc_offset_s = offset_s;
                let v = LocateLine::Located(Box::new(v));
                compare(&t, "10.77.1.9".parse().unwrap(), Some(&v), 1.0, None)
            };
            assert!(row("Europe/Zurich", rome_s).tz_match, "Zurich for Rome");
            assert!(row("Europe/Rome", rome_s).tz_match);
            assert!(
                !row("Europe/London", rome_s - 3600).tz_match,
                "London for Rome"
            );
            assert!(
                !row("Europe/Rome", rome_s - 3600).tz_match,
                "the right name with a wrong offset"
            );
        }
        assert!(!offset_matches(["Not/AZone"].into_iter(), 0, 1));
        assert!(offset_matches(["Etc/UTC"].into_iter(), 0, 0), "0 means now");
    }
}
