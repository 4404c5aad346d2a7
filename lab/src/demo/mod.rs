//! `geoloc lab demo`: the whole system on the emulated Internet.
//!
//! Brings up the emulator with a coordinator host, N probe agents in cities spread over the
//! world and M targets at known positions (some dropping ICMP, one silent, one anycast, one
//! located over IPv6), writes a City `.mmdb` for the targets in which some entries are
//! deliberately wrong, starts the real `geoloc-coordinator` (SQLite in a temporary folder,
//! `--allow-private`) and `geoloc-probe-agent`s in their namespaces, locates every target
//! with the real `geoloc locate --json`, and compares each answer with the truth.
//! Everything (processes, namespaces, temporary files) is removed at the end, on error and
//! on Ctrl-C / SIGTERM.
//!
//! One concern per module; dependencies point down this list, never up:
//! - `system`: the running lab + coordinator + agents (→ args, plan, mmdb, process, score, report)
//! - `report`: JSON summary, GeoJSON and table (→ args, plan, score)
//! - `score`: one answer against the truth (→ plan, region)
//! - `args` (flags), `plan` (targets and their truth), `mmdb` (the lab's MaxMind file),
//!   `process` (binaries, child programs), `region` (point in region): leaves.
//!
//! `crate::cli` runs the demo from the command line; nothing here depends on it.
use std::time::Duration;

use serde_json::Value;

use geoloc_client::LocateLine;

mod args;
#[cfg(test)]
mod fixtures;
mod mmdb;
mod plan;
mod process;
mod region;
mod report;
mod score;
mod system;

pub use args::DemoArgs;
pub use mmdb::write_mmdb;
pub use plan::{host_of, plan_targets, TargetKind, TargetPlan, ANYCAST_HUBS};
pub use process::find_binary;
pub use region::region_contains;
pub use report::{geojson, print_table, summarize, DemoReport, Timings};
pub use score::{compare, json_line, TargetRow};
pub use system::{DemoWorld, COORDINATOR_HOST, COORDINATOR_PORT};

/// Runs the whole demo and returns its report (also used by the end-to-end tests).
pub fn run_demo(a: &DemoArgs) -> anyhow::Result<(DemoReport, geojson::FeatureCollection)> {
    let mut w = DemoWorld::up(a)?;
    let plans = w.plans.clone();
    let rows = w.locate_all()?;
    // Regions for the GeoJSON: ask again for the stored results (no new measurement).
    let mut regions = Vec::new();
    for t in &plans {
        let ip = w.target_ip(t)?.to_string();
        let line = w
            .geoloc(
                &["locate", "--json", "--reuse", &ip],
                Duration::from_secs(60),
            )
            .ok()
            .and_then(|s| json_line(&s));
        regions.push(match line {
            Some(LocateLine::Located(l)) => l.solution.region,
            _ => Value::Null,
        });
    }
    let stats = w.lab.stats();
    let timings = w.down()?;
    let report = summarize(a, rows, timings, stats);
    let gj = geojson(&report.rows, &plans, &regions);
    Ok((report, gj))
}
