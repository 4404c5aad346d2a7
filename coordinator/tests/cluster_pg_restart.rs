//! Cluster mode across a PostgreSQL restart: two real replicas on a PostgreSQL server of the
//! test's own (initdb in a temporary folder, its own port: restarting it disturbs no other
//! test), a keyed locate in flight on one replica while the server is down for 7 s. Needs root
//! (the server runs as the `postgres` user) and the PostgreSQL server binaries.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use geoloc_coordinator::storage::Storage;

const BIN: &str = env!("CARGO_BIN_EXE_geoloc-coordinator");

/// A PostgreSQL server of this test's own, stopped when dropped.
struct PrivatePg {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

fn run_as_postgres(bin: &Path, tool: &str, args: &[&str]) {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join(tool))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("runuser {tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PrivatePg {
    /// None (reported as a skip, a failure under GEOLOC_REQUIRE_ENV=1) without root or
    /// without the server binaries.
    fn start(test: &str) -> Option<PrivatePg> {
        if !geoloc_testenv::is_root() {
            geoloc_testenv::skip(test, "needs root to run a PostgreSQL server as `postgres`");
            return None;
        }
        let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path().join("bin"))
                    .collect()
            })
            .unwrap_or_default();
        bins.sort();
        let Some(bin) = bins.into_iter().rev().find(|b| b.join("initdb").exists()) else {
            geoloc_testenv::skip(
                test,
                "no PostgreSQL server binaries under /usr/lib/postgresql",
            );
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("geoloc-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "chown the data folder");
        let data = dir.path().join("data");
        run_as_postgres(
            &bin,
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        let pg = PrivatePg { bin, dir, port };
        pg.ctl(&["start"]);
        Some(pg)
    }

    fn ctl(&self, action: &[&str]) {
        let data = self.dir.path().join("data");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log");
        let mut args = vec![
            "-D",
            data.to_str().unwrap(),
            "-o",
            &opts,
            "-l",
            log.to_str().unwrap(),
            "-w",
        ];
        args.extend_from_slice(action);
        run_as_postgres(&self.bin, "pg_ctl", &args);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_and_leases_survive_a_postgresql_restart() {
    let test = "cluster_pg_restart";
    let Some(pg) = PrivatePg::start(test) else {
        return;
    };
    let db = pg.url();
    let s = Storage::connect_in_schema(&db, None)
        .await
        .expect("migrate the private server");
    ensure_test_key(&s).await;
    bounded(120, async {
        let (_a, url_a) = cluster_replica(BIN, &db, "replica-a");
        let (_b, url_b) = cluster_replica(BIN, &db, "replica-b");
        let w = world(&[("127.0.5.1", LYON.0, LYON.1)]);
        // The probes are on A and answer after 1.5 s; the locate is accepted by B: its
        // requests are work items A leases, and the server restarts while they are out.
        let probes = fleet_as(&url_a, &w, 6, Behaviour::Delayed(1500)).await;
        wait_until("B sees A's 6 probes", 30, || {
            let url = url_b.clone();
            async move { healthy_at(&url).await.len() == 6 }
        })
        .await;
        let url = url_b.clone();
        let asked = tokio::spawn(async move {
            let mut c = geoloc_client::Client::connect(&url).await.unwrap();
            let mut r = req("127.0.5.1");
            r.job_key = "restart-1".into();
            r.timeout_ms = 30_000;
            c.locate(r, |_| {}).await
        });
        let leased = |s: Storage| async move {
            s.work_states()
                .await
                .map(|v| v.iter().any(|(st, n)| st == "leased" && *n == 6))
                .unwrap_or(false)
        };
        wait_until("A leased the 6 requests", 30, || leased(s.clone())).await;
        // Down for longer than the probes take to answer (their answers wait for the
        // database) and than a replica's heartbeat lives (6 s: when it is back, every
        // heartbeat is old, and nobody may be reaped for that).
        let t = std::time::Instant::now();
        pg.ctl(&["-m", "fast", "stop"]);
        tokio::time::sleep(Duration::from_secs(7)).await;
        pg.ctl(&["start"]);
        eprintln!("PostgreSQL down for {} ms", t.elapsed().as_millis());
        let r = asked
            .await
            .unwrap()
            .expect("the locate finishes across the restart");
        assert_eq!(r.probes_used, 6, "{r:?}");
        // Every answer was stored once, by its lease holder, after the restart.
        let states = s.work_states().await.unwrap();
        assert_eq!(states, vec![("done".to_string(), 6)], "{states:?}");
        for p in &probes {
            assert_eq!(p.count("127.0.5.1"), 1, "{} measured once", p.id);
        }
        // Neither replica took the other for dead because of the outage.
        tokio::time::sleep(Duration::from_secs(8)).await;
        let mut replicas: Vec<String> = match &s {
            Storage::Postgres(pool) => sqlx::query_scalar("SELECT replica_id FROM replicas")
                .fetch_all(pool)
                .await
                .unwrap(),
            Storage::Sqlite(_) => unreachable!(),
        };
        replicas.sort();
        assert_eq!(replicas, vec!["replica-a", "replica-b"]);
        let interrupted: i64 = match &s {
            Storage::Postgres(pool) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM results WHERE status <> 'done'")
                    .fetch_one(pool)
                    .await
                    .unwrap()
            }
            Storage::Sqlite(_) => unreachable!(),
        };
        assert_eq!(interrupted, 0, "no run lost or interrupted");
        assert_eq!(healthy_at(&url_b).await.len(), 6, "B still sees A's probes");
    })
    .await;
}
