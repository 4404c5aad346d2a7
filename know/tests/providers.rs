//! Each provider's client against its stand-in: normal answer, not found, 429 with
//! Retry-After (long: reason and pause; short: waited out and retried), malformed body,
//! timeout; the limiter's rate; the cache serving a second run without a request.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::*;
use geoloc_know::cache::Cache;
use geoloc_know::providers::{Answer, ProviderClient, ProviderConfig, ProviderKind, Status};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn client(kind: ProviderKind, url: &str) -> ProviderClient {
    let mut c = ProviderConfig::new(kind, format!("key-{}", kind.name()));
    c.base_url = url.to_string();
    c.period = Duration::from_millis(1);
    c.burst = 100;
    c.timeout = Duration::from_millis(500);
    c.max_retry_wait = Duration::from_secs(2);
    ProviderClient::new(c).unwrap()
}

#[tokio::test]
async fn every_provider_against_its_stand_in() {
    let s = provider_stand_in().await;
    for kind in ProviderKind::ALL {
        let name = kind.name();
        // Normal answer, typed.
        let o = client(kind, &s.url).lookup(ip(NORMAL), None).await;
        assert_eq!(o.status, Status::Ok, "{name}: {o:?}");
        match o.answer.as_ref().unwrap() {
            Answer::AbuseIpDb(a) => {
                assert_eq!(
                    (
                        a.abuse_confidence_score,
                        a.total_reports,
                        a.distinct_reporters
                    ),
                    (87, 42, 17)
                );
                assert_eq!(a.isp.as_deref(), Some("Example Hosting"));
            }
            Answer::VirusTotal(v) => {
                assert_eq!(
                    (v.malicious, v.suspicious, v.harmless, v.reputation),
                    (3, 1, 60, -12)
                )
            }
            Answer::Shodan(sh) => {
                assert_eq!(sh.ports, vec![22, 80, 443]);
                assert_eq!(sh.services[0].name, "OpenSSH");
                assert_eq!(sh.vulns, vec!["CVE-2024-0001"]);
            }
            Answer::Censys(c) => {
                assert_eq!(c.services.len(), 2);
                assert_eq!(
                    (c.services[1].port, c.services[1].transport.as_str()),
                    (53, "udp")
                );
                assert_eq!(c.asn, Some(64500));
            }
        }
        // Not found.
        let o = client(kind, &s.url).lookup(ip(NOT_FOUND), None).await;
        assert_eq!(o.status, Status::NotFound, "{name}: {o:?}");
        // Malformed body: an error naming it.
        let o = client(kind, &s.url).lookup(ip(MALFORMED), None).await;
        assert_eq!(o.status, Status::Error, "{name}");
        assert!(
            o.status_text().contains("malformed answer"),
            "{name}: {}",
            o.status_text()
        );
        // Timeout (the stand-in answers after 5 s, the client waits 0.5 s).
        let t0 = Instant::now();
        let o = client(kind, &s.url).lookup(ip(SLOW), None).await;
        assert!(
            o.status_text().contains("timeout"),
            "{name}: {}",
            o.status_text()
        );
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "{name}: timeout not applied"
        );
        // 429 with a long Retry-After: the reason, then the provider pauses (no request).
        let c = client(kind, &s.url);
        let before = s.requests();
        let o = c.lookup(ip(RATE_LIMITED), None).await;
        assert!(
            o.status_text()
                .contains("rate limited (HTTP 429), retry after 120 s"),
            "{name}: {}",
            o.status_text()
        );
        let o = c.lookup(ip(NORMAL), None).await;
        assert!(
            o.status_text().contains("paused"),
            "{name}: {}",
            o.status_text()
        );
        assert_eq!(
            s.requests() - before,
            1,
            "{name}: a paused provider sent a request"
        );
        // 429 with Retry-After: 1 is waited out and retried once.
        let t0 = Instant::now();
        let o = client(kind, &s.url).lookup(ip(FLAKY), None).await;
        assert_eq!(o.status, Status::Ok, "{name}: {}", o.status_text());
        assert!(
            t0.elapsed() >= Duration::from_millis(950),
            "{name}: did not wait"
        );
    }
    // Each request carried its key the documented way.
    let keys = s.seen.keys.lock().unwrap().clone();
    for k in [
        "key-abuseipdb",
        "key-virustotal",
        "key-shodan",
        "Bearer key-censys",
    ] {
        assert!(keys.iter().any(|x| x == k), "{k} not seen in {keys:?}");
    }
}

#[tokio::test]
async fn unreachable_provider_is_a_reason_not_a_failure() {
    // A port nothing listens on (bound then dropped).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = client(ProviderKind::Shodan, &format!("http://127.0.0.1:{port}"))
        .lookup(ip(NORMAL), None)
        .await;
    assert_eq!(o.status, Status::Error);
    assert!(
        o.status_text().contains("cannot connect"),
        "{}",
        o.status_text()
    );
}

#[tokio::test]
async fn limiter_never_exceeds_its_rate() {
    let s = provider_stand_in().await;
    let mut c = ProviderConfig::new(ProviderKind::VirusTotal, "k");
    c.base_url = s.url.clone();
    c.period = Duration::from_millis(100); // 10 a second
    c.burst = 2;
    let c = std::sync::Arc::new(ProviderClient::new(c).unwrap());
    // 22 lookups at once.
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..22)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.fetch(ip(NORMAL)).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().status, Status::Ok);
    }
    let times = s.times("virustotal");
    assert_eq!(times.len(), 22);
    // GCRA with burst 2: any k+1 consecutive requests span at least (k+1-2) periods.
    let mut ts: Vec<Duration> = times.iter().map(|t| t.duration_since(t0)).collect();
    ts.sort();
    for i in 0..ts.len() {
        for j in i + 2..ts.len() {
            let span = ts[j] - ts[i];
            let min = Duration::from_millis(100) * (j - i - 1) as u32;
            // 10 ms of slack for the loopback trip.
            assert!(
                span + Duration::from_millis(10) >= min,
                "requests {i}..={j} within {span:?}, the rate allows no fewer than {min:?}"
            );
        }
    }
    assert!(
        t0.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn cache_serves_a_second_run_without_a_request() {
    let s = provider_stand_in().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path(), Duration::from_secs(3600));
    let ips = [ip(NORMAL), ip(NOT_FOUND), ip(MALFORMED)];
    let mut first = Vec::new();
    for kind in ProviderKind::ALL {
        let c = client(kind, &s.url);
        for &a in &ips {
            first.push(c.lookup(a, Some(&cache)).await);
        }
    }
    assert_eq!(s.requests(), 12);
    // A new run (new clients, same cache folder): answers and not-found come from the
    // cache; only the malformed (an error, never cached) is asked again.
    let mut second = Vec::new();
    for kind in ProviderKind::ALL {
        let c = client(kind, &s.url);
        for &a in &ips {
            second.push(c.lookup(a, Some(&cache)).await);
        }
    }
    assert_eq!(s.requests(), 12 + 4, "only the 4 errors are asked again");
    for (a, b) in first.iter().zip(&second) {
        if a.status == Status::Error {
            assert!(!b.cached);
            continue;
        }
        assert!(b.cached && !a.cached);
        assert_eq!(a.answer, b.answer);
        assert_eq!(a.status, b.status);
    }
}
