//! Figure guards: README's measured accuracy, recomputed on the committed data in
//! `../shared/data` (present in CI; a missing folder fails under `GEOLOC_REQUIRE_ENV=1`).
//!
//! The figures compared with are read from README.md, so a README that claims better than
//! what is measured fails here too. The measured figures are printed (`--nocapture` or the
//! CI log shows them).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use geoloc_engine::anycast_eval::{self, AnycastTarget};
use geoloc_engine::dataset::{self, Dataset};
use geoloc_engine::eval::{leave_one_out, EvalOptions, Summary};
use geoloc_engine::solve::DEFAULT_BESTLINE_TOLERANCE;
use geoloc_engine::Method;

/// The instant README's evaluation command uses (`--at-unix-s`).
const AT_UNIX_S: i64 = 1_767_225_600;
/// How far the default method's median may rise above README's, as a share.
const MEDIAN_SLACK: f64 = 0.03;
/// Share of targets whose region must hold the truth.
const MIN_CONTAINED: f64 = 0.96;
/// How far the anycast right-city share may fall below README's, in percentage points.
const RIGHT_CITY_SLACK_POINTS: f64 = 2.0;

fn readme() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// The median km of the first `| <method> |` row after the line starting `heading`.
fn readme_median_km(readme: &str, heading: &str, method: &str) -> f64 {
    let after = &readme[readme
        .find(heading)
        .unwrap_or_else(|| panic!("README has no {heading:?}"))..];
    let row = after
        .lines()
        .find(|l| l.starts_with(&format!("| {method} |")))
        .unwrap_or_else(|| panic!("README has no {method:?} row after {heading:?}"));
    let median = row.split('|').nth(2).map(str::trim).unwrap_or_default();
    median
        .parse()
        .unwrap_or_else(|_| panic!("README row {row:?}: median {median:?} is not a number"))
}

/// README's anycast total: (detected, targets, right-city share in %).
fn readme_anycast(readme: &str) -> (usize, usize, f64) {
    let line = readme
        .lines()
        .find(|l| l.starts_with("all targets: "))
        .expect("README has the anycast total line `all targets: ...`");
    let detected = line
        .strip_prefix("all targets: ")
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.split_once('/'))
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
    let share = line
        .rsplit_once('(')
        .and_then(|(_, s)| s.strip_suffix("%)"))
        .and_then(|s| s.parse().ok());
    match (detected, share) {
        (Some((d, n)), Some(share)) => (d, n, share),
        _ => panic!("README's anycast total line {line:?} is not `all targets: D/N detected ..., R/J instances in the right city (S%)`"),
    }
}

fn shared(test: &str, name: &str) -> Option<PathBuf> {
    let p = geoloc_testenv::shared_data(name);
    if p.is_none() {
        geoloc_testenv::skip(test, &format!("needs ../shared/data/{name}"));
    }
    p
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn eval(ds: &Dataset, method: Method) -> Summary {
    let s = leave_one_out(
        ds,
        &EvalOptions {
            method,
            min_landmarks: 3,
            at_unix_s: AT_UNIX_S,
            bestline_tolerance: DEFAULT_BESTLINE_TOLERANCE,
        },
    );
    eprintln!(
        "figures: wondernetwork-train {:<13} targets {} median {:.1} km, p80 {:.1} km, \
         <=40 km {:.3}, <=100 km {:.3}, contained {:.3}, empty {}, anycast {}, country {:.3}, \
         {:.2} s (this build)",
        method.name(),
        s.targets,
        s.median_km,
        s.p80_km,
        s.within_40km,
        s.within_100km,
        s.contained,
        s.empty,
        s.anycast,
        s.country_match,
        s.seconds
    );
    s
}

#[test]
fn wondernetwork_leave_one_out_holds_readmes_figures() {
    let test = "wondernetwork_leave_one_out_holds_readmes_figures";
    let Some(dir) = shared(test, "wondernetwork-train") else {
        return;
    };
    let readme = readme();
    let claimed = readme_median_km(&readme, "WonderNetwork, 148 cities", "bestline (default)");
    let nodes = dataset::parse_nodes(&read(&dir.join("nodes.csv")), "nodes.csv").unwrap();
    let rtts = dataset::parse_rtts(&read(&dir.join("rtts.csv")), "rtts.csv", &nodes).unwrap();
    let ds = Dataset { nodes, rtts };
    let best = eval(&ds, Method::Bestline);
    let cbg = eval(&ds, Method::Cbg);
    assert_eq!(best.targets, 148, "every WonderNetwork city is a target");
    assert_eq!(best.empty, 0);
    let bound = claimed * (1.0 + MEDIAN_SLACK);
    assert!(
        best.median_km <= bound,
        "default method's median {:.1} km is above README's {claimed} km + {}% ({bound:.1} km)",
        best.median_km,
        MEDIAN_SLACK * 100.0
    );
    assert!(
        best.contained >= MIN_CONTAINED,
        "the default method's region holds the truth for {:.3} of targets, below {MIN_CONTAINED}",
        best.contained
    );
    assert!(
        best.median_km < cbg.median_km,
        "the default method ({:.1} km) no longer beats cbg ({:.1} km)",
        best.median_km,
        cbg.median_km
    );
}

#[test]
fn anycast_igreedy_holds_readmes_figures() {
    let test = "anycast_igreedy_holds_readmes_figures";
    let Some(dir) = shared(test, "anycast-igreedy") else {
        return;
    };
    let (claimed_detected, claimed_targets, claimed_share) = readme_anycast(&readme());
    let airports =
        anycast_eval::parse_airports(&read(&dir.join("airports.csv")), "airports.csv").unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("measurements"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let targets: Vec<AnycastTarget> = files
        .iter()
        .map(|f| {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            anycast_eval::parse_target(&name, &read(f), &f.display().to_string()).unwrap()
        })
        .collect();
    let started = std::time::Instant::now();
    let s = anycast_eval::evaluate(&targets, &airports).unwrap();
    eprintln!(
        "figures: anycast-igreedy ({:.1} s, this build)\n{}",
        started.elapsed().as_secs_f64(),
        s.markdown()
    );
    assert_eq!(
        s.rows.len(),
        claimed_targets,
        "README's table has {claimed_targets} targets"
    );
    assert_eq!(
        claimed_detected, claimed_targets,
        "README claims every target detected"
    );
    let missed: Vec<&str> = s
        .rows
        .iter()
        .filter(|r| !r.anycast)
        .map(|r| r.target.as_str())
        .collect();
    assert!(missed.is_empty(), "not detected as anycast: {missed:?}");
    let share = 100.0 * s.right_city_share();
    assert!(
        share >= claimed_share - RIGHT_CITY_SLACK_POINTS,
        "{}/{} instances in the right city ({share:.1}%), more than {RIGHT_CITY_SLACK_POINTS} \
         points below README's {claimed_share:.1}%",
        s.right_city,
        s.judged
    );
    // Per target, the instances found stay near what README reports.
    let per_target: HashMap<&str, usize> = s
        .rows
        .iter()
        .map(|r| (r.target.as_str(), r.instances))
        .collect();
    assert!(per_target.values().all(|&n| n >= 2), "{per_target:?}");
}
