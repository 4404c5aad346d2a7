//! `Trace` end to end with the real binaries on loopback: a real `geoloc-probe-agent` traces
//! toward 127.0.0.1 (Paris traceroute, nothing leaves the machine) for `geoloc know
//! 127.0.0.1 --traceroute` (readable and `--json`) and for `geoloc audit --know
//! traceroute`, through a plaintext coordinator on 127.0.0.1 without API keys.
//!
//! Needs the binaries (`cargo build --workspace --bins`) and root (the agent's raw
//! sockets); otherwise SKIPPED, or a failure under `GEOLOC_REQUIRE_ENV=1`.
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use geoloc_e2e::{bins, Bins, Proc};
use geoloc_testenv::Daemon;

const TOKEN: &str = "trace-test-token";
const PROBE: &str = "trace-paris";

fn coordinator(b: &Bins, dir: &Path) -> (Daemon, SocketAddr) {
    let db = format!(
        "sqlite://{}?mode=rwc",
        dir.join("coordinator.sqlite").display()
    );
    let mut cmd = Command::new(&b.coordinator);
    cmd.args([
        "--database",
        &db,
        "--listen",
        "127.0.0.1:0",
        "--auth",
        "none",
    ])
    .args(["--allow-private", "--probe-token", TOKEN])
    .args([
        "--landmark-checks",
        "false",
        "--heartbeat-interval-ms",
        "300",
    ])
    .args(["--probe-timeout-ms", "3000"])
    .env_remove("GEOLOC_COORDINATOR_CONFIG");
    let proc = Daemon::spawn_echoing("coordinator", &mut cmd);
    let addr = proc.stdout_after("listening on ", Duration::from_secs(60));
    (proc, addr.parse().expect("an address"))
}

fn geoloc(b: &Bins, args: &[&str]) -> Output {
    Command::new(&b.geoloc)
        .args(args)
        .env_remove("GEOLOC_CA")
        .env_remove("GEOLOC_COORDINATOR")
        .env_remove("GEOLOC_API_KEY")
        .env_remove("GEOLOC_KNOW_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn real_agent_traces_for_know_and_audit() {
    let test = "real_agent_traces_for_know_and_audit";
    let Some(b) = bins(test) else { return };
    if !geoloc_testenv::is_root() {
        geoloc_testenv::skip(test, "not root: the probe agent needs its raw sockets");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_c, addr) = coordinator(&b, dir.path());
    let url = format!("http://{addr}");
    let log = dir.path().join("agent.log");
    let _agent = Proc(
        Command::new(&b.agent)
            .args(["run", "--id", PROBE, "--lat=48.8566", "--lon=2.3522"])
            .args(["--coordinator", &url, "--allow-private"])
            .env("GEOLOC_PROBE_TOKEN", TOKEN)
            .env_remove("GEOLOC_PROBE_CONFIG")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn geoloc-probe-agent"),
    );
    let agent_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = geoloc(&b, &["probes", "--json", "--coordinator", &url]);
        assert!(out.status.success(), "geoloc probes: {}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if v.as_array()
            .unwrap()
            .iter()
            .any(|p| p["probe_id"] == PROBE && p["healthy"] == serde_json::Value::Bool(true))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not register within 60 s; its log:\n{}",
            agent_log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // `geoloc know --traceroute --json`: the agent's hops toward 127.0.0.1.
    let out = geoloc(
        &b,
        &[
            "know",
            "127.0.0.1",
            "--coordinator",
            &url,
            "--traceroute",
            "--max-ttl",
            "8",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}\nagent:\n{}",
        text(&out),
        agent_log()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = &v["traceroute"];
    assert_eq!(t["probe_id"], PROBE, "{t}");
    assert_eq!(t["probe_choice"], "nearest-stored", "{t}");
    assert_eq!(t["max_ttl"], 8, "{t}");
    assert_eq!(t["reached"], true, "{t}");
    let hops = t["hops"].as_array().unwrap();
    let last = hops.last().unwrap();
    assert_eq!(last["address"], "127.0.0.1", "{t}");
    let rtt = last["rtt_ms"][0].as_f64().unwrap();
    assert!((0.0..50.0).contains(&rtt), "{t}");
    assert!(t["packets_sent"].as_u64().unwrap() >= 1, "{t}");

    // Readable.
    let out = geoloc(
        &b,
        &["know", "127.0.0.1", "--coordinator", &url, "--traceroute"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains(&format!("Traceroute to 127.0.0.1 from probe {PROBE}")),
        "{s}"
    );
    assert!(s.contains("target reached"), "{s}");

    // A probe that does not exist: the section says why, the report is still printed.
    let out = geoloc(
        &b,
        &[
            "know",
            "127.0.0.1",
            "--coordinator",
            &url,
            "--traceroute",
            "--trace-probe",
            "nope",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["traceroute"]["error"]["code"], "invalid-argument", "{v}");
    assert!(
        v["traceroute"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown probe \"nope\""),
        "{v}"
    );

    // `geoloc audit --know traceroute`: the column group after the audit's columns.
    let input = dir.path().join("in.csv");
    let output = dir.path().join("out.csv");
    std::fs::write(&input, "ip\n127.0.0.1\nnot-an-ip\n").unwrap();
    let args = [
        "audit",
        "--file",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--columns",
        "ip,error",
        "--coordinator",
        &url,
        "--know",
        "traceroute",
    ];
    let out = geoloc(&b, &args);
    // A line that is not an address is a row with its reason, not a failed run.
    assert!(out.status.success(), "{}", text(&out));
    let csv = std::fs::read_to_string(&output).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "ip,error,trace_probe,trace_hops,trace_reached,trace_last_hop,trace_path,trace_status"
    );
    let rows: Vec<&str> = lines.collect();
    let traced = rows.iter().find(|l| l.starts_with("127.0.0.1,")).unwrap();
    let cells: Vec<&str> = traced.split(',').collect();
    assert_eq!(cells[2], PROBE, "{traced}");
    assert_eq!(cells[4], "true", "{traced}");
    assert!(cells[6].contains(":127.0.0.1:"), "{traced}");
    assert_eq!(cells[7], "ok", "{traced}");
    let bad = rows.iter().find(|l| l.starts_with("not-an-ip,")).unwrap();
    assert!(
        bad.ends_with("error: invalid-address: not an IP address"),
        "{bad}"
    );
    // A second run (resume: rows kept, the failed one too) replaces the group instead of
    // adding it twice.
    let out = geoloc(&b, &args);
    assert!(out.status.success(), "{}", text(&out));
    let again = std::fs::read_to_string(&output).unwrap();
    assert_eq!(again.lines().next(), csv.lines().next());
}
