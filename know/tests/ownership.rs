//! Ownership without keys: reverse DNS against a stand-in DNS server on loopback, RDAP
//! against a stand-in RDAP server, the ASN fixture; and the whole `know` report.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use geoloc_know::asn::AsnDb;
use geoloc_know::cache::Cache;
use geoloc_know::rdap::{RdapClient, RdapLimits};
use geoloc_know::rdns::Rdns;
use geoloc_know::report::{render_text, Sources};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn reverse_dns_from_a_stand_in_server() {
    let (addr, count) = dns_stand_in(vec![
        (ip("8.8.8.8"), "dns.google"),
        (ip("2001:4860:4860::8888"), "dns.google"),
    ])
    .await;
    let r = Rdns::new(Some(addr), Duration::from_secs(2)).unwrap();
    assert_eq!(r.lookup(ip("8.8.8.8")).await.unwrap(), vec!["dns.google"]);
    assert_eq!(
        r.lookup(ip("2001:4860:4860::8888")).await.unwrap(),
        vec!["dns.google"]
    );
    // NXDOMAIN: no name, not an error.
    assert!(r.lookup(ip("9.9.9.9")).await.unwrap().is_empty());
    assert!(count.load(std::sync::atomic::Ordering::SeqCst) >= 3);
    // A server that never answers: an error with the reason, after the timeout.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let r = Rdns::new(
        Some(silent.local_addr().unwrap()),
        Duration::from_millis(300),
    )
    .unwrap();
    let e = r.lookup(ip("8.8.8.8")).await.unwrap_err();
    assert!(!e.is_empty());
}

#[tokio::test]
async fn rdap_record_not_found_and_malformed() {
    let s = rdap_stand_in().await;
    let c = RdapClient::new(&s.url, Duration::from_secs(2)).unwrap();
    let n = c.lookup(ip(NORMAL)).await.unwrap().unwrap();
    assert_eq!(n.name.as_deref(), Some("GOGL"));
    assert_eq!(n.handle.as_deref(), Some("NET-8-8-8-0-2"));
    assert_eq!(n.country.as_deref(), Some("US"));
    assert_eq!(n.abuse_email.as_deref(), Some("network-abuse@google.com"));
    assert_eq!(n.abuse_name.as_deref(), Some("Abuse"));
    assert_eq!(
        n.url.as_deref(),
        Some("https://rdap.arin.net/registry/ip/8.8.8.0")
    );
    assert!(c.lookup(ip(NOT_FOUND)).await.unwrap().is_none());
    let e = c.lookup(ip(MALFORMED)).await.unwrap_err();
    assert!(e.contains("malformed"), "{e}");
}

/// Every pair of arrival times `ts` (sorted) respects one request per `period` with bursts
/// of `burst` (GCRA: any k+1 consecutive requests span at least k+1-burst periods), with
/// 10 ms of slack for the loopback trip.
fn assert_spacing(what: &str, ts: &[std::time::Instant], period: Duration, burst: usize) {
    let mut ts = ts.to_vec();
    ts.sort();
    for i in 0..ts.len() {
        for j in i + burst..ts.len() {
            let span = ts[j] - ts[i];
            let min = period * (j - i + 1 - burst) as u32;
            assert!(
                span + Duration::from_millis(10) >= min,
                "{what}: requests {i}..={j} within {span:?}, the rate allows no fewer than {min:?}"
            );
        }
    }
}

/// RDAP's limiter per host: 12 lookups at once through a bootstrap redirector (302 to the
/// registry, as rdap.org does) at 10 a second per host with bursts of 2: both hosts see
/// every request, neither above its rate, and every answer arrives.
#[tokio::test]
async fn rdap_limiter_per_host_is_never_exceeded() {
    let registry = rdap_stand_in().await;
    let bootstrap = rdap_bootstrap_stand_in(&registry.url).await;
    let period = Duration::from_millis(100);
    let limits = RdapLimits {
        period,
        burst: 2,
        max_retry_wait: Duration::from_secs(5),
    };
    let c = std::sync::Arc::new(
        RdapClient::with_limits(&bootstrap.url, Duration::from_secs(5), limits).unwrap(),
    );
    let t0 = std::time::Instant::now();
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.lookup(ip(NORMAL)).await })
        })
        .collect();
    for t in tasks {
        let n = t.await.unwrap().unwrap().expect("a record");
        assert_eq!(n.handle.as_deref(), Some("NET-8-8-8-0-2"));
    }
    let (b, r) = (bootstrap.times("bootstrap"), registry.times("rdap"));
    assert_eq!((b.len(), r.len()), (12, 12));
    assert_eq!(c.requests_sent(), 24);
    assert_spacing("bootstrap", &b, period, 2);
    assert_spacing("registry", &r, period, 2);
    // 12 requests at 10/s with a burst of 2 take at least 1 s on each host.
    assert!(
        t0.elapsed() >= Duration::from_millis(990),
        "{:?}",
        t0.elapsed()
    );
}

/// A 429 from an RDAP registry reached through the bootstrap redirector: a short
/// Retry-After is waited out and the request retried once (the answer arrives, not sooner
/// than asked); a long one fails with the reason and pauses that host only, so the next
/// lookup still asks the redirector but fails without a request to the paused registry.
#[tokio::test]
async fn rdap_429_retry_after_is_honoured() {
    let s = rdap_stand_in().await;
    let boot = rdap_bootstrap_stand_in(&s.url).await;
    let c = RdapClient::with_limits(
        &boot.url,
        Duration::from_secs(5),
        RdapLimits {
            period: Duration::from_millis(10),
            burst: 10,
            max_retry_wait: Duration::from_secs(5),
        },
    )
    .unwrap();
    let n = c
        .lookup(ip(FLAKY))
        .await
        .unwrap()
        .expect("a record after the retry");
    assert_eq!(n.name.as_deref(), Some("GOGL"));
    let t = s.times("rdap");
    assert_eq!(t.len(), 2, "one 429, one retry");
    assert!(
        t[1] - t[0] >= Duration::from_secs(1),
        "retried after {:?}, Retry-After said 1 s",
        t[1] - t[0]
    );
    assert_eq!(boot.requests(), 1, "the retry goes to the registry again");

    let e = c.lookup(ip(RATE_LIMITED)).await.unwrap_err();
    let host = s.url.trim_start_matches("http://");
    assert!(
        e.contains("rate limited (HTTP 429)")
            && e.contains(host)
            && e.contains("retry after 120 s"),
        "{e}"
    );
    assert_eq!((boot.requests(), s.requests()), (2, 3));
    // The registry is paused, the redirector is not.
    let e = c.lookup(ip(NORMAL)).await.unwrap_err();
    assert!(
        e.contains(host) && e.contains("paused") && e.contains("Retry-After"),
        "{e}"
    );
    assert_eq!(
        (boot.requests(), s.requests()),
        (3, 3),
        "the paused registry is not asked"
    );
}

fn maxmind(name: &str) -> Option<std::path::PathBuf> {
    let p = geoloc_testenv::shared_data("maxmind-test")?.join(name);
    p.exists().then_some(p)
}

/// The report of one address with every source on loopback: text and JSON (snapshot).
#[tokio::test]
async fn know_report_snapshot() {
    let Some(mmdb) = maxmind("GeoIP2-City-Test.mmdb") else {
        geoloc_testenv::skip("know_report_snapshot", "needs ../shared/data/maxmind-test");
        return;
    };
    let target = ip("81.2.69.142"); // London in MaxMind's test database
    let (dns, _) = dns_stand_in(vec![(target, "host-81-2-69-142.example.co.uk")]).await;
    let rdap = rdap_stand_in().await;
    let prov = provider_stand_in().await;
    let dir = tempfile::tempdir().unwrap();
    let asn_dir = dir.path().join("asn");
    std::fs::create_dir_all(&asn_dir).unwrap();
    std::fs::write(
        asn_dir.join("asn-ipv4.csv"),
        "81.2.69.0,81.2.69.255,20712,Andrews & Arnold Ltd\n",
    )
    .unwrap();
    let mut providers = Vec::new();
    for kind in geoloc_know::providers::ProviderKind::ALL {
        if kind == geoloc_know::providers::ProviderKind::Censys {
            continue; // left unconfigured: shows `not-configured`
        }
        let mut c = geoloc_know::providers::ProviderConfig::new(kind, "k");
        c.base_url = prov.url.clone();
        providers.push(geoloc_know::providers::ProviderClient::new(c).unwrap());
    }
    let sources = Sources {
        geoip: Some(geoloc_geoip::GeoIpDb::open(mmdb).unwrap()),
        asn: Some(AsnDb::open(&asn_dir).unwrap()),
        rdns: Some(Rdns::new(Some(dns), Duration::from_secs(2)).unwrap()),
        rdap: Some(RdapClient::new(&rdap.url, Duration::from_secs(2)).unwrap()),
        providers,
        cache: Some(Cache::new(
            dir.path().join("cache"),
            Duration::from_secs(3600),
        )),
    };
    let at = chrono::DateTime::parse_from_rfc3339("2026-07-01T12:00:00Z")
        .unwrap()
        .to_utc();
    let r = sources.know(target, None, at).await;
    let lt = r.local_time.as_ref().unwrap();
    assert_eq!(
        (lt.time_zone.as_str(), lt.local_hour),
        ("Europe/London", 13)
    );
    assert_eq!(r.ownership.asn.as_ref().unwrap().asn, 20712);
    assert_eq!(r.ownership.rdns, vec!["host-81-2-69-142.example.co.uk"]);
    // The fetch times vary: left out of the snapshot.
    let mut snap = r.clone();
    for o in &mut snap.reputation {
        o.fetched_at_unix_s = None;
    }
    insta::assert_json_snapshot!("know_report", snap);
    insta::assert_snapshot!("know_report_text", render_text(&r));
    // A second report comes from the cache: no provider or RDAP request.
    let (p, d) = (prov.requests(), rdap.requests());
    let again = sources.know(target, None, at).await;
    assert_eq!((prov.requests(), rdap.requests()), (p, d));
    assert!(again
        .reputation
        .iter()
        .filter(|o| o.status == geoloc_know::providers::Status::Ok)
        .all(|o| o.cached));
    // A bogon is not sent anywhere.
    let b = sources.know(ip("192.168.1.1"), None, at).await;
    assert!(b.location.is_none() && b.ownership.asn.is_none());
    assert_eq!((prov.requests(), rdap.requests()), (p, d));
}
