//! The know column groups appended to an audit CSV (`geoloc audit --know`), every source a
//! loopback stand-in: the header and rows (snapshot), one lookup per distinct address, a
//! second run served from the cache, and failing providers that fill their status columns
//! with the reason without stopping the run.

mod common;

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use common::*;
use geoloc_know::asn::AsnDb;
use geoloc_know::cache::Cache;
use geoloc_know::columns::{append_to_csv, parse_groups, Group};
use geoloc_know::providers::{ProviderClient, ProviderConfig, ProviderKind};
use geoloc_know::rdap::RdapClient;
use geoloc_know::rdns::Rdns;
use geoloc_know::report::Sources;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// An audit output as `geoloc audit` writes it (a subset of its columns).
const AUDIT: &str = "\
ip,lat,lon,error
8.8.8.8,37.4000,-122.1000,
9.9.9.9,47.3700,8.5400,
8.8.8.8,37.4000,-122.1000,
1.0.0.1,,,no-answer: no probe got an answer
192.168.1.1,,,bogon: private address
1.2.3,,,invalid-address: not an IP address: \"1.2.3\"
";

fn provider(kind: ProviderKind, url: &str) -> ProviderClient {
    let mut c = ProviderConfig::new(kind, "k");
    c.base_url = url.to_string();
    c.period = Duration::from_millis(1);
    c.burst = 100;
    c.timeout = Duration::from_secs(2);
    ProviderClient::new(c).unwrap()
}

fn asn_db(dir: &Path) -> AsnDb {
    let d = dir.join("asn");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("asn-ipv4.csv"),
        "8.8.8.0,8.8.8.255,15169,Google LLC\n1.0.0.0,1.0.0.255,13335,\"Cloudflare, Inc.\"\n",
    )
    .unwrap();
    AsnDb::open(&d).unwrap()
}

#[tokio::test]
async fn know_columns_on_an_audit_csv() {
    let (dns, _) = dns_stand_in(vec![(ip(NORMAL), "dns.google")]).await;
    let rdap = rdap_stand_in().await;
    let prov = provider_stand_in().await;
    let dir = tempfile::tempdir().unwrap();
    let sources = Sources {
        geoip: None,
        asn: Some(asn_db(dir.path())),
        rdns: Some(Rdns::new(Some(dns), Duration::from_secs(2)).unwrap()),
        rdap: Some(RdapClient::new(&rdap.url, Duration::from_secs(2)).unwrap()),
        providers: ProviderKind::ALL
            .iter()
            .map(|&k| provider(k, &prov.url))
            .collect(),
        cache: Some(Cache::new(
            dir.path().join("cache"),
            Duration::from_secs(3600),
        )),
    };
    let groups = parse_groups("all").unwrap();
    let out = dir.path().join("audit.csv");
    std::fs::write(&out, AUDIT).unwrap();
    let st = append_to_csv(&out, &groups, &sources, true, false)
        .await
        .unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    insta::assert_snapshot!("audit_know_columns", text);
    // Five distinct address texts; three public addresses reach the sources, once each
    // (8.8.8.8 is on two rows): 4 providers x 3, RDAP x 3.
    assert_eq!(st.distinct_addresses, 5);
    assert_eq!((st.provider_requests, prov.requests()), (12, 12));
    assert_eq!(rdap.requests(), 3);
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 7, "a row per input row");
    assert_eq!(rows[1], rows[3], "the same address gives the same cells");

    // A second run (only the cache, no provider queries) asks no provider and gives the same
    // answers; failures are not cached, so the address whose answers were malformed is
    // `not-cached` now, and the registry is asked about it again (RDAP is free).
    std::fs::write(&out, AUDIT).unwrap();
    let st = append_to_csv(&out, &groups, &sources, false, false)
        .await
        .unwrap();
    assert_eq!(st.provider_requests, 0);
    assert_eq!((prov.requests(), rdap.requests()), (12, 4));
    let again = std::fs::read_to_string(&out).unwrap();
    for (i, (a, b)) in again.lines().zip(text.lines()).enumerate() {
        if a.starts_with("1.0.0.1,") {
            assert!(
                a.contains(",not-cached,") && !a.contains("malformed answer: missing"),
                "{a}"
            );
        } else {
            assert_eq!(a, b, "line {i}");
        }
    }
    let text = again;

    // Columns already there: refused, the file untouched.
    let e = append_to_csv(&out, &[Group::Reputation], &sources, false, false)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already has a column"), "{e}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), text);
}

#[tokio::test]
async fn a_failing_provider_fills_its_columns_with_the_reason() {
    let prov = provider_stand_in().await;
    // A port nobody listens on: cannot connect.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let sources = Sources {
        providers: vec![
            provider(ProviderKind::AbuseIpDb, &prov.url),
            provider(ProviderKind::VirusTotal, &dead),
        ],
        ..Default::default()
    };
    let out = dir.path().join("audit.csv");
    std::fs::write(&out, format!("ip,error\n{RATE_LIMITED},\n")).unwrap();
    append_to_csv(&out, &[Group::Reputation], &sources, true, false)
        .await
        .unwrap();
    let mut rd = csv::Reader::from_path(&out).unwrap();
    let h = rd.headers().unwrap().clone();
    let row = rd.records().next().unwrap().unwrap();
    let get = |n: &str| row.get(h.iter().position(|x| x == n).unwrap()).unwrap();
    assert_eq!(get("ip"), RATE_LIMITED);
    assert_eq!(get("abuseipdb_score"), "");
    assert!(
        get("abuseipdb_status").contains("rate limited (HTTP 429), retry after 120 s"),
        "{}",
        get("abuseipdb_status")
    );
    assert!(
        get("virustotal_status").starts_with("error: cannot connect"),
        "{}",
        get("virustotal_status")
    );
    assert_eq!(get("virustotal_malicious"), "");
}
