//! Figures of the phased selection and of the calibrated confidence on a [`Dataset`]:
//! leave-one-out where the landmarks of each target are chosen by [`crate::select`] within a
//! budget, and where the 50%/90% radii come from a model fitted without the target.
//!
//! Calibration never sees the target: with `k` folds (nodes assigned by index modulo `k`),
//! the model for a target of fold `f` is fitted on a leave-one-out run over the data set with
//! every node of fold `f` removed, so no RTT involving the target (as target or as landmark)
//! takes part ([`fold_models`]).

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::confidence::ConfidenceModel;
use crate::dataset::{Dataset, Rtt};
use crate::error::Result;
use crate::eval::{
    leave_one_out, note_flagged, percentile, target_row, EvalOptions, LeaveOneOut, TargetRow,
};
use crate::select::{self, PhasedOptions};
use crate::solve::{solve, SolveOptions};
use crate::sphere::LatLon;

/// One line of a budget or calibration table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FigureRow {
    /// `all` or the budget in probes.
    pub setting: String,
    pub targets: usize,
    pub median_km: f64,
    pub p80_km: f64,
    /// Shares of targets, 0–1.
    pub within_40km: f64,
    pub contained: f64,
    /// Share of targets within the stated 50% / 90% radius.
    pub within_radius_50: f64,
    pub within_radius_90: f64,
    /// Median of the stated radii, km.
    pub median_radius_50_km: f64,
    pub median_radius_90_km: f64,
    /// Mean probes asked per target, and their share of the probes available.
    pub probes_mean: f64,
    pub probes_share: f64,
    /// Targets without an answer.
    pub empty: usize,
}

impl FigureRow {
    /// Aggregates target rows; `probes[i]` of `candidates[i]` were asked for row `i`.
    pub fn new(
        setting: &str,
        rows: &[TargetRow],
        probes: &[usize],
        candidates: &[usize],
        empty: usize,
    ) -> Self {
        let mut errs: Vec<f64> = rows.iter().map(|r| r.error_km).collect();
        errs.sort_by(f64::total_cmp);
        let k = rows.len().max(1) as f64;
        let share = |f: &dyn Fn(&TargetRow) -> bool| {
            (rows.iter().filter(|r| f(r)).count() as f64 / k * 1000.0).round() / 1000.0
        };
        let med = |f: &dyn Fn(&TargetRow) -> Option<f64>| {
            let mut v: Vec<f64> = rows.iter().filter_map(f).collect();
            v.sort_by(f64::total_cmp);
            round1(percentile(&v, 0.5))
        };
        let asked: usize = probes.iter().sum();
        let avail: usize = candidates.iter().sum();
        FigureRow {
            setting: setting.to_string(),
            targets: rows.len(),
            median_km: round1(percentile(&errs, 0.5)),
            p80_km: round1(percentile(&errs, 0.8)),
            within_40km: share(&|r| r.error_km <= 40.0),
            contained: share(&|r| r.contained),
            within_radius_50: share(&|r| r.radius_50_km.is_some_and(|x| r.error_km <= x)),
            within_radius_90: share(&|r| r.radius_90_km.is_some_and(|x| r.error_km <= x)),
            median_radius_50_km: med(&|r| r.radius_50_km),
            median_radius_90_km: med(&|r| r.radius_90_km),
            probes_mean: round1(asked as f64 / k),
            probes_share: (asked as f64 / avail.max(1) as f64 * 10000.0).round() / 10000.0,
            empty,
        }
    }

    /// The Markdown table header matching [`FigureRow::markdown`].
    pub const HEADER: &'static str = "| probes | targets | median km | p80 km | ≤40 km | contained | in r50 | in r90 | median r50 km | median r90 km | probes asked | share of probes |\n|---|---|---|---|---|---|---|---|---|---|---|---|";

    /// One Markdown table row.
    pub fn markdown(&self) -> String {
        format!(
            "| {} | {} | {:.1} | {:.1} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1} | {:.1} | {:.1} | {:.2}% |",
            self.setting,
            self.targets,
            self.median_km,
            self.p80_km,
            self.within_40km,
            self.contained,
            self.within_radius_50,
            self.within_radius_90,
            self.median_radius_50_km,
            self.median_radius_90_km,
            self.probes_mean,
            self.probes_share * 100.0
        )
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `ds` without the nodes for which `drop(index)` is true (indices remapped).
pub fn without(ds: &Dataset, drop: impl Fn(usize) -> bool) -> Dataset {
    let mut map = vec![usize::MAX; ds.nodes.len()];
    let mut nodes = Vec::new();
    for (i, n) in ds.nodes.iter().enumerate() {
        if !drop(i) {
            map[i] = nodes.len();
            nodes.push(n.clone());
        }
    }
    let rtts = ds
        .rtts
        .iter()
        .filter(|r| map[r.src] != usize::MAX && map[r.dst] != usize::MAX)
        .map(|r| Rtt {
            src: map[r.src],
            dst: map[r.dst],
            rtt_ms: r.rtt_ms,
        })
        .collect();
    Dataset { nodes, rtts }
}

/// Per node of `ds`, the confidence model fitted without it: `folds` folds by node index
/// modulo `folds`; each fold's model comes from a leave-one-out over the other folds' nodes
/// only (see the module documentation). Also returns the per-fold models.
///
/// # Errors
/// When a fold leaves too few targets to fit on ([`ConfidenceModel::fit`]).
pub fn fold_models(
    ds: &Dataset,
    opts: &EvalOptions,
    folds: usize,
    floor_km: f64,
) -> Result<Vec<ConfidenceModel>> {
    let folds = folds.max(2);
    let mut per_fold = Vec::with_capacity(folds);
    for f in 0..folds {
        let rest = without(ds, |i| i % folds == f);
        let s = leave_one_out(&rest, opts);
        let samples: Vec<(f64, f64)> = s
            .per_target
            .iter()
            .map(|r| (r.error_km, r.region_km2))
            .collect();
        per_fold.push(ConfidenceModel::fit(&samples, floor_km)?);
    }
    Ok((0..ds.nodes.len()).map(|i| per_fold[i % folds]).collect())
}

/// Leave-one-out with each target's landmarks chosen by a phased selection within
/// `phased` (all landmarks when `None`), radii from `models[target]`.
pub fn leave_one_out_phased(
    ds: &Dataset,
    opts: &EvalOptions,
    phased: Option<PhasedOptions>,
    models: &[ConfidenceModel],
) -> Result<(FigureRow, Vec<TargetRow>)> {
    let loo = LeaveOneOut::new(ds);
    let mut rows = Vec::new();
    let mut probes = Vec::new();
    let mut candidates = Vec::new();
    let mut empty = 0;
    for t in 0..ds.nodes.len() {
        if loo.seen_by(t) < opts.min_landmarks.max(1) {
            continue;
        }
        let started = Instant::now();
        let input = loo.input(t, opts.method);
        let so = SolveOptions {
            method: opts.method,
            calibration: input.calibration.clone(),
            region_geometry: false,
            timezone_shares: false,
            bestline_tolerance: opts.bestline_tolerance,
            at_unix_s: Some(opts.at_unix_s),
            confidence: models.get(t).copied().unwrap_or_default(),
            ..SolveOptions::default()
        };
        let ms = &input.measurements;
        let result = match phased {
            None => solve(ms, &so).map(|s| (s, ms.len())),
            Some(p) => {
                let pos: Vec<LatLon> = ms.iter().map(|m| m.pos).collect();
                select::run(&pos, p, &so, |idx| {
                    idx.iter().map(|&i| ms[i].clone()).collect()
                })
                .map(|r| (r.solution, r.spent.probes))
            }
        };
        let elapsed = started.elapsed().as_secs_f64();
        let Ok((mut sol, asked)) = result else {
            empty += 1;
            continue;
        };
        note_flagged(ds, &input.flagged, &mut sol);
        rows.push(target_row(ds, t, &sol, elapsed, opts.at_unix_s));
        probes.push(asked);
        candidates.push(ms.len());
    }
    let setting = phased.map_or("all".to_string(), |p| p.max_probes().to_string());
    Ok((
        FigureRow::new(&setting, &rows, &probes, &candidates, empty),
        rows,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Node;

    #[test]
    fn figure_row_json_schema() {
        let row = |id: &str, error_km: f64, r50: f64, contained: bool| TargetRow {
            id: id.into(),
            label: String::new(),
            true_lat: 0.0,
            true_lon: 0.0,
            est_lat: 0.0,
            est_lon: 0.0,
            error_km,
            radius_km: 500.0,
            region_km2: 1e5,
            radius_50_km: Some(r50),
            radius_90_km: Some(2.0 * r50),
            contained,
            anycast: false,
            landmarks: 10,
            used: 10,
            dropped: vec![],
            tz_true: String::new(),
            tz_est: String::new(),
            tz_match: true,
            country_true: String::new(),
            country_est: String::new(),
            country_match: true,
            solve_ms: 1.0,
        };
        let rows = [
            row("a", 10.0, 20.0, true),
            row("b", 30.0, 20.0, true),
            row("c", 50.0, 20.0, false),
        ];
        let f = FigureRow::new("25", &rows, &[25, 20, 25], &[100, 100, 100], 1);
        assert_eq!((f.within_radius_50, f.within_radius_90), (0.333, 0.667));
        assert_eq!(f.probes_share, 0.2333); // 70 of 300
        insta::assert_json_snapshot!(f);
        assert_eq!(
            f.markdown().matches('|').count(),
            FigureRow::HEADER
                .lines()
                .next()
                .unwrap()
                .matches('|')
                .count()
        );
    }

    #[test]
    fn without_remaps_and_drops_every_row_of_the_removed_nodes() {
        let node = |id: &str| Node {
            id: id.into(),
            pos: LatLon::new(0.0, 0.0),
            label: String::new(),
            ip: String::new(),
        };
        let ds = Dataset {
            nodes: vec![node("a"), node("b"), node("c")],
            rtts: vec![
                Rtt {
                    src: 0,
                    dst: 1,
                    rtt_ms: 1.0,
                },
                Rtt {
                    src: 1,
                    dst: 2,
                    rtt_ms: 2.0,
                },
                Rtt {
                    src: 2,
                    dst: 0,
                    rtt_ms: 3.0,
                },
            ],
        };
        let d = without(&ds, |i| i == 1);
        assert_eq!(d.nodes.len(), 2);
        assert_eq!(d.nodes[1].id, "c");
        assert_eq!(d.rtts.len(), 1);
        assert_eq!(
            (d.rtts[0].src, d.rtts[0].dst, d.rtts[0].rtt_ms),
            (1, 0, 3.0)
        );
    }
}
