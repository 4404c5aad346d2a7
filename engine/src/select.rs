//! Budgeted, phased choice of vantage points for any measurement source (own fleet, RIPE
//! Atlas, a data set): a few probes spread over the world first, then, round by round, the
//! probes nearest the region the answers so far leave, until the region stops shrinking or
//! the budget is spent.
//!
//! The engine does no I/O: [`Phased`] says which probes to ask next and the caller
//! measures them (ICMP from its agents, an Atlas measurement, a row of a data set), solves,
//! and hands the [`Solution`] back. [`run`] drives the loop for a synchronous source.
//!
//! # Units
//! Budgets and costs are counts of whatever the source charges: packets for an own fleet,
//! credits for RIPE Atlas. One probe asked costs [`PhasedOptions::cost_per_probe`] units.
//!
//! # References
//! The spread-then-nearest idea follows the two-stage selection of Hu, Heidemann, Pradkin,
//! "Towards geolocation of millions of IP addresses" (IMC 2012) and GeoResolver (CoNEXT 2025),
//! which reaches metro level with 50 well-chosen RIPE Atlas probes.

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::solve::{solve, Measurement, Solution, SolveOptions};
use crate::sphere::{distance_km, LatLon};

/// How a phased selection spends its budget.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PhasedOptions {
    /// Units (packets or credits) that may be spent in all, at least one probe's cost.
    pub budget: u64,
    /// Units one probe's measurement costs (e.g. 3 packets per ping, or Atlas credits).
    pub cost_per_probe: u64,
    /// Probes spread over the world in the first round (fewer when the budget is small:
    /// at most half of the probes it pays for, at least 3).
    pub first_round: usize,
    /// Fewest probes asked in a later round.
    pub round: usize,
    /// A later round asks at least this share of the probes asked so far (rounds grow, so a
    /// large budget needs few rounds).
    pub growth: f64,
    /// The selection stops when a round shrinks the region's area by less than this share.
    pub min_shrink: f64,
}

impl Default for PhasedOptions {
    fn default() -> Self {
        Self {
            budget: 50,
            cost_per_probe: 1,
            first_round: 10,
            round: 10,
            growth: 0.5,
            min_shrink: 0.05,
        }
    }
}

impl PhasedOptions {
    /// `PhasedOptions::default()` with a budget of `probes` probes at one unit each.
    pub fn probes(probes: usize) -> Self {
        Self {
            budget: probes as u64,
            ..Self::default()
        }
    }

    /// Checks every option; the error names the option.
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &'static str, reason: String| EngineError::InvalidOption { name, reason };
        if self.cost_per_probe == 0 {
            return Err(bad("cost_per_probe", "0 units: must be at least 1".into()));
        }
        if self.budget < self.cost_per_probe {
            return Err(bad(
                "budget",
                format!(
                    "{} units do not pay for one probe ({} units)",
                    self.budget, self.cost_per_probe
                ),
            ));
        }
        if self.first_round == 0 || self.round == 0 {
            return Err(bad("round", "a round must ask at least one probe".into()));
        }
        if !(self.growth.is_finite() && (0.0..=10.0).contains(&self.growth)) {
            return Err(bad(
                "growth",
                format!("{} is not a share from 0 to 10", self.growth),
            ));
        }
        if !(self.min_shrink.is_finite() && (0.0..1.0).contains(&self.min_shrink)) {
            return Err(bad(
                "min_shrink",
                format!("{} is not a share from 0 to below 1", self.min_shrink),
            ));
        }
        Ok(())
    }

    /// Probes the whole budget pays for.
    pub fn max_probes(&self) -> usize {
        (self.budget / self.cost_per_probe.max(1)) as usize
    }
}

/// Why the selection stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stop {
    /// The budget pays for no further probe.
    Budget,
    /// The last round shrank the region by less than [`PhasedOptions::min_shrink`].
    Converged,
    /// Every candidate probe was asked.
    Exhausted,
}

/// What a selection spent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spent {
    /// Probes asked.
    pub probes: usize,
    /// Units spent (packets or credits): `probes × cost_per_probe`.
    pub units: u64,
    /// The budget, units.
    pub budget: u64,
    /// Rounds of measurements.
    pub rounds: usize,
    pub stopped: Stop,
}

/// The state of a phased selection over candidate probes at `positions`.
#[derive(Debug, Clone)]
pub struct Phased {
    positions: Vec<LatLon>,
    opts: PhasedOptions,
    asked: Vec<usize>,
    is_asked: Vec<bool>,
    rounds: usize,
    last_area_km2: Option<f64>,
    stopped: Option<Stop>,
}

impl Phased {
    /// A selection over candidates at `positions` (indices into it are what
    /// [`Phased::next_round`] returns).
    ///
    /// # Errors
    /// [`EngineError::InvalidOption`] for options out of range; [`EngineError::InvalidMeasurement`]
    /// for a position off the globe.
    pub fn new(positions: &[LatLon], opts: PhasedOptions) -> Result<Self> {
        opts.validate()?;
        for (index, p) in positions.iter().enumerate() {
            LatLon::checked(p.lat, p.lon).map_err(|reason| EngineError::InvalidMeasurement {
                index,
                landmark: format!("candidate {index}"),
                reason,
            })?;
        }
        Ok(Self {
            positions: positions.to_vec(),
            opts,
            asked: Vec::new(),
            is_asked: vec![false; positions.len()],
            rounds: 0,
            last_area_km2: None,
            stopped: None,
        })
    }

    /// The probes to ask next (indices into the candidates), given the solution from every
    /// answer so far (`None` before the first round, or when no probe has answered yet).
    /// Empty when the selection is over; [`Phased::spent`] says why.
    pub fn next_round(&mut self, last: Option<&Solution>) -> Vec<usize> {
        if self.stopped.is_some() {
            return Vec::new();
        }
        let left = self.opts.max_probes().saturating_sub(self.asked.len());
        if left == 0 {
            self.stopped = Some(Stop::Budget);
            return Vec::new();
        }
        if self.asked.len() == self.positions.len() {
            self.stopped = Some(Stop::Exhausted);
            return Vec::new();
        }
        let round = match last {
            None if self.asked.is_empty() => {
                let n = self
                    .opts
                    .first_round
                    .min((self.opts.max_probes() / 2).max(3))
                    .min(left);
                self.spread(n)
            }
            None => {
                // Nobody answered: more spread probes.
                self.spread(self.opts.round.min(left))
            }
            Some(sol) => {
                if let Some(prev) = self.last_area_km2 {
                    if sol.region_km2 > prev * (1.0 - self.opts.min_shrink) {
                        self.stopped = Some(Stop::Converged);
                        return Vec::new();
                    }
                }
                self.last_area_km2 = Some(sol.region_km2);
                let n = self
                    .opts
                    .round
                    .max((self.asked.len() as f64 * self.opts.growth).ceil() as usize)
                    .min(left);
                self.nearest(sol, n)
            }
        };
        for &i in &round {
            self.is_asked[i] = true;
        }
        self.asked.extend_from_slice(&round);
        if !round.is_empty() {
            self.rounds += 1;
        }
        round
    }

    /// Probes asked so far, in the order asked.
    pub fn asked(&self) -> &[usize] {
        &self.asked
    }

    /// What was spent so far, and why the selection stopped (`Budget` while it runs).
    pub fn spent(&self) -> Spent {
        Spent {
            probes: self.asked.len(),
            units: self.asked.len() as u64 * self.opts.cost_per_probe,
            budget: self.opts.budget,
            rounds: self.rounds,
            stopped: self.stopped.unwrap_or(Stop::Budget),
        }
    }

    /// `n` candidates not yet asked, spread by farthest-point sampling: the first is the
    /// lowest index not asked, then each is the candidate farthest from all chosen and asked.
    fn spread(&self, n: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(n);
        let mut min_d: Vec<f64> = vec![f64::INFINITY; self.positions.len()];
        let seed: Vec<usize> = self.asked.clone();
        let add = |j: usize, min_d: &mut Vec<f64>| {
            for (i, d) in min_d.iter_mut().enumerate() {
                *d = d.min(distance_km(self.positions[i], self.positions[j]));
            }
        };
        for &j in &seed {
            add(j, &mut min_d);
        }
        while out.len() < n {
            let next = (0..self.positions.len())
                .filter(|&i| !self.is_asked[i] && !out.contains(&i))
                // Farthest from the chosen (ties: lowest index); none chosen: lowest index.
                .max_by(|&a, &b| min_d[a].total_cmp(&min_d[b]).then(b.cmp(&a)));
            let Some(next) = next else { break };
            out.push(next);
            add(next, &mut min_d);
        }
        out
    }

    /// `n` candidates not yet asked that cover the region of `sol`: among the candidates
    /// inside the region, farthest-point sampling away from every probe already asked (so
    /// that whichever is nearest the target is near it, and the next region shrinks around
    /// it); when fewer are inside, all of them and then those nearest the estimate.
    fn nearest(&self, sol: &Solution, n: usize) -> Vec<usize> {
        let (inside, outside): (Vec<usize>, Vec<usize>) = (0..self.positions.len())
            .filter(|&i| !self.is_asked[i])
            .partition(|&i| sol.region_contains(self.positions[i]));
        if inside.len() > n {
            let mut min_d: Vec<f64> = inside
                .iter()
                .map(|&i| {
                    self.asked
                        .iter()
                        .map(|&j| distance_km(self.positions[i], self.positions[j]))
                        .fold(f64::INFINITY, f64::min)
                })
                .collect();
            let mut out = Vec::with_capacity(n);
            let mut taken = vec![false; inside.len()];
            while out.len() < n {
                let Some(k) = (0..inside.len())
                    .filter(|&k| !taken[k])
                    .max_by(|&a, &b| min_d[a].total_cmp(&min_d[b]).then(b.cmp(&a)))
                else {
                    break;
                };
                taken[k] = true;
                out.push(inside[k]);
                let p = self.positions[inside[k]];
                for (m, d) in min_d.iter_mut().enumerate() {
                    *d = d.min(distance_km(self.positions[inside[m]], p));
                }
            }
            return out;
        }
        let mut out = inside;
        let mut rest: Vec<(f64, usize)> = outside
            .into_iter()
            .map(|i| (distance_km(self.positions[i], sol.estimate), i))
            .collect();
        rest.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        out.extend(rest.into_iter().take(n - out.len()).map(|x| x.1));
        out
    }
}

/// The answer of a phased selection: the last solution and what it cost.
#[derive(Debug, Clone)]
pub struct Phase {
    pub solution: Solution,
    pub spent: Spent,
}

/// Runs a phased selection with a synchronous source: `measure(indices)` returns the
/// measurements of the candidates asked (a candidate that did not answer returns nothing),
/// and every round is solved with `solve_opts` on all answers so far.
///
/// # Errors
/// What [`Phased::new`] returns; [`EngineError::NoMeasurements`] when no candidate answered.
pub fn run(
    positions: &[LatLon],
    opts: PhasedOptions,
    solve_opts: &SolveOptions,
    mut measure: impl FnMut(&[usize]) -> Vec<Measurement>,
) -> Result<Phase> {
    let mut phased = Phased::new(positions, opts)?;
    let mut answers: Vec<Measurement> = Vec::new();
    let mut last: Option<Solution> = None;
    loop {
        let round = phased.next_round(last.as_ref());
        if round.is_empty() {
            break;
        }
        answers.extend(measure(&round));
        if !answers.is_empty() {
            last = Some(solve(&answers, solve_opts)?);
        }
    }
    match last {
        Some(solution) => Ok(Phase {
            solution,
            spent: phased.spent(),
        }),
        None => Err(EngineError::NoMeasurements),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delay::FIBRE_KM_PER_MS_RTT;
    use crate::solve::Kind;
    use crate::sphere::destination;

    /// A grid of candidates every 5 degrees.
    fn grid() -> Vec<LatLon> {
        let mut v = Vec::new();
        for lat in (-60..=70).step_by(5) {
            for lon in (-180..180).step_by(5) {
                v.push(LatLon::new(lat as f64, lon as f64));
            }
        }
        v
    }

    fn quiet() -> SolveOptions {
        SolveOptions {
            region_geometry: false,
            timezone_shares: false,
            at_unix_s: Some(0),
            ..SolveOptions::default()
        }
    }

    /// RTT 1.5x the fibre time plus 1 ms.
    fn rtt(a: LatLon, b: LatLon) -> f64 {
        1.0 + 1.5 * distance_km(a, b) / FIBRE_KM_PER_MS_RTT
    }

    #[test]
    fn spread_first_then_nearest_the_region() {
        let ps = grid();
        let truth = LatLon::new(46.2, 6.1);
        let mut rounds: Vec<Vec<usize>> = Vec::new();
        let out = run(&ps, PhasedOptions::probes(40), &quiet(), |idx| {
            rounds.push(idx.to_vec());
            idx.iter()
                .map(|&i| Measurement {
                    landmark: format!("p{i}"),
                    pos: ps[i],
                    rtt_ms: rtt(ps[i], truth),
                    kind: Kind::Echo,
                })
                .collect()
        })
        .unwrap();
        // First round: 10 probes spread far apart.
        assert_eq!(rounds[0].len(), 10);
        let min_gap = rounds[0]
            .iter()
            .flat_map(|&a| {
                rounds[0]
                    .iter()
                    .filter(move |&&b| b != a)
                    .map(move |&b| (a, b))
            })
            .map(|(a, b)| distance_km(ps[a], ps[b]))
            .fold(f64::INFINITY, f64::min);
        assert!(min_gap > 3000.0, "spread probes {min_gap:.0} km apart");
        // Later rounds cover the shrinking region: the nearest probe asked gets nearer.
        let nearest = |r: &[usize]| {
            r.iter()
                .map(|&i| distance_km(ps[i], truth))
                .fold(f64::INFINITY, f64::min)
        };
        let (first, later) = (nearest(&rounds[0]), nearest(&rounds[rounds.len() - 1]));
        assert!(later < first / 2.0, "{first:.0} km then {later:.0} km");
        assert!(out.spent.probes <= 40 && out.spent.units == out.spent.probes as u64);
        assert!(out.spent.rounds >= 2);
        let err = distance_km(out.solution.estimate, truth);
        assert!(err < 300.0, "error {err:.0} km");
        assert!(out.solution.region_contains(truth));
    }

    #[test]
    fn the_budget_is_never_exceeded_and_is_reported() {
        let ps = grid();
        let truth = LatLon::new(-33.9, 151.2);
        let opts = PhasedOptions {
            budget: 75,
            cost_per_probe: 3,
            min_shrink: 0.0,
            ..PhasedOptions::default()
        };
        let mut asked = 0;
        let out = run(&ps, opts, &quiet(), |idx| {
            asked += idx.len();
            idx.iter()
                .map(|&i| Measurement {
                    landmark: format!("p{i}"),
                    pos: ps[i],
                    rtt_ms: rtt(ps[i], truth),
                    kind: Kind::Echo,
                })
                .collect()
        })
        .unwrap();
        assert_eq!(asked, 25);
        assert_eq!(out.spent.probes, 25);
        assert_eq!(out.spent.units, 75);
        assert_eq!(out.spent.stopped, Stop::Budget);
    }

    #[test]
    fn a_region_that_stops_shrinking_ends_the_selection() {
        // Every candidate sits 2,000 km from the truth: after the first rounds nobody is
        // nearer, the region stops shrinking, and the budget is not spent.
        let truth = LatLon::new(0.0, 0.0);
        let ps: Vec<LatLon> = (0..200)
            .map(|i| destination(truth, i as f64 * 1.8, 2000.0))
            .collect();
        let out = run(&ps, PhasedOptions::probes(150), &quiet(), |idx| {
            idx.iter()
                .map(|&i| Measurement {
                    landmark: format!("p{i}"),
                    pos: ps[i],
                    rtt_ms: rtt(ps[i], truth),
                    kind: Kind::Echo,
                })
                .collect()
        })
        .unwrap();
        assert_eq!(out.spent.stopped, Stop::Converged, "{:?}", out.spent);
        assert!(out.spent.probes < 150, "{:?}", out.spent);
    }

    #[test]
    fn silent_candidates_and_bad_options() {
        let ps = grid();
        let e = run(&ps, PhasedOptions::probes(20), &quiet(), |_| vec![]).unwrap_err();
        assert!(matches!(e, EngineError::NoMeasurements), "{e}");
        let bad = PhasedOptions {
            budget: 2,
            cost_per_probe: 3,
            ..PhasedOptions::default()
        };
        let e = Phased::new(&ps, bad).unwrap_err().to_string();
        assert!(e.contains("budget"), "{e}");
        let e = Phased::new(
            &[LatLon {
                lat: 91.0,
                lon: 0.0,
            }],
            PhasedOptions::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("candidate 0"), "{e}");
        // Fewer candidates than the budget: all asked, then exhausted.
        let few = &ps[..7];
        let out = run(few, PhasedOptions::probes(50), &quiet(), |idx| {
            idx.iter()
                .map(|&i| Measurement {
                    landmark: format!("p{i}"),
                    pos: few[i],
                    rtt_ms: 50.0,
                    kind: Kind::Echo,
                })
                .collect()
        })
        .unwrap();
        assert_eq!(out.spent.probes, 7);
        assert!(matches!(
            out.spent.stopped,
            Stop::Exhausted | Stop::Converged
        ));
    }
}
