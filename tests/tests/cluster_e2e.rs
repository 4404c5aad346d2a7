//! Cluster mode with the real binaries on loopback: two `geoloc-coordinator --cluster`
//! replicas on one PostgreSQL database (a schema of this test), three real
//! `geoloc-probe-agent`s given both replicas' URLs (`--coordinator B,A`), `geoloc locate`
//! against replica A. The agents hold their sessions on B; A's locate is measured by them
//! through the database; B is SIGKILLed; the agents move to A and A locates with them.
//!
//! Needs the binaries, root (the agents' ICMP sockets) and PostgreSQL at
//! `GEOLOC_TEST_PG_URL` (default the local one); otherwise SKIPPED, or a failure under
//! `GEOLOC_REQUIRE_ENV=1`.
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use geoloc_e2e::{bins, Bins, Proc};
use geoloc_testenv::Daemon;

const TOKEN: &str = "cluster-e2e-token";

fn pg_url() -> String {
    std::env::var("GEOLOC_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// Creates a fresh schema; None (after `skip`) when PostgreSQL cannot be reached.
fn schema(test: &str) -> Option<String> {
    let name = format!("geoloc_e2e_cluster_{}", std::process::id());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = match sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&pg_url())
            .await
        {
            Ok(p) => p,
            Err(e) => {
                geoloc_testenv::skip(test, &format!("PostgreSQL at {}: {e}", pg_url()));
                return None;
            }
        };
        for sql in [
            format!("DROP SCHEMA IF EXISTS {name} CASCADE"),
            format!("CREATE SCHEMA {name}"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
        Some(name)
    })
}

fn drop_schema(name: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _ = rt.block_on(async {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&pg_url())
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {name} CASCADE"
        )))
        .execute(&pool)
        .await
    });
}

fn replica(b: &Bins, db: &str, name: &str) -> (Daemon, String) {
    let mut cmd = Command::new(&b.coordinator);
    cmd.args(["--listen", "127.0.0.1:0", "--database", db])
        .args(["--cluster", "--replica-id", name, "--auth", "none"])
        .args(["--allow-private", "--probe-token", TOKEN])
        .args([
            "--landmark-checks",
            "false",
            "--heartbeat-interval-ms",
            "300",
        ])
        .args(["--probe-timeout-ms", "2000"])
        .env_remove("GEOLOC_COORDINATOR_CONFIG");
    let d = Daemon::spawn_echoing(name, &mut cmd);
    let addr = d.stdout_after("listening on ", Duration::from_secs(60));
    (d, format!("http://{addr}"))
}

fn geoloc(b: &Bins, args: &[&str]) -> Output {
    Command::new(&b.geoloc)
        .args(args)
        .env_remove("GEOLOC_CA")
        .env_remove("GEOLOC_COORDINATOR")
        .env_remove("GEOLOC_API_KEY")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Ids of the probes `url` lists as healthy.
fn healthy(b: &Bins, url: &str) -> Vec<String> {
    let out = geoloc(b, &["probes", "--json", "--coordinator", url]);
    assert!(
        out.status.success(),
        "geoloc probes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|p| p["healthy"] == serde_json::Value::Bool(true))
        .map(|p| p["probe_id"].as_str().unwrap().to_string())
        .collect()
}

fn wait(what: &str, secs: u64, logs: &[std::path::PathBuf], mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        if Instant::now() > deadline {
            let text: Vec<String> = logs
                .iter()
                .map(|l| std::fs::read_to_string(l).unwrap_or_default())
                .collect();
            panic!(
                "{what}: not within {secs} s; agent logs:\n{}",
                text.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn locate(b: &Bins, url: &str) -> serde_json::Value {
    let out = geoloc(b, &["locate", "127.0.0.1", "--json", "--coordinator", url]);
    assert!(
        out.status.success(),
        "geoloc locate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn agents_measure_for_any_replica_and_move_to_another_when_theirs_is_killed() {
    let test = "agents_measure_for_any_replica_and_move_to_another_when_theirs_is_killed";
    let Some(b) = bins(test) else { return };
    if !geoloc_testenv::is_root() {
        geoloc_testenv::skip(test, "not root: the probe agent needs its ICMP socket");
        return;
    }
    let Some(schema) = schema(test) else { return };
    let db = format!("{}?options=-c%20search_path%3D{schema}", pg_url());
    let dir = tempfile::tempdir().unwrap();
    let (_a, url_a) = replica(&b, &db, "e2e-a");
    let (mut rb, url_b) = replica(&b, &db, "e2e-b");
    let both = format!("{url_b},{url_a}");
    let mut logs = Vec::new();
    let mut agents = Vec::new();
    for (id, lat, lon) in [
        ("c-paris", 48.8566, 2.3522),
        ("c-berlin", 52.52, 13.405),
        ("c-madrid", 40.4168, -3.7038),
    ] {
        let log = dir.path().join(format!("{id}.log"));
        agents.push(Proc(
            Command::new(&b.agent)
                .args([
                    "run",
                    "--id",
                    id,
                    &format!("--lat={lat}"),
                    &format!("--lon={lon}"),
                ])
                .args(["--coordinator", &both, "--allow-private"])
                .args(["--reconnect-min-ms", "200", "--reconnect-max-ms", "1000"])
                .env("GEOLOC_PROBE_TOKEN", TOKEN)
                .env_remove("GEOLOC_PROBE_CONFIG")
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("spawn geoloc-probe-agent"),
        ));
        logs.push(log);
    }
    // The agents are on B (their first URL); A sees them through the database.
    wait("3 healthy agents on B", 60, &logs, || {
        healthy(&b, &url_b).len() == 3
    });
    wait("A sees B's agents", 30, &logs, || {
        healthy(&b, &url_a).len() == 3
    });
    // (All three measured and answered; on loopback their RTTs contradict each other's
    // declared positions, so the solution may keep only one.)
    let line = locate(&b, &url_a);
    assert_eq!(line["probes_asked"], 3, "{line}");
    assert_eq!(
        line["packets_sent"], 9,
        "three pings from each agent: {line}"
    );
    assert!(line["solution"].is_object(), "{line}");

    // B dies without a word; the agents reconnect to A, which then locates with them.
    let t0 = Instant::now();
    rb.child().kill().unwrap();
    let _ = rb.child().wait();
    // Each agent registered with A (its log says so), and A lists them healthy.
    let on_a = format!("coordinator={url_a}");
    wait(
        "the agents registered with A after B died",
        60,
        &logs,
        || {
            logs.iter().all(|l| {
                std::fs::read_to_string(l)
                    .unwrap_or_default()
                    .lines()
                    .any(|line| line.contains("registered") && line.contains(&on_a))
            })
        },
    );
    wait("the agents healthy on A", 30, &logs, || {
        healthy(&b, &url_a).len() == 3
    });
    let moved = t0.elapsed();
    let line = locate(&b, &url_a);
    assert_eq!(line["probes_asked"], 3, "{line}");
    assert_eq!(line["packets_sent"], 9, "{line}");
    eprintln!(
        "agents on A {:.1} s after B was killed",
        moved.as_secs_f64()
    );
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        assert!(
            text.contains("trying the next coordinator"),
            "the agent moved on: {text}"
        );
    }
    drop(agents);
    drop_schema(&schema);
}
