//! The budgeted, phased choice of vantage points for any source: the engine's
//! [`geoloc_engine::select::Phased`] (the same code `geoloc eval-budget` measures) says which
//! vantage points to ask each round; each round is measured through the source like a stage
//! of the other modes (rows stored, progress reported with the round as `stage`), then
//! solved from every answer so far to steer the next round. It ends when the region stops
//! shrinking, every candidate was asked, or the budget (vantage points) is spent.
use geoloc_engine::select::{Phased, PhasedOptions};
use geoloc_engine::{Calibration, LatLon, Solution, SolveOptions};

use crate::core::locate::{pick, run_stage, Run};
use crate::core::source::{MeasurementSource, VantagePoint};
use crate::Coordinator;

/// Vantage points a phased locate asks at most: `budget` (0 = no limit) capped by the
/// candidates.
pub fn most_asked(budget: u32, candidates: usize) -> usize {
    if budget == 0 {
        candidates
    } else {
        (budget as usize).min(candidates)
    }
}

/// The engine's options for a budget of `most` vantage points (one unit each).
pub fn options(most: usize) -> PhasedOptions {
    PhasedOptions {
        budget: most.max(1) as u64,
        cost_per_probe: 1,
        ..PhasedOptions::default()
    }
}

/// Runs the rounds over `vps`, at most `most` of them asked.
pub(crate) async fn run_rounds(
    coord: &Coordinator,
    source: &dyn MeasurementSource,
    run: &mut Run<'_>,
    vps: &[VantagePoint],
    most: usize,
    calibration: Option<Calibration>,
) {
    let positions: Vec<LatLon> = vps.iter().map(|v| v.pos).collect();
    let mut phased = match Phased::new(&positions, options(most)) {
        Ok(p) => p,
        Err(e) => {
            // Positions are checked where vantage points are made; this is a bug.
            tracing::error!(error = %e, "the phased selection refused its candidates");
            return;
        }
    };
    let mut last: Option<Solution> = None;
    let mut round = 0u32;
    loop {
        let next = phased.next_round(last.as_ref());
        if next.is_empty() || coord.is_shutting_down() {
            break;
        }
        round += 1;
        let pings = run.ping_count;
        run_stage(coord, source, run, pick(vps, &next), round, pings).await;
        last = solve_so_far(run, calibration.clone());
    }
    let spent = phased.spent();
    tracing::info!(
        asked = spent.probes,
        budget = spent.budget,
        rounds = spent.rounds,
        stopped = ?spent.stopped,
        "phased selection ended"
    );
}

/// The region from every answer so far (no outline, no time-zone shares: only its area and
/// membership steer the next round); None before any answer.
fn solve_so_far(run: &Run<'_>, calibration: Option<Calibration>) -> Option<Solution> {
    let inputs = run.inputs();
    if inputs.measurements.is_empty() {
        return None;
    }
    let opts = SolveOptions {
        calibration,
        region_geometry: false,
        timezone_shares: false,
        at_unix_s: Some(0),
        ..SolveOptions::default()
    };
    geoloc_engine::solve(&inputs.measurements, &opts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets() {
        assert_eq!(most_asked(0, 700), 700);
        assert_eq!(most_asked(50, 700), 50);
        assert_eq!(most_asked(50, 7), 7);
        assert_eq!(options(50).max_probes(), 50);
        assert_eq!(options(0).max_probes(), 1);
    }
}
