//! Leave-one-out evaluation on a [`Dataset`]: each node with enough incoming RTTs is in turn
//! the target; every other node that measured it is a landmark; calibration uses only RTTs
//! that do not involve the target.

use std::collections::HashMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::delay::{Bestline, Calibration};
use crate::enrich::{enricher, round1, utc_offset_s};
use crate::solve::{solve, Kind, Measurement, Method, Solution, SolveOptions};
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
    /// The solution's calibrated 50% and 90% radii, km.
    #[serde(default)]
    pub radius_50_km: Option<f64>,
    #[serde(default)]
    pub radius_90_km: Option<f64>,
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

/// What the solver is given for one target of the leave-one-out.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetInput {
    /// The target (index into [`Dataset::nodes`]).
    pub target: usize,
    /// The target's RTTs: the minimum per landmark that measured it (rows `landmark ->
    /// target`), landmarks left out as faster than light excluded.
    pub measurements: Vec<Measurement>,
    /// Landmarks that measured the target but were left out because their RTTs to other
    /// landmarks are faster than light for the declared positions.
    pub flagged: Vec<usize>,
    /// Per-landmark bestlines ([`Method::Bestline`] only), fitted on RTTs that do not
    /// involve the target.
    pub calibration: Option<Calibration>,
}

/// A data set's RTTs indexed for the leave-one-out.
pub struct LeaveOneOut<'a> {
    ds: &'a Dataset,
    /// Per node: (other node, distance km, minimum RTT over both directions).
    by_node: Vec<Vec<(usize, f64, f64)>>,
    /// Per target: minimum RTT per source that measured it.
    incoming: Vec<HashMap<usize, f64>>,
    /// Pairs whose RTT is faster than light for the declared positions.
    impossible: Vec<(usize, usize)>,
}

impl<'a> LeaveOneOut<'a> {
    /// Indexes `ds`.
    pub fn new(ds: &'a Dataset) -> Self {
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
        let mut pairs: Vec<((usize, usize), f64)> = pair_min.into_iter().collect();
        pairs.sort_by_key(|p| p.0);
        let mut by_node: Vec<Vec<(usize, f64, f64)>> = vec![Vec::new(); n];
        for ((a, b), rtt) in pairs {
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
        Self {
            ds,
            by_node,
            incoming,
            impossible,
        }
    }

    /// Number of landmarks that measured `target`.
    pub fn seen_by(&self, target: usize) -> usize {
        self.incoming[target].len()
    }

    /// The solver's input for `target`. Only the target's own measurements (rows
    /// `landmark -> target`) involve the target; the landmarks left out and the bestlines
    /// come from RTTs among the other nodes.
    pub fn input(&self, target: usize, method: Method) -> TargetInput {
        let t = target;
        let seen_by = &self.incoming[t];
        let mut landmarks: Vec<usize> = seen_by.keys().copied().collect();
        landmarks.sort_unstable();
        // Landmarks whose RTTs to other landmarks are faster than light for their declared
        // positions are left out, as the coordinator does with its probes (RTTs among the
        // landmarks only, never the target's).
        let flagged_all = blame(
            self.impossible
                .iter()
                .copied()
                .filter(|&(a, b)| a != t && b != t)
                .collect(),
        );
        let flagged: Vec<usize> = landmarks
            .iter()
            .copied()
            .filter(|l| flagged_all.contains(l))
            .collect();
        landmarks.retain(|l| !flagged_all.contains(l));
        let calibration = (method == Method::Bestline).then(|| {
            let lines = landmarks
                .iter()
                .filter_map(|&l| {
                    let pts: Vec<(f64, f64)> = self.by_node[l]
                        .iter()
                        .filter(|p| p.0 != t)
                        .map(|p| (p.1, p.2))
                        .collect();
                    Bestline::fit(&pts).map(|b| (self.ds.nodes[l].id.clone(), b))
                })
                .collect();
            Calibration::from_lines(lines)
        });
        let measurements = landmarks
            .iter()
            .map(|&l| Measurement {
                landmark: self.ds.nodes[l].id.clone(),
                pos: self.ds.nodes[l].pos,
                rtt_ms: seen_by[&l],
                kind: Kind::Echo,
            })
            .collect();
        TargetInput {
            target,
            measurements,
            flagged,
            calibration,
        }
    }
}

/// Runs leave-one-out over every node with at least `min_landmarks` incoming RTTs.
pub fn leave_one_out(ds: &Dataset, opts: &EvalOptions) -> Summary {
    let loo = LeaveOneOut::new(ds);
    let mut rows = Vec::new();
    let mut empty = 0;
    let mut seconds = 0.0;
    for t in 0..ds.nodes.len() {
        if loo.seen_by(t) < opts.min_landmarks.max(1) {
            continue;
        }
        let started = Instant::now();
        let input = loo.input(t, opts.method);
        let so = SolveOptions {
            method: opts.method,
            calibration: input.calibration,
            region_geometry: false,
            timezone_shares: false,
            bestline_tolerance: opts.bestline_tolerance,
            at_unix_s: Some(opts.at_unix_s),
            ..SolveOptions::default()
        };
        let result = solve(&input.measurements, &so);
        let elapsed = started.elapsed().as_secs_f64();
        seconds += elapsed;
        let Ok(mut sol) = result else {
            empty += 1;
            continue;
        };
        note_flagged(ds, &input.flagged, &mut sol);
        rows.push(target_row(ds, t, &sol, elapsed, opts.at_unix_s));
    }
    summarize(opts.method, rows, empty, seconds)
}

/// Adds the landmarks left out as faster than light to `sol.dropped`.
pub fn note_flagged(ds: &Dataset, flagged: &[usize], sol: &mut Solution) {
    for &f in flagged {
        sol.dropped.push(crate::solve::Dropped {
            landmark: ds.nodes[f].id.clone(),
            reason: "its RTTs to other landmarks are faster than light for the declared positions"
                .into(),
        });
    }
}

/// The outcome row of target `t` (index into `ds.nodes`) answered by `sol`.
pub fn target_row(
    ds: &Dataset,
    t: usize,
    sol: &Solution,
    elapsed_s: f64,
    at_unix_s: i64,
) -> TargetRow {
    let e = enricher();
    let truth = ds.nodes[t].pos;
    let tz_true = e.tz_name(truth).to_string();
    let off = |z: &str| utc_offset_s(z, at_unix_s);
    let country_true = e.nearest_city(truth).country.clone();
    TargetRow {
        id: ds.nodes[t].id.clone(),
        label: ds.nodes[t].label.clone(),
        true_lat: truth.lat,
        true_lon: truth.lon,
        est_lat: sol.estimate.lat,
        est_lon: sol.estimate.lon,
        error_km: round1(distance_km(truth, sol.estimate)),
        radius_km: sol.radius_km,
        region_km2: sol.region_km2,
        radius_50_km: sol.radius_50_km,
        radius_90_km: sol.radius_90_km,
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
        solve_ms: (elapsed_s * 1e5).round() / 100.0,
    }
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

    /// Deterministic noise in [0, 1) for (a, b, salt).
    fn noise(a: usize, b: usize, salt: u64) -> f64 {
        let mut x = (a as u64) << 32 ^ (b as u64) << 8 ^ salt;
        x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 32;
        (x % 10_000) as f64 / 10_000.0
    }

    /// Eleven hosts, every ordered pair measured (noisy, slower than light), and "hn"
    /// mislabelled in Honduras while it answers European hosts in a few ms.
    fn mesh() -> Dataset {
        let nodes = vec![
            node("par", 48.86, 2.35),
            node("lon", 51.5, -0.12),
            node("mad", 40.4, -3.7),
            node("ber", 52.52, 13.4),
            node("rom", 41.9, 12.5),
            node("war", 52.23, 21.0),
            node("sto", 59.33, 18.07),
            node("ath", 37.98, 23.73),
            node("ist", 41.0, 28.98),
            node("dub", 53.35, -6.26),
            node("hn", 15.8, -86.8),
        ];
        let hn = 10;
        let mut rtts = Vec::new();
        for a in 0..nodes.len() {
            for b in 0..nodes.len() {
                if a == b {
                    continue;
                }
                let d = if a == hn || b == hn {
                    // Really in Frankfurt.
                    let fra = LatLon::new(50.11, 8.68);
                    distance_km(fra, nodes[if a == hn { b } else { a }].pos)
                } else {
                    distance_km(nodes[a].pos, nodes[b].pos)
                };
                let rtt_ms = d / crate::delay::FIBRE_KM_PER_MS_RTT * (1.3 + 0.6 * noise(a, b, 1))
                    + 0.5
                    + 4.0 * noise(a, b, 2);
                rtts.push(crate::dataset::Rtt {
                    src: a,
                    dst: b,
                    rtt_ms,
                });
            }
        }
        Dataset { nodes, rtts }
    }

    /// A new RTT for a row.
    type Change = Box<dyn Fn(&crate::dataset::Rtt) -> f64>;

    /// `ds` with every row `f` selects replaced by `g(row)`.
    fn with_rows(
        ds: &Dataset,
        f: impl Fn(&crate::dataset::Rtt) -> bool,
        g: impl Fn(&crate::dataset::Rtt) -> f64,
    ) -> Dataset {
        let mut out = ds.clone();
        for r in out.rtts.iter_mut().filter(|r| f(r)) {
            r.rtt_ms = g(r);
        }
        out
    }

    /// What of a target's input must not depend on the target's RTTs: the landmarks kept,
    /// those left out, and every bestline.
    fn calibration_of(input: &TargetInput) -> (Vec<String>, Vec<usize>, Option<Calibration>) {
        (
            input
                .measurements
                .iter()
                .map(|m| m.landmark.clone())
                .collect(),
            input.flagged.clone(),
            input.calibration.clone(),
        )
    }

    #[test]
    fn calibration_for_a_target_never_sees_the_targets_rtts() {
        let ds = mesh();
        let base = LeaveOneOut::new(&ds);
        let involves = |t: usize| move |r: &crate::dataset::Rtt| r.src == t || r.dst == t;
        for t in 0..ds.nodes.len() {
            let want = base.input(t, Method::Bestline);
            assert!(want.measurements.len() >= 8, "{t}: {want:?}");
            let cal = want.calibration.as_ref().unwrap();
            assert_eq!(
                cal.len(),
                want.measurements.len(),
                "every landmark calibrated"
            );
            if t != 10 {
                assert_eq!(want.flagged, vec![10], "hn is left out for {t}");
            }
            // A landmark other than hn whose RTT to the target will be made impossible.
            let l1 = want.measurements[0].landmark.clone();
            let l1 = ds.nodes.iter().position(|n| n.id == l1).unwrap();
            // Every row involving the target (it measures, or is measured): ...
            let changes: [(&str, Change); 3] = [
                // ... scaled anywhere from 2% (faster than light) to 3x,
                (
                    "scaled",
                    Box::new(|r| r.rtt_ms * (0.02 + 3.0 * noise(r.src, r.dst, 3))),
                ),
                // ... all faster than light,
                ("impossible", Box::new(|r| r.rtt_ms * 0.01)),
                // ... slower, but the pair with l1 alone faster than light (a leak into the
                // faster-than-light rule would leave l1 out).
                (
                    "one impossible",
                    Box::new(move |r| {
                        if r.src == l1 || r.dst == l1 {
                            0.01
                        } else {
                            r.rtt_ms * 1.5
                        }
                    }),
                ),
            ];
            for (what, g) in &changes {
                let changed = with_rows(&ds, involves(t), g);
                let got = LeaveOneOut::new(&changed).input(t, Method::Bestline);
                assert_eq!(
                    calibration_of(&got),
                    calibration_of(&want),
                    "target {t}: rows involving it {what} changed its calibration"
                );
                // The change did reach the target's own measurements.
                assert_ne!(got.measurements, want.measurements, "{t} {what}");
            }
            // Rows the target measured itself (target -> landmark) are not its
            // measurements: changing only them changes nothing of its evaluation.
            let opts = EvalOptions {
                method: Method::Bestline,
                min_landmarks: 3,
                at_unix_s: 0,
                bestline_tolerance: crate::solve::DEFAULT_BESTLINE_TOLERANCE,
            };
            let changed = with_rows(&ds, |r| r.src == t, |r| r.rtt_ms * 0.05);
            assert_eq!(
                LeaveOneOut::new(&changed).input(t, Method::Bestline),
                want,
                "target {t}"
            );
            let row = |ds: &Dataset| {
                let s = leave_one_out(ds, &opts);
                let mut r = serde_json::to_value(
                    s.per_target
                        .iter()
                        .find(|r| r.id == ds.nodes[t].id)
                        .unwrap(),
                )
                .unwrap();
                r["solve_ms"] = serde_json::Value::Null;
                r
            };
            assert_eq!(row(&changed), row(&ds), "target {t}");
        }
    }

    #[test]
    fn calibration_does_follow_the_rtts_among_landmarks() {
        // The control of the test above: a row between two landmarks of the target (not
        // involving it) does change its calibration, so equal calibrations there mean
        // something.
        let ds = mesh();
        let t = 0;
        let want = LeaveOneOut::new(&ds).input(t, Method::Bestline);
        let (a, b) = (1, 2);
        // RTT exactly on the sound baseline: a's and b's lines must drop to it.
        let d = distance_km(ds.nodes[a].pos, ds.nodes[b].pos);
        let base = d / crate::delay::FIBRE_KM_PER_MS_RTT;
        let changed = with_rows(&ds, |r| (r.src, r.dst) == (a, b), |_| base);
        let got = LeaveOneOut::new(&changed).input(t, Method::Bestline);
        let (cw, cg) = (want.calibration.unwrap(), got.calibration.unwrap());
        assert_ne!(cg.line("lon"), cw.line("lon"));
        assert_ne!(cg.line("mad"), cw.line("mad"));
        assert_eq!(cg.line("ber"), cw.line("ber"));
        assert_eq!(got.measurements, want.measurements);
        // An impossible RTT between a and b: the isolated pair leaves both out.
        let changed = with_rows(&ds, |r| (r.src, r.dst) == (a, b), |_| 0.1);
        let got = LeaveOneOut::new(&changed).input(t, Method::Bestline);
        assert_eq!(got.flagged, vec![1, 2, 10]);
    }
}
