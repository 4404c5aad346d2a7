//! How often the MaxMind verdict is false, offline, on a measured RTT mesh.
//!
//! The lab's replay (`geoloc lab demo --replay DIR`) puts probes and targets on the
//! nodes of a `nodes.csv`/`rtts.csv` mesh and plays the measured RTTs; with no settling,
//! every probe answers, a mislabelled one included. This evaluation runs the same engine
//! ([`solve`]) on the same RTTs without the emulator: for each random set of `k` probes and
//! each other node as the target, the probes' declared positions and their RTTs to the
//! target (minimum of both directions, as the replay plays them) are solved twice:
//!
//! - with the target's **true** position as the GeoIP record: the verdict must never be
//!   `provably-wrong` (a "false proof");
//! - with a **wrong** point [`WRONG_KM`] away (random bearing): how often it is proved wrong
//!   (the verdict's power).
//!
//! No landmark is filtered beforehand (no vetting, no faster-than-light check among the
//! probes): this is the worst case the verdict must survive.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::maxmind::{GeoIpRecord, Ruling, Verdict};
use crate::solve::{solve, Kind, Measurement, Method, SolveOptions};
use crate::sphere::destination;

/// Distance of the deliberately wrong point from the truth, km (the lab's wrong `.mmdb`
/// entries are at least 5,000 km off).
pub const WRONG_KM: f64 = 6000.0;

/// Counts of verdicts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub consistent: usize,
    pub likely_wrong: usize,
    pub provably_wrong: usize,
    pub no_data: usize,
}

impl Counts {
    fn add(&mut self, v: Verdict) {
        match v {
            Verdict::Consistent => self.consistent += 1,
            Verdict::LikelyWrong => self.likely_wrong += 1,
            Verdict::ProvablyWrong => self.provably_wrong += 1,
            Verdict::NoData => self.no_data += 1,
        }
    }
}

/// A `provably-wrong` verdict on a target's true position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FalseProof {
    pub set: usize,
    pub target: String,
    pub rulings: Vec<Ruling>,
}

/// The figures for one probe count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictRow {
    /// Probes per set.
    pub probes: usize,
    /// Random probe sets drawn.
    pub sets: usize,
    /// Solved (set, target) pairs.
    pub solved: usize,
    /// Verdicts on the true position: `provably_wrong` must be 0.
    pub truth: Counts,
    /// Verdicts on the declared position of targets whose label is certainly wrong (their
    /// RTTs to two or more other nodes are faster than light for it, [`mislabelled`]): there
    /// `provably-wrong` is right, so they are counted apart.
    pub mislabelled_truth: Counts,
    /// Verdicts on a point [`WRONG_KM`] away.
    pub wrong: Counts,
    /// Solutions called anycast (every target of the mesh is unicast).
    pub anycast: usize,
    /// Solutions reporting a small group as "anycast or colluding probes".
    pub collusion: usize,
    /// Every false proof, for the record.
    pub false_proofs: Vec<FalseProof>,
}

impl VerdictRow {
    /// One markdown table row: probes, sets, solved, truth (provably/likely/consistent),
    /// wrong point (provably/likely/consistent), anycast, collusion.
    pub fn markdown(&self) -> String {
        let pct = |x: usize| 100.0 * x as f64 / self.solved.max(1) as f64;
        format!(
            "| {} | {} | {} | {} | {} ({:.1}%) | {} ({:.1}%) | {} ({:.1}%) | {} | {} |",
            self.probes,
            self.sets,
            self.solved,
            self.truth.provably_wrong,
            self.truth.likely_wrong,
            pct(self.truth.likely_wrong),
            self.wrong.provably_wrong,
            pct(self.wrong.provably_wrong),
            self.wrong.likely_wrong,
            pct(self.wrong.likely_wrong),
            self.anycast,
            self.collusion,
        )
    }

    /// The header of [`VerdictRow::markdown`]'s table.
    pub const MARKDOWN_HEADER: &'static str = "| probes | sets | solved | truth provably-wrong (must be 0) | truth likely-wrong | wrong point provably-wrong | wrong point likely-wrong | anycast | collusion |\n|---|---|---|---|---|---|---|---|---|";
}

/// A small deterministic generator (splitmix64): the engine has no `rand` dependency and
/// needs only reproducible draws.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `k` distinct indices of `0..n` (partial Fisher-Yates), in draw order.
    pub fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        let k = k.min(n);
        for i in 0..k {
            let j = i + self.below(n - i);
            all.swap(i, j);
        }
        all.truncate(k);
        all
    }
}

/// Minimum RTT per unordered pair of nodes, both directions.
pub fn pair_rtts(ds: &Dataset) -> HashMap<(usize, usize), f64> {
    let mut out: HashMap<(usize, usize), f64> = HashMap::new();
    for r in &ds.rtts {
        if r.src == r.dst || !r.rtt_ms.is_finite() {
            continue;
        }
        let e = out
            .entry((r.src.min(r.dst), r.src.max(r.dst)))
            .or_insert(f64::INFINITY);
        *e = e.min(r.rtt_ms);
    }
    out
}

/// Pairs of nodes (a < b) whose minimum RTT is faster than light for their declared
/// positions ([`crate::delay::violates_speed_of_light`]), sorted.
pub fn impossible_pairs(ds: &Dataset, pairs: &HashMap<(usize, usize), f64>) -> Vec<(usize, usize)> {
    let mut bad: Vec<(usize, usize)> = pairs
        .iter()
        .filter(|(&(a, b), &rtt)| {
            crate::delay::violates_speed_of_light(ds.nodes[a].pos, ds.nodes[b].pos, rtt)
        })
        .map(|(&p, _)| p)
        .collect();
    bad.sort_unstable();
    bad
}

/// Nodes whose declared position is certainly wrong: blamed greedily (the node in the most
/// [`impossible_pairs`] first, its pairs set aside, and so on) while a node is in two or
/// more of the remaining pairs. A pair that violates alone (returned second) does not
/// say which of its two nodes is wrong: both stay "true" positions in [`evaluate`], so a
/// `provably-wrong` verdict on either counts as false (the conservative choice).
pub fn mislabelled(
    ds: &Dataset,
    pairs: &HashMap<(usize, usize), f64>,
) -> (Vec<usize>, Vec<(usize, usize)>) {
    let mut bad = impossible_pairs(ds, pairs);
    let mut flagged = Vec::new();
    loop {
        let mut count: HashMap<usize, usize> = HashMap::new();
        for &(a, b) in &bad {
            *count.entry(a).or_default() += 1;
            *count.entry(b).or_default() += 1;
        }
        let Some((&worst, &n)) = count
            .iter()
            .max_by_key(|(k, v)| (**v, std::cmp::Reverse(**k)))
        else {
            break;
        };
        if n < 2 {
            break;
        }
        flagged.push(worst);
        bad.retain(|&(a, b)| a != worst && b != worst);
    }
    flagged.sort_unstable();
    (flagged, bad)
}

/// Runs the evaluation for `k` probes, `sets` random sets drawn from `seed`; targets with
/// fewer than `min_landmarks` measuring probes are skipped.
pub fn evaluate(
    ds: &Dataset,
    pairs: &HashMap<(usize, usize), f64>,
    k: usize,
    sets: usize,
    seed: u64,
    min_landmarks: usize,
) -> VerdictRow {
    let (bad_labels, _) = mislabelled(ds, pairs);
    let n = ds.nodes.len();
    let mut rng = SplitMix::new(seed ^ (k as u64).wrapping_mul(0x1000_0000_01B3));
    let mut row = VerdictRow {
        probes: k,
        sets,
        solved: 0,
        truth: Counts::default(),
        mislabelled_truth: Counts::default(),
        wrong: Counts::default(),
        anycast: 0,
        collusion: 0,
        false_proofs: vec![],
    };
    for set in 0..sets {
        let probes = rng.sample(n, k);
        for t in 0..n {
            if probes.contains(&t) {
                continue;
            }
            let ms: Vec<Measurement> = probes
                .iter()
                .filter_map(|&p| {
                    pairs.get(&(p.min(t), p.max(t))).map(|&rtt_ms| Measurement {
                        landmark: ds.nodes[p].id.clone(),
                        pos: ds.nodes[p].pos,
                        rtt_ms,
                        kind: Kind::Echo,
                    })
                })
                .collect();
            if ms.len() < min_landmarks.max(1) {
                continue;
            }
            let truth = ds.nodes[t].pos;
            let wrong = destination(truth, rng.unit() * 360.0, WRONG_KM);
            let judge = |p: crate::sphere::LatLon| {
                let opts = SolveOptions {
                    method: Method::Cbg,
                    geoip: Some(GeoIpRecord {
                        lat: p.lat,
                        lon: p.lon,
                        city: None,
                        country: None,
                        accuracy_radius_km: None,
                    }),
                    geoip_checked: true,
                    region_geometry: false,
                    timezone_shares: false,
                    at_unix_s: Some(0),
                    ..SolveOptions::default()
                };
                solve(&ms, &opts)
            };
            let (Ok(on_truth), Ok(on_wrong)) = (judge(truth), judge(wrong)) else {
                continue;
            };
            row.solved += 1;
            row.anycast += usize::from(on_truth.anycast);
            row.collusion += usize::from(on_truth.collusion.is_some());
            let (Some(mt), Some(mw)) = (on_truth.maxmind, on_wrong.maxmind) else {
                continue;
            };
            row.wrong.add(mw.verdict);
            if bad_labels.contains(&t) {
                row.mislabelled_truth.add(mt.verdict);
                continue;
            }
            row.truth.add(mt.verdict);
            if mt.verdict == Verdict::ProvablyWrong {
                row.false_proofs.push(FalseProof {
                    set,
                    target: ds.nodes[t].id.clone(),
                    rulings: mt.rulings,
                });
            }
        }
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{Node, Rtt};
    use crate::sphere::{distance_km, LatLon};

    #[test]
    fn sample_is_distinct_and_reproducible() {
        let a = SplitMix::new(7).sample(50, 20);
        let b = SplitMix::new(7).sample(50, 20);
        assert_eq!(a, b);
        let mut s = a.clone();
        s.sort_unstable();
        s.dedup();
        assert_eq!(s.len(), 20);
        assert!(s.iter().all(|&i| i < 50));
        assert_eq!(SplitMix::new(1).sample(3, 10).len(), 3);
    }

    #[test]
    fn a_lone_impossible_pair_blames_neither_node() {
        // Auckland and Wellington (494 km) in 0.64 ms, both fine with Sydney: which label
        // is wrong is unknown, so neither is called mislabelled.
        let node = |id: &str, lat, lon| Node {
            id: id.into(),
            pos: LatLon::new(lat, lon),
            label: String::new(),
            ip: String::new(),
        };
        let ds = Dataset {
            nodes: vec![
                node("akl", -36.84, 174.74),
                node("wlg", -41.29, 174.78),
                node("syd", -33.87, 151.21),
            ],
            rtts: vec![
                Rtt {
                    src: 0,
                    dst: 1,
                    rtt_ms: 0.64,
                },
                Rtt {
                    src: 0,
                    dst: 2,
                    rtt_ms: 30.0,
                },
                Rtt {
                    src: 2,
                    dst: 1,
                    rtt_ms: 31.0,
                },
            ],
        };
        let pairs = pair_rtts(&ds);
        assert_eq!(impossible_pairs(&ds, &pairs), [(0, 1)]);
        assert_eq!(mislabelled(&ds, &pairs), (vec![], vec![(0, 1)]));
    }

    #[test]
    fn row_json_schema() {
        let counts = |c, l, p| Counts {
            consistent: c,
            likely_wrong: l,
            provably_wrong: p,
            no_data: 0,
        };
        let row = VerdictRow {
            probes: 20,
            sets: 1,
            solved: 3,
            truth: counts(2, 0, 1),
            mislabelled_truth: counts(0, 0, 1),
            wrong: counts(0, 1, 2),
            anycast: 0,
            collusion: 0,
            false_proofs: vec![FalseProof {
                set: 0,
                target: "190".into(),
                rulings: vec![Ruling {
                    landmark: "211".into(),
                    distance_km: 537.1,
                    bound_km: 271.5,
                }],
            }],
        };
        insta::assert_json_snapshot!("verdict_row", [row]);
    }

    /// A small mesh around Rome with one server labelled in Madrid but sitting in Rome:
    /// the evaluation finds no false proof, and proves the far point wrong.
    #[test]
    fn a_mislabelled_node_gives_no_false_proof() {
        let cities = [
            ("rome", 41.9028, 12.4964),
            ("paris", 48.8566, 2.3522),
            ("berlin", 52.52, 13.405),
            ("vienna", 48.2082, 16.3738),
            ("athens", 37.9838, 23.7275),
            ("london", 51.5074, -0.1278),
            ("warsaw", 52.2297, 21.0122),
            ("madrid-label", 40.4168, -3.7038),
        ];
        let true_pos = |i: usize| {
            if i == 7 {
                LatLon::new(41.95, 12.55) // really in Rome
            } else {
                LatLon::new(cities[i].1, cities[i].2)
            }
        };
        let nodes: Vec<Node> = cities
            .iter()
            .map(|&(id, lat, lon)| Node {
                id: id.into(),
                pos: LatLon::new(lat, lon),
                label: String::new(),
                ip: String::new(),
            })
            .collect();
        let mut rtts = Vec::new();
        for a in 0..nodes.len() {
            for b in 0..nodes.len() {
                if a != b {
                    let d = distance_km(true_pos(a), true_pos(b));
                    rtts.push(Rtt {
                        src: a,
                        dst: b,
                        rtt_ms: 2.0 + 1.6 * d / 100.0,
                    });
                }
            }
        }
        let ds = Dataset { nodes, rtts };
        let pairs = pair_rtts(&ds);
        let row = evaluate(&ds, &pairs, 7, 6, 3, 3);
        assert!(row.solved > 0);
        assert_eq!(row.truth.provably_wrong, 0, "{:?}", row.false_proofs);
        assert_eq!(mislabelled(&ds, &pairs), (vec![7], vec![]));
        assert!(row.wrong.provably_wrong > 0, "{row:?}");
    }
}
