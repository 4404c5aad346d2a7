//! `geoloc audit` and `geoloc locate --json` against an in-process coordinator with FAKE
//! probes (protocol-level; see tests/common), plus snapshot tests of the script-facing
//! schemas (audit CSV columns/rows, locate JSON).
mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use geoloc_coordinator::audit::{row_values, AuditArgs, COLUMNS};
use geoloc_coordinator::client::{error_json, result_json};
use geoloc_engine::LatLon;
use geoloc_proto::v1 as pb;

fn audit_args(url: &str, file: &Path, out: &Path) -> AuditArgs {
    AuditArgs {
        file: file.to_path_buf(),
        output: out.to_path_buf(),
        columns: None,
        coordinator: url.to_string(),
        mode: None,
        timeout_ms: None,
        concurrency: Some(2),
        retry_failed: false,
        fresh: false,
        retry_for_s: 5,
    }
}

/// `run_audit` builds its own runtime: run it on a plain thread.
async fn run_audit(args: AuditArgs) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || {
        std::thread::spawn(move || geoloc_coordinator::audit::run_audit(args))
            .join()
            .unwrap()
    })
    .await
    .unwrap()
}

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
        let mut probes = Vec::new();
        for &(id, lat, lon, ip) in &FLEET[..6] {
            w.lock().unwrap().insert(ip.to_string(), LatLon { lat, lon });
            probes.push(FakeProbe::start(&srv.url, id, (lat, lon), (lat, lon), ip, w.clone(), Behaviour::Honest).await);
        }
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
    let e = tokio::time::timeout(Duration::from_secs(30), run_audit(a))
        .await
        .unwrap()
        .unwrap_err();
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
fn sample_result() -> pb::LocateResult {
    let solution = serde_json::json!({
        "estimate": {"lat": 51.50741234, "lon": -0.12781234}, "radius_km": 35.06, "region_km2": 3861.2,
        "timezone": {"iana": "Europe/London", "utc_offset": "+00:00", "utc_offset_s": 0},
        "place": {"city": "London", "country": "GB", "distance_km": 1.2}, "anycast": false,
        "maxmind": {"lat": 51.5142, "lon": -0.0931, "city": "London", "country": "GB", "accuracy_radius_km": 10.0,
                    "distance_km": 2.51, "verdict": "consistent", "ruled_out_by": null, "excess_km": null}
    });
    pb::LocateResult {
        result_id: "0123456789abcdef0123456789abcdef".into(),
        ip: "81.2.69.142".into(),
        solution_json: solution.to_string(),
        probes_used: 5,
        created_at_unix_ms: 1_700_000_000_000,
        cached: false,
        mode: "two-stage".into(),
        packets_sent: 21,
        min_rtt_ms: Some(1.234),
        nearest_probe: "london".into(),
        probes_asked: 7,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_restarted_mid_batch_loses_nothing_and_measures_nothing_twice() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite_url(&dir);
        let ips: Vec<String> = (60..66).map(|i| format!("127.0.0.{i}")).collect();
        let w = world(&[]);
        for (k, ip) in ips.iter().enumerate() {
            w.lock().unwrap().insert(ip.clone(), LatLon { lat: 10.0 * k as f64, lon: 20.0 * k as f64 });
        }
        let start_fleet = |url: String, w: World| async move {
            let mut v = Vec::new();
            for &(id, lat, lon, ip) in &FLEET[..4] {
                w.lock().unwrap().insert(ip.to_string(), LatLon { lat, lon });
                v.push(FakeProbe::start(&url, id, (lat, lon), (lat, lon), ip, w.clone(), Behaviour::Delayed(300)).await);
            }
            v
        };
        let srv = Server::start(&db, |c| c.batch_concurrency = 1).await;
        let addr = srv.addr;
        let p1 = start_fleet(srv.url.clone(), w.clone()).await;
        wait_healthy(&srv.coord, 4).await;
        let input = dir.path().join("ips.txt");
        std::fs::write(&input, ips.join("\n")).unwrap();
        let out = dir.path().join("out.csv");
        let mut args = audit_args(&srv.url, &input, &out);
        args.concurrency = Some(1);
        args.retry_for_s = 30;
        let audit = tokio::spawn(run_audit(args));
        // Wait for two rows, then stop the coordinator in the middle of the batch.
        for _ in 0..200 {
            if std::fs::read_to_string(&out).map(|t| t.lines().count()).unwrap_or(0) >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        srv.stop().await;
        drop(p1);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let srv = Server::start_at(addr, &db, |c| c.batch_concurrency = 1).await;
        let _p2 = start_fleet(srv.url.clone(), w.clone()).await;
        audit.await.unwrap().expect("audit finishes after the restart");
        let rows = read_rows(&out);
        assert_eq!(rows.iter().map(|r| r[0].clone()).collect::<Vec<_>>(), ips);
        assert!(rows.iter().all(|r| r.last().unwrap().is_empty()), "{rows:?}");
        let geoloc_coordinator::storage::Storage::Sqlite(pool) = &srv.coord.storage else { unreachable!() };
        let done: Vec<(String, i64)> =
            sqlx::query_as("SELECT ip, COUNT(*) FROM results WHERE status = 'done' GROUP BY ip ORDER BY ip").fetch_all(pool).await.unwrap();
        assert_eq!(done.len(), 6);
        assert!(done.iter().all(|(_, n)| *n == 1), "each address solved exactly once: {done:?}");
        let interrupted: (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM results WHERE status = 'interrupted'").fetch_one(pool).await.unwrap();
        assert!(interrupted.0 <= 1, "at most the run in flight was cut: {interrupted:?}");
        println!("restart mid-batch: 6 rows, 6 addresses solved once each, {} run interrupted and redone", interrupted.0);
        srv.stop().await;
    })
    .await
    .expect("bounded");
}
