//! Guards of the phased selection and of the calibrated radii: README's "Budgeted selection
//! and calibrated confidence" figures on WonderNetwork, recomputed (cheaply: the all-landmark
//! row and the 25-landmark budget) on `../shared/data/wondernetwork-train` (present in CI;
//! a missing folder fails under `GEOLOC_REQUIRE_ENV=1`). The measured rows are printed.

use std::path::{Path, PathBuf};

use geoloc_engine::budget_eval::{fold_models, leave_one_out_phased, FigureRow};
use geoloc_engine::confidence::DEFAULT_FLOOR_KM;
use geoloc_engine::dataset::{self, Dataset};
use geoloc_engine::eval::EvalOptions;
use geoloc_engine::select::PhasedOptions;
use geoloc_engine::solve::DEFAULT_BESTLINE_TOLERANCE;
use geoloc_engine::Method;

/// The instant README's commands use (`--at-unix-s`).
const AT_UNIX_S: i64 = 1_767_225_600;
/// Folds of README's calibration (`geoloc eval-budget --folds`).
const FOLDS: usize = 5;
/// The stated radii must hold the truth for 50% ± 5 points and 90% ± 4 points of targets.
const COVER_50: (f64, f64) = (0.45, 0.55);
const COVER_90: (f64, f64) = (0.86, 0.94);
/// How far a budget's median may rise above README's, as a share.
const MEDIAN_SLACK: f64 = 0.03;
/// The heading README's WonderNetwork budget table follows.
const HEADING: &str = "Phased selection on WonderNetwork";

fn readme() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// The median km of the `| <setting> |` row of the table after `HEADING`.
fn readme_median_km(readme: &str, setting: &str) -> f64 {
    let after = &readme[readme
        .find(HEADING)
        .unwrap_or_else(|| panic!("README has no {HEADING:?}"))..];
    let row = after
        .lines()
        .find(|l| l.starts_with(&format!("| {setting} |")))
        .unwrap_or_else(|| panic!("README has no {setting:?} row after {HEADING:?}"));
    let median = row.split('|').nth(3).map(str::trim).unwrap_or_default();
    median
        .parse()
        .unwrap_or_else(|_| panic!("README row {row:?}: median {median:?} is not a number"))
}

fn shared(test: &str, name: &str) -> Option<PathBuf> {
    let p = geoloc_testenv::shared_data(name);
    if p.is_none() {
        geoloc_testenv::skip(test, &format!("needs ../shared/data/{name}"));
    }
    p
}

fn load(dir: &Path) -> Dataset {
    let read = |f: &str| {
        let p = dir.join(f);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
    };
    let nodes = dataset::parse_nodes(&read("nodes.csv"), "nodes.csv").unwrap();
    let rtts = dataset::parse_rtts(&read("rtts.csv"), "rtts.csv", &nodes).unwrap();
    Dataset { nodes, rtts }
}

fn opts() -> EvalOptions {
    EvalOptions {
        method: Method::Bestline,
        min_landmarks: 3,
        at_unix_s: AT_UNIX_S,
        bestline_tolerance: DEFAULT_BESTLINE_TOLERANCE,
    }
}

fn show(row: &FigureRow) {
    eprintln!("selection: wondernetwork-train {}", row.markdown());
}

#[test]
fn held_out_radii_hold_the_truth_as_often_as_stated() {
    let test = "held_out_radii_hold_the_truth_as_often_as_stated";
    let Some(dir) = shared(test, "wondernetwork-train") else {
        return;
    };
    let ds = load(&dir);
    let models = fold_models(&ds, &opts(), FOLDS, DEFAULT_FLOOR_KM).unwrap();
    let (row, _) = leave_one_out_phased(&ds, &opts(), None, &models).unwrap();
    show(&row);
    assert_eq!(row.targets, 148);
    for (what, got, (lo, hi)) in [
        ("50%", row.within_radius_50, COVER_50),
        ("90%", row.within_radius_90, COVER_90),
    ] {
        assert!(
            (lo..=hi).contains(&got),
            "the stated {what} radius holds the truth for {got:.3} of targets, outside {lo}..{hi}"
        );
    }
}

#[test]
fn a_25_landmark_budget_holds_readmes_median() {
    let test = "a_25_landmark_budget_holds_readmes_median";
    let Some(dir) = shared(test, "wondernetwork-train") else {
        return;
    };
    let readme = readme();
    let claimed = readme_median_km(&readme, "25");
    let all = readme_median_km(&readme, "all");
    let ds = load(&dir);
    let models = vec![Default::default(); ds.nodes.len()];
    let (row, _) =
        leave_one_out_phased(&ds, &opts(), Some(PhasedOptions::probes(25)), &models).unwrap();
    show(&row);
    assert_eq!(row.targets, 148);
    assert!(row.probes_mean <= 25.0, "{row:?}");
    let bound = claimed * (1.0 + MEDIAN_SLACK);
    assert!(
        row.median_km <= bound,
        "25 landmarks: median {:.1} km above README's {claimed} km + {}% ({bound:.1} km)",
        row.median_km,
        MEDIAN_SLACK * 100.0
    );
    // The budget's point: a fifth of the landmarks, not five times the error.
    assert!(
        row.median_km < 1.5 * all,
        "25 landmarks: median {:.1} km, all landmarks {all} km",
        row.median_km
    );
    assert!(row.contained >= 0.9, "{row:?}");
}
