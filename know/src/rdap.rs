//! RDAP (RFC 9083): the registry's record of the network holding an address — its name,
//! handle, country, range and abuse contact — from `GET {base}/ip/{ip}` (by default the
//! `rdap.org` bootstrap redirector, which sends each query to the right RIR).
//!
//! RDAP servers rate-limit (RFC 7480 §5.5: HTTP 429 with `Retry-After`), and so does the
//! bootstrap redirector. Redirects are followed here, not by the HTTP client, so that every
//! request waits for the limiter of the host it goes to ([`RdapLimits`], per `host:port`:
//! the redirector and each registry have their own). A 429 whose `Retry-After` is short is
//! waited out and retried once; a longer one pauses that host for the rest of the wait in
//! this process (its later lookups fail at once, without a request).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::DefaultDirectRateLimiter;
use serde::{Deserialize, Serialize};

use crate::error::{KnowError, Result};

/// The registry's record of the network holding an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RdapNetwork {
    pub handle: Option<String>,
    /// Network name, e.g. `GOOGLE`.
    pub name: Option<String>,
    /// ISO 3166-1 alpha-2.
    pub country: Option<String>,
    pub start_address: Option<String>,
    pub end_address: Option<String>,
    /// Full name of the abuse contact.
    pub abuse_name: Option<String>,
    pub abuse_email: Option<String>,
    /// The record's own URL (`links[rel=self]`), for people to open.
    pub url: Option<String>,
}

/// How fast the RDAP client may ask each host (the bootstrap redirector and every registry
/// it redirects to, each separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RdapLimits {
    /// One request per `period` per host on average …
    pub period: Duration,
    /// … with bursts of up to this many.
    pub burst: u32,
    /// A 429 whose Retry-After is at most this long is waited out and retried once; a
    /// longer one pauses the host for that long.
    pub max_retry_wait: Duration,
}

impl Default for RdapLimits {
    /// 1 a second per host, bursts of 5. The registries publish no number (RFC 7480 leaves
    /// it to each; they answer 429 when exceeded): this stays well below what any of them
    /// is reported to tolerate, and the cache keeps re-runs from asking again.
    fn default() -> Self {
        Self {
            period: Duration::from_secs(1),
            burst: 5,
            max_retry_wait: Duration::from_secs(5),
        }
    }
}

/// One host's limiter and pause.
struct HostState {
    limiter: Arc<DefaultDirectRateLimiter>,
    paused_until: Option<Instant>,
}

/// An RDAP client.
pub struct RdapClient {
    http: reqwest::Client,
    base: String,
    limits: RdapLimits,
    hosts: Mutex<HashMap<String, HostState>>,
    requests: AtomicU64,
}

/// Largest RDAP answer read, bytes.
const MAX_BODY: usize = 1 << 20;
/// Most redirects followed for one lookup (the bootstrap redirector needs one).
const MAX_REDIRECTS: u32 = 5;
/// Most hosts with a limiter kept (each is a few bytes; a hostile chain of redirects to new
/// hosts stops at [`MAX_REDIRECTS`] per lookup anyway).
const MAX_HOSTS: usize = 1024;

impl RdapClient {
    /// Queries `base` (e.g. `https://rdap.org`) with the default [`RdapLimits`].
    pub fn new(base: impl Into<String>, timeout: Duration) -> Result<Self> {
        Self::with_limits(base, timeout, RdapLimits::default())
    }

    /// Queries `base`, each host at most as fast as `limits` allows.
    pub fn with_limits(
        base: impl Into<String>,
        timeout: Duration,
        limits: RdapLimits,
    ) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("geoloc-know/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| KnowError::Http(e.to_string()))?;
        Ok(Self {
            http,
            base: base.into().trim_end_matches('/').to_string(),
            limits,
            hosts: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
        })
    }

    /// Requests sent so far, redirects and retries included (for reports and tests).
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The limiter of `host`, or why the host may not be asked now (paused after a 429).
    fn limiter(&self, host: &str) -> std::result::Result<Arc<DefaultDirectRateLimiter>, String> {
        let mut hosts = self.hosts.lock().expect("rdap hosts lock");
        if hosts.len() >= MAX_HOSTS && !hosts.contains_key(host) {
            hosts.retain(|_, h| h.paused_until.is_some());
        }
        let h = hosts.entry(host.to_string()).or_insert_with(|| HostState {
            limiter: Arc::new(governor::RateLimiter::direct(crate::providers::quota(
                self.limits.period,
                self.limits.burst,
            ))),
            paused_until: None,
        });
        if let Some(until) = h.paused_until {
            let now = Instant::now();
            if until > now {
                return Err(format!(
                    "rate limited: {host} paused for {} more s (Retry-After)",
                    (until - now).as_secs().max(1)
                ));
            }
            h.paused_until = None;
        }
        Ok(h.limiter.clone())
    }

    fn pause(&self, host: &str, wait: Duration) {
        if let Some(h) = self.hosts.lock().expect("rdap hosts lock").get_mut(host) {
            h.paused_until = Some(Instant::now() + wait);
        }
    }

    /// The record of `ip`; `Ok(None)` on 404; `Err(reason)` otherwise.
    pub async fn lookup(&self, ip: IpAddr) -> std::result::Result<Option<RdapNetwork>, String> {
        let first = format!("{}/ip/{}", self.base, geoloc_policy::canonical(ip));
        let mut url = reqwest::Url::parse(&first)
            .map_err(|e| format!("bad RDAP URL {}: {e}", crate::printable(&first, 200)))?;
        let (mut redirects, mut retried) = (0u32, false);
        loop {
            let host = host_key(&url);
            let limiter = self.limiter(&host)?;
            limiter.until_ready().await;
            self.requests.fetch_add(1, Ordering::Relaxed);
            let mut resp = self
                .http
                .get(url.clone())
                .header("Accept", "application/rdap+json, application/json")
                .send()
                .await
                .map_err(|e| {
                    if e.is_timeout() {
                        format!("timeout ({host})")
                    } else {
                        format!("request failed: {}", crate::error_chain(&e))
                    }
                })?;
            let status = resp.status().as_u16();
            if matches!(status, 301 | 302 | 303 | 307 | 308) {
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(format!("more than {MAX_REDIRECTS} redirects"));
                }
                let to = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| format!("HTTP {status} from {host} without a Location"))?;
                let next = url
                    .join(to)
                    .map_err(|e| format!("bad redirect from {host}: {e}"))?;
                if !matches!(next.scheme(), "http" | "https") {
                    return Err(format!(
                        "redirect from {host} to a {} URL refused",
                        crate::printable(next.scheme(), 20)
                    ));
                }
                url = next;
                continue;
            }
            if status == 429 {
                let wait = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(crate::providers::parse_retry_after);
                match wait {
                    Some(w) if w <= self.limits.max_retry_wait && !retried => {
                        retried = true;
                        tokio::time::sleep(w).await;
                        continue;
                    }
                    Some(w) => {
                        self.pause(&host, w);
                        return Err(format!(
                            "rate limited (HTTP 429) by {host}, retry after {} s",
                            w.as_secs()
                        ));
                    }
                    None => {
                        return Err(format!("rate limited (HTTP 429) by {host}, no Retry-After"))
                    }
                }
            }
            let mut body = Vec::new();
            while let Some(c) = resp.chunk().await.map_err(|e| e.to_string())? {
                if body.len() + c.len() > MAX_BODY {
                    return Err(format!("answer larger than {MAX_BODY} bytes"));
                }
                body.extend_from_slice(&c);
            }
            if status == 404 {
                return Ok(None);
            }
            if !(200..300).contains(&status) {
                return Err(format!("HTTP {status}"));
            }
            return parse(&body).map(Some);
        }
    }
}

/// `host:port` of `url` (the port made explicit), the key of its limiter.
fn host_key(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("-");
    match url.port_or_known_default() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// Parses an RFC 9083 `ip network` object.
pub fn parse(body: &[u8]) -> std::result::Result<RdapNetwork, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "malformed answer: {}",
            crate::printable(&e.to_string(), 200)
        )
    })?;
    if v["objectClassName"].as_str() != Some("ip network") {
        return Err(format!(
            "malformed answer: objectClassName is {}, want \"ip network\"",
            crate::printable(&v["objectClassName"].to_string(), 40)
        ));
    }
    let s = |x: &serde_json::Value| x.as_str().map(|t| crate::printable(t, 200));
    let (abuse_name, abuse_email) = find_abuse(&v["entities"], 0).unwrap_or((None, None));
    let url = v["links"].as_array().and_then(|ls| {
        ls.iter()
            .find(|l| l["rel"].as_str() == Some("self"))
            .and_then(|l| s(&l["href"]))
    });
    Ok(RdapNetwork {
        handle: s(&v["handle"]),
        name: s(&v["name"]),
        country: s(&v["country"]),
        start_address: s(&v["startAddress"]),
        end_address: s(&v["endAddress"]),
        abuse_name,
        abuse_email,
        url,
    })
}

type Contact = (Option<String>, Option<String>);

/// The first entity with role `abuse`, searched depth-first (registries nest the abuse
/// contact inside the registrant entity), at most 4 levels deep.
fn find_abuse(entities: &serde_json::Value, depth: u32) -> Option<Contact> {
    if depth > 4 {
        return None;
    }
    for e in entities.as_array()?.iter().take(64) {
        let is_abuse = e["roles"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x.as_str() == Some("abuse")));
        if is_abuse {
            return Some(vcard(&e["vcardArray"]));
        }
        if let Some(c) = find_abuse(&e["entities"], depth + 1) {
            return Some(c);
        }
    }
    None
}

/// `fn` and `email` of a jCard (RFC 7095): `["vcard", [[name, params, type, value], …]]`.
fn vcard(v: &serde_json::Value) -> Contact {
    let mut name = None;
    let mut email = None;
    if let Some(props) = v[1].as_array() {
        for p in props.iter().take(64) {
            let val = p[3].as_str().map(|t| crate::printable(t, 200));
            match p[0].as_str() {
                Some("fn") if name.is_none() => name = val,
                Some("email") if email.is_none() => email = val,
                _ => {}
            }
        }
    }
    (name, email)
}
