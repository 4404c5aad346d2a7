//! `geoloc audit` and `geoloc locate --json` against an in-process coordinator with FAKE
//! probes (protocol-level; see tests/common), plus snapshot tests of the script-facing
//! schemas (audit CSV columns/rows, locate JSON).
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use geoloc_client::audit::{row_values, COLUMNS};
use geoloc_client::locate::{error_json, result_json};
use geoloc_client::{Located, Mode};
use geoloc_engine::{LatLon, MaxmindComparison, Method, Place, Solution, Timezone, Verdict};

fn read_rows(p: &Path) -> Vec<Vec<String>> {
    let mut r = csv::Reader::from_path(p).unwrap();
    r.records()
        .map(|x| x.unwrap().iter().map(String::from).collect())
        .collect()
}

#[tokio::test]
async fn audit_writes_every_row_in_order_and_resumes_without_measuring_twice() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |_| {}).await;
        let w = world(&[("127.0.0.50", 45.764, 4.8357), ("127.0.0.51", 35.0, 135.0), ("127.0.0.52", -34.6, -58.4)]);
        let probes = fleet(&srv.url, &w, 6).await;
        wait_healthy(&srv.coord, 6).await;
        let input = dir.path().join("ips.csv");
        let long = "9".repeat(5000);
        std::fs::write(
            &input,
            format!("name,ip\nlyon,127.0.0.50\nbad,nope\nzero,0.0.0.0\nosaka,127.0.0.51\nagain,127.0.0.50\nlong,{long}\nba,127.0.0.52\n"),
        )
        .unwrap();
        let out = dir.path().join("out.csv");
        run_audit(audit_args(&srv.url, &input, &out)).await.unwrap();
        let rows = read_rows(&out);
        let header = csv::Reader::from_path(&out).unwrap().headers().unwrap().iter().map(String::from).collect::<Vec<_>>();
        assert_eq!(header, COLUMNS);
        let col = |name: &str| COLUMNS.iter().position(|c| *c == name).unwrap();
        let ips: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(ips[..5], ["127.0.0.50", "nope", "0.0.0.0", "127.0.0.51", "127.0.0.50"]);
        assert!(ips[5].starts_with("long,99999") && ips[5].ends_with("..."), "{}", ips[5]);
        assert_eq!(ips[6], "127.0.0.52");
        assert_eq!(rows[1][col("error")], "invalid-address: not an IP address: \"nope\"");
        assert!(rows[2][col("error")].starts_with("bogon: "), "{:?}", rows[2]);
        assert_eq!(rows[5][col("error")], "line 7 is 5005 bytes long (limit 4096 bytes)");
        for i in [0, 3, 4, 6] {
            assert_eq!(rows[i][col("error")], "", "row {i}: {:?}", rows[i]);
            assert!(!rows[i][col("lat")].is_empty() && !rows[i][col("timezone")].is_empty());
            assert!(rows[i][col("probes_used")].parse::<u32>().unwrap() >= 3);
        }
        assert_eq!(rows[0][col("nearest_probe")], "paris");
        assert_eq!(rows[0][1..], rows[4][1..], "a repeated address gets the same answer");
        let asked = |p: &[FakeProbe]| p.iter().map(|p| p.requests.lock().unwrap().len()).sum::<usize>();
        let after_first = asked(&probes);
        assert_eq!(after_first, 6 * 3, "each distinct valid address measured once by each probe");

        // Interrupted run: only 2 rows and a torn line survived. Resume: same output, nothing
        // measured again (kept rows + stored results).
        let full = std::fs::read_to_string(&out).unwrap();
        let mut lines: Vec<&str> = full.lines().collect();
        lines.truncate(3);
        std::fs::write(&out, format!("{}\n127.0.0.5", lines.join("\n"))).unwrap();
        run_audit(audit_args(&srv.url, &input, &out)).await.unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), full);
        assert_eq!(asked(&probes), after_first, "nothing measured twice");

        // A row that failed for lack of probes is redone on resume; one with a bad address is kept.
        let mut lines: Vec<String> = full.lines().map(String::from).collect();
        let cells = COLUMNS.len() - 2;
        lines[1] = format!("127.0.0.50{}no-probes: no healthy probe to measure from", ",".repeat(cells + 1));
        std::fs::write(&out, lines.join("\n") + "\n").unwrap();
        run_audit(audit_args(&srv.url, &input, &out)).await.unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), full);
        assert_eq!(asked(&probes), after_first, "redone from the stored result, not measured");

        // Other columns than the existing file: refused with a clear message.
        let mut a = audit_args(&srv.url, &input, &out);
        a.columns = Some("ip,city".into());
        let e = run_audit(a).await.unwrap_err().to_string();
        assert!(e.contains("exists with columns") && e.contains("another --output"), "{e}");

        // Chosen columns, fresh file.
        let out2 = dir.path().join("out2.csv");
        let mut a = audit_args(&srv.url, &input, &out2);
        a.columns = Some("ip,country,error".into());
        run_audit(a).await.unwrap();
        let text = std::fs::read_to_string(&out2).unwrap();
        assert!(text.starts_with("ip,country,error\n127.0.0.50,FR,\n"), "{text}");

        // Empty input: a clear error, no output file.
        let empty = dir.path().join("empty.csv");
        std::fs::write(&empty, "").unwrap();
        let out3 = dir.path().join("out3.csv");
        let e = run_audit(audit_args(&srv.url, &empty, &out3)).await.unwrap_err().to_string();
        assert!(e.contains("contains no addresses"), "{e}");
        assert!(!out3.exists());
        srv.stop().await;
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn audit_without_a_coordinator_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("ips.txt");
    std::fs::write(&input, "81.2.69.142\n").unwrap();
    let mut a = audit_args("http://127.0.0.1:9", &input, &dir.path().join("o.csv"));
    a.retry_for_s = 1;
    let t0 = Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(30), run_audit(a))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "gave up after {:?}",
        t0.elapsed()
    );
    let msg = format!("{e:#}");
    assert!(
        msg.contains("cannot reach the coordinator at http://127.0.0.1:9"),
        "{msg}"
    );
    assert!(
        msg.contains("run the same command again to resume"),
        "{msg}"
    );
}

/// A fixed result with a hand-written solution holding every field the columns read.
fn sample_result() -> Located {
    let solution = Solution {
        method: Method::Bestline,
        estimate: LatLon {
            lat: 51.50741234,
            lon: -0.12781234,
        },
        radius_km: 35.06,
        region_km2: 3861.2,
        radius_50_km: None,
        radius_90_km: None,
        timezone: Timezone {
            iana: "Europe/London".into(),
            utc_offset: "+00:00".into(),
            utc_offset_s: 0,
        },
        timezones: vec![],
        place: Place {
            city: "London".into(),
            country: "GB".into(),
            distance_km: 1.2,
        },
        anycast: false,
        instances: vec![],
        collusion: None,
        dropped: vec![],
        loosened: vec![],
        maxmind: Some(MaxmindComparison {
            lat: Some(51.5142),
            lon: Some(-0.0931),
            city: Some("London".into()),
            country: Some("GB".into()),
            accuracy_radius_km: Some(10.0),
            distance_km: Some(2.51),
            verdict: Verdict::Consistent,
            ruled_out_by: None,
            excess_km: None,
            ..MaxmindComparison::no_data()
        }),
        landmarks: 7,
        used: 5,
        min_rtt_ms: 1.234,
        nearest_landmark: "london".into(),
        region: serde_json::Value::Null,
        region_constraints: vec![],
        region_tolerance: 0,
    };
    Located {
        result_id: "0123456789abcdef0123456789abcdef".into(),
        ip: "81.2.69.142".into(),
        solution,
        probes_used: 5,
        created_at_unix_ms: 1_700_000_000_000,
        cached: false,
        mode: Mode::TwoStage,
        packets_sent: 21,
        min_rtt_ms: Some(1.234),
        nearest_probe: "london".into(),
        probes_asked: 7,
        probe_rtts: vec![],
        requested_by: String::new(),
        atlas_credits: 0,
        atlas_probes_asked: 0,
    }
}

#[test]
fn audit_csv_schema_snapshot() {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS).unwrap();
    let ok = row_values("81.2.69.142", &Ok(sample_result()));
    w.write_record(COLUMNS.iter().map(|c| ok[c].as_str()))
        .unwrap();
    let bad = row_values(
        "10.0.0.1",
        &Err("bogon: 10.0.0.1 is a private address".into()),
    );
    w.write_record(COLUMNS.iter().map(|c| bad[c].as_str()))
        .unwrap();
    let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
    insta::assert_snapshot!(text, @r###"
    ip,lat,lon,radius_km,city,country,timezone,utc_offset,anycast,probes_used,min_rtt_ms,nearest_probe,maxmind_lat,maxmind_lon,maxmind_city,maxmind_country,maxmind_accuracy_km,maxmind_distance_km,maxmind_verdict,error
    81.2.69.142,51.5074,-0.1278,35.1,London,GB,Europe/London,+00:00,false,5,1.23,london,51.5142,-0.0931,London,GB,10,2.5,consistent,
    10.0.0.1,,,,,,,,,,,,,,,,,,,bogon: 10.0.0.1 is a private address
    "###);
}

#[test]
fn locate_json_schema_snapshot() {
    let mut v = result_json("81.2.69.142", &sample_result());
    v["solution"] = serde_json::json!("<the engine's Solution, engine/SCHEMA.md>");
    insta::assert_snapshot!(serde_json::to_string_pretty(&v).unwrap(), @r###"
    {
      "cached": false,
      "created_at_unix_ms": 1700000000000,
      "ip": "81.2.69.142",
      "min_rtt_ms": 1.234,
      "mode": "two-stage",
      "nearest_probe": "london",
      "packets_sent": 21,
      "probes_asked": 7,
      "probes_used": 5,
      "result_id": "0123456789abcdef0123456789abcdef",
      "solution": "<the engine's Solution, engine/SCHEMA.md>"
    }
    "###);
    insta::assert_snapshot!(error_json("10.0.0.1", "bogon", "10.0.0.1 is a private address").to_string(),
        @r###"{"error":{"code":"bogon","message":"10.0.0.1 is a private address"},"ip":"10.0.0.1"}"###);
}

/// A line of `geoloc locate --json --source atlas --budget N`: the phased mode and what the
/// Atlas probes cost (absent from fleet-only lines, above).
#[test]
fn locate_json_schema_snapshot_with_atlas() {
    let l = Located {
        mode: Mode::Phased,
        probes_asked: 45,
        packets_sent: 135,
        nearest_probe: "atlas:6001".into(),
        atlas_credits: 270,
        atlas_probes_asked: 45,
        ..sample_result()
    };
    let mut v = result_json("198.51.100.7", &l);
    v["solution"] = serde_json::json!("<the engine's Solution, engine/SCHEMA.md>");
    insta::assert_snapshot!(serde_json::to_string_pretty(&v).unwrap(), @r###"
    {
      "atlas_credits": 270,
      "atlas_probes_asked": 45,
      "cached": false,
      "created_at_unix_ms": 1700000000000,
      "ip": "198.51.100.7",
      "min_rtt_ms": 1.234,
      "mode": "phased",
      "nearest_probe": "atlas:6001",
      "packets_sent": 135,
      "probes_asked": 45,
      "probes_used": 5,
      "result_id": "0123456789abcdef0123456789abcdef",
      "solution": "<the engine's Solution, engine/SCHEMA.md>"
    }
    "###);
}

/// The coordinator stops while the third of six addresses is being measured (every probe
/// holds that request), then comes back on the same port and database with the probes: the
/// audit retries, writes every row once in order, and nothing is measured twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_restarted_mid_batch_loses_nothing_and_measures_nothing_twice() {
    bounded(120, async {
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite_url(&dir);
        let ips: Vec<String> = (60..66).map(|i| format!("127.0.0.{i}")).collect();
        let place = |k: usize| LatLon {
            lat: 10.0 * k as f64,
            lon: 20.0 * k as f64,
        };
        // Before the restart the probes know only the first two addresses: they answer those
        // and hold the request for the third until the coordinator goes away.
        let (before, after) = (world(&[]), world(&[]));
        for (k, ip) in ips.iter().enumerate() {
            if k < 2 {
                before.lock().unwrap().insert(ip.clone(), place(k));
            }
            after.lock().unwrap().insert(ip.clone(), place(k));
        }
        let srv = Server::start(&db, |c| {
            c.batch_concurrency = 1;
            c.probe_timeout_ms = 60_000;
        })
        .await;
        let addr = srv.addr;
        let p1 = fleet_as(&srv.url, &before, 4, Behaviour::HangOnUnknown).await;
        wait_healthy(&srv.coord, 4).await;
        let input = dir.path().join("ips.txt");
        std::fs::write(&input, ips.join("\n")).unwrap();
        let out = dir.path().join("out.csv");
        let mut args = audit_args(&srv.url, &input, &out);
        args.concurrency = Some(1);
        args.retry_for_s = 60;
        let audit = tokio::spawn(run_audit(args));
        let rows_written =
            || std::fs::read_to_string(&out).map_or(0, |t| t.lines().count().saturating_sub(1));
        wait_for(
            "two rows written and every probe holding the third address",
            60,
            || rows_written() == 2 && p1.iter().all(|p| p.count(&ips[2]) == 1),
        )
        .await;
        srv.stop().await;
        drop(p1);
        assert!(!audit.is_finished(), "the audit waits for the coordinator");
        let srv = Server::start_at(addr, &db, |c| c.batch_concurrency = 1).await;
        let p2 = fleet_as(&srv.url, &after, 4, Behaviour::Honest).await;
        audit
            .await
            .unwrap()
            .expect("audit finishes after the restart");
        let rows = read_rows(&out);
        assert_eq!(rows.iter().map(|r| r[0].clone()).collect::<Vec<_>>(), ips);
        assert!(
            rows.iter().all(|r| r.last().unwrap().is_empty()),
            "{rows:?}"
        );
        // The first two were answered before the stop: not measured again; the others once.
        for p in &p2 {
            let counts: Vec<usize> = ips.iter().map(|ip| p.count(ip)).collect();
            assert_eq!(counts, [0, 0, 1, 1, 1, 1], "probe {}", p.id);
        }
        let geoloc_coordinator::storage::Storage::Sqlite(pool) = &srv.coord.storage else {
            unreachable!()
        };
        let done: Vec<(String, i64)> = sqlx::query_as(
            "SELECT ip, COUNT(*) FROM results WHERE status = 'done' GROUP BY ip ORDER BY ip",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        assert_eq!(
            done,
            ips.iter().map(|ip| (ip.clone(), 1)).collect::<Vec<_>>(),
            "each address solved exactly once"
        );
        // The run in flight at the stop was cut (interrupted) and, asked again with its job
        // key, taken over after the restart: one run per address, none left interrupted.
        let runs: Vec<(String, String)> =
            sqlx::query_as("SELECT ip, status FROM results ORDER BY ip")
                .fetch_all(pool)
                .await
                .unwrap();
        assert_eq!(
            runs,
            ips.iter()
                .map(|ip| (ip.clone(), "done".to_string()))
                .collect::<Vec<_>>(),
            "one run per address"
        );
        srv.stop().await;
    })
    .await;
}

fn error_col(rows: &[Vec<String>]) -> Vec<String> {
    rows.iter().map(|r| r.last().unwrap().clone()).collect()
}

/// A row that failed for a reason about the address (`no-answer`) is kept by a rerun and
/// measured again with `--retry-failed`; `--fresh` measures again what is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_failed_redoes_failed_rows_and_fresh_measures_stored_ones_again() {
    bounded(120, async {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |_| {}).await;
        // 127.0.0.53 is unknown to the fake network at first: nobody gets an RTT to it.
        let w = world(&[(TARGET, LYON.0, LYON.1), ("127.0.0.51", 35.0, 135.0)]);
        let probes = fleet(&srv.url, &w, 4).await;
        wait_healthy(&srv.coord, 4).await;
        let ips = [TARGET, "127.0.0.53", "127.0.0.51"];
        let input = dir.path().join("ips.txt");
        std::fs::write(&input, ips.join("\n")).unwrap();
        let out = dir.path().join("out.csv");
        // Requests per probe for each address.
        let counts = || -> Vec<Vec<usize>> {
            probes
                .iter()
                .map(|p| ips.iter().map(|ip| p.count(ip)).collect())
                .collect()
        };
        run_audit(audit_args(&srv.url, &input, &out)).await.unwrap();
        let errors = error_col(&read_rows(&out));
        assert!(errors[0].is_empty() && errors[2].is_empty(), "{errors:?}");
        assert!(errors[1].starts_with("no-answer: "), "{errors:?}");
        // Silent target: a ping, then TCP + traceroute, per probe.
        assert!(counts().iter().all(|c| c == &[1, 2, 1]), "{:?}", counts());

        // Now the address answers. A plain rerun keeps the failed row and measures nothing.
        w.lock().unwrap().insert(
            "127.0.0.53".into(),
            LatLon {
                lat: -34.6,
                lon: -58.4,
            },
        );
        let first = std::fs::read_to_string(&out).unwrap();
        run_audit(audit_args(&srv.url, &input, &out)).await.unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), first);
        assert!(counts().iter().all(|c| c == &[1, 2, 1]), "{:?}", counts());

        // --retry-failed: the failed row is measured again (the rows after it come from the
        // stored results, not measured again).
        let mut a = audit_args(&srv.url, &input, &out);
        a.retry_failed = true;
        run_audit(a).await.unwrap();
        let rows = read_rows(&out);
        assert_eq!(error_col(&rows), ["", "", ""]);
        assert_eq!(rows[1][0], "127.0.0.53");
        assert_eq!(
            &rows[2],
            &read_rows_text(&first)[2],
            "kept from the stored result"
        );
        assert!(counts().iter().all(|c| c == &[1, 3, 1]), "{:?}", counts());

        // A new output file: without --fresh every row comes from the stored results ...
        let out2 = dir.path().join("out2.csv");
        run_audit(audit_args(&srv.url, &input, &out2))
            .await
            .unwrap();
        assert!(counts().iter().all(|c| c == &[1, 3, 1]), "{:?}", counts());
        // ... with --fresh every address is measured again.
        let out3 = dir.path().join("out3.csv");
        let mut a = audit_args(&srv.url, &input, &out3);
        a.fresh = true;
        run_audit(a).await.unwrap();
        assert_eq!(error_col(&read_rows(&out3)), ["", "", ""]);
        assert!(counts().iter().all(|c| c == &[2, 4, 2]), "{:?}", counts());
        srv.stop().await;
    })
    .await;
}

fn read_rows_text(text: &str) -> Vec<Vec<String>> {
    csv::Reader::from_reader(text.as_bytes())
        .records()
        .map(|x| x.unwrap().iter().map(String::from).collect())
        .collect()
}

/// No probe at all: the rows are asked again until `--retry-for-s` passes without progress,
/// then written with their reason; a rerun once probes are back redoes exactly those rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_without_probes_are_retried_for_retry_for_s_then_written_and_redone_on_rerun() {
    bounded(120, async {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |_| {}).await;
        let input = dir.path().join("ips.txt");
        std::fs::write(&input, format!("{TARGET}\nnope\n127.0.0.51\n")).unwrap();
        let out = dir.path().join("out.csv");
        let mut a = audit_args(&srv.url, &input, &out);
        a.retry_for_s = 2;
        let t0 = Instant::now();
        // The run ends, writing the rows it could not do; every row failed: exit code 1.
        let e = run_audit(a)
            .await
            .expect_err("every row failed: the run reports it");
        assert!(
            e.downcast_ref::<geoloc_client::NotLocated>().is_some(),
            "{e:#}"
        );
        assert!(
            t0.elapsed() >= Duration::from_secs(2),
            "gave up after {:?}",
            t0.elapsed()
        );
        let errors = error_col(&read_rows(&out));
        assert!(
            errors[0].starts_with("no-probes: ") && errors[2].starts_with("no-probes: "),
            "{errors:?}"
        );
        assert!(errors[1].starts_with("invalid-address: "), "{errors:?}");

        let w = world(&[(TARGET, LYON.0, LYON.1), ("127.0.0.51", 35.0, 135.0)]);
        let probes = fleet(&srv.url, &w, 4).await;
        wait_healthy(&srv.coord, 4).await;
        run_audit(audit_args(&srv.url, &input, &out)).await.unwrap();
        let errors = error_col(&read_rows(&out));
        assert!(errors[0].is_empty() && errors[2].is_empty(), "{errors:?}");
        assert!(errors[1].starts_with("invalid-address: "), "{errors:?}");
        assert!(probes
            .iter()
            .all(|p| p.count(TARGET) == 1 && p.count("127.0.0.51") == 1));
        srv.stop().await;
    })
    .await;
}

/// While nothing answers at the coordinator's address the audit tries again with a growing
/// pause (0.5 s, then 1 s, then 2 s ...; asserted as lower bounds, which a loaded machine
/// cannot break), and completes once the coordinator is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_coordinator_is_retried_with_backoff_until_it_is_up() {
    bounded(120, async {
        let dir = tempfile::tempdir().unwrap();
        // A port that accepts connections and closes them at once: every attempt of the audit
        // is seen (and fails) until the real coordinator takes the port over.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let input = dir.path().join("ips.txt");
        std::fs::write(&input, format!("{TARGET}\n")).unwrap();
        let out = dir.path().join("out.csv");
        let mut a = audit_args(&format!("http://{addr}"), &input, &out);
        a.retry_for_s = 20;
        let audit = tokio::spawn(run_audit(a));
        // One attempt may open two connections in a row (the channel reconnects once); the
        // pause between attempts is at least 500 ms, so connections less than 450 ms apart
        // belong to the same attempt.
        let mut attempts: Vec<Instant> = Vec::new();
        let mut last = None;
        while attempts.len() < 3 {
            let (conn, _) = listener.accept().await.unwrap();
            let now = Instant::now();
            if last.is_none_or(|l: Instant| now - l >= Duration::from_millis(450)) {
                attempts.push(now);
            }
            last = Some(now);
            drop(conn);
        }
        drop(listener);
        let gaps: Vec<Duration> = attempts.windows(2).map(|p| p[1] - p[0]).collect();
        assert!(
            gaps[1] >= Duration::from_millis(950),
            "pauses between attempts: {gaps:?}"
        );
        let srv = Server::start_at(addr, &sqlite_url(&dir), |_| {}).await;
        let w = world(&[(TARGET, LYON.0, LYON.1)]);
        let _probes = fleet(&srv.url, &w, 3).await;
        audit
            .await
            .unwrap()
            .expect("the audit completes once the coordinator is up");
        assert_eq!(error_col(&read_rows(&out)), [""]);
        srv.stop().await;
    })
    .await;
}

/// `geoloc locate --geojson`: per address a `region` feature (the feasible region's
/// MultiPolygon, which holds the target) and an `estimate` Point in GeoJSON's [lon, lat]
/// order, with the properties README lists.
#[tokio::test]
async fn locate_geojson_has_the_region_and_the_estimate() {
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |_| {}).await;
        let w = world(&[(TARGET, LYON.0, LYON.1)]);
        let _probes = fleet(&srv.url, &w, 6).await;
        wait_healthy(&srv.coord, 6).await;
        let mut c = srv.client().await;
        let (_, r) = locate(&mut c, req(TARGET)).await;
        let r = r.unwrap();
        let sol = solution(&r);
        let located = Located::try_from(&r).unwrap();
        let features: Vec<serde_json::Value> =
            geoloc_client::locate::geojson_features(TARGET, &located)
                .into_iter()
                .map(|f| serde_json::to_value(f).unwrap())
                .collect();
        assert_eq!(features.len(), 2);
        let (region, estimate) = (&features[0], &features[1]);
        for (f, kind) in [(region, "region"), (estimate, "estimate")] {
            assert_eq!(f["type"], "Feature");
            let p = &f["properties"];
            assert_eq!(p["feature"], kind);
            assert_eq!(p["ip"], TARGET);
            assert_eq!(p["result_id"], r.result_id.as_str());
            assert_eq!(p["probes_used"], r.probes_used);
            assert_eq!(p["city"], sol.place.city.as_str());
            assert_eq!(p["country"], sol.place.country.as_str());
            assert_eq!(p["timezone"], sol.timezone.iana.as_str());
            assert_eq!(p["anycast"], false);
            assert!((p["radius_km"].as_f64().unwrap() - sol.radius_km).abs() < 1e-9);
            assert_eq!(p["min_rtt_ms"].as_f64(), r.min_rtt_ms);
        }
        assert_eq!(estimate["geometry"]["type"], "Point");
        assert_eq!(
            estimate["geometry"]["coordinates"],
            serde_json::json!([sol.estimate.lon, sol.estimate.lat])
        );
        // The region: a MultiPolygon of [lon, lat] rings that holds Lyon and not Rome.
        assert_eq!(region["geometry"]["type"], "MultiPolygon");
        let lonlat = |pt: &serde_json::Value| (pt[0].as_f64().unwrap(), pt[1].as_f64().unwrap());
        let mp = geo::MultiPolygon::new(
            region["geometry"]["coordinates"]
                .as_array()
                .unwrap()
                .iter()
                .map(|poly| {
                    let mut rings = poly.as_array().unwrap().iter().map(|ring| {
                        geo::LineString::from(
                            ring.as_array()
                                .unwrap()
                                .iter()
                                .map(lonlat)
                                .collect::<Vec<_>>(),
                        )
                    });
                    let outer = rings.next().unwrap();
                    geo::Polygon::new(outer, rings.collect())
                })
                .collect(),
        );
        use geo::Contains;
        assert!(
            mp.contains(&geo::point!(x: LYON.1, y: LYON.0)),
            "Lyon is outside the region outline"
        );
        assert!(
            !mp.contains(&geo::point!(x: 12.5, y: 41.9)),
            "Rome is inside the region outline"
        );
        srv.stop().await;
    })
    .await;
}
