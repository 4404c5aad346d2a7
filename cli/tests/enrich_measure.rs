//! `geoloc enrich --coordinator URL --measure --budget N` and `geoloc audit --know GROUPS`
//! through the real binary against an in-process coordinator with FAKE probes (the
//! coordinator's test harness, coordinator/tests/common: the probes answer from great-circle
//! distances and send no packet). Enrich: addresses with a stored result are not measured
//! again, at most N others are measured (those on the most rows first), the rest come from
//! GeoIP, and each row's `location_source` says which.

#[path = "../../coordinator/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn test_mmdb() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../geoip/tests/data/GeoIP2-City-Test.mmdb")
}

/// In MaxMind's test database: London, Linköping, Milton (WA), Changchun.
const LONDON: &str = "81.2.69.142";
const LINKOPING: &str = "89.160.20.112";
const MILTON: &str = "216.160.83.56";
const CHANGCHUN: &str = "175.16.199.0";

/// Runs the binary off the test's runtime (the in-process coordinator must keep serving).
async fn geoloc(args: Vec<String>) -> (i32, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_geoloc"))
            .args(&args)
            .env("GEOLOC_API_KEY", TEST_KEY)
            .env_remove("GEOLOC_KNOW_CONFIG")
            .output()
            .expect("run geoloc");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// `ip -> (location_source, country, reason)` of an enrich output.
fn sources_by_ip(out: &Path) -> Vec<(String, String, String, String)> {
    let mut rd = csv::Reader::from_path(out).unwrap();
    let h = rd.headers().unwrap().clone();
    let col = |n: &str| h.iter().position(|x| x == n).unwrap();
    let (ip, src, country, reason) = (
        col("src_ip"),
        col("location_source"),
        col("country"),
        col("reason"),
    );
    rd.records()
        .map(|r| {
            let r = r.unwrap();
            (
                r[ip].to_string(),
                r[src].to_string(),
                r[country].to_string(),
                r[reason].to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn enrich_measures_within_the_budget_and_reuses_stored_results() {
    bounded(120, async {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |_| {}).await;
        // Where the addresses "really" are for the fake probes: far from their GeoIP city.
        let w = world(&[
            (LONDON, LYON.0, LYON.1),
            (LINKOPING, 35.6762, 139.6503),
            (MILTON, -33.8688, 151.2093),
            (CHANGCHUN, -23.5505, -46.6333),
        ]);
        let probes = fleet(&srv.url, &w, 6).await;
        wait_healthy(&srv.coord, 6).await;
        let asked = |p: &[FakeProbe]| {
            p.iter()
                .map(|p| p.requests.lock().unwrap().len())
                .sum::<usize>()
        };
        // Linköping was measured before: a stored result.
        let mut c = srv.client().await;
        let (_, r) = locate(&mut c, req(LINKOPING)).await;
        r.expect("Linköping located");
        let before = asked(&probes);

        // London on 3 rows, Milton on 2, Changchun and Linköping on 1, a bogon, a bad cell.
        let log = dir.path().join("conn.csv");
        std::fs::write(
            &log,
            format!(
                "id,src_ip,ts\n\
                 1,{CHANGCHUN},2026-07-01T12:00:00Z\n\
                 2,{MILTON},2026-07-01T12:00:00Z\n\
                 3,{LONDON},2026-07-01T12:00:00Z\n\
                 4,{LINKOPING},2026-07-01T12:00:00Z\n\
                 5,{LONDON},2026-07-01T12:00:00Z\n\
                 6,{MILTON},2026-07-01T12:00:00Z\n\
                 7,10.0.0.1,2026-07-01T12:00:00Z\n\
                 8,{LONDON},2026-07-01T12:00:00Z\n\
                 9,nope,2026-07-01T12:00:00Z\n"
            ),
        )
        .unwrap();
        let out = dir.path().join("features.csv");
        let args = |budget: Option<u32>| {
            let mut v: Vec<String> = [
                "enrich",
                "--input",
                log.to_str().unwrap(),
                "--ip-column",
                "src_ip",
                "--time-column",
                "ts",
                "--geoip",
                test_mmdb().to_str().unwrap(),
                "--cache-dir",
                dir.path().join("cache").to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
                "--quiet",
                "--coordinator",
                &srv.url,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if let Some(b) = budget {
                v.extend(["--measure".into(), "--budget".into(), b.to_string()]);
            }
            v
        };

        // Budget 1: London (3 rows) is measured; Milton and Changchun from GeoIP.
        let (code, err) = geoloc(args(Some(1))).await;
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("1 measured, 1 stored"), "{err}");
        let rows = sources_by_ip(&out);
        let by = |ip: &str| rows.iter().find(|r| r.0 == ip).unwrap().clone();
        assert_eq!(by(LONDON).1, "measured");
        assert_eq!(by(LONDON).2, "FR", "measured in Lyon, not GeoIP's London");
        assert_eq!(by(LINKOPING).1, "stored");
        assert_eq!(by(LINKOPING).2, "JP");
        assert_eq!(
            (by(MILTON).1.as_str(), by(MILTON).2.as_str()),
            ("geoip", "US")
        );
        assert_eq!(by(CHANGCHUN).1, "geoip");
        assert_eq!(by("10.0.0.1").1, "");
        assert!(by("10.0.0.1").3.starts_with("bogon"));
        assert_eq!(by("nope").1, "");
        assert_eq!(rows.len(), 9);
        assert!(rows
            .iter()
            .filter(|r| r.0 == LONDON)
            .all(|r| r.1 == "measured"));
        assert_eq!(
            asked(&probes),
            before + 6,
            "one address measured, by 6 probes"
        );

        // Without --measure: stored results only (London now has one), nothing measured.
        let (code, err) = geoloc(args(None)).await;
        assert_eq!(code, 0, "{err}");
        let rows = sources_by_ip(&out);
        let by = |ip: &str| rows.iter().find(|r| r.0 == ip).unwrap().clone();
        assert_eq!(by(LONDON).1, "stored");
        assert_eq!(by(MILTON).1, "geoip");
        assert_eq!(asked(&probes), before + 6);

        // Budget 5 measures the two left, not the stored ones.
        let (code, err) = geoloc(args(Some(5))).await;
        assert_eq!(code, 0, "{err}");
        let rows = sources_by_ip(&out);
        let by = |ip: &str| rows.iter().find(|r| r.0 == ip).unwrap().clone();
        assert_eq!(by(MILTON).1, "measured");
        assert_eq!(by(MILTON).2, "AU");
        assert_eq!(by(CHANGCHUN).1, "measured");
        assert_eq!(by(LONDON).1, "stored");
        assert_eq!(asked(&probes), before + 18);

        // --measure without --budget, or without --coordinator: refused by the parser.
        let mut a = args(None);
        a.push("--measure".into());
        let (code, err) = geoloc(a).await;
        assert_eq!(code, 2);
        assert!(err.contains("--budget"), "{err}");
        srv.stop().await;
    })
    .await;
}

/// `geoloc audit --know ownership,reputation` through the binary: the groups after the
/// audit's columns, sources that cannot be reached or have no key say so in their status
/// columns (nothing leaves loopback: DNS and RDAP point at closed local ports), and a rerun
/// resumes (the added columns are removed, the rows kept, nothing measured again, the
/// columns added again).
#[tokio::test]
async fn audit_know_columns_through_the_binary() {
    bounded(120, async {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(&sqlite_url(&dir), |_| {}).await;
        let w = world(&[(LONDON, LYON.0, LYON.1)]);
        let probes = fleet(&srv.url, &w, 6).await;
        wait_healthy(&srv.coord, 6).await;
        let asn = dir.path().join("asn");
        std::fs::create_dir_all(&asn).unwrap();
        std::fs::write(
            asn.join("asn-ipv4.csv"),
            "81.2.69.0,81.2.69.255,20712,Andrews & Arnold Ltd\n",
        )
        .unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let input = dir.path().join("ips.txt");
        std::fs::write(&input, format!("{LONDON}\nnope\n{LONDON}\n")).unwrap();
        let out = dir.path().join("audit.csv");
        let args: Vec<String> = [
            "audit",
            "--file",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--coordinator",
            &srv.url,
            "--columns",
            "ip,country,error",
            "--know",
            "ownership,reputation",
            "--asn-db",
            asn.to_str().unwrap(),
            "--cache-dir",
            dir.path().join("cache").to_str().unwrap(),
            "--dns-server",
            &format!("127.0.0.1:{closed_port}"),
            "--rdap-url",
            &format!("http://127.0.0.1:{closed_port}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let asked = |p: &[FakeProbe]| {
            p.iter()
                .map(|p| p.requests.lock().unwrap().len())
                .sum::<usize>()
        };
        // One row is not an address (an error row, not a failed run).
        let (code, err) = geoloc(args.clone()).await;
        assert_eq!(code, 0, "{err}");
        let mut rd = csv::Reader::from_path(&out).unwrap();
        let h: Vec<String> = rd.headers().unwrap().iter().map(String::from).collect();
        let mut want = vec!["ip", "country", "error"];
        want.extend(geoloc_know::columns::header(&[
            geoloc_know::columns::Group::Ownership,
            geoloc_know::columns::Group::Reputation,
        ]));
        assert_eq!(h, want);
        let rows: Vec<csv::StringRecord> = rd.records().map(Result::unwrap).collect();
        let get = |r: usize, n: &str| rows[r][h.iter().position(|x| x == n).unwrap()].to_string();
        assert_eq!(get(0, "country"), "FR");
        assert_eq!(
            (get(0, "asn"), get(0, "as_org")),
            ("20712".into(), "Andrews & Arnold Ltd".into())
        );
        assert!(
            get(0, "rdns_status").starts_with("error: "),
            "{}",
            get(0, "rdns_status")
        );
        assert!(
            get(0, "rdap_status").starts_with("error: "),
            "{}",
            get(0, "rdap_status")
        );
        assert_eq!(get(0, "abuseipdb_status"), "not-configured");
        assert_eq!(get(1, "asn_status"), "error: not an IP address");
        assert_eq!(
            rows[0].iter().collect::<Vec<_>>(),
            rows[2].iter().collect::<Vec<_>>()
        );
        let first = std::fs::read_to_string(&out).unwrap();
        let measured = asked(&probes);

        // Rerun: resumes (the audit's rows kept, nothing measured), the groups again.
        let (code, err) = geoloc(args.clone()).await;
        assert_eq!(code, 0, "{err}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), first);
        assert_eq!(asked(&probes), measured);

        // An unknown group is refused before anything runs.
        let mut bad = args.clone();
        let i = bad
            .iter()
            .position(|a| a == "ownership,reputation")
            .unwrap();
        bad[i] = "owners".into();
        let (code, err) = geoloc(bad).await;
        assert_eq!(code, 2);
        assert!(err.contains("unknown know group"), "{err}");
        srv.stop().await;
    })
    .await;
}
