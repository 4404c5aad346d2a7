//! Operations (issue 8): `/metrics` and `/healthz` on the operations listener, the gRPC
//! health service, JSON logs, the retention of raw measurements and the indexed landmark
//! query, on real SQLite and PostgreSQL, over loopback.
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use geoloc_coordinator::core::measurement::{MeasurementResult, RawPing, RawTcp, TcpOutcome};
use geoloc_coordinator::storage::{MeasurementRow, ProbeRow, ResultRow, ResultStatus, Storage};
use geoloc_coordinator::unix_ms;

// ---- helpers ----------------------------------------------------------------------------

/// `GET path` on loopback: (status, body).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || geoloc_testenv::http::get(addr, &path))
        .await
        .unwrap()
}

use geoloc_testenv::http::sample;

async fn scrape(addr: std::net::SocketAddr) -> String {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

fn ping_json(rtts: &[f64]) -> String {
    serde_json::to_string(&MeasurementResult {
        request_id: "r".into(),
        target: "127.0.0.1".into(),
        ping: Some(RawPing {
            rtts_ms: rtts.to_vec(),
            sent: 3,
            received: rtts.len() as u32,
            min_rtt_ms: None,
            error: String::new(),
        }),
        ..Default::default()
    })
    .unwrap()
}

fn landmark_row(
    id: &str,
    from: (&str, f64, f64),
    to: (&str, f64, f64),
    raw_json: String,
    created_unix_ms: i64,
) -> MeasurementRow {
    MeasurementRow {
        measurement_id: id.into(),
        result_id: None,
        purpose: "landmark".into(),
        stage: 1,
        request_id: format!("req-{id}"),
        probe_id: from.0.into(),
        probe_lat: from.1,
        probe_lon: from.2,
        target: "127.0.0.1".into(),
        target_landmark: Some(to.0.into()),
        target_lat: Some(to.1),
        target_lon: Some(to.2),
        outcome: "answered".into(),
        error: String::new(),
        excluded: String::new(),
        packets_sent: 3,
        raw_json,
        created_unix_ms,
    }
}

fn probe_row(id: &str, lat: f64, lon: f64, epoch: i64, flagged: bool) -> ProbeRow {
    ProbeRow {
        probe_id: id.into(),
        lat,
        lon,
        ipv4: String::new(),
        ipv6: String::new(),
        agent_version: "t".into(),
        flagged,
        flag_reason: if flagged {
            "test".into()
        } else {
            String::new()
        },
        flag_epoch_unix_ms: epoch,
        first_seen_unix_ms: 1,
        last_seen_unix_ms: 1,
    }
}

fn result_row(id: &str, created: i64) -> ResultRow {
    ResultRow {
        result_id: id.into(),
        ip: "192.0.2.1".into(),
        mode: "all".into(),
        status: ResultStatus::Done,
        solution_json: None,
        error_code: String::new(),
        error: String::new(),
        geoip_json: None,
        calibration_json: None,
        probes_asked: 0,
        probes_used: 0,
        packets_sent: 0,
        min_rtt_ms: None,
        nearest_probe: String::new(),
        created_at_unix_ms: created,
        finished_unix_ms: Some(created),
        requested_by: String::new(),
    }
}

// ---- /metrics, /healthz and the gRPC health service --------------------------------------

async fn metrics_follow_a_locate(srv: Server, backend: &str) {
    let w = world(&[(TARGET, LYON.0, LYON.1)]);
    let probes = fleet(&srv.url, &w, 4).await;
    wait_healthy(&srv.coord, 4).await;
    let stop = geoloc_rt::CancellationToken::new();
    let addr =
        geoloc_coordinator::ops::spawn(&srv.coord, "127.0.0.1:0".parse().unwrap(), stop.clone())
            .await
            .unwrap();

    let before = scrape(addr).await;
    assert_eq!(
        sample(&before, "geoloc_coordinator_probes_connected"),
        Some(4.0),
        "{before}"
    );
    assert_eq!(
        sample(&before, "geoloc_coordinator_probes_healthy"),
        Some(4.0),
        "{before}"
    );
    assert_eq!(
        sample(&before, "geoloc_coordinator_probes_flagged"),
        Some(0.0),
        "{before}"
    );
    assert_eq!(
        sample(&before, "geoloc_coordinator_locates_in_flight"),
        Some(0.0),
        "{before}"
    );
    let packets_before = sample(&before, "geoloc_coordinator_packets_sent_total").unwrap();
    let answered_before = sample(
        &before,
        "geoloc_coordinator_measurements_total{outcome=\"answered\"}",
    )
    .unwrap_or(0.0);
    let storage_series =
        format!("geoloc_coordinator_storage_duration_seconds_count{{backend=\"{backend}\"}}");
    let storage_before = sample(&before, &storage_series).unwrap_or(0.0);
    // Plain counters are shown from the start; labelled families (locate durations,
    // errors by kind) appear with their first sample (prometheus-client leaves empty
    // families out).
    assert!(
        before.contains("# TYPE geoloc_coordinator_retention_deleted_rows counter"),
        "{before}"
    );

    let mut client = srv.client().await;
    let (_, answer) = locate(&mut client, req(TARGET)).await;
    answer.expect("located");

    let after = scrape(addr).await;
    let packets = sample(&after, "geoloc_coordinator_packets_sent_total").unwrap();
    // Four probes, three echo requests each.
    assert_eq!(packets - packets_before, 12.0, "{after}");
    let answered = sample(
        &after,
        "geoloc_coordinator_measurements_total{outcome=\"answered\"}",
    )
    .unwrap();
    assert_eq!(answered - answered_before, 4.0, "{after}");
    assert_eq!(
        sample(
            &after,
            "geoloc_coordinator_locate_duration_seconds_count{outcome=\"located\"}"
        ),
        Some(1.0),
        "{after}"
    );
    assert!(
        sample(&after, &storage_series).unwrap() > storage_before,
        "storage calls of the locate are timed: {after}"
    );

    // The probes go away: the gauges follow at the next scrape.
    drop(probes);
    wait_until("probes disconnected", 10, || async {
        sample(&scrape(addr).await, "geoloc_coordinator_probes_connected") == Some(0.0)
    })
    .await;

    let (status, body) = http_get(addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    srv.coord.begin_shutdown();
    let (status, _) = http_get(addr, "/healthz").await;
    assert_eq!(status, 503);
    let (status, _) = http_get(addr, "/nothing-here").await;
    assert_eq!(status, 404);
    stop.cancel();
    srv.stop().await;
}

#[tokio::test]
async fn metrics_follow_a_locate_on_sqlite() {
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |_| {}).await;
        metrics_follow_a_locate(srv, "sqlite").await;
    })
    .await;
}

#[tokio::test]
async fn metrics_follow_a_locate_on_postgres() {
    bounded(60, async {
        let Some((storage, schema)) = postgres_store("ops_metrics").await else {
            return;
        };
        let srv = Server::start_with("127.0.0.1:0".parse().unwrap(), storage, |_| {}).await;
        metrics_follow_a_locate(srv, "postgres").await;
        let again = Storage::connect_in_schema(&pg_url(), Some(&schema))
            .await
            .unwrap();
        drop_pg_schema(&again, &schema).await;
    })
    .await;
}

#[tokio::test]
async fn grpc_health_is_serving_then_not_serving_on_shutdown() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};
    bounded(30, async {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |_| {}).await;
        let channel = tonic::transport::Endpoint::from_shared(srv.url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut h = HealthClient::new(channel);
        for service in ["", "geoloc.v1.ProbeService", "geoloc.v1.LocateService"] {
            let r = h
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(r.status(), ServingStatus::Serving, "{service:?}");
        }
        let unknown = h
            .check(HealthCheckRequest {
                service: "geoloc.v1.Nothing".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);
        let mut watch = h
            .watch(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let first = watch.message().await.unwrap().unwrap();
        assert_eq!(first.status(), ServingStatus::Serving);
        let stopping = tokio::spawn(srv.stop());
        let next = tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .expect("a status change")
            .unwrap()
            .unwrap();
        assert_eq!(next.status(), ServingStatus::NotServing);
        drop(watch);
        drop(h);
        stopping.await.unwrap();
    })
    .await;
}

// ---- retention ----------------------------------------------------------------------------

async fn retention_keeps_what_results_need(storage: Storage) {
    const DAY: i64 = 86_400_000;
    let now = unix_ms();
    let old = now - 40 * DAY;
    let recent = now - DAY;
    storage
        .upsert_probe(&probe_row("honest", 48.0, 2.0, 0, false))
        .await
        .unwrap();
    storage
        .upsert_probe(&probe_row("liar", 1.0, 1.0, 0, true))
        .await
        .unwrap();
    storage
        .insert_result(&result_row("kept-result", old))
        .await
        .unwrap();
    let json = ping_json(&[5.0]);
    let rows = [
        // old landmark rows of unflagged probes: deleted
        landmark_row(
            "old-lm-1",
            ("honest", 48.0, 2.0),
            ("other", 50.0, 8.0),
            json.clone(),
            old,
        ),
        landmark_row(
            "old-lm-2",
            ("other", 50.0, 8.0),
            ("honest", 48.0, 2.0),
            json.clone(),
            old,
        ),
        // old evidence of the flagged probe, measuring or measured: kept
        landmark_row(
            "old-liar-1",
            ("liar", 1.0, 1.0),
            ("honest", 48.0, 2.0),
            json.clone(),
            old,
        ),
        landmark_row(
            "old-liar-2",
            ("honest", 48.0, 2.0),
            ("liar", 1.0, 1.0),
            json.clone(),
            old,
        ),
        // recent landmark row: kept
        landmark_row(
            "recent-lm",
            ("honest", 48.0, 2.0),
            ("other", 50.0, 8.0),
            json.clone(),
            recent,
        ),
    ];
    for r in &rows {
        storage.insert_measurement(r).await.unwrap();
    }
    // old rows of a stored result: kept; old rows of a result that does not exist: deleted
    for (id, result) in [
        ("old-of-result", "kept-result"),
        ("old-orphan", "gone-result"),
    ] {
        let mut r = landmark_row(
            id,
            ("honest", 48.0, 2.0),
            ("x", 0.0, 0.0),
            json.clone(),
            old,
        );
        r.purpose = "locate".into();
        r.result_id = Some(result.into());
        r.target_landmark = None;
        r.target_lat = None;
        r.target_lon = None;
        storage.insert_measurement(&r).await.unwrap();
    }
    assert_eq!(storage.count_landmark_rtts().await.unwrap(), 5);

    let deleted = storage
        .purge_raw_measurements(now - 30 * DAY)
        .await
        .unwrap();
    assert_eq!(deleted, 3, "two old landmark rows and the orphan");
    assert_eq!(storage.landmark_measurements().await.unwrap().len(), 3);
    let left: Vec<String> = storage
        .landmark_measurements()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.measurement_id)
        .collect();
    assert_eq!(left, ["old-liar-1", "old-liar-2", "recent-lm"]);
    assert_eq!(
        storage
            .measurements_for_result("kept-result")
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(storage
        .measurements_for_result("gone-result")
        .await
        .unwrap()
        .is_empty());
    // The index lost the deleted landmark rows too.
    assert_eq!(storage.count_landmark_rtts().await.unwrap(), 3);
    // A second pass finds nothing more.
    assert_eq!(
        storage
            .purge_raw_measurements(now - 30 * DAY)
            .await
            .unwrap(),
        0
    );

    // Through the coordinator: raw-retention-days = 0 keeps everything, 1 deletes the rest
    // that is older than a day and needed by nothing.
    let keep = coordinator(storage.clone(), |c| c.raw_retention_days = 0).await;
    assert_eq!(keep.apply_retention().await.unwrap(), 0);
    let coord = coordinator(storage.clone(), |c| c.raw_retention_days = 1).await;
    let mut recent_row = landmark_row(
        "very-recent",
        ("honest", 48.0, 2.0),
        ("other", 50.0, 8.0),
        json,
        now,
    );
    recent_row.created_unix_ms = now;
    storage.insert_measurement(&recent_row).await.unwrap();
    assert_eq!(
        coord.apply_retention().await.unwrap(),
        1,
        "recent-lm is over a day old"
    );
    assert_eq!(coord.metrics.retention_deleted.get(), 1);
    let left: Vec<String> = storage
        .landmark_measurements()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.measurement_id)
        .collect();
    assert_eq!(left, ["old-liar-1", "old-liar-2", "very-recent"]);
}

#[tokio::test]
async fn retention_on_sqlite() {
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::connect(&sqlite_url(&dir)).await.unwrap();
        retention_keeps_what_results_need(storage).await;
    })
    .await;
}

#[tokio::test]
async fn retention_on_postgres() {
    bounded(60, async {
        let Some((storage, schema)) = postgres_store("ops_retention").await else {
            return;
        };
        retention_keeps_what_results_need(storage.clone()).await;
        drop_pg_schema(&storage, &schema).await;
    })
    .await;
}

// ---- the indexed landmark query ----------------------------------------------------------

/// A database filled with landmark rows of every kind the check meets: several RTTs per
/// pair (ties included), both directions, rows older than a flag epoch, declared positions
/// that moved (less and more than 1 km), unknown landmarks, passive landmarks, answers
/// without an echo RTT (last hop only, TCP RST, nothing, unreadable JSON).
async fn fill(storage: &Storage) {
    let probes = [
        ("p-par", 48.8566, 2.3522, 0i64),
        ("p-nyc", 40.7128, -74.006, 0),
        ("p-tok", 35.6762, 139.6503, 5_000),
        ("p-syd", -33.8688, 151.2093, 0),
        ("p-moved", 10.0, 10.0, 0),
    ];
    for (id, lat, lon, epoch) in probes {
        storage
            .upsert_probe(&probe_row(id, lat, lon, epoch, false))
            .await
            .unwrap();
    }
    // Positions as rows recorded them: p-moved was 500 km away before.
    let mut at: BTreeMap<&str, (f64, f64)> = probes
        .iter()
        .map(|(id, lat, lon, _)| (*id, (*lat, *lon)))
        .collect();
    at.insert("lm-rome", (41.9028, 12.4964));
    at.insert("ghost", (0.0, 0.0));
    let ids: Vec<&str> = at.keys().copied().collect();
    let mut n = 0;
    let mut seed: u64 = 42;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as f64 / (1u64 << 31) as f64
    };
    for round in 0..12 {
        for from in ["p-par", "p-nyc", "p-tok", "p-syd", "p-moved"] {
            for &to in &ids {
                if to == from {
                    continue;
                }
                n += 1;
                let created = 1_000 + i64::from(round) * 1_000 + n;
                let (mut flat, flon) = at[from];
                if from == "p-moved" && round < 4 {
                    flat += 4.5; // ~500 km: evidence about another position
                } else if from == "p-moved" && round < 8 {
                    flat += 0.004; // ~450 m: still the same position
                }
                let (tlat, tlon) = at[to];
                // Coarse RTTs so that equal minima happen across rounds and positions.
                let rtt = (next() * 8.0).round() + 1.0;
                let json = match n % 9 {
                    0 => "{not json".to_string(),
                    1 => serde_json::to_string(&MeasurementResult {
                        request_id: "r".into(),
                        target: "127.0.0.1".into(),
                        tcp: vec![RawTcp {
                            port: 443,
                            rtt_ms: Some(rtt + 0.5),
                            outcome: TcpOutcome::Rst,
                            error: String::new(),
                        }],
                        ..Default::default()
                    })
                    .unwrap(),
                    2 => ping_json(&[]),
                    _ => ping_json(&[rtt + 1.0, rtt, rtt + 2.0]),
                };
                let row = landmark_row(
                    &format!("m{n:05}"),
                    (from, flat, flon),
                    (to, tlat, tlon),
                    json,
                    created,
                );
                storage.insert_measurement(&row).await.unwrap();
            }
        }
    }
    // A locate row is no landmark evidence.
    let mut r = landmark_row(
        "loc",
        ("p-par", 48.8566, 2.3522),
        ("x", 0.0, 0.0),
        ping_json(&[0.01]),
        1,
    );
    r.purpose = "locate".into();
    r.target_landmark = None;
    storage.insert_measurement(&r).await.unwrap();
}

async fn indexed_query_matches_the_reparse(storage: Storage) {
    fill(&storage).await;
    let dir = tempfile::tempdir().unwrap();
    let lm = dir.path().join("landmarks.csv");
    std::fs::write(
        &lm,
        "id,lat,lon,ip,kind\nlm-rome,41.9028,12.4964,192.0.2.9,passive\n",
    )
    .unwrap();
    let coord = coordinator(storage.clone(), |c| c.landmarks = Some(lm.clone())).await;
    let new = coord.vetting.landmark_pairs(&coord).await.unwrap();
    let old = coord.vetting.landmark_pairs_reparsed(&coord).await.unwrap();
    assert!(new.len() >= 10, "{new:?}");
    assert!(!new.keys().any(|(a, b)| a == "ghost" || b == "ghost"));
    assert_eq!(new, old);

    // Rows stored before the index existed are indexed at start, with the same result.
    let indexed = storage.count_landmark_rtts().await.unwrap();
    match &storage {
        Storage::Sqlite(p) => {
            sqlx::query("DELETE FROM landmark_rtts")
                .execute(p)
                .await
                .unwrap();
        }
        Storage::Postgres(p) => {
            sqlx::query("DELETE FROM landmark_rtts")
                .execute(p)
                .await
                .unwrap();
        }
    }
    let again = coordinator(storage.clone(), |c| c.landmarks = Some(lm.clone())).await;
    assert_eq!(storage.count_landmark_rtts().await.unwrap(), indexed);
    assert_eq!(again.vetting.landmark_pairs(&again).await.unwrap(), old);

    // A flag cleared now moves the probe's epoch: older evidence about it stops counting,
    // in both readings.
    coord.clear_flag("p-par").await.unwrap();
    let new = coord.vetting.landmark_pairs(&coord).await.unwrap();
    assert_eq!(
        new,
        coord.vetting.landmark_pairs_reparsed(&coord).await.unwrap()
    );
    assert!(
        !new.keys().any(|(a, b)| a == "p-par" || b == "p-par"),
        "{new:?}"
    );
}

#[tokio::test]
async fn indexed_landmark_query_matches_the_reparse_on_sqlite() {
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::connect(&sqlite_url(&dir)).await.unwrap();
        indexed_query_matches_the_reparse(storage).await;
    })
    .await;
}

#[tokio::test]
async fn indexed_landmark_query_matches_the_reparse_on_postgres() {
    bounded(90, async {
        let Some((storage, schema)) = postgres_store("ops_landmarks").await else {
            return;
        };
        indexed_query_matches_the_reparse(storage.clone()).await;
        drop_pg_schema(&storage, &schema).await;
    })
    .await;
}

// ---- the binary: JSON logs and --metrics-listen --------------------------------------------

#[tokio::test]
async fn binary_logs_json_lines_and_serves_metrics() {
    use std::process::Command;
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_geoloc-coordinator"));
        cmd.args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(["--database", &sqlite_url(&dir), "--log-format", "json"])
            .env_remove("GEOLOC_COORDINATOR_CONFIG")
            .env("RUST_LOG", "info");
        let daemon = std::sync::Arc::new(geoloc_testenv::Daemon::spawn(
            "geoloc-coordinator",
            &mut cmd,
        ));
        let d = daemon.clone();
        let addr: std::net::SocketAddr = tokio::task::spawn_blocking(move || {
            d.stdout_after("metrics listening on ", Duration::from_secs(30))
        })
        .await
        .unwrap()
        .parse()
        .unwrap();
        let text = scrape(addr).await;
        assert_eq!(
            sample(&text, "geoloc_coordinator_probes_connected"),
            Some(0.0),
            "{text}"
        );
        assert_eq!(http_get(addr, "/healthz").await.0, 200);

        // Every log line so far is one JSON object with a level and a message.
        let d = daemon.clone();
        let lines = tokio::task::spawn_blocking(move || {
            d.stderr_until("geoloc-coordinator listening", Duration::from_secs(5))
        })
        .await
        .unwrap();
        assert!(
            lines
                .iter()
                .any(|l| l.contains("geoloc-coordinator listening")),
            "{lines:?}"
        );
        for l in &lines {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            assert!(v["level"].is_string(), "{l}");
            assert!(v["fields"]["message"].is_string(), "{l}");
            assert!(v["timestamp"].is_string(), "{l}");
        }
    })
    .await;
}
