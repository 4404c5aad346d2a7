//! Storage tests, run identically against SQLite (a temporary file) and PostgreSQL
//! (`postgres://postgres@127.0.0.1:5432/test`, or `GEOLOC_TEST_PG_URL`; each test works in a
//! schema of its own, dropped at the end). A PostgreSQL test skips (through
//! `geoloc_testenv::skip`: a failure under `GEOLOC_REQUIRE_ENV=1`) only when the server
//! cannot be reached; any other error, a migration failing on PostgreSQL included, fails it.
mod common;

use geoloc_coordinator::core::measurement::{MeasurementResult, RawPing};
use geoloc_coordinator::core::solve::{inputs_from_rows, solve, GeoIpJson};
use geoloc_coordinator::storage::{MeasurementRow, ProbeRow, ResultRow, ResultStatus, Storage};

/// A store for one test; the guard removes it.
struct Store {
    storage: Storage,
    _dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

impl Store {
    async fn sqlite() -> Store {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.sqlite").display());
        Store {
            storage: Storage::connect(&url).await.unwrap(),
            _dir: Some(dir),
            schema: None,
        }
    }

    async fn postgres(test: &str) -> Option<Store> {
        let (storage, schema) = common::postgres_store(test).await?;
        Some(Store {
            storage,
            _dir: None,
            schema: Some(schema),
        })
    }

    async fn done(self) {
        if let Some(schema) = &self.schema {
            common::drop_pg_schema(&self.storage, schema).await;
        }
        self.storage.close().await;
    }
}

/// Runs `$body(storage)` once on SQLite and once on PostgreSQL.
macro_rules! both_backends {
    ($name:ident, $body:path) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let s = super::Store::sqlite().await;
                tokio::time::timeout(std::time::Duration::from_secs(60), $body(&s.storage))
                    .await
                    .expect("bounded");
                s.done().await;
            }
            #[tokio::test]
            async fn postgres() {
                let Some(s) = super::Store::postgres(concat!(stringify!($name), "_postgres")).await
                else {
                    return;
                };
                tokio::time::timeout(std::time::Duration::from_secs(60), $body(&s.storage))
                    .await
                    .expect("bounded");
                s.done().await;
            }
        }
    };
}

fn probe(id: &str, lat: f64, lon: f64) -> ProbeRow {
    ProbeRow {
        probe_id: id.into(),
        lat,
        lon,
        ipv4: "192.0.2.1".into(),
        ipv6: String::new(),
        agent_version: "1.0".into(),
        flagged: false,
        flag_reason: String::new(),
        flag_epoch_unix_ms: 0,
        first_seen_unix_ms: 1000,
        last_seen_unix_ms: 2000,
    }
}

fn result(id: &str, ip: &str, created: i64) -> ResultRow {
    ResultRow {
        result_id: id.into(),
        ip: ip.into(),
        mode: "all".into(),
        status: ResultStatus::Running,
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
        finished_unix_ms: None,
        requested_by: "tester".into(),
    }
}

fn meas(
    id: &str,
    result_id: Option<&str>,
    probe: &ProbeRow,
    rtts: &[f64],
    created: i64,
) -> MeasurementRow {
    let raw = MeasurementResult {
        request_id: format!("req-{id}"),
        target: "81.2.69.142".into(),
        ping: Some(RawPing {
            rtts_ms: rtts.to_vec(),
            sent: 3,
            received: rtts.len() as u32,
            ..Default::default()
        }),
        ..Default::default()
    };
    MeasurementRow {
        measurement_id: id.into(),
        result_id: result_id.map(str::to_string),
        purpose: if result_id.is_some() {
            "locate"
        } else {
            "landmark"
        }
        .into(),
        stage: 1,
        request_id: raw.request_id.clone(),
        probe_id: probe.probe_id.clone(),
        probe_lat: probe.lat,
        probe_lon: probe.lon,
        target: raw.target.clone(),
        target_landmark: None,
        target_lat: None,
        target_lon: None,
        outcome: if rtts.is_empty() {
            "no-reply"
        } else {
            "answered"
        }
        .into(),
        error: String::new(),
        excluded: String::new(),
        packets_sent: 3,
        raw_json: serde_json::to_string(&raw).unwrap(),
        created_unix_ms: created,
    }
}

async fn probes_roundtrip(s: &Storage) {
    assert!(s.list_probes().await.unwrap().is_empty());
    let mut p = probe("paris", 48.8566, 2.3522);
    s.upsert_probe(&p).await.unwrap();
    assert_eq!(s.get_probe("paris").await.unwrap().unwrap(), p);
    assert!(s
        .set_probe_flag("paris", true, "RTT 1.00 ms to x is faster than light", None)
        .await
        .unwrap());
    // Re-registering keeps the flag and the first-seen time, updates the rest.
    p.agent_version = "2.0".into();
    p.first_seen_unix_ms = 5000;
    p.last_seen_unix_ms = 6000;
    s.upsert_probe(&p).await.unwrap();
    let got = s.get_probe("paris").await.unwrap().unwrap();
    assert!(got.flagged);
    assert_eq!(got.flag_reason, "RTT 1.00 ms to x is faster than light");
    assert_eq!(
        (
            got.first_seen_unix_ms,
            got.last_seen_unix_ms,
            got.agent_version.as_str()
        ),
        (1000, 6000, "2.0")
    );
    s.set_probe_flag("paris", false, "", Some(7000))
        .await
        .unwrap();
    let got = s.get_probe("paris").await.unwrap().unwrap();
    assert!(!got.flagged && got.flag_epoch_unix_ms == 7000);
    assert!(!s.set_probe_flag("nobody", true, "", None).await.unwrap());
    s.upsert_probe(&probe("athens", 37.98, 23.73))
        .await
        .unwrap();
    s.touch_probe("athens", 9999).await.unwrap();
    let all = s.list_probes().await.unwrap();
    assert_eq!(
        all.iter().map(|p| p.probe_id.as_str()).collect::<Vec<_>>(),
        ["athens", "paris"]
    );
    assert_eq!(all[0].last_seen_unix_ms, 9999);
    assert!(s.get_probe("nobody").await.unwrap().is_none());
}
both_backends!(probes, super::probes_roundtrip);

async fn results_lifecycle(s: &Storage) {
    let mut a = result("r1", "81.2.69.142", 1000);
    s.insert_result(&a).await.unwrap();
    assert!(
        s.latest_done_result("81.2.69.142").await.unwrap().is_none(),
        "running is not done"
    );
    a.status = ResultStatus::Done;
    a.solution_json = Some("{\"x\":1}".into());
    a.probes_used = 3;
    a.probes_asked = 4;
    a.packets_sent = 12;
    a.min_rtt_ms = Some(1.25);
    a.nearest_probe = "london".into();
    a.geoip_json = Some("null".into());
    a.finished_unix_ms = Some(1500);
    s.update_result(&a).await.unwrap();
    assert_eq!(s.get_result("r1").await.unwrap().unwrap(), a);
    let mut b = result("r2", "81.2.69.142", 2000);
    b.status = ResultStatus::Done;
    b.solution_json = Some("{}".into());
    s.insert_result(&b).await.unwrap();
    assert_eq!(
        s.latest_done_result("81.2.69.142")
            .await
            .unwrap()
            .unwrap()
            .result_id,
        "r2"
    );
    s.insert_result(&result("r3", "81.2.69.142", 3000))
        .await
        .unwrap();
    assert_eq!(s.count_results("81.2.69.142").await.unwrap(), 3);
    // A restart marks unfinished runs interrupted.
    assert_eq!(s.mark_interrupted(4000).await.unwrap(), 1);
    let r3 = s.get_result("r3").await.unwrap().unwrap();
    assert_eq!(r3.status, ResultStatus::Interrupted);
    assert_eq!(r3.finished_unix_ms, Some(4000));
    assert_eq!(
        s.latest_done_result("81.2.69.142")
            .await
            .unwrap()
            .unwrap()
            .result_id,
        "r2"
    );
    assert!(s.get_result("nope").await.unwrap().is_none());
    // Duplicate ids are refused.
    assert!(s.insert_result(&result("r1", "1.1.1.1", 1)).await.is_err());
}
both_backends!(results, super::results_lifecycle);

async fn measurements_and_recompute(s: &Storage) {
    let probes = [
        probe("london", 51.5074, -0.1278),
        probe("paris", 48.8566, 2.3522),
        probe("newyork", 40.7128, -74.006),
    ];
    for p in &probes {
        s.upsert_probe(p).await.unwrap();
    }
    let mut r = result("r1", "81.2.69.142", 1_700_000_000_000);
    r.geoip_json = Some(
        serde_json::to_string(&Some(GeoIpJson {
            lat: 51.5142,
            lon: -0.0931,
            city: Some("London".into()),
            country: Some("GB".into()),
            accuracy_radius_km: Some(10.0),
        }))
        .unwrap(),
    );
    s.insert_result(&r).await.unwrap();
    let rows = vec![
        meas("m1", Some("r1"), &probes[0], &[1.9, 1.2, 1.5], 10),
        meas("m2", Some("r1"), &probes[1], &[5.1, 4.8], 11),
        meas("m3", Some("r1"), &probes[2], &[71.0], 12),
        meas("m4", None, &probes[0], &[3.0], 13),
    ];
    for m in &rows {
        s.insert_measurement(m).await.unwrap();
    }
    let got = s.measurements_for_result("r1").await.unwrap();
    assert_eq!(got, rows[..3].to_vec());
    assert_eq!(
        s.landmark_measurements().await.unwrap(),
        vec![rows[3].clone()]
    );
    assert_eq!(s.count_locate_measurements("81.2.69.142").await.unwrap(), 3);
    // Solve as the live path does, store, then recompute from the stored raw rows.
    let inputs = inputs_from_rows(&got).unwrap();
    assert_eq!(inputs.nearest(), Some(("london", 1.2)));
    assert_eq!(inputs.packets_sent, 9);
    let geoip = serde_json::from_str(r.geoip_json.as_deref().unwrap()).unwrap();
    // A calibration stored with the result is used again by recompute.
    let cal = geoloc_engine::Calibration::fit(
        &[
            ("london", 51.5074, -0.1278, "paris", 48.8566, 2.3522, 4.9),
            (
                "london", 51.5074, -0.1278, "newyork", 40.7128, -74.006, 70.0,
            ),
            ("paris", 48.8566, 2.3522, "newyork", 40.7128, -74.006, 76.0),
            ("london", 51.5074, -0.1278, "paris", 48.8566, 2.3522, 5.3),
            (
                "london", 51.5074, -0.1278, "newyork", 40.7128, -74.006, 72.0,
            ),
            ("paris", 48.8566, 2.3522, "newyork", 40.7128, -74.006, 78.0),
        ]
        .map(
            |(a, alat, alon, b, blat, blon, rtt)| geoloc_engine::LandmarkRtt {
                from: a.into(),
                from_pos: geoloc_engine::LatLon {
                    lat: alat,
                    lon: alon,
                },
                to: b.into(),
                to_pos: geoloc_engine::LatLon {
                    lat: blat,
                    lon: blon,
                },
                rtt_ms: rtt,
            },
        ),
    );
    r.calibration_json = Some(serde_json::to_string(&cal).unwrap());
    let sol = solve(
        &inputs,
        &Some(geoip),
        r.created_at_unix_ms / 1000,
        Some(cal),
    )
    .unwrap();
    r.status = ResultStatus::Done;
    r.solution_json = Some(serde_json::to_string(&sol).unwrap());
    s.update_result(&r).await.unwrap();
    let again = geoloc_coordinator::core::locate::recompute(s, "r1")
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_string(&again).unwrap(),
        r.solution_json.clone().unwrap()
    );
    assert_eq!(again.nearest_landmark, "london");
    assert_eq!(
        again.maxmind.as_ref().map(|m| m.city.clone()),
        Some(Some("London".into()))
    );
    // Recompute of an unknown result is a clear error.
    let e = geoloc_coordinator::core::locate::recompute(s, "nope")
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(e, "no result nope");
}
both_backends!(measurements, super::measurements_and_recompute);

/// A batch of measurement rows (more than two `MEAS_BATCH` chunks, landmark and locate rows,
/// empty and set optional fields) is stored exactly as the same rows stored one by one.
async fn measurements_batched_as_one_by_one(s: &Storage) {
    let p = probe("london", 51.5074, -0.1278);
    s.upsert_probe(&p).await.unwrap();
    for id in ["rb", "rs"] {
        s.insert_result(&result(id, "81.2.69.142", 1_700_000_000_000))
            .await
            .unwrap();
    }
    let n = 2 * geoloc_coordinator::storage::MEAS_BATCH + 7;
    assert!(n > 2 * geoloc_coordinator::storage::MEAS_ROWS_PER_STATEMENT);
    let rows = |prefix: &str, result_id: &str| -> Vec<MeasurementRow> {
        (0..n)
            .map(|i| {
                let rtts: &[f64] = if i % 5 == 0 { &[] } else { &[1.5, 2.25] };
                let mut m = meas(
                    &format!("{prefix}{i:05}"),
                    Some(result_id),
                    &p,
                    rtts,
                    i as i64,
                );
                // The same request in both sets: only the row ids differ.
                m.raw_json = m.raw_json.replace(&m.request_id, &format!("req-{i}"));
                m.request_id = format!("req-{i}");
                m.stage = 1 + (i % 2) as i64;
                if i % 3 == 0 {
                    m.target_landmark = Some(format!("lm-{i}"));
                    m.target_lat = Some(10.0 + i as f64 / 1e3);
                    m.target_lon = Some(-20.0);
                    m.error = "it's \"quoted\"; DROP TABLE x".into();
                }
                m
            })
            .collect()
    };
    let batched = rows("b", "rb");
    let single = rows("s", "rs");
    s.insert_measurements(&[]).await.unwrap();
    s.insert_measurements(&batched).await.unwrap();
    for m in &single {
        s.insert_measurement(m).await.unwrap();
    }
    let got_b = s.measurements_for_result("rb").await.unwrap();
    let got_s = s.measurements_for_result("rs").await.unwrap();
    assert_eq!(got_b, batched);
    assert_eq!(got_b.len(), n);
    let strip = |v: Vec<MeasurementRow>| -> Vec<MeasurementRow> {
        v.into_iter()
            .map(|mut m| {
                m.measurement_id = m.measurement_id[1..].to_string();
                m.result_id = None;
                m
            })
            .collect()
    };
    assert_eq!(strip(got_b), strip(got_s));
    // Storing rows again fails as a whole (one transaction): nothing is stored twice, not
    // even the new rows of the call.
    let mut again = rows("c", "rb")[..40].to_vec();
    again.extend_from_slice(&batched[..3]);
    assert!(s.insert_measurements(&again).await.is_err());
    assert_eq!(s.measurements_for_result("rb").await.unwrap().len(), n);
}
both_backends!(
    measurements_batched,
    super::measurements_batched_as_one_by_one
);

#[tokio::test]
async fn sqlite_is_wal_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("g.sqlite").display());
    {
        let s = Storage::connect(&url).await.unwrap();
        assert_eq!(
            s.sqlite_journal_mode().await.unwrap().as_deref(),
            Some("wal")
        );
        s.upsert_probe(&probe("paris", 48.8566, 2.3522))
            .await
            .unwrap();
        s.close().await;
    }
    // Migrations are idempotent; data is still there.
    let s = Storage::connect(&url).await.unwrap();
    assert_eq!(s.list_probes().await.unwrap().len(), 1);
    s.close().await;
}

#[tokio::test]
async fn bad_urls_are_clear_errors() {
    let e = Storage::connect("mysql://x/y")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("unsupported database URL"), "{e}");
    let e = Storage::connect("sqlite:///nonexistent-dir/x/y.sqlite")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent-dir/x/y.sqlite"), "{e}");
    let e = Storage::connect("postgres://u:secret@127.0.0.1:1/db")
        .await
        .unwrap_err()
        .to_string();
    assert!(!e.contains("secret") && e.contains("u:***@"), "{e}");
}
