//! Cluster mode on the real PostgreSQL: the lease table itself, then two real
//! `geoloc-coordinator` replicas (`--cluster`) on one database, with FAKE probes
//! (protocol-level, tests/common) connected to one of them.
mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use geoloc_coordinator::storage::Storage;

const BIN: &str = env!("CARGO_BIN_EXE_geoloc-coordinator");

/// A PostgreSQL URL whose connections use `schema` (made and migrated by
/// [`postgres_store`]).
fn schema_url(schema: &str) -> String {
    format!("{}?options=-c%20search_path%3D{schema}", pg_url())
}

/// Result rows (runs) stored for `ip`.
async fn runs_of(s: &Storage, ip: &str) -> i64 {
    match s {
        Storage::Postgres(pool) => sqlx::query_scalar("SELECT COUNT(*) FROM results WHERE ip = $1")
            .bind(ip)
            .fetch_one(pool)
            .await
            .unwrap(),
        Storage::Sqlite(_) => unreachable!(),
    }
}

/// (status, owner, result id) of the run stored under the test key's job key `key`.
async fn job_row(s: &Storage, key: &str) -> Option<(String, String, String)> {
    match s {
        Storage::Postgres(pool) => sqlx::query_as(
            "SELECT status, owner_replica, result_id FROM results WHERE job_key = $1",
        )
        .bind(format!("test-admin|{key}"))
        .fetch_optional(pool)
        .await
        .unwrap(),
        Storage::Sqlite(_) => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_taken_once_and_an_expired_one_only_by_another_replica() {
    let test = "cluster_leases";
    let Some((s, schema)) = postgres_store(test).await else {
        return;
    };
    let probes = vec!["p1".to_string()];
    s.enqueue_work("req-1", "p1", "origin", "{}", 10_000, 1_000)
        .await
        .unwrap();
    // The same request queued twice is one row.
    s.enqueue_work("req-1", "p1", "origin", "{}", 10_000, 1_000)
        .await
        .unwrap();
    // Two replicas take at the same moment: one gets it.
    let (a, b) = tokio::join!(
        s.claim_work("ra", &probes, 2_000, 3_000, 10),
        s.claim_work("rb", &probes, 2_000, 3_000, 10)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len() + b.len(), 1, "taken by exactly one: {a:?} {b:?}");
    let (owner, other) = if a.is_empty() {
        ("rb", "ra")
    } else {
        ("ra", "rb")
    };
    // Before the lease ends nobody takes it again, not even its owner.
    assert!(s
        .claim_work(other, &probes, 4_000, 3_000, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(s
        .claim_work(owner, &probes, 4_000, 3_000, 10)
        .await
        .unwrap()
        .is_empty());
    // A live owner never takes its own request again, even after the lease ends (its
    // probe is still measuring or gone); after the lease (2000 + 3000) the other replica
    // (the one the probe moved to) takes it over.
    assert!(s
        .claim_work(owner, &probes, 5_001, 3_000, 10)
        .await
        .unwrap()
        .is_empty());
    let again = s
        .claim_work(other, &probes, 5_001, 3_000, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].request_id, "req-1");
    // The dead owner's late answer is refused; the new owner's is stored once.
    assert!(!s
        .finish_work(owner, "req-1", "\"late\"", 5_500)
        .await
        .unwrap());
    assert!(s
        .finish_work(other, "req-1", "\"ok\"", 5_600)
        .await
        .unwrap());
    assert!(!s
        .finish_work(other, "req-1", "\"twice\"", 5_700)
        .await
        .unwrap());
    let got = s.work_outcomes(&["req-1".to_string()]).await.unwrap();
    assert_eq!(got, vec![("req-1".to_string(), "\"ok\"".to_string())]);
    // An answered or past-deadline request is never taken.
    s.enqueue_work("req-2", "p1", "origin", "{}", 6_000, 5_000)
        .await
        .unwrap();
    assert!(s
        .claim_work(other, &probes, 6_001, 3_000, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(s
        .claim_work(owner, &probes, 9_000, 3_000, 10)
        .await
        .unwrap()
        .is_empty());
    drop_pg_schema(&s, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_on_sqlite_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--database", &sqlite_url(&dir), "--cluster"])
        .env_remove("GEOLOC_COORDINATOR_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cluster = true needs a postgres:// database"),
        "{err}"
    );
    let out = Command::new(BIN)
        .args(["--database", &pg_url(), "--cluster", "--replica-id", "a b"])
        .env_remove("GEOLOC_COORDINATOR_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("replica-id \"a b\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locate_on_one_replica_is_measured_by_the_probes_of_another_and_a_killed_replica_is_reaped(
) {
    let test = "cluster_replicas";
    let Some((s, schema)) = postgres_store(test).await else {
        return;
    };
    ensure_test_key(&s).await;
    let db = schema_url(&schema);
    bounded(120, async {
        let (_a, url_a) = cluster_replica(BIN, &db, "replica-a");
        let (mut b, url_b) = cluster_replica(BIN, &db, "replica-b");
        // Six probes, all connected to B only.
        let w = world(&[("127.0.0.50", LYON.0, LYON.1)]);
        let probes = fleet(&url_b, &w, 6).await;
        wait_until("A sees B's 6 probes healthy", 30, || {
            let url = url_a.clone();
            async move { healthy_at(&url).await.len() == 6 }
        })
        .await;
        // A locate accepted by A is measured by B's probes.
        let mut ca = geoloc_client::connect(&url_a).await.unwrap();
        let (_, r) = locate(&mut ca, req(TARGET)).await;
        let r = r.expect("located through the other replica");
        assert_eq!(r.probes_asked, 6, "{r:?}");
        assert_eq!(r.probes_used, 6, "{r:?}");
        assert_eq!(r.nearest_probe, "paris");
        // Each probe measured the target once for this locate.
        for p in &probes {
            assert_eq!(p.count(TARGET), 1, "{} measured {TARGET}", p.id);
        }
        let states = s.work_states().await.unwrap();
        assert_eq!(states, vec![("done".to_string(), 6)], "{states:?}");
        // A result row started by A carries A's id (a dead A's runs are A's to give up).
        let owner: String = match &s {
            Storage::Postgres(pool) => {
                sqlx::query_scalar("SELECT owner_replica FROM results WHERE result_id = $1")
                    .bind(&r.result_id)
                    .fetch_one(pool)
                    .await
                    .unwrap()
            }
            Storage::Sqlite(_) => unreachable!(),
        };
        assert_eq!(owner, "replica-a");

        // A locate B accepted and is still measuring when B dies (one probe never
        // answers it): its result row is B's, `running`.
        let hang = FakeProbe::start(
            &url_b,
            "hang",
            LYON,
            LYON,
            "127.0.1.99",
            w.clone(),
            Behaviour::HangOnUnknown,
        )
        .await;
        wait_until("B sees the hanging probe", 30, || {
            let url = url_b.clone();
            async move { healthy_at(&url).await.len() == 7 }
        })
        .await;
        let url = url_b.clone();
        let stuck = tokio::spawn(async move {
            let mut cb = geoloc_client::connect(&url).await.unwrap();
            let mut r = req("127.0.0.99");
            r.timeout_ms = 20_000;
            let _ = cb.locate(r).await.map(|s| s.into_inner());
            // Held open until B dies.
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let running_of_b = |s: Storage| async move {
            match &s {
                Storage::Postgres(pool) => sqlx::query_scalar::<_, String>(
                    "SELECT status FROM results WHERE ip = '127.0.0.99' AND owner_replica = 'replica-b'",
                )
                .fetch_optional(pool)
                .await
                .unwrap(),
                Storage::Sqlite(_) => unreachable!(),
            }
        };
        wait_until("B's locate running", 30, || {
            let s = s.clone();
            async move { running_of_b(s).await.as_deref() == Some("running") }
        })
        .await;

        // B is killed: A reaps it (its sessions gone: no healthy probe left) and a locate
        // on A fails cleanly instead of waiting on dead probes.
        b.child().kill().unwrap();
        let _ = b.child().wait();
        drop(probes);
        wait_until("A forgets B's probes", 30, || {
            let url = url_a.clone();
            async move { healthy_at(&url).await.is_empty() }
        })
        .await;
        // B's row is reaped by A (within the TTL plus a reaping period).
        wait_until("A reaps B", 30, || {
            let s = s.clone();
            async move {
                let replicas: Vec<String> = match &s {
                    Storage::Postgres(pool) => {
                        sqlx::query_scalar("SELECT replica_id FROM replicas")
                            .fetch_all(pool)
                            .await
                            .unwrap()
                    }
                    Storage::Sqlite(_) => unreachable!(),
                };
                replicas == vec!["replica-a".to_string()]
            }
        })
        .await;
        // The run B left unfinished is marked interrupted by A.
        assert_eq!(running_of_b(s.clone()).await.as_deref(), Some("interrupted"));
        stuck.abort();
        drop(hang);
        // The probes reconnect to A: it measures with them itself.
        let probes = fleet(&url_a, &w, 6).await;
        wait_until("the probes healthy on A", 30, || {
            let url = url_a.clone();
            async move { healthy_at(&url).await.len() == 6 }
        })
        .await;
        let (_, r2) = locate(&mut ca, req(TARGET)).await;
        let r2 = r2.expect("located by A's own probes");
        assert_eq!(r2.probes_used, 6, "{r2:?}");
        for p in &probes {
            assert_eq!(p.count(TARGET), 1, "{} measured {TARGET}", p.id);
        }
        assert_eq!(s.work_states().await.unwrap().len(), 1, "no new work item");
    })
    .await;
    drop_pg_schema(&s, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_whose_replica_is_killed_finishes_on_another_with_every_address_once() {
    let test = "cluster_audit";
    let Some((s, schema)) = postgres_store(test).await else {
        return;
    };
    ensure_test_key(&s).await;
    let db = schema_url(&schema);
    bounded(180, async {
        let (_a, url_a) = cluster_replica(BIN, &db, "replica-a");
        let (mut b, url_b) = cluster_replica(BIN, &db, "replica-b");
        // 40 targets spread over Europe; the probes (on A) answer after 100 ms, so the
        // audit is still running when B dies.
        let mut entries = Vec::new();
        for i in 0..40u32 {
            entries.push((
                format!("127.0.3.{}", i + 1),
                40.0 + f64::from(i % 10),
                -5.0 + f64::from(i / 4),
            ));
        }
        let w = world(
            &entries
                .iter()
                .map(|(ip, lat, lon)| (ip.as_str(), *lat, *lon))
                .collect::<Vec<_>>(),
        );
        let probes = fleet_as(&url_a, &w, 6, Behaviour::Delayed(100)).await;
        wait_until("B sees A's 6 probes", 30, || {
            let url = url_b.clone();
            async move { healthy_at(&url).await.len() == 6 }
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("ips.txt");
        let ips: Vec<String> = entries.iter().map(|e| e.0.clone()).collect();
        std::fs::write(&input, ips.join("\n") + "\n").unwrap();
        let out = dir.path().join("out.csv");
        // B first: the audit starts there and moves on when B is gone.
        let args = geoloc_client::audit::AuditArgs {
            retry_for_s: 60,
            ..audit_args(&format!("{url_b},{url_a}"), &input, &out)
        };
        let audit = tokio::spawn(run_audit(args));
        // Kill B once some rows are written.
        let written = |p: &std::path::Path| {
            std::fs::read_to_string(p)
                .map(|t| t.lines().count().saturating_sub(1))
                .unwrap_or(0)
        };
        wait_for("10 rows written through B", 60, || written(&out) >= 10).await;
        b.child().kill().unwrap();
        let _ = b.child().wait();
        let rows_at_kill = written(&out);
        audit.await.unwrap().expect("the audit finishes on A");
        let mut r = csv::Reader::from_path(&out).unwrap();
        let headers = r.headers().unwrap().clone();
        let ip_col = headers.iter().position(|h| h == "ip").unwrap();
        let err_col = headers.iter().position(|h| h == "error").unwrap();
        let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
        let got: Vec<String> = rows.iter().map(|r| r[ip_col].to_string()).collect();
        assert_eq!(got, ips, "every address once, in input order");
        for r in &rows {
            assert_eq!(&r[err_col], "", "{:?}", r);
        }
        assert!(
            rows_at_kill < ips.len(),
            "B died before the end ({rows_at_kill} rows)"
        );
        let asked_again = ips
            .iter()
            .filter(|ip| probes.iter().any(|p| p.count(ip) > 1))
            .count();
        eprintln!(
            "audit of {} addresses: B killed after {rows_at_kill} rows; finished on A; {asked_again} addresses whose run A took over (same request ids)",
            ips.len()
        );
        // Every address has one run (its key), and no probe was asked to measure an
        // address under two request ids: a run cut off on B is taken over by A with the
        // same ids, which a real agent answers from its recent answers.
        for ip in &ips {
            assert_eq!(runs_of(&s, ip).await, 1, "runs of {ip}");
            for p in &probes {
                assert!(p.distinct(ip) <= 1, "{} measured {ip} under {} ids", p.id, p.distinct(ip));
            }
        }
    })
    .await;
    drop_pg_schema(&s, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_locate_whose_replica_dies_is_finished_by_another_and_answered_once() {
    let test = "cluster_jobs";
    let Some((s, schema)) = postgres_store(test).await else {
        return;
    };
    ensure_test_key(&s).await;
    let db = schema_url(&schema);
    bounded(150, async {
        let (_a, url_a) = cluster_replica(BIN, &db, "replica-a");
        let (mut b, url_b) = cluster_replica(BIN, &db, "replica-b");
        let w = world(&[("127.0.4.1", LYON.0, LYON.1), ("127.0.4.2", 48.8, 2.3)]);
        // Six probes on A, answering after 1 s: B's runs are in flight when B dies.
        let probes = fleet_as(&url_a, &w, 6, Behaviour::Delayed(1000)).await;
        wait_until("B sees A's 6 probes", 30, || {
            let url = url_b.clone();
            async move { healthy_at(&url).await.len() == 6 }
        })
        .await;
        // Run 1: a client that asks B, then gives up when B dies (nobody asks again).
        let url = url_b.clone();
        let lone = tokio::spawn(async move {
            let mut cb = geoloc_client::connect(&url).await.unwrap();
            let mut r = req("127.0.4.2");
            r.job_key = "lone-1".into();
            if let Ok(s) = cb.locate(r).await {
                let mut s = s.into_inner();
                while let Ok(Some(_)) = s.message().await {}
            }
        });
        // Run 2: `geoloc_client::Client` given B then A, which asks again with its key.
        let both = format!("{url_b},{url_a}");
        let asked = tokio::spawn(async move {
            let mut c = geoloc_client::Client::connect(&both).await.unwrap();
            let mut r = req("127.0.4.1");
            r.job_key = "retry-1".into();
            c.locate(r, |_| {}).await
        });
        wait_until("both runs running on B", 30, || {
            let s = s.clone();
            async move {
                let on_b = |r: Option<(String, String, String)>| {
                    r.is_some_and(|(st, owner, _)| st == "running" && owner == "replica-b")
                };
                on_b(job_row(&s, "lone-1").await) && on_b(job_row(&s, "retry-1").await)
            }
        })
        .await;
        let (_, _, lone_id) = job_row(&s, "lone-1").await.unwrap();
        let (_, _, retry_id) = job_row(&s, "retry-1").await.unwrap();
        b.child().kill().unwrap();
        let _ = b.child().wait();

        // Nobody asks for run 1 again: A's sweeper takes it over and finishes it.
        wait_until("A finishes B's orphaned run", 60, || {
            let s = s.clone();
            async move {
                job_row(&s, "lone-1")
                    .await
                    .is_some_and(|(st, owner, _)| st == "done" && owner == "replica-a")
            }
        })
        .await;
        lone.abort();
        // Run 2's client moved to A and got the one run's answer.
        let r = asked
            .await
            .unwrap()
            .expect("answered after the replica died");
        assert_eq!(r.result_id, retry_id, "the same run, not a new one");
        let (st, owner, _) = job_row(&s, "retry-1").await.unwrap();
        assert_eq!((st.as_str(), owner.as_str()), ("done", "replica-a"));
        // Asking again with a key returns its run, measuring nothing.
        let before: usize = probes.iter().map(|p| p.count("127.0.4.2")).sum();
        let mut ca = geoloc_client::connect(&url_a).await.unwrap();
        let mut again = req("127.0.4.2");
        again.job_key = "lone-1".into();
        let (_, r) = locate(&mut ca, again).await;
        let r = r.expect("the stored run");
        assert_eq!(r.result_id, lone_id);
        assert_eq!(r.probes_used, 6, "{r:?}");
        let after: usize = probes.iter().map(|p| p.count("127.0.4.2")).sum();
        assert_eq!(after, before, "nothing measured again");
        // One run per address; no probe asked under two request ids for one run.
        for ip in ["127.0.4.1", "127.0.4.2"] {
            assert_eq!(runs_of(&s, ip).await, 1, "runs of {ip}");
            for p in &probes {
                assert_eq!(
                    p.distinct(ip),
                    1,
                    "{} asked about {ip} under {} ids",
                    p.id,
                    p.distinct(ip)
                );
            }
        }
        // A key belongs to its address; a malformed key is refused.
        let mut other = req("127.0.4.1");
        other.job_key = "lone-1".into();
        let mut st = ca.locate(other).await.unwrap().into_inner();
        let e = st.message().await.expect_err("a key of another address");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().contains("was used for 127.0.4.2"),
            "{}",
            e.message()
        );
        let mut bad = req("127.0.4.1");
        bad.job_key = "no spaces".into();
        let st = ca.locate(bad).await.expect_err("malformed key");
        assert_eq!(st.code(), tonic::Code::InvalidArgument);
        assert!(st.message().contains("' '"), "{}", st.message());
    })
    .await;
    drop_pg_schema(&s, &schema).await;
}
