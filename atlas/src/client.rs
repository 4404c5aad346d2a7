//! The HTTP client for the RIPE Atlas v2 REST API.
//!
//! - `GET /api/v2/probes/` (paginated: `{"count", "next", "previous", "results"}`; `next`
//!   is followed only while it stays on the base URL);
//! - `POST /api/v2/measurements/` with an `Authorization: Key <key>` header: answers
//!   `{"measurements": [id, ..]}`;
//! - `GET /api/v2/measurements/{id}/` (its `status: {"id", "name"}`);
//! - `GET /api/v2/measurements/{id}/results/` (see [`crate::results`]);
//! - `GET /api/v2/credits/` (`current_balance`).
//!
//! Errors come back as `{"error": {"status", "title", "detail", "errors": [{"source":
//! {"pointer"}, "detail"}]}}`; they become [`AtlasError::Api`] with the detail and every
//! pointer. Bodies are read up to a size limit; nothing from the server is trusted.
//!
//! HTTP is `reqwest` (default features off; `rustls-tls` with the `ring` provider and
//! Mozilla's roots built in, so no system OpenSSL or CA store is needed; `json`): one
//! well-kept crate that does TLS, redirects, timeouts and connection reuse, where hyper
//! alone would need hyper-util, hyper-rustls and hand-written body and URL handling.
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use crate::error::{AtlasError, Result};
use crate::probes::{parse_probe_file, printable, ProbePage, ProbeSet, MAX_PROBE_FILE_BYTES};
use crate::request::{CostEstimate, MeasurementRequest};
use crate::results::{parse_results, Expect, Parsed, MAX_RESULTS_BYTES};

/// The real API.
pub const DEFAULT_BASE_URL: &str = "https://atlas.ripe.net";
/// Environment variable holding the API key.
pub const KEY_ENV: &str = "RIPE_ATLAS_KEY";
/// Largest small JSON answer (measurement, creation, credits, error), bytes.
const MAX_SMALL_BYTES: usize = 1024 * 1024;
/// Most probe pages followed.
pub const MAX_PROBE_PAGES: usize = 1000;
/// Probe ids per `id__in` query.
const IDS_PER_QUERY: usize = 500;

/// An API key. Never printed (its `Debug` is redacted).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl ApiKey {
    /// A key as issued by Atlas (a UUID; any 8 to 128 printable ASCII characters without
    /// spaces are accepted, as the format is not promised).
    pub fn new(text: &str) -> Result<Self> {
        let k = text.trim();
        if !(8..=128).contains(&k.len()) {
            return Err(AtlasError::BadKey(format!(
                "is {} characters long (expected 8 to 128)",
                k.len()
            )));
        }
        if !k.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AtlasError::BadKey(
                "contains spaces, control or non-ASCII characters".into(),
            ));
        }
        Ok(Self(k.to_string()))
    }

    /// The key from `file` (first line), else from `RIPE_ATLAS_KEY`, else `None`.
    pub fn from_file_or_env(file: Option<&Path>) -> Result<Option<Self>> {
        if let Some(f) = file {
            let text = std::fs::read_to_string(f).map_err(|source| AtlasError::Io {
                path: f.to_path_buf(),
                source,
            })?;
            return Self::new(text.lines().next().unwrap_or("")).map(Some);
        }
        match std::env::var(KEY_ENV) {
            Ok(v) if !v.trim().is_empty() => Self::new(&v).map(Some),
            _ => Ok(None),
        }
    }
}

/// A measurement's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasurementInfo {
    pub id: u64,
    /// 0 Specified, 1 Scheduled, 2 Ongoing, 4 Stopped, 5 Forced to stop, 6 No suitable
    /// probes, 7 Failed, 8 Archived.
    pub status_id: u64,
    pub status_name: String,
    pub probes_scheduled: Option<u64>,
}

impl MeasurementInfo {
    /// True when no more results will come.
    pub fn finished(&self) -> bool {
        self.status_id >= 4
    }
}

/// What [`AtlasClient::wait_results`] got.
#[derive(Debug, Clone)]
pub struct Waited {
    pub parsed: Parsed,
    /// The measurement finished (or every expected result arrived).
    pub complete: bool,
    /// The deadline passed first; `parsed` holds what arrived by then.
    pub timed_out: bool,
    pub polls: u32,
    pub elapsed: Duration,
}

/// A client for one API base URL.
#[derive(Debug, Clone)]
pub struct AtlasClient {
    http: reqwest::Client,
    base: Url,
    key: Option<ApiKey>,
}

impl AtlasClient {
    /// A client for `base_url` (`https://atlas.ripe.net`, or a stand-in's
    /// `http://127.0.0.1:PORT`), each request limited to `timeout`.
    pub fn new(base_url: &str, key: Option<ApiKey>, timeout: Duration) -> Result<Self> {
        let bad = |reason: &str| AtlasError::BaseUrl {
            url: printable(base_url, 200),
            reason: reason.into(),
        };
        let mut base = Url::parse(base_url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
            return Err(bad("not an http(s) URL with a host"));
        }
        if base.query().is_some() || base.fragment().is_some() || !base.username().is_empty() {
            return Err(bad("has a query, fragment or user name"));
        }
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("geoloc-atlas/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|source| AtlasError::Http {
                method: "BUILD",
                path: String::new(),
                source,
            })?;
        Ok(Self { http, base, key })
    }

    /// The base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    fn url(&self, path: &str) -> Url {
        self.base
            .join(path.trim_start_matches('/'))
            .expect("paths are fixed strings")
    }

    /// Sends a request and reads at most `limit` bytes of a successful body.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        auth: bool,
        limit: usize,
    ) -> Result<Vec<u8>> {
        let m: &'static str = if method == Method::POST {
            "POST"
        } else {
            "GET"
        };
        let path = url.path().to_string();
        let mut rb = self.http.request(method, url);
        if auth {
            if let Some(k) = &self.key {
                rb = rb.header(reqwest::header::AUTHORIZATION, format!("Key {}", k.0));
            }
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let http_err = |source| AtlasError::Http {
            method: m,
            path: path.clone(),
            source,
        };
        let mut resp = rb.send().await.map_err(http_err)?;
        let status = resp.status();
        let limit = if status.is_success() {
            limit
        } else {
            MAX_SMALL_BYTES
        };
        if resp.content_length().is_some_and(|l| l > limit as u64) {
            return Err(AtlasError::TooLarge {
                what: format!("{m} {path}"),
                limit_bytes: limit,
            });
        }
        let mut buf = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(http_err)? {
            if buf.len() + chunk.len() > limit {
                return Err(AtlasError::TooLarge {
                    what: format!("{m} {path}"),
                    limit_bytes: limit,
                });
            }
            buf.extend_from_slice(&chunk);
        }
        if status.is_success() {
            Ok(buf)
        } else {
            Err(api_error(m, path, status, &buf))
        }
    }

    async fn get_json(&self, url: Url, auth: bool) -> Result<Value> {
        let path = url.path().to_string();
        let b = self
            .send(Method::GET, url, None, auth, MAX_SMALL_BYTES)
            .await?;
        serde_json::from_slice(&b).map_err(|e| AtlasError::Malformed {
            what: format!("GET {path}"),
            reason: format!("not JSON: {e}"),
        })
    }

    /// One page of probes.
    pub async fn probes_page(&self, url: Url) -> Result<ProbePage> {
        let what = format!("GET {}", url.path());
        let b = self
            .send(Method::GET, url, None, true, MAX_PROBE_FILE_BYTES)
            .await?;
        parse_probe_file(&b, &what)
    }

    /// Probes matching `query` (API filters such as `status=1`, `is_anchor=true`,
    /// `country_code=FR`, `id__in=1,2`), following pages up to `max_probes`.
    pub async fn probes(&self, query: &[(&str, String)], max_probes: usize) -> Result<ProbeSet> {
        let mut url = self.url("api/v2/probes/");
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
            q.append_pair("page_size", "500");
        }
        let mut all = ProbeSet::default();
        for _ in 0..MAX_PROBE_PAGES {
            let page = self.probes_page(url.clone()).await?;
            all.extend(page.probes);
            if all.len() >= max_probes {
                break;
            }
            match page.next {
                None => break,
                Some(next) => {
                    let n = Url::parse(&next).map_err(|e| AtlasError::Malformed {
                        what: "probe page".into(),
                        reason: format!("next {:?}: {e}", printable(&next, 100)),
                    })?;
                    if n.origin() != self.base.origin() || !n.path().starts_with(self.base.path()) {
                        return Err(AtlasError::Malformed {
                            what: "probe page".into(),
                            reason: format!(
                                "next page {:?} leaves the base URL",
                                printable(&next, 100)
                            ),
                        });
                    }
                    url = n;
                }
            }
        }
        Ok(all)
    }

    /// The metadata of these probes (`id__in`, 500 per query).
    pub async fn probes_by_id(&self, ids: &[u32]) -> Result<ProbeSet> {
        let mut all = ProbeSet::default();
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let list: Vec<String> = chunk.iter().map(u32::to_string).collect();
            all.extend(
                self.probes(&[("id__in", list.join(","))], chunk.len())
                    .await?,
            );
        }
        Ok(all)
    }

    /// Creates a one-off measurement after checking its estimate against `max_credits`
    /// (nothing is sent when it is over: [`AtlasError::OverBudget`]). `on_estimate` sees
    /// the estimate before the request goes out. Returns the measurement ids.
    pub async fn create(
        &self,
        req: &MeasurementRequest,
        max_credits: u64,
        on_estimate: impl FnOnce(&CostEstimate),
    ) -> Result<(Vec<u64>, CostEstimate)> {
        let est = req.estimate()?;
        on_estimate(&est);
        let est = req.check_budget(max_credits)?;
        if self.key.is_none() {
            return Err(AtlasError::NoKey);
        }
        let body = req.to_json()?;
        let url = self.url("api/v2/measurements/");
        let b = self
            .send(Method::POST, url, Some(&body), true, MAX_SMALL_BYTES)
            .await?;
        let v: Value = serde_json::from_slice(&b).map_err(|e| AtlasError::Malformed {
            what: "POST /api/v2/measurements/".into(),
            reason: format!("not JSON: {e}"),
        })?;
        let ids: Vec<u64> = v
            .get("measurements")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        if ids.is_empty() || ids.len() != req.definitions.len() {
            return Err(AtlasError::Malformed {
                what: "POST /api/v2/measurements/".into(),
                reason: format!(
                    "expected {} measurement ids, got {}",
                    req.definitions.len(),
                    printable(&v.to_string(), 100)
                ),
            });
        }
        Ok((ids, est))
    }

    /// A measurement's status.
    pub async fn measurement(&self, id: u64) -> Result<MeasurementInfo> {
        let v = self
            .get_json(self.url(&format!("api/v2/measurements/{id}/")), true)
            .await?;
        let bad = |reason: &str| AtlasError::Malformed {
            what: format!("measurement {id}"),
            reason: reason.into(),
        };
        let st = v.get("status").ok_or_else(|| bad("no status"))?;
        Ok(MeasurementInfo {
            id,
            status_id: st
                .get("id")
                .and_then(Value::as_u64)
                .ok_or_else(|| bad("status has no id"))?,
            status_name: printable(st.get("name").and_then(Value::as_str).unwrap_or(""), 40),
            probes_scheduled: v.get("probes_scheduled").and_then(Value::as_u64),
        })
    }

    /// The results so far, parsed.
    pub async fn results(&self, id: u64, expect: &Expect) -> Result<Parsed> {
        let url = self.url(&format!("api/v2/measurements/{id}/results/"));
        let b = self
            .send(Method::GET, url, None, true, MAX_RESULTS_BYTES)
            .await?;
        parse_results(&b, &format!("results of measurement {id}"), expect)
    }

    /// Polls `id` every `poll` until `want` results arrived, the measurement finished, or
    /// `deadline`. A failing poll is retried until the deadline.
    pub async fn wait_results(
        &self,
        id: u64,
        expect: &Expect,
        want: usize,
        deadline: Instant,
        poll: Duration,
    ) -> Result<Waited> {
        let t0 = Instant::now();
        let mut polls = 0u32;
        let mut last: Option<Parsed> = None;
        let mut last_err: Option<AtlasError> = None;
        loop {
            polls += 1;
            let finished = match self.measurement(id).await {
                Ok(m) => m.finished(),
                Err(e) => {
                    tracing::warn!(msm_id = id, error = %e, "measurement status");
                    false
                }
            };
            match self.results(id, expect).await {
                Ok(p) => {
                    let n = p.report.results;
                    last = Some(p);
                    if finished || n >= want {
                        return Ok(Waited {
                            parsed: last.expect("just set"),
                            complete: true,
                            timed_out: false,
                            polls,
                            elapsed: t0.elapsed(),
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(msm_id = id, error = %e, "results");
                    last_err = Some(e);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return match (last, last_err) {
                    (Some(parsed), _) => Ok(Waited {
                        parsed,
                        complete: false,
                        timed_out: true,
                        polls,
                        elapsed: t0.elapsed(),
                    }),
                    (None, Some(e)) => Err(e),
                    (None, None) => Err(AtlasError::Timeout {
                        msm_id: id,
                        waited_s: t0.elapsed().as_secs_f64(),
                    }),
                };
            }
            tokio::time::sleep(poll.min(deadline - now)).await;
        }
    }

    /// The account's credit balance (`GET /api/v2/credits/`, needs a key).
    pub async fn credits(&self) -> Result<f64> {
        let v = self.get_json(self.url("api/v2/credits/"), true).await?;
        v.get("current_balance")
            .and_then(Value::as_f64)
            .filter(|b| b.is_finite())
            .ok_or_else(|| AtlasError::Malformed {
                what: "GET /api/v2/credits/".into(),
                reason: "no current_balance number".into(),
            })
    }
}

/// The documented error body, read leniently.
fn api_error(method: &'static str, path: String, status: StatusCode, body: &[u8]) -> AtlasError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = v.get("error").unwrap_or(&Value::Null);
    let title = e
        .get("title")
        .and_then(Value::as_str)
        .map(|s| printable(s, 80))
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_string());
    let mut detail = e
        .get("detail")
        .and_then(Value::as_str)
        .map(|s| printable(s, 300))
        .unwrap_or_else(|| {
            if body.is_empty() {
                "(empty body)".into()
            } else {
                format!(
                    "(not the documented error body) {}",
                    printable(&String::from_utf8_lossy(body), 200)
                )
            }
        });
    if let Some(errs) = e.get("errors").and_then(Value::as_array) {
        for x in errs.iter().take(10) {
            let at = x
                .pointer("/source/pointer")
                .or_else(|| x.pointer("/source/parameter"))
                .and_then(Value::as_str)
                .unwrap_or("?");
            let d = x.get("detail").and_then(Value::as_str).unwrap_or("");
            detail.push_str(&format!("; {}: {}", printable(at, 80), printable(d, 200)));
        }
    }
    AtlasError::Api {
        method,
        path,
        status: status.as_u16(),
        title,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_read_from_files_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("key");
        std::fs::write(&f, "0b3c6a2e-1d4f-4a5b-9c8d-7e6f5a4b3c2d\n# comment\n").unwrap();
        let k = ApiKey::from_file_or_env(Some(&f)).unwrap().unwrap();
        assert_eq!(
            k,
            ApiKey::new("0b3c6a2e-1d4f-4a5b-9c8d-7e6f5a4b3c2d").unwrap()
        );
        assert!(!format!("{k:?}").contains("0b3c"));
        assert!(ApiKey::new("short").is_err());
        assert!(ApiKey::new("has a space inside it").is_err());
        assert!(ApiKey::from_file_or_env(Some(&dir.path().join("missing"))).is_err());
    }

    #[test]
    fn base_urls_are_checked() {
        let t = Duration::from_secs(1);
        assert!(AtlasClient::new("ftp://x", None, t).is_err());
        assert!(AtlasClient::new("http://127.0.0.1:1/?q=1", None, t).is_err());
        let c = AtlasClient::new("http://127.0.0.1:1/prefix", None, t).unwrap();
        assert_eq!(
            c.url("api/v2/probes/").as_str(),
            "http://127.0.0.1:1/prefix/api/v2/probes/"
        );
    }
}
