//! Leave-one-out evaluation on a [`Dataset`]: each node with enough incoming RTTs is in turn
//! the target; every other node that measured it is a landmark; calibration uses only RTTs
//! that do not involve the target.

use std::collections::HashMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::delay::{Bestline, Calibration};
use crate::enrich::{enricher, round1, utc_offset_s};
use crate::solve::{solve, Kind, Measurement, Method, SolveOptions};
use crate::sphere::distance_km;

/// One target's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetRow {
    pub id: String,
    pub label: String,
    pub true_lat: f64,
    pub true_lon: f64,
    pub est_lat: f64,
    pub est_lon: f64,
    pub error_km: f64,
    pub radius_km: f64,
    pub region_km2: f64,
    /// The truth satisfies every constraint of the reported region.
    pub contained: bool,
    pub anycast: bool,
    pub landmarks: usize,
    pub used: usize,
    /// Landmarks left out, with the reason.
    pub dropped: Vec<crate::solve::Dropped>,
    pub tz_true: String,
    pub tz_est: String,
    pub tz_match: bool,
    pub country_true: String,
    pub country_est: String,
    pub country_match: bool,
    pub solve_ms: f64,
}

/// The summary written by `geoloc eval --json` (schema: `engine/SCHEMA.md`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub method: Method,
    pub targets: usize,
    pub median_km: f64,
    pub p80_km: f64,
    pub mean_km: f64,
    /// Shares of targets, 0–1.
    pub within_40km: f64,
    pub within_100km: f64,
    pub contained: f64,
    /// Targets without an answer (counts).
    pub empty: usize,
    pub anycast: usize,
    pub tz_match: f64,
    pub country_match: f64,
    /// Time spent solving (calibration included, data loading excluded), seconds.
    pub seconds: f64,
    pub per_target: Vec<TargetRow>,
}

/// Evaluation options.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub method: Method,
    /// Targets with fewer landmarks are skipped.
    pub min_landmarks: usize,
    /// Instant for UTC offsets, seconds since 1970 UTC.
    pub at_unix_s: i64,
    /// See [`SolveOptions::bestline_tolerance`].
    pub bestline_tolerance: f64,
}

/// Percentile (nearest rank on the sorted values), `q` in 0–1.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let k = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[k]
}

/// Runs leave-one-out over every node with at least `min_landmarks` incoming RTTs.
pub fn leave_one_out(ds: &Dataset, opts: &EvalOptions) -> Summary {
    let n = ds.nodes.len();
    // Minimum RTT per unordered pair, and per node the pairs it is part of.
    let mut pair_min: HashMap<(usize, usize), f64> = HashMap::new();
    for r in &ds.rtts {
        if r.src == r.dst {
            continue;
        }
        let key = (r.src.min(r.dst), r.src.max(r.dst));
        let e = pair_min.entry(key).or_insert(f64::INFINITY);
        *e = e.min(r.rtt_ms);
    }
    let mut by_node: Vec<Vec<(usize, f64, f64)>> = vec![Vec::new(); n];
    for (&(a, b), &rtt) in &pair_min {
        let d = distance_km(ds.nodes[a].pos, ds.nodes[b].pos);
        by_node[a].push((b, d, rtt));
        by_node[b].push((a, d, rtt));
    }
    // Incoming RTTs per target: min per source.
    let mut incoming: Vec<HashMap<usize, f64>> = vec![HashMap::new(); n];
    for r in &ds.rtts {
        if r.src != r.dst {
            let e = incoming[r.dst].entry(r.src).or_insert(f64::INFINITY);
            *e = e.min(r.rtt_ms);
        }
    }
    let impossible = impossible_pairs(&by_node, &ds.nodes);
    let e = enricher();
    let mut rows = Vec::new();
    let mut empty = 0;
    let mut seconds = 0.0;
    for (t, seen_by) in incoming.iter().enumerate().take(n) {
        if seen_by.len() < opts.min_landmarks.max(1) {
            continue;
        }
        let started = Instant::now();
        let mut landmarks: Vec<usize> = seen_by.keys().copied().collect();
        landmarks.sort_unstable();
        // Landmarks whose RTTs to other landmarks are faster than light for their declared
        // positions are left out, as the coordinator does with its probes (RTTs among the
        // landmarks only, never the target's).
        let flagged = blame(
            impossible
                .iter()
                .copied()
                .filter(|&(a, b)| a != t && b != t)
                .collect(),
        );
        landmarks.retain(|l| !flagged.contains(l));
        let calibration = (opts.method == Method::Bestline).then(|| {
            let lines = landmarks
                .iter()
                .filter_map(|&l| {
                    let pts: Vec<(f64, f64)> = by_node[l]
                        .iter()
                        .filter(|p| p.0 != t)
                        .map(|p| (p.1, p.2))
                        .collect();
                    Bestline::fit(&pts).map(|b| (ds.nodes[l].id.clone(), b))
                })
                .collect();
            Calibration::from_lines(lines)
        });
        let ms: Vec<Measurement> = landmarks
            .iter()
            .map(|&l| Measurement {
                landmark: ds.nodes[l].id.clone(),
                pos: ds.nodes[l].pos,
                rtt_ms: seen_by[&l],
                kind: Kind::Echo,
            })
            .collect();
        let so = SolveOptions {
            method: opts.method,
            calibration,
            region_geometry: false,
            timezone_shares: false,
            bestline_tolerance: opts.bestline_tolerance,
            at_unix_s: Some(opts.at_unix_s),
            ..SolveOptions::default()
        };
        let result = solve(&ms, &so);
        let elapsed = started.elapsed().as_secs_f64();
        seconds += elapsed;
        let Ok(mut sol) = result else {
            empty += 1;
            continue;
        };
        for &f in &flagged {
            if seen_by.contains_key(&f) {
                sol.dropped.push(crate::solve::Dropped {
                    landmark: ds.nodes[f].id.clone(),
                    reason: "its RTTs to other landmarks are faster than light for the declared positions".into(),
                });
            }
        }
        let truth = ds.nodes[t].pos;
        let tz_true = e.tz_name(truth).to_string();
        let off = |z: &str| utc_offset_s(z, opts.at_unix_s);
        let country_true = e.nearest_city(truth).country.clone();
        rows.push(TargetRow {
            id: ds.nodes[t].id.clone(),
            label: ds.nodes[t].label.clone(),
            true_lat: truth.lat,
            true_lon: truth.lon,
            est_lat: sol.estimate.lat,
            est_lon: sol.estimate.lon,
            error_km: round1(distance_km(truth, sol.estimate)),
            radius_km: sol.radius_km,
            region_km2: sol.region_km2,
            contained: sol.region_contains(truth),
            anycast: sol.anycast,
            landmarks: sol.landmarks,
            used: sol.used,
            dropped: sol.dropped.clone(),
            tz_match: off(&tz_true) == Some(sol.timezone.utc_offset_s),
            tz_est: sol.timezone.iana.clone(),
            tz_true,
            country_match: country_true == sol.place.country,
            country_est: sol.place.country.clone(),
            country_true,
            solve_ms: (elapsed * 1e5).round() / 100.0,
        });
    }
    summarize(opts.method, rows, empty, seconds)
}

/// Landmarks to leave out because their RTTs to other landmarks (pairs not involving
/// `target`) are faster than light for the declared positions: the landmark in the most
/// violating pairs is blamed first, its pairs set aside, and so on; a pair violating alone
/// flags both of its landmarks.
pub fn faster_than_light(
    by_node: &[Vec<(usize, f64, f64)>],
    nodes: &[crate::dataset::Node],
    target: usize,
) -> Vec<usize> {
    blame(
        impossible_pairs(by_node, nodes)
            .into_iter()
            .filter(|&(a, b)| a != target && b != target)
            .collect(),
    )
}

/// Pairs (a < b) whose RTT is faster than light for their declared positions.
fn impossible_pairs(
    by_node: &[Vec<(usize, f64, f64)>],
    nodes: &[crate::dataset::Node],
) -> Vec<(usize, usize)> {
    let mut bad = Vec::new();
    for (a, pairs) in by_node.iter().enumerate() {
        for &(b, _, rtt) in pairs {
            if a < b && crate::delay::violates_speed_of_light(nodes[a].pos, nodes[b].pos, rtt) {
                bad.push((a, b));
            }
        }
    }
    bad
}

/// Greedy blame over impossible pairs (see [`faster_than_light`]).
fn blame(mut bad: Vec<(usize, usize)>) -> Vec<usize> {
    let mut flagged = Vec::new();
    while !bad.is_empty() {
        let mut count: HashMap<usize, usize> = HashMap::new();
        for &(a, b) in &bad {
            *count.entry(a).or_default() += 1;
            *count.entry(b).or_default() += 1;
        }
        let (&worst, &n) = count
            .iter()
            .max_by_key(|(k, v)| (**v, std::cmp::Reverse(**k)))
            .expect("non-empty");
        if n == 1 {
            // Only isolated pairs remain: nothing says which side is wrong.
            flagged.extend(bad.iter().flat_map(|&(a, b)| [a, b]));
            break;
        }
        flagged.push(worst);
        bad.retain(|&(a, b)| a != worst && b != worst);
    }
    flagged.sort_unstable();
    flagged.dedup();
    flagged
}

/// Aggregates per-target rows.
pub fn summarize(method: Method, rows: Vec<TargetRow>, empty: usize, seconds: f64) -> Summary {
    let mut errs: Vec<f64> = rows.iter().map(|r| r.error_km).collect();
    errs.sort_by(f64::total_cmp);
    let k = rows.len().max(1) as f64;
    let share = |f: &dyn Fn(&TargetRow) -> bool| {
        (rows.iter().filter(|r| f(r)).count() as f64 / k * 1000.0).round() / 1000.0
    };
    Summary {
        method,
        targets: rows.len(),
        median_km: round1(percentile(&errs, 0.5)),
        p80_km: round1(percentile(&errs, 0.8)),
        mean_km: round1(errs.iter().sum::<f64>() / k),
        within_40km: share(&|r| r.error_km <= 40.0),
        within_100km: share(&|r| r.error_km <= 100.0),
        contained: share(&|r| r.contained),
        empty,
        anycast: rows.iter().filter(|r| r.anycast).count(),
        tz_match: share(&|r| r.tz_match),
        country_match: share(&|r| r.country_match),
        seconds: (seconds * 1000.0).round() / 1000.0,
        per_target: rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Node;
    use crate::sphere::LatLon;

    fn node(id: &str, lat: f64, lon: f64) -> Node {
        Node {
            id: id.into(),
            pos: LatLon::new(lat, lon),
            label: String::new(),
            ip: String::new(),
        }
    }

    #[test]
    fn the_landmark_in_most_impossible_pairs_is_flagged() {
        // "hn" claims Honduras but answers Paris, London and Madrid in a few ms.
        let nodes = vec![
            node("par", 48.86, 2.35),
            node("lon", 51.5, -0.12),
            node("mad", 40.4, -3.7),
            node("hn", 15.8, -86.8),
            node("tgt", 50.0, 8.0),
        ];
        let d = |a: usize, b: usize| distance_km(nodes[a].pos, nodes[b].pos);
        let mut by_node: Vec<Vec<(usize, f64, f64)>> = vec![Vec::new(); nodes.len()];
        let mut add = |a: usize, b: usize, rtt: f64| {
            by_node[a].push((b, d(a, b), rtt));
            by_node[b].push((a, d(a, b), rtt));
        };
        add(0, 1, 8.0);
        add(0, 2, 20.0);
        add(1, 2, 25.0);
        add(3, 0, 5.0);
        add(3, 1, 6.0);
        add(3, 2, 9.0);
        add(4, 3, 1.0); // involves the target: never used
        assert_eq!(faster_than_light(&by_node, &nodes, 4), vec![3]);
        // With the target itself mislabelled, its pairs are ignored: nothing to flag.
        assert_eq!(faster_than_light(&by_node, &nodes, 3), Vec::<usize>::new());
    }
}
