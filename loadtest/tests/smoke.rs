//! The load test's smoke run, at a small size against the real `geoloc-coordinator`
//! (SQLite, and a fresh schema on the local PostgreSQL): 50 simulated probes, 20 locates
//! and a 10-address audit; the JSON report must say every locate was answered, every probe
//! held, and give finite positive latencies. Skips (a failure under GEOLOC_REQUIRE_ENV=1)
//! when the coordinator binary is not built or PostgreSQL does not answer.
use std::time::Duration;

use geoloc_loadtest::coordinator::find_binary;
use geoloc_loadtest::{BackendArg, LoadtestArgs};

/// The PostgreSQL test server: `GEOLOC_TEST_PG_URL`, default the local one.
fn pg_url() -> String {
    std::env::var("GEOLOC_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn pg_answers(url: &str) -> bool {
    std::process::Command::new("psql")
        .args(["-X", "-q", "-d", url, "-c", "SELECT 1"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn smoke(test: &str, backend: BackendArg) {
    if let Err(e) = find_binary("geoloc-coordinator", None) {
        geoloc_testenv::skip(test, &e.to_string());
        return;
    }
    if backend == BackendArg::Postgres && !pg_answers(&pg_url()) {
        geoloc_testenv::skip(test, &format!("PostgreSQL at {} does not answer", pg_url()));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let args = LoadtestArgs {
        probes: 50,
        locates_per_minute: 120,
        duration_s: 10,
        audit: 10,
        audit_concurrency: 4,
        backend,
        postgres_url: pg_url(),
        heartbeat_ms: 1_000,
        ramp_timeout_s: 120,
        json: Some(json.clone()),
        ..LoadtestArgs::default()
    };
    let started = std::time::Instant::now();
    let report = geoloc_loadtest::run_blocking(args).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "bounded in time"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["schema"], "geoloc-loadtest/1");
    assert_eq!(v["backend"], report.backend);
    assert_eq!(v["probes"], 50);
    assert_eq!(v["probes_held"], 50, "{v:#}");
    assert_eq!(v["probes_held_end"], 50, "{v:#}");
    assert_eq!(v["locates"]["asked"], 20, "{v:#}");
    assert_eq!(v["locates"]["answered"], 20, "every locate answered: {v:#}");
    assert_eq!(v["locates"]["failed"], 0, "{v:#}");
    assert_eq!(
        v["audit"]["answered"], 10,
        "every audit address answered: {v:#}"
    );
    assert_eq!(v["results"]["unknown_targets"], 0, "{v:#}");
    // Every locate asks every probe (mode all): 30 addresses x 50 probes.
    assert_eq!(v["results"]["ingested"], 30 * 50, "{v:#}");
    for path in [
        ["dispatch_ms", "p50"],
        ["dispatch_ms", "p99"],
        ["locates", "per_s"],
        ["results", "per_s"],
        ["memory", "per_probe_bytes"],
        ["cpu", "per_1000_results"],
    ] {
        let x = v[path[0]][path[1]].as_f64().unwrap_or(f64::NAN);
        assert!(x.is_finite() && x > 0.0, "{path:?} = {x}: {v:#}");
    }
    let (p50, p99) = (
        v["dispatch_ms"]["p50"].as_f64().unwrap(),
        v["dispatch_ms"]["p99"].as_f64().unwrap(),
    );
    assert!(p50 <= p99 && p99 < 5_000.0, "{p50} {p99}");
    assert_eq!(v["dispatch_ms"]["samples"], 20 * 50, "{v:#}");
    let rss = v["memory"]["held_rss_bytes"].as_u64().unwrap();
    assert!(rss > 1 << 20 && rss < 1 << 32, "{rss}");
}

#[test]
fn smoke_sqlite() {
    smoke("smoke_sqlite", BackendArg::Sqlite);
}

#[test]
fn smoke_postgres() {
    smoke("smoke_postgres", BackendArg::Postgres);
}

/// Two replicas on one PostgreSQL schema, 20 probes (10 on each), an audit of 60 addresses
/// started on replica 0, which is SIGKILLed when half are answered: the audit must finish
/// on replica 1 with every address answered, the probes of replica 0 must move over.
#[test]
fn smoke_two_replicas_one_killed() {
    let test = "smoke_two_replicas_one_killed";
    if let Err(e) = find_binary("geoloc-coordinator", None) {
        geoloc_testenv::skip(test, &e.to_string());
        return;
    }
    if !pg_answers(&pg_url()) {
        geoloc_testenv::skip(test, &format!("PostgreSQL at {} does not answer", pg_url()));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let args = LoadtestArgs {
        probes: 20,
        locates_per_minute: 0,
        duration_s: 1,
        audit: 60,
        audit_concurrency: 4,
        // Long enough for the farthest simulated RTT: every address gets an answer.
        timeout_ms: 1_000,
        backend: BackendArg::Postgres,
        postgres_url: pg_url(),
        heartbeat_ms: 1_000,
        ramp_timeout_s: 60,
        replicas: 2,
        kill_one_at: Some(0.5),
        audit_timeout_s: 120,
        json: Some(json.clone()),
        ..LoadtestArgs::default()
    };
    let started = std::time::Instant::now();
    geoloc_loadtest::run_blocking(args).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(180),
        "bounded in time"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["replicas"], 2, "{v:#}");
    assert_eq!(v["probes_held"], 20, "both replicas saw the fleet: {v:#}");
    // The replica the audit was on (it starts on replica 0) was really killed, halfway.
    assert_eq!(v["kill"]["replica_id"], "lt-r0", "{v:#}");
    let at = v["kill"]["answered_at_kill"].as_u64().unwrap();
    assert!((30..60).contains(&at), "killed at {at} answered: {v:#}");
    assert_eq!(v["replica_usage"][0]["killed"], true, "{v:#}");
    assert_eq!(v["replica_usage"][1]["killed"], false, "{v:#}");
    // Every address answered, on replica 1 for those left at the kill.
    assert_eq!(v["audit"]["answered"], 60, "every address answered: {v:#}");
    assert_eq!(v["audit_answers"]["never_answered"], 0, "{v:#}");
    let once = v["audit_answers"]["answered_once"].as_u64().unwrap();
    let more = v["audit_answers"]["answered_more_than_once"]
        .as_u64()
        .unwrap();
    assert_eq!(once + more, 60, "{v:#}");
    assert!(
        v["audit_answers"]["reconnects"].as_u64().unwrap() >= 1,
        "{v:#}"
    );
    let re_asked = v["kill"]["re_asked"].as_u64().unwrap();
    assert!(
        re_asked >= 1 && re_asked <= 60 - at,
        "re-asked only the unanswered: {re_asked}: {v:#}"
    );
    assert!(v["kill"]["stall_s"].as_f64().is_some(), "{v:#}");
    // Replica 0's 10 probes registered with replica 1.
    assert!(v["probe_sessions_moved"].as_u64().unwrap() >= 10, "{v:#}");
    assert!(
        v["results"]["measurements"].as_u64().unwrap() >= 60,
        "{v:#}"
    );
    assert_eq!(v["results"]["unknown_targets"], 0, "{v:#}");
}

#[test]
fn a_cluster_on_sqlite_is_refused() {
    let e = geoloc_loadtest::run_blocking(LoadtestArgs {
        replicas: 3,
        ..LoadtestArgs::default()
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("--replicas 3 needs --backend postgres"), "{e}");
}

#[test]
fn absurd_fleet_is_refused_before_anything_starts() {
    let e = geoloc_loadtest::run_blocking(LoadtestArgs {
        probes: 5_000_000,
        ..LoadtestArgs::default()
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("--probes 5000000 not in 1..=20000"), "{e}");
}
