//! Shared by the tests and the throughput example: stand-in servers of the providers and of
//! RDAP (axum on loopback, speaking each documented format), a stand-in DNS server, and a
//! generated connection log with its GeoIP database.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// Addresses choosing the stand-ins' behaviour.
pub const NORMAL: &str = "8.8.8.8";
pub const NOT_FOUND: &str = "9.9.9.9";
pub const RATE_LIMITED: &str = "1.1.1.1";
pub const MALFORMED: &str = "1.0.0.1";
pub const SLOW: &str = "4.4.4.4";
/// 429 with `Retry-After: 1` on the first request, then normal.
pub const FLAKY: &str = "5.5.5.5";

/// What the stand-ins saw.
#[derive(Default)]
pub struct Seen {
    pub requests: AtomicU64,
    /// Arrival time of each request, per provider.
    pub times: Mutex<HashMap<String, Vec<Instant>>>,
    pub flaky_hits: Mutex<HashMap<String, u32>>,
    /// Keys the requests carried.
    pub keys: Mutex<Vec<String>>,
}

pub struct StandIn {
    pub url: String,
    pub seen: Arc<Seen>,
}

impl StandIn {
    pub fn requests(&self) -> u64 {
        self.seen.requests.load(Ordering::SeqCst)
    }
    pub fn times(&self, provider: &str) -> Vec<Instant> {
        self.seen
            .times
            .lock()
            .unwrap()
            .get(provider)
            .cloned()
            .unwrap_or_default()
    }
}

fn json(status: StatusCode, body: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn normal_body(provider: &str, ip: &str) -> String {
    match provider {
        "abuseipdb" => format!(
            r#"{{"data":{{"ipAddress":"{ip}","isPublic":true,"ipVersion":4,"isWhitelisted":false,
            "abuseConfidenceScore":87,"countryCode":"US","usageType":"Data Center/Web Hosting/Transit",
            "isp":"Example Hosting","domain":"example.net","hostnames":[],"isTor":false,
            "totalReports":42,"numDistinctUsers":17,"lastReportedAt":"2026-11-28T10:00:00+00:00"}}}}"#
        ),
        "virustotal" => format!(
            r#"{{"data":{{"id":"{ip}","type":"ip_address","attributes":{{
            "last_analysis_stats":{{"harmless":60,"malicious":3,"suspicious":1,"undetected":26,"timeout":0}},
            "reputation":-12,"as_owner":"EXAMPLE-AS","asn":64500,"country":"US"}}}}}}"#
        ),
        "shodan" => format!(
            r#"{{"ip_str":"{ip}","ports":[443,22,80],"hostnames":["host.example.net"],"org":"Example Hosting",
            "isp":"Example","asn":"AS64500","os":null,"vulns":["CVE-2024-0001"],"last_update":"2026-11-27T00:00:00",
            "data":[{{"port":22,"transport":"tcp","product":"OpenSSH"}},{{"port":80,"transport":"tcp","product":"nginx"}},
            {{"port":443,"transport":"tcp"}}]}}"#
        ),
        _ => format!(
            r#"{{"result":{{"resource":{{"ip":"{ip}","services":[{{"port":22,"protocol":"SSH","transport_protocol":"tcp"}},
            {{"port":53,"protocol":"DNS","transport_protocol":"udp"}}],"autonomous_system":{{"asn":64500,"name":"EXAMPLE-AS"}}}},
            "extensions":{{}}}}}}"#
        ),
    }
}

fn not_found(provider: &str) -> Response {
    match provider {
        // AbuseIPDB has no 404 for an address it does not know: it answers score 0; a 404 is
        // what its API gives for an unknown path, so the client's handling is the same.
        "abuseipdb" => json(
            StatusCode::NOT_FOUND,
            r#"{"errors":[{"detail":"Not found","status":404}]}"#,
        ),
        "virustotal" => json(
            StatusCode::NOT_FOUND,
            r#"{"error":{"code":"NotFoundError","message":"IP address not found"}}"#,
        ),
        "shodan" => json(
            StatusCode::NOT_FOUND,
            r#"{"error":"No information available for that IP."}"#,
        ),
        _ => json(
            StatusCode::NOT_FOUND,
            r#"{"error":{"code":404,"message":"host not found","status":"Not Found"}}"#,
        ),
    }
}

fn too_many(provider: &str, retry_after_s: u32) -> Response {
    let body = match provider {
        "abuseipdb" => {
            r#"{"errors":[{"detail":"Daily rate limit of 1000 requests exceeded for this endpoint.","status":429}]}"#
        }
        "virustotal" => r#"{"error":{"code":"QuotaExceededError","message":"Quota exceeded"}}"#,
        "shodan" => r#"{"error":"Rate limit reached"}"#,
        _ => r#"{"error":{"code":429,"message":"rate limit exceeded"}}"#,
    };
    (
        StatusCode::TOO_MANY_REQUESTS,
        [
            ("content-type", "application/json".to_string()),
            ("retry-after", retry_after_s.to_string()),
        ],
        body.to_string(),
    )
        .into_response()
}

async fn answer(seen: Arc<Seen>, provider: &str, ip: String, key: Option<String>) -> Response {
    seen.requests.fetch_add(1, Ordering::SeqCst);
    seen.times
        .lock()
        .unwrap()
        .entry(provider.to_string())
        .or_default()
        .push(Instant::now());
    if let Some(k) = key {
        seen.keys.lock().unwrap().push(k);
    }
    match ip.as_str() {
        NOT_FOUND => not_found(provider),
        RATE_LIMITED => too_many(provider, 120),
        MALFORMED => json(
            StatusCode::OK,
            r#"{"data": {"attributes": 42}, "result": [}"#,
        ),
        SLOW => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            json(StatusCode::OK, &normal_body(provider, &ip))
        }
        FLAKY => {
            let n = {
                let mut h = seen.flaky_hits.lock().unwrap();
                let e = h.entry(provider.to_string()).or_default();
                *e += 1;
                *e
            };
            if n == 1 {
                too_many(provider, 1)
            } else {
                json(StatusCode::OK, &normal_body(provider, &ip))
            }
        }
        _ => json(StatusCode::OK, &normal_body(provider, &ip)),
    }
}

/// The four providers' APIs on one loopback server (each at its documented path).
pub async fn provider_stand_in() -> StandIn {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route(
            "/api/v2/check",
            get(
                |State(s): State<Arc<Seen>>, h: HeaderMap, Query(q): Query<HashMap<String, String>>| async move {
                    let key = h.get("key").and_then(|v| v.to_str().ok()).map(str::to_string);
                    answer(s, "abuseipdb", q.get("ipAddress").cloned().unwrap_or_default(), key).await
                },
            ),
        )
        .route(
            "/api/v3/ip_addresses/{ip}",
            get(|State(s): State<Arc<Seen>>, h: HeaderMap, UrlPath(ip): UrlPath<String>| async move {
                let key = h.get("x-apikey").and_then(|v| v.to_str().ok()).map(str::to_string);
                answer(s, "virustotal", ip, key).await
            }),
        )
        .route(
            "/shodan/host/{ip}",
            get(
                |State(s): State<Arc<Seen>>, UrlPath(ip): UrlPath<String>, Query(q): Query<HashMap<String, String>>| async move {
                    answer(s, "shodan", ip, q.get("key").cloned()).await
                },
            ),
        )
        .route(
            "/v3/global/asset/host/{ip}",
            get(|State(s): State<Arc<Seen>>, h: HeaderMap, UrlPath(ip): UrlPath<String>| async move {
                let key = h
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                answer(s, "censys", ip, key).await
            }),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    StandIn {
        url: format!("http://{addr}"),
        seen,
    }
}

/// An RDAP server (RFC 9083) on loopback: `NORMAL` has a record with a nested abuse
/// contact, `NOT_FOUND` is 404, `MALFORMED` is not JSON, `RATE_LIMITED` is 429 with
/// `Retry-After: 120`, `FLAKY` is 429 with `Retry-After: 1` the first time (RFC 7480 §5.5).
/// Arrival times are kept under `rdap`.
pub async fn rdap_stand_in() -> StandIn {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route(
            "/ip/{ip}",
            get(
                |State(s): State<Arc<Seen>>, UrlPath(ip): UrlPath<String>| async move {
                    s.requests.fetch_add(1, Ordering::SeqCst);
                    s.times
                        .lock()
                        .unwrap()
                        .entry("rdap".to_string())
                        .or_default()
                        .push(Instant::now());
                    let limited = |secs: u32| {
                        (
                            StatusCode::TOO_MANY_REQUESTS,
                            [
                                ("content-type", "application/rdap+json".to_string()),
                                ("retry-after", secs.to_string()),
                            ],
                            r#"{"errorCode":429,"title":"Too Many Requests"}"#,
                        )
                            .into_response()
                    };
                    match ip.as_str() {
                        NOT_FOUND => json(
                            StatusCode::NOT_FOUND,
                            r#"{"errorCode":404,"title":"Not Found"}"#,
                        ),
                        MALFORMED => json(StatusCode::OK, "<html>oops</html>"),
                        RATE_LIMITED => limited(120),
                        FLAKY => {
                            let n = {
                                let mut h = s.flaky_hits.lock().unwrap();
                                let e = h.entry("rdap".to_string()).or_default();
                                *e += 1;
                                *e
                            };
                            if n == 1 {
                                limited(1)
                            } else {
                                json(StatusCode::OK, &rdap_body(&ip))
                            }
                        }
                        _ => json(StatusCode::OK, &rdap_body(&ip)),
                    }
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    StandIn {
        url: format!("http://{addr}"),
        seen,
    }
}

/// A bootstrap redirector like rdap.org on loopback: `/ip/{ip}` answers 302 to
/// `{registry}/ip/{ip}`. Arrival times are kept under `bootstrap`.
pub async fn rdap_bootstrap_stand_in(registry: &str) -> StandIn {
    let seen = Arc::new(Seen::default());
    let registry = registry.trim_end_matches('/').to_string();
    let app = Router::new()
        .route(
            "/ip/{ip}",
            get(
                |State((s, reg)): State<(Arc<Seen>, String)>, UrlPath(ip): UrlPath<String>| async move {
                    s.requests.fetch_add(1, Ordering::SeqCst);
                    s.times
                        .lock()
                        .unwrap()
                        .entry("bootstrap".to_string())
                        .or_default()
                        .push(Instant::now());
                    (
                        StatusCode::FOUND,
                        [("location", format!("{reg}/ip/{ip}"))],
                        "",
                    )
                        .into_response()
                },
            ),
        )
        .with_state((seen.clone(), registry));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    StandIn {
        url: format!("http://{addr}"),
        seen,
    }
}

fn rdap_body(ip: &str) -> String {
    format!(
        r#"{{"rdapConformance":["rdap_level_0","cidr0"],"objectClassName":"ip network",
        "handle":"NET-8-8-8-0-2","startAddress":"8.8.8.0","endAddress":"8.8.8.255","ipVersion":"v4",
        "name":"GOGL","type":"DIRECT ALLOCATION","country":"US","parentHandle":"NET-8-0-0-0-0",
        "links":[{{"value":"https://rdap.arin.net/registry/ip/{ip}","rel":"self",
          "href":"https://rdap.arin.net/registry/ip/8.8.8.0","type":"application/rdap+json"}}],
        "entities":[{{"objectClassName":"entity","handle":"GOGL","roles":["registrant"],
          "vcardArray":["vcard",[["version",{{}},"text","4.0"],["fn",{{}},"text","Google LLC"],["kind",{{}},"text","org"]]],
          "entities":[{{"objectClassName":"entity","handle":"ABUSE5250-ARIN","roles":["abuse"],
            "vcardArray":["vcard",[["version",{{}},"text","4.0"],["fn",{{}},"text","Abuse"],
              ["kind",{{}},"text","group"],["email",{{}},"text","network-abuse@google.com"]]]}}]}}]}}"#
    )
}

/// A DNS server on loopback UDP answering PTR queries from `names` (reverse name without
/// the final dot → PTR target), NXDOMAIN otherwise. Returns its address and a query count.
pub async fn dns_stand_in(names: Vec<(IpAddr, &'static str)>) -> (SocketAddr, Arc<AtomicU64>) {
    use hickory_proto::op::{Message, MessageType, ResponseCode};
    use hickory_proto::rr::rdata::PTR;
    use hickory_proto::rr::{Name, RData, Record};
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let table: Vec<(Name, Name)> = names
        .into_iter()
        .map(|(ip, n)| (Name::from(ip), Name::from_ascii(format!("{n}.")).unwrap()))
        .collect();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                return;
            };
            c.fetch_add(1, Ordering::SeqCst);
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut r = Message::new(q.metadata.id, MessageType::Response, q.metadata.op_code);
            r.metadata.recursion_desired = q.metadata.recursion_desired;
            r.metadata.recursion_available = true;
            r.add_queries(q.queries.clone());
            let target = q.queries.first().and_then(|qq| {
                table
                    .iter()
                    .find(|(name, _)| name.to_string().eq_ignore_ascii_case(&qq.name.to_string()))
                    .map(|(name, t)| (name.clone(), t.clone()))
            });
            match target {
                Some((name, t)) => {
                    r.add_answer(Record::from_rdata(name, 300, RData::PTR(PTR(t))));
                }
                None => r.metadata.response_code = ResponseCode::NXDomain,
            }
            let _ = sock.send_to(&r.to_vec().unwrap(), from).await;
        }
    });
    (addr, count)
}

// ---- generated log ------------------------------------------------------------------------

/// Cities of the generated GeoIP database, with their standard offset and DST rule written
/// out by hand (not from chrono-tz), to check the enrichment independently.
pub struct TestCity {
    pub name: &'static str,
    pub country: &'static str,
    pub lat: f64,
    pub lon: f64,
    pub zone: &'static str,
}

pub const CITIES: [TestCity; 3] = [
    TestCity {
        name: "Kolkata",
        country: "IN",
        lat: 22.5726,
        lon: 88.3639,
        zone: "Asia/Kolkata",
    },
    TestCity {
        name: "Berlin",
        country: "DE",
        lat: 52.52,
        lon: 13.405,
        zone: "Europe/Berlin",
    },
    TestCity {
        name: "New York",
        country: "US",
        lat: 40.7128,
        lon: -74.006,
        zone: "America/New_York",
    },
];

/// 2026-03-08T07:00Z: New York springs forward. 2026-03-29T01:00Z: Berlin does.
pub const NY_DST_UTC_S: i64 = 1_772_953_200;
pub const BERLIN_DST_UTC_S: i64 = 1_774_746_000;

/// UTC offset in minutes by hand (valid for March 2026).
pub fn offset_min(city: usize, utc_s: i64) -> i64 {
    match city {
        0 => 330,
        1 => {
            if utc_s >= BERLIN_DST_UTC_S {
                120
            } else {
                60
            }
        }
        _ => {
            if utc_s >= NY_DST_UTC_S {
                -240
            } else {
                -300
            }
        }
    }
}

/// Distinct addresses in the log: 1,800 located (600 per city), 150 public but not in the
/// GeoIP database, 50 bogons.
pub fn address(i: usize) -> String {
    if i < 1800 {
        format!("11.{}.{}.{}", i % 3, i / 250, i % 250 + 1)
    } else if i < 1950 {
        format!("12.0.{}.{}", (i - 1800) / 250, (i - 1800) % 250 + 1)
    } else {
        match i % 3 {
            0 => format!("10.0.0.{}", i - 1949),
            1 => format!("192.168.1.{}", i - 1949),
            _ => format!("198.51.100.{}", i - 1949),
        }
    }
}

/// The city of located address `i` (< 1800).
pub fn city_of(i: usize) -> usize {
    i % 3
}

/// Writes a GeoIP2-City database for the 1,800 located addresses.
pub fn write_geoip(path: &Path) {
    let mut w = mmdb_writer::Writer::new("GeoIP2-City");
    for i in 0..1800 {
        use mmdb_writer::Value as V;
        let c = &CITIES[city_of(i)];
        let record = V::map([
            (
                "city",
                V::map([("names", V::map([("en", V::from(c.name))]))]),
            ),
            ("country", V::map([("iso_code", V::from(c.country))])),
            (
                "location",
                V::map([
                    ("latitude", V::Double(c.lat)),
                    ("longitude", V::Double(c.lon)),
                    ("accuracy_radius", V::U16(20)),
                ]),
            ),
        ]);
        w.insert_value(address(i).parse::<IpAddr>().unwrap(), record)
            .unwrap();
    }
    std::fs::write(path, w.to_bytes().unwrap()).unwrap();
}

/// Start of the log: 2026-03-07T00:00:00Z; rows every 21 s reach 2026-03-31 (both DST
/// changes inside).
pub const LOG_START_S: i64 = 1_772_841_600;
pub const LOG_STEP_S: i64 = 21;

/// What row `r` of the generated log holds.
pub enum GenRow {
    Good { addr: usize, utc_s: i64 },
    BadIp,
    BadTime { addr: usize },
    Short,
}

pub fn gen_row(r: usize) -> GenRow {
    if r % 997 == 500 {
        GenRow::BadIp
    } else if r % 1009 == 600 {
        GenRow::BadTime {
            addr: (r * 7) % 2000,
        }
    } else if r % 1499 == 700 {
        GenRow::Short
    } else {
        GenRow::Good {
            addr: (r * 7) % 2000,
            utc_s: LOG_START_S + r as i64 * LOG_STEP_S,
        }
    }
}

/// Writes `rows` rows: `id,src_ip,ts,bytes`.
pub fn write_log(path: &Path, rows: usize) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "id,src_ip,ts,bytes").unwrap();
    for r in 0..rows {
        match gen_row(r) {
            GenRow::Good { addr, utc_s } => {
                let t = chrono::DateTime::from_timestamp(utc_s, 0).unwrap();
                // Two timestamp styles, both UTC.
                let ts = if r % 2 == 0 {
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                } else {
                    utc_s.to_string()
                };
                writeln!(f, "{r},{},{ts},{}", address(addr), r % 1500).unwrap();
            }
            GenRow::BadIp => writeln!(f, "{r},999.1.2.3,2026-03-10T00:00:00Z,1").unwrap(),
            GenRow::BadTime { addr } => writeln!(f, "{r},{},yesterday,1", address(addr)).unwrap(),
            GenRow::Short => writeln!(f, "{r},{}", address(1)).unwrap(),
        }
    }
}
