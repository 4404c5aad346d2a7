//! Reputation and exposure providers queried with the user's own keys: AbuseIPDB,
//! VirusTotal, Shodan, Censys. Each is optional; each has its own rate limiter (its free
//! tier's rate by default) and its answers go through the [`Cache`].
//!
//! A provider that fails, times out, is rate limited or answers something malformed gives
//! an [`Outcome`] with `status = "error"` and the reason: it never stops the run.
//!
//! Clients written by hand from each provider's public API documentation (no maintained Rust
//! client covers all four with a configurable base URL).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use crate::cache::Cache;

pub mod abuseipdb;
pub mod censys;
pub mod shodan;
pub mod virustotal;

/// The providers this crate knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    AbuseIpDb,
    VirusTotal,
    Shodan,
    Censys,
}

impl ProviderKind {
    /// All, in column order.
    pub const ALL: [ProviderKind; 4] = [
        ProviderKind::AbuseIpDb,
        ProviderKind::VirusTotal,
        ProviderKind::Shodan,
        ProviderKind::Censys,
    ];

    /// Lower-case name used in config sections, cache folders and column names.
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::AbuseIpDb => "abuseipdb",
            ProviderKind::VirusTotal => "virustotal",
            ProviderKind::Shodan => "shodan",
            ProviderKind::Censys => "censys",
        }
    }

    /// The public API's base URL.
    pub fn default_base_url(self) -> &'static str {
        match self {
            ProviderKind::AbuseIpDb => "https://api.abuseipdb.com",
            ProviderKind::VirusTotal => "https://www.virustotal.com",
            ProviderKind::Shodan => "https://api.shodan.io",
            ProviderKind::Censys => "https://api.platform.censys.io",
        }
    }

    /// Free-tier rate: (requests per period, period, burst).
    /// AbuseIPDB: 1,000 checks a day; VirusTotal public API: 4 a minute; Shodan: 1 a
    /// second; Censys free: not published per second, 1 every 3 s here (configurable).
    pub fn default_rate(self) -> (Duration, u32) {
        match self {
            ProviderKind::AbuseIpDb => (Duration::from_millis(86_400), 1),
            ProviderKind::VirusTotal => (Duration::from_secs(15), 1),
            ProviderKind::Shodan => (Duration::from_secs(1), 1),
            ProviderKind::Censys => (Duration::from_secs(3), 1),
        }
    }

    /// A web page a person can open for this address.
    pub fn link(self, ip: IpAddr) -> String {
        match self {
            ProviderKind::AbuseIpDb => format!("https://www.abuseipdb.com/check/{ip}"),
            ProviderKind::VirusTotal => format!("https://www.virustotal.com/gui/ip-address/{ip}"),
            ProviderKind::Shodan => format!("https://www.shodan.io/host/{ip}"),
            ProviderKind::Censys => format!("https://platform.censys.io/hosts/{ip}"),
        }
    }
}

/// One provider's settings.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// API key (Censys: a Personal Access Token).
    pub key: String,
    pub base_url: String,
    /// One request per `period` on average …
    pub period: Duration,
    /// … with bursts of up to this many.
    pub burst: u32,
    /// Per request, connect to last byte.
    pub timeout: Duration,
    /// A 429 whose Retry-After is at most this long is waited out and retried once;
    /// a longer one pauses the provider for that long in this run.
    pub max_retry_wait: Duration,
}

impl ProviderConfig {
    /// Defaults for `kind` with `key`.
    pub fn new(kind: ProviderKind, key: impl Into<String>) -> Self {
        let (period, burst) = kind.default_rate();
        Self {
            kind,
            key: key.into(),
            base_url: kind.default_base_url().to_string(),
            period,
            burst,
            timeout: Duration::from_secs(10),
            max_retry_wait: Duration::from_secs(5),
        }
    }
}

/// An open service (port) seen by Shodan or Censys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub port: u16,
    /// `tcp` or `udp`.
    pub transport: String,
    /// Product or protocol name as the provider gives it (may be empty).
    pub name: String,
}

/// What a provider said, typed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum Answer {
    AbuseIpDb(abuseipdb::AbuseIpDbAnswer),
    VirusTotal(virustotal::VirusTotalAnswer),
    Shodan(shodan::ShodanAnswer),
    Censys(censys::CensysAnswer),
}

/// Status of one provider lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// An answer.
    Ok,
    /// The provider knows nothing of this address.
    NotFound,
    /// No key configured for this provider.
    NotConfigured,
    /// Not in the cache, and this run does not query providers.
    NotCached,
    /// Failed: see `reason`.
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::NotFound => "not-found",
            Status::NotConfigured => "not-configured",
            Status::NotCached => "not-cached",
            Status::Error => "error",
        }
    }
}

/// The result of asking one provider about one address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub provider: ProviderKind,
    pub status: Status,
    /// Why, when `status` is `error` (timeout, rate limited, malformed answer, HTTP status).
    pub reason: Option<String>,
    pub answer: Option<Answer>,
    /// Served from the cache.
    #[serde(default)]
    pub cached: bool,
    /// When the provider answered, Unix s.
    pub fetched_at_unix_s: Option<i64>,
}

impl Outcome {
    pub(crate) fn error(kind: ProviderKind, reason: impl Into<String>) -> Self {
        Self {
            provider: kind,
            status: Status::Error,
            reason: Some(reason.into()),
            answer: None,
            cached: false,
            fetched_at_unix_s: None,
        }
    }
    pub(crate) fn status(kind: ProviderKind, status: Status) -> Self {
        Self {
            provider: kind,
            status,
            reason: None,
            answer: None,
            cached: false,
            fetched_at_unix_s: None,
        }
    }
    /// The status column's text: `ok`, `not-found`, …, or `error: <reason>`.
    pub fn status_text(&self) -> String {
        match &self.reason {
            Some(r) => format!("{}: {r}", self.status.as_str()),
            None => self.status.as_str().to_string(),
        }
    }
}

/// Largest answer body read, bytes (Shodan's full host record with banners can be large).
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// What the HTTP layer got: the status and body, or why not.
pub(crate) struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// One provider's client: HTTP, limiter, pause after a long 429.
pub struct ProviderClient {
    pub config: ProviderConfig,
    http: reqwest::Client,
    limiter: Arc<DefaultDirectRateLimiter>,
    paused_until: Mutex<Option<Instant>>,
    requests: std::sync::atomic::AtomicU64,
}

/// A `governor` quota: one cell per `period` (at least 1 ms), bursts of `burst` (at least 1).
pub(crate) fn quota(period: Duration, burst: u32) -> Quota {
    let period = period.max(Duration::from_millis(1));
    Quota::with_period(period)
        .expect("period > 0")
        .allow_burst(NonZeroU32::new(burst.max(1)).expect("burst > 0"))
}

impl ProviderClient {
    /// A client (builds its own HTTP client with the configured timeout).
    pub fn new(config: ProviderConfig) -> crate::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("geoloc-know/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| crate::KnowError::Http(e.to_string()))?;
        Ok(Self {
            limiter: Arc::new(RateLimiter::direct(quota(config.period, config.burst))),
            config,
            http,
            paused_until: Mutex::new(None),
            requests: 0.into(),
        })
    }

    /// Requests sent so far (for reports and tests).
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Looks `ip` up: from the cache when fresh, else from the provider (waiting for the
    /// limiter), caching answers and not-found (never errors).
    pub async fn lookup(&self, ip: IpAddr, cache: Option<&Cache>) -> Outcome {
        let kind = self.config.kind;
        if let Some(c) = cache {
            if let Some((mut o, at)) = c.get::<Outcome>(kind.name(), ip) {
                o.cached = true;
                o.fetched_at_unix_s = Some(at);
                return o;
            }
        }
        let mut o = self.fetch(ip).await;
        if matches!(o.status, Status::Ok | Status::NotFound) {
            o.fetched_at_unix_s = Some(chrono::Utc::now().timestamp());
            if let Some(c) = cache {
                c.put(kind.name(), ip, &o);
            }
        }
        o
    }

    /// Asks the provider (no cache).
    pub async fn fetch(&self, ip: IpAddr) -> Outcome {
        let kind = self.config.kind;
        let mut retried = false;
        loop {
            if let Some(until) = *self.paused_until.lock().expect("pause lock") {
                let now = Instant::now();
                if until > now {
                    return Outcome::error(
                        kind,
                        format!(
                            "rate limited: provider paused for {} more s (Retry-After)",
                            (until - now).as_secs().max(1)
                        ),
                    );
                }
            }
            self.limiter.until_ready().await;
            self.requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let reply = match self.send(ip).await {
                Ok(r) => r,
                Err(reason) => return Outcome::error(kind, reason),
            };
            if reply.status == 429 {
                let wait = reply.retry_after;
                match wait {
                    Some(w) if w <= self.config.max_retry_wait && !retried => {
                        retried = true;
                        tokio::time::sleep(w).await;
                        continue;
                    }
                    Some(w) => {
                        *self.paused_until.lock().expect("pause lock") = Some(Instant::now() + w);
                        return Outcome::error(
                            kind,
                            format!("rate limited (HTTP 429), retry after {} s", w.as_secs()),
                        );
                    }
                    None => return Outcome::error(kind, "rate limited (HTTP 429), no Retry-After"),
                }
            }
            let r = Reply {
                status: reply.status,
                body: reply.body,
            };
            return match kind {
                ProviderKind::AbuseIpDb => abuseipdb::parse(&r),
                ProviderKind::VirusTotal => virustotal::parse(&r),
                ProviderKind::Shodan => shodan::parse(&r),
                ProviderKind::Censys => censys::parse(&r),
            };
        }
    }

    async fn send(&self, ip: IpAddr) -> Result<RawReply, String> {
        let base = self.config.base_url.trim_end_matches('/');
        let key = &self.config.key;
        let ip_text = geoloc_policy::canonical(ip);
        let req = match self.config.kind {
            ProviderKind::AbuseIpDb => self
                .http
                .get(format!("{base}/api/v2/check"))
                .query(&[("ipAddress", ip_text.as_str()), ("maxAgeInDays", "90")])
                .header("Key", key)
                .header("Accept", "application/json"),
            ProviderKind::VirusTotal => self
                .http
                .get(format!("{base}/api/v3/ip_addresses/{ip_text}"))
                .header("x-apikey", key),
            ProviderKind::Shodan => self
                .http
                .get(format!("{base}/shodan/host/{ip_text}"))
                .query(&[("key", key.as_str()), ("minify", "false")]),
            ProviderKind::Censys => self
                .http
                .get(format!("{base}/v3/global/asset/host/{ip_text}"))
                .bearer_auth(key)
                .header("Accept", "application/vnd.censys.api.v3.host.v1+json"),
        };
        let timeout_s = self.config.timeout.as_secs_f64();
        let describe = |e: reqwest::Error| {
            if e.is_timeout() {
                format!("timeout after {timeout_s:.0} s")
            } else if e.is_connect() {
                format!("cannot connect: {}", crate::error_chain(&e))
            } else {
                format!("request failed: {}", crate::error_chain(&e))
            }
        };
        let mut resp = req.send().await.map_err(describe)?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(describe)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(format!("answer larger than {MAX_BODY_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(RawReply {
            status,
            body,
            retry_after,
        })
    }
}

struct RawReply {
    status: u16,
    body: Vec<u8>,
    retry_after: Option<Duration>,
}

/// `Retry-After` as delay-seconds (RFC 9110 §10.2.3), capped at one day; HTTP dates are
/// turned into the delay from now.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s.min(86_400)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let d = at.timestamp() - chrono::Utc::now().timestamp();
    Some(Duration::from_secs(d.clamp(0, 86_400) as u64))
}

/// The common part of every parser: 404 → not found, 401/403 → key refused, other non-2xx →
/// HTTP error with the provider's message; `Ok(())` for a 2xx.
pub(crate) fn check_status(
    kind: ProviderKind,
    r: &Reply,
    message: impl Fn(&serde_json::Value) -> Option<String>,
) -> Result<(), Box<Outcome>> {
    if (200..300).contains(&r.status) {
        return Ok(());
    }
    let msg = serde_json::from_slice::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| message(&v))
        .map(|m| crate::printable(&m, 200))
        .unwrap_or_default();
    let with = |s: String| {
        if msg.is_empty() {
            s
        } else {
            format!("{s}: {msg}")
        }
    };
    Err(Box::new(match r.status {
        404 => Outcome::status(kind, Status::NotFound),
        401 | 403 => Outcome::error(kind, with(format!("key refused (HTTP {})", r.status))),
        s => Outcome::error(kind, with(format!("HTTP {s}"))),
    }))
}

/// Decodes a 2xx body, or says it is malformed.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    kind: ProviderKind,
    r: &Reply,
) -> Result<T, Box<Outcome>> {
    serde_json::from_slice(&r.body).map_err(|e| {
        Box::new(Outcome::error(
            kind,
            format!(
                "malformed answer: {}",
                crate::printable(&e.to_string(), 200)
            ),
        ))
    })
}

/// An `ok` outcome.
pub(crate) fn ok(kind: ProviderKind, a: Answer) -> Outcome {
    Outcome {
        provider: kind,
        status: Status::Ok,
        reason: None,
        answer: Some(a),
        cached: false,
        fetched_at_unix_s: None,
    }
}

/// A provider's text, cleaned of control characters and cut to 200 characters.
pub(crate) fn clean_text(s: &str) -> String {
    crate::printable(s, 200)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("99999999"),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
