//! The web interface served by the coordinator itself (`--http-listen`, `geoloc_coordinator::http`)
//! with FAKE probes (protocol-level, tests/common): the History listing as JSON and in a real
//! browser (headless Chromium through chromedriver and fantoccini, on loopback; that part
//! skips when they are not installed, which fails under GEOLOC_REQUIRE_ENV=1), hostile listing
//! parameters, and the browser's API key checked by the coordinator (none, unknown, wrong
//! scope) through the web interface's private gRPC port; and the answer panel's know fields
//! (`asn-db` / `know-config`: reverse DNS, AS, RDAP record, cached reputation, source links)
//! with every source a loopback stand-in, as JSON and in the browser.
mod common;
/// The stand-ins of geoloc-know's tests (providers, RDAP, DNS), shared rather than copied.
#[path = "../../know/tests/common/mod.rs"]
mod know_stand_ins;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use geoloc_testenv::Daemon;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_geoloc-coordinator");

/// One HTTP/1.0 request (so the answer is never chunked and ends when the server closes):
/// the status code and the body.
fn http(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the web interface");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the answer");
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP answer");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (code, body.to_string())
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (path, headers): (String, Vec<(String, String)>) = (
        path.to_string(),
        headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    tokio::task::spawn_blocking(move || {
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        http(addr, &path, &h)
    })
    .await
    .unwrap()
}

/// The `result` event of a locate streamed by the web interface (server-sent events).
fn sse_result(body: &str) -> Value {
    let mut event = "";
    for line in body.lines() {
        if let Some(e) = line.strip_prefix("event:") {
            event = e.trim();
        } else if let Some(d) = line.strip_prefix("data:") {
            if event == "result" {
                return serde_json::from_str(d.trim()).expect("result JSON");
            }
            assert_ne!(event, "failure", "locate failed: {d}");
        }
    }
    panic!("no result event in {body}");
}

/// The `failure` event of a locate streamed by the web interface.
fn sse_failure(body: &str) -> Value {
    let mut event = "";
    for line in body.lines() {
        if let Some(e) = line.strip_prefix("event:") {
            event = e.trim();
        } else if let Some(d) = line.strip_prefix("data:") {
            if event == "failure" {
                return serde_json::from_str(d.trim()).expect("failure JSON");
            }
        }
    }
    panic!("no failure event in {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_json_and_the_browser_key_is_checked_by_the_coordinator() {
    use geoloc_coordinator::core::access::{create_key, NewKey, Quotas, Scope};
    let dir = tempfile::tempdir().unwrap();
    let storage = geoloc_coordinator::storage::Storage::connect(&sqlite_url(&dir))
        .await
        .unwrap();
    // auth = keys (the default); the harness creates the admin key TEST_KEY.
    let coord = coordinator(storage, |_| {}).await;
    let reader = create_key(
        &coord.storage,
        &NewKey {
            name: "reader".into(),
            scopes: vec![Scope::Read],
            quotas: Quotas {
                addresses_per_hour: 100,
                concurrent: 2,
            },
        },
    )
    .await
    .unwrap();
    let (grpc_l, grpc) = geoloc_coordinator::server::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    tokio::spawn(geoloc_coordinator::server::serve(
        Arc::clone(&coord),
        grpc_l,
        std::future::pending(),
    ));
    let url = format!("http://{grpc}");
    let w = world(&[(TARGET, LYON.0, LYON.1)]);
    let _fleet = fleet(&url, &w, 6).await;
    wait_healthy(&coord, 6).await;
    // The web interface as --http-listen serves it (its own private gRPC port).
    let (web_l, web) = geoloc_coordinator::server::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let stop = geoloc_rt::CancellationToken::new();
    tokio::spawn(geoloc_coordinator::http::serve(
        Arc::clone(&coord),
        web_l,
        stop.clone(),
    ));
    let admin = format!("Bearer {TEST_KEY}");
    let read = format!("Bearer {reader}");

    // The browser's key is what the coordinator checks: none, unknown, or without the
    // `locate` scope are refused, each with its reason.
    let locate_path = format!("/api/locate?ip={TARGET}");
    let (_, body) = get(web, &locate_path, &[]).await;
    assert_eq!(sse_failure(&body)["code"], "unauthenticated", "{body}");
    let (_, body) = get(web, &locate_path, &[("Authorization", "Bearer gk_00")]).await;
    assert_eq!(sse_failure(&body)["code"], "unauthenticated", "{body}");
    let (_, body) = get(web, &locate_path, &[("Authorization", &read)]).await;
    let f = sse_failure(&body);
    assert_eq!(f["code"], "permission-denied", "{body}");
    assert!(f["message"].as_str().unwrap().contains("locate"), "{body}");
    let (code, body) = get(web, "/api/history", &[]).await;
    assert_eq!(code, 401, "{body}");
    let (code, body) = get(web, "/api/probes", &[("Authorization", &read)]).await;
    assert_eq!(code, 200, "a read key sees the fleet: {body}");
    // Without asn-db / know-config the know fields are not offered, and the answer says how.
    let (code, body) = get(web, "/api/know?ip=8.8.8.8", &[("Authorization", &read)]).await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("know-config"), "{body}");

    // A locate through the page's API with the admin key.
    let (code, body) = get(web, &locate_path, &[("Authorization", &admin)]).await;
    assert_eq!(code, 200, "{body}");
    let located = sse_result(&body);
    let id = located["located"]["result_id"]
        .as_str()
        .unwrap()
        .to_string();
    let stored = coord
        .storage
        .get_result(&id)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(stored.requested_by, "test-admin");

    // The listing, with the read key: the stored result, newest first.
    let (code, body) = get(web, "/api/history", &[("authorization", &read)]).await;
    assert_eq!(code, 200, "{body}");
    let j: Value = serde_json::from_str(&body).unwrap();
    let first = &j["results"][0];
    assert_eq!(first["result_id"], Value::from(id.clone()), "{j}");
    assert_eq!(first["ip"], TARGET);
    assert_eq!(first["status"], "done");
    let (lat, lon) = (
        first["lat"].as_f64().unwrap(),
        first["lon"].as_f64().unwrap(),
    );
    assert_eq!(
        (lat, lon),
        (
            located["located"]["solution"]["estimate"]["lat"]
                .as_f64()
                .unwrap(),
            located["located"]["solution"]["estimate"]["lon"]
                .as_f64()
                .unwrap()
        )
    );
    assert!(j["next_page_token"].is_null());

    // A second result: pages of one.
    let (_, body) = get(
        web,
        &format!("/api/locate?ip={TARGET}"),
        &[("Authorization", &admin)],
    )
    .await;
    let id2 = sse_result(&body)["located"]["result_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, body) = get(web, "/api/history?limit=1", &[("Authorization", &admin)]).await;
    let p1: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(p1["results"][0]["result_id"], Value::from(id2));
    let token = p1["next_page_token"]
        .as_str()
        .expect("a next page")
        .to_string();
    let (_, body) = get(
        web,
        &format!("/api/history?limit=1&page_token={token}"),
        &[("Authorization", &admin)],
    )
    .await;
    let p2: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(p2["results"][0]["result_id"], Value::from(id));
    assert!(p2["next_page_token"].is_null());
    let (_, body) = get(
        web,
        "/api/history?ip=192.0.2.99",
        &[("Authorization", &admin)],
    )
    .await;
    let none: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(none["results"].as_array().unwrap().len(), 0);

    // Hostile parameters: clear 4xx errors, no call or no harm.
    for (path, want) in [
        ("/api/history?page_token=h1.1.x%27%3B--", "page token"),
        ("/api/history?page_token=garbage", "page token"),
        ("/api/history?ip=not-an-ip", "ip"),
        ("/api/history?limit=-1", ""),
    ] {
        let (code, body) = get(web, path, &[("Authorization", &admin)]).await;
        assert_eq!(code, 400, "{path}: {body}");
        assert!(body.contains(want), "{path}: {body}");
    }
    let (code, body) = get(
        web,
        "/api/history?limit=100000",
        &[("Authorization", &admin)],
    )
    .await;
    assert_eq!(code, 200, "a limit above 500 is cut: {body}");
    let (code, body) = get(web, "/api/history", &[("Authorization", "Basic dXNlcg==")]).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("Bearer"), "{body}");
}

fn which(b: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(b))
            .find(|f| f.is_file())
    })
}

#[test]
fn non_loopback_http_listen_is_refused_without_insecure_plaintext() {
    let out = Command::new(BIN)
        .args([
            "--http-listen",
            "0.0.0.0:0",
            "--database",
            "sqlite://unused",
        ])
        .env_remove("GEOLOC_COORDINATOR_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address") && err.contains("TLS reverse proxy"),
        "{err}"
    );
}

/// A know configuration that cannot be used stops the start with exit 64, naming the key
/// and the file, before the database is opened.
#[test]
fn bad_know_config_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("know.toml");
    std::fs::write(&bad, "[shodan]\nkey = \"k\"\nrate-per-minute = -1\n").unwrap();
    for (file, want) in [
        (bad.clone(), "rate-per-minute -1"),
        (dir.path().join("missing.toml"), "missing.toml"),
    ] {
        let out = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .args(["--database", "sqlite:///nonexistent/dir/db.sqlite"])
            .arg("--know-config")
            .arg(&file)
            .env_remove("GEOLOC_COORDINATOR_CONFIG")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("know-config") && err.contains(want), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_serves_the_history_page_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(&dir);
    let key = analyst_key(&db);
    let (_proc, url, web) = spawn_coordinator(&db, &["--allow-private"]);

    let w = world(&[(TARGET, LYON.0, LYON.1)]);
    let _fleet = fleet(&url, &w, 5).await;
    let mut client = geoloc_client::Client::connect_with(
        &url,
        &geoloc_client::ConnectOptions::default().with_key(Some(&key)),
    )
    .await
    .unwrap();
    let located = locate_retrying(&mut client, TARGET).await;

    // The JSON listing the page reads.
    let bearer = format!("Bearer {key}");
    let (code, body) = get(web, &format!("/api/history?ip={TARGET}"), &[]).await;
    assert_eq!(code, 401, "no key: {body}");
    let (code, body) = get(
        web,
        &format!("/api/history?ip={TARGET}"),
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let j: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        j["results"][0]["result_id"],
        Value::from(located.result_id.clone())
    );
    // And the CLI's.
    let page = client.list_results(TARGET, 10, "").await.unwrap();
    assert_eq!(page.results.len(), 1);
    assert_eq!(page.results[0].result_id, located.result_id);
    assert_eq!(page.results[0].country, located.solution.place.country);

    // The History page in a real browser.
    let Some((_driver, port)) =
        start_driver("coordinator_serves_the_history_page_in_a_real_browser")
    else {
        return;
    };
    let rows = browse(web, port, &located.result_id, &key)
        .await
        .unwrap_or_else(|e| panic!("browser: {e:#}"));
    assert_eq!(rows.all, vec![located.result_id.clone()]);
    assert_eq!(rows.filtered_other, 0);
    assert_eq!(rows.history_markers, 1);
    assert_eq!(rows.opened_result, located.result_id);
}

/// `--know-config` / `--asn-db` on the real binary: the answer panel of a located public
/// address shows its reverse DNS, origin AS, RDAP record, the providers' cached answers and
/// a link to each source, every source a loopback stand-in (know/tests/common); a page view
/// sends no provider request. As JSON (`/api/know`) and in a real browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_panel_shows_the_know_fields_from_local_stand_ins() {
    use know_stand_ins::{dns_stand_in, provider_stand_in, rdap_stand_in, NORMAL};
    let providers = provider_stand_in().await;
    let rdap = rdap_stand_in().await;
    let ip: std::net::IpAddr = NORMAL.parse().unwrap();
    let (dns, dns_queries) = dns_stand_in(vec![(ip, "dns.example.net")]).await;
    let dir = tempfile::tempdir().unwrap();
    let asn = dir.path().join("asn");
    std::fs::create_dir(&asn).unwrap();
    std::fs::write(
        asn.join("asn-ipv4.csv"),
        "8.8.8.0,8.8.8.255,15169,Google LLC\n",
    )
    .unwrap();
    let know_toml = dir.path().join("know.toml");
    std::fs::write(
        &know_toml,
        format!(
            "cache-dir = {cache:?}\nrdap-url = {rdap:?}\ndns-server = \"{dns}\"\n\
             [abuseipdb]\nkey = \"k1\"\nbase-url = {p:?}\n\
             [shodan]\nkey = \"k2\"\nbase-url = {p:?}\n",
            cache = dir.path().join("cache").display().to_string(),
            rdap = rdap.url,
            p = providers.url,
        ),
    )
    .unwrap();
    // An analyst's `geoloc know` run fills the providers' cache (2 requests: the two
    // configured providers); the web interface only reads it.
    let sources = geoloc_know::config::SourceOptions {
        config: Some(know_toml.clone()),
        rdns: Some(None),
        rdap: Some(None),
        ..Default::default()
    }
    .open(|_| None)
    .unwrap();
    let r = sources.know(ip, None, chrono::Utc::now()).await;
    assert_eq!(r.reputation[0].status_text(), "ok", "{r:?}");
    assert_eq!(providers.requests(), 2);
    let rdap_before = rdap.requests();
    let dns_before = dns_queries.load(std::sync::atomic::Ordering::SeqCst);

    let db = sqlite_url(&dir);
    let key = analyst_key(&db);
    let (_proc, url, web) = spawn_coordinator(
        &db,
        &[
            "--asn-db",
            asn.to_str().unwrap(),
            "--know-config",
            know_toml.to_str().unwrap(),
        ],
    );
    let w = world(&[(NORMAL, LYON.0, LYON.1)]);
    let _fleet = fleet(&url, &w, 5).await;
    let mut client = geoloc_client::Client::connect_with(
        &url,
        &geoloc_client::ConnectOptions::default().with_key(Some(&key)),
    )
    .await
    .unwrap();
    let located = locate_retrying(&mut client, NORMAL).await;

    // The lookups are the server's: without a key the coordinator refuses, nothing is
    // looked up.
    let know_path = format!("/api/know?ip={NORMAL}");
    let (code, body) = get(web, &know_path, &[]).await;
    assert_eq!(code, 401, "{body}");
    let (code, body) = get(web, &know_path, &[("Authorization", "Bearer gk_00")]).await;
    assert_eq!(code, 401, "{body}");
    assert_eq!(
        dns_queries.load(std::sync::atomic::Ordering::SeqCst),
        dns_before,
        "nothing looked up for a refused key"
    );
    // The JSON the panel reads.
    let bearer = format!("Bearer {key}");
    let (code, body) = get(web, &know_path, &[("Authorization", &bearer)]).await;
    assert_eq!(code, 200, "{body}");
    let j: Value = serde_json::from_str(&body).unwrap();
    let lines: Vec<(String, String)> = serde_json::from_value(j["lines"].clone()).unwrap();
    let want = expected_know_lines();
    for (label, text) in &want {
        assert!(
            lines.iter().any(|(l, t)| l == label && t == text),
            "{label}: {text} missing from {lines:?}"
        );
    }
    let (code, body) = get(web, "/api/know?ip=8.8.8", &[("Authorization", &bearer)]).await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        providers.requests(),
        2,
        "a page view spends no provider quota"
    );
    assert!(
        dns_queries.load(std::sync::atomic::Ordering::SeqCst) > dns_before,
        "reverse DNS asked the configured server"
    );
    assert_eq!(
        rdap.requests(),
        rdap_before,
        "the RDAP record came from the cache"
    );

    // The answer panel in a real browser: the stored result opened by its shareable URL.
    let Some((_driver, port)) =
        start_driver("answer_panel_shows_the_know_fields_from_local_stand_ins")
    else {
        return;
    };
    let seen = browse_know(web, port, &located.result_id, &key)
        .await
        .unwrap_or_else(|e| panic!("browser: {e:#}"));
    for (label, text) in &want {
        assert!(
            seen.rows.iter().any(|(l, t)| l == label && t == text),
            "the panel misses {label}: {text}; it shows {:?}",
            seen.rows
        );
    }
    for (source, href) in [
        ("rdap", "https://rdap.arin.net/registry/ip/8.8.8.0"),
        ("bgp.tools", "https://bgp.tools/as/15169"),
        ("abuseipdb", "https://www.abuseipdb.com/check/8.8.8.8"),
        (
            "virustotal",
            "https://www.virustotal.com/gui/ip-address/8.8.8.8",
        ),
        ("shodan", "https://www.shodan.io/host/8.8.8.8"),
        ("censys", "https://platform.censys.io/hosts/8.8.8.8"),
    ] {
        assert!(
            seen.links
                .iter()
                .any(|(t, h)| t.starts_with(&format!("{source}: ")) && h == href),
            "no {source} link to {href}: {:?}",
            seen.links
        );
    }
    assert_eq!(
        providers.requests(),
        2,
        "the browser spent no provider quota"
    );
}

/// What the panel must show for `NORMAL` with the stand-ins' answers.
fn expected_know_lines() -> Vec<(String, String)> {
    [
        ("reverse DNS", "dns.example.net"),
        ("AS", "AS15169 Google LLC  (8.8.8.0-8.8.8.255)"),
        (
            "registry",
            "NET-8-8-8-0-2 GOGL US 8.8.8.0-8.8.8.255; abuse Abuse <network-abuse@google.com>",
        ),
        (
            "abuseipdb",
            "confidence of abuse 87 %, 42 reports by 17 users, last 2026-11-28T10:00:00+00:00 (cached)",
        ),
        ("virustotal", "not-configured"),
        (
            "shodan",
            "ports 22;80;443; 1 known vulnerabilities; org Example Hosting (cached)",
        ),
        ("services", "22/tcp OpenSSH, 80/tcp nginx, 443/tcp"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect()
}

/// The know part of the answer panel as the browser shows it.
#[derive(Debug)]
struct KnowSeen {
    /// (label, text) of each row of the know table.
    rows: Vec<(String, String)>,
    /// (text, href) of each source link.
    links: Vec<(String, String)>,
}

async fn browse_know(
    web: SocketAddr,
    driver_port: u16,
    id: &str,
    key: &str,
) -> anyhow::Result<KnowSeen> {
    let c = browser(driver_port).await?;
    let base = format!("http://{web}");
    let r = async {
        c.goto(&format!("{base}/#/history")).await?;
        c.execute(
            "localStorage.setItem('geoloc-api-key', arguments[0]);",
            vec![Value::from(key)],
        )
        .await?;
        c.goto(&format!("{base}/#/result/{id}")).await?;
        c.refresh().await?;
        wait_js(&c, "!document.getElementById('answer').hidden").await?;
        wait_js(
            &c,
            "!document.getElementById('know').hidden && document.querySelectorAll('#know-links a').length > 0",
        )
        .await?;
        // textContent, not the rendered text (which collapses the double spaces).
        let rows = c
            .execute(
                "return Array.from(document.querySelectorAll('#know-table tr'))\
                   .map((tr) => Array.from(tr.cells).map((td) => td.textContent));",
                vec![],
            )
            .await?;
        let links = c
            .execute(
                "return Array.from(document.querySelectorAll('#know-links li'))\
                   .map((li) => [li.textContent, (li.querySelector('a') || {}).href || '']);",
                vec![],
            )
            .await?;
        anyhow::Ok(KnowSeen {
            rows: serde_json::from_value(rows)?,
            links: serde_json::from_value(links)?,
        })
    }
    .await;
    let _ = c.close().await;
    r
}

#[derive(Debug)]
struct Rows {
    all: Vec<String>,
    filtered_other: usize,
    history_markers: usize,
    opened_result: String,
}

async fn wait_js(c: &fantoccini::Client, cond: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if c.execute(&format!("return !!({cond});"), vec![]).await? == Value::Bool(true) {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(30) {
            anyhow::bail!("timed out waiting for `{cond}`");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A real key, made as an operator makes it (auth = keys, the default): scopes locate, read.
fn analyst_key(db: &str) -> String {
    let out = Command::new(BIN)
        .args([
            "keys",
            "--database",
            db,
            "create",
            "--name",
            "analyst",
            "--scope",
            "locate",
            "--scope",
            "read",
        ])
        .env_remove("GEOLOC_COORDINATOR_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The coordinator binary on loopback with `--http-listen` (both ports free ones) and
/// `extra` flags: the process, its gRPC URL and the web interface's address.
fn spawn_coordinator(db: &str, extra: &[&str]) -> (Daemon, String, SocketAddr) {
    let d = Daemon::spawn_echoing(
        "coordinator",
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .args(["--database", db, "--probe-token", TOKEN])
            .args([
                "--heartbeat-interval-ms",
                "300",
                "--probe-timeout-ms",
                "1500",
            ])
            .args(["--ping-interval-ms", "0", "--landmark-checks", "false"])
            .args(extra)
            .env_remove("GEOLOC_COORDINATOR_CONFIG"),
    );
    // The web line comes before the gRPC line.
    let web: SocketAddr = d
        .stdout_after("web interface on http://", Duration::from_secs(30))
        .parse()
        .unwrap();
    let grpc = d.stdout_after("listening on ", Duration::from_secs(30));
    assert!(web.ip().is_loopback());
    (d, format!("http://{grpc}"), web)
}

/// Locates `ip`, retrying while the fleet is still connecting.
async fn locate_retrying(client: &mut geoloc_client::Client, ip: &str) -> geoloc_client::Located {
    let start = Instant::now();
    loop {
        match client.locate(req(ip), |_| {}).await {
            Ok(l) => return l,
            Err(f) if f.code == "no-probes" && start.elapsed() < Duration::from_secs(20) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(f) => panic!("locate: {f:?}"),
        }
    }
}

/// chromedriver on a free loopback port, or None (the test `test` skips, which fails under
/// GEOLOC_REQUIRE_ENV=1) when chromium or chromedriver is missing.
fn start_driver(test: &str) -> Option<(Daemon, u16)> {
    let (Some(_), Some(driver)) = (which("chromium"), which("chromedriver")) else {
        geoloc_testenv::skip(
            test,
            "chromium or chromedriver is not installed (apt-get install chromium chromium-driver)",
        );
        return None;
    };
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let d = Daemon::spawn(
        "chromedriver",
        Command::new(driver).arg(format!("--port={port}")),
    );
    Some((d, port))
}

/// A headless Chromium session through the chromedriver on `driver_port`.
async fn browser(driver_port: u16) -> anyhow::Result<fantoccini::Client> {
    use fantoccini::ClientBuilder;
    let caps = serde_json::json!({
        "goog:chromeOptions": {
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,800"]
        }
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let start = Instant::now();
    loop {
        match ClientBuilder::new(connector.clone())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{driver_port}"))
            .await
        {
            Ok(c) => return Ok(c),
            Err(e) if start.elapsed() > Duration::from_secs(30) => {
                anyhow::bail!("chromedriver: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn browse(web: SocketAddr, driver_port: u16, id: &str, key: &str) -> anyhow::Result<Rows> {
    use fantoccini::Locator;
    let c = browser(driver_port).await?;
    let base = format!("http://{web}");
    let r = async {
        // Without a key the coordinator refuses the listing and the page says so; the key
        // kept in the page (localStorage) is sent and accepted.
        c.goto(&format!("{base}/#/history")).await?;
        wait_js(&c, "!document.getElementById('history-error').hidden").await?;
        c.execute(
            "localStorage.setItem('geoloc-api-key', arguments[0]);",
            vec![Value::from(key)],
        )
        .await?;
        c.refresh().await?;
        wait_js(&c, "document.querySelectorAll('#history-table tr[data-result-id]').length > 0").await?;
        // Read in one script: the table may be redrawn between a find and a read (a stale
        // element otherwise).
        let all: Vec<String> = serde_json::from_value(
            c.execute(
                "return Array.from(document.querySelectorAll('#history-table tr[data-result-id]'))\
                   .map((tr) => tr.getAttribute('data-result-id'));",
                vec![],
            )
            .await?,
        )?;
        let history_markers = c
            .find_all(Locator::Css("path.geoloc-history-estimate"))
            .await?
            .len();
        // A filter is a URL too: another address lists nothing.
        c.goto(&format!("{base}/#/history?ip=192.0.2.99")).await?;
        c.refresh().await?;
        wait_js(&c, "document.getElementById('history-summary').textContent.startsWith('0 results')").await?;
        let filtered_other = c
            .find_all(Locator::Css("#history-table tr[data-result-id]"))
            .await?
            .len();
        // The filter form, then the link of the result opens it.
        c.goto(&format!("{base}/#/history")).await?;
        c.find(Locator::Css("#history-ip")).await?.send_keys(TARGET).await?;
        c.find(Locator::Css("#history-go")).await?.click().await?;
        wait_js(&c, &format!("location.hash.includes('ip={TARGET}') && document.querySelectorAll('#history-table a').length > 0")).await?;
        // The same race for the click: found and clicked again if the table was redrawn.
        let link = format!("#history-table tr[data-result-id='{id}'] a");
        let mut tries = 0;
        loop {
            match c.find(Locator::Css(&link)).await?.click().await {
                Ok(_) => break,
                Err(e) if tries < 3 && e.to_string().contains("stale") => tries += 1,
                Err(e) => return Err(e.into()),
            }
        }
        wait_js(&c, "!document.getElementById('answer').hidden").await?;
        let opened_result = c
            .find(Locator::Css("#answer"))
            .await?
            .attr("data-result-id")
            .await?
            .unwrap_or_default();
        anyhow::Ok(Rows {
            all,
            filtered_other,
            history_markers,
            opened_result,
        })
    }
    .await;
    let _ = c.close().await;
    r
}
