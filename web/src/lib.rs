//! geoloc's web interface: a live locate map, the probe fleet, audits with their report, and
//! earlier results, served by an axum [`Router`] that talks to a coordinator through the typed
//! [`geoloc_client::Client`]. Everything it serves is embedded (Leaflet, Natural Earth
//! outlines): no CDN or tile server at run time; an online tile layer is optional
//! ([`WebConfig::tile_url`]).
//!
//! Until API keys land, [`serve`] binds loopback addresses only ([`check_listen`]). The
//! coordinator can serve the same router itself (`geoloc-coordinator --http-listen`).
//! An `Authorization: Bearer <key>` header on an API request is forwarded to the
//! coordinator as the `authorization` metadata of the gRPC calls it makes.
//! HTTP API: see web/README.md.
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use geoloc_client::{Client, ConnectOptions, Failure, Located};
use geoloc_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub mod assets;
mod audit_job;
pub mod continents;
pub mod report;
mod topo;

pub use audit_job::{AuditJob, MAX_AUDIT_ROWS};

/// The errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("--listen {0}: the web interface only listens on loopback addresses (127.0.0.1, ::1) until API keys land; use e.g. --listen 127.0.0.1:8080")]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Coordinator(String),
    #[error("tile layer URL {0:?}: expected http(s)://... with {{z}}, {{x}} and {{y}}")]
    TileUrl(String),
    #[error("report: {0}")]
    Report(String),
    #[error("web server: {0}")]
    Serve(std::io::Error),
}

/// Settings of the web interface.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WebConfig {
    /// An online tile layer (`https://tile.example/{z}/{x}/{y}.png`), shown under the
    /// embedded outlines when set. None (default): offline outlines only.
    pub tile_url: Option<String>,
    /// Attribution text of that layer.
    pub tile_attribution: Option<String>,
}

impl WebConfig {
    /// Checks the tile URL (the page hands it to Leaflet as is).
    pub fn check(&self) -> Result<(), WebError> {
        if let Some(u) = &self.tile_url {
            let ok = (u.starts_with("https://") || u.starts_with("http://"))
                && u.len() < 512
                && ["{z}", "{x}", "{y}"].iter().all(|p| u.contains(p))
                && !u.chars().any(|c| c.is_control() || c == '"' || c == '<');
            if !ok {
                return Err(WebError::TileUrl(u.clone()));
            }
        }
        Ok(())
    }
}

/// Refuses a listen address that is not loopback.
pub fn check_listen(addr: SocketAddr) -> Result<(), WebError> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(WebError::NotLoopback(addr))
    }
}

struct AppState {
    client: Client,
    config: WebConfig,
    /// The sources of `/api/know` (`--asn-db`, `--know-config`); None: not offered.
    know: Option<geoloc_know::report::Sources>,
    audits: Mutex<HashMap<String, Arc<AuditJob>>>,
}

type Shared = Arc<AppState>;

/// The web interface over a connected client, with the default (offline) settings.
pub fn router(client: Client) -> Router {
    router_with(client, WebConfig::default())
}

/// The web interface over a connected client.
pub fn router_with(client: Client, config: WebConfig) -> Router {
    router_full(client, config, None)
}

/// The web interface over a connected client, with the know sources of the answer panel's
/// ownership, reputation (cached answers only) and links (`/api/know`).
pub fn router_full(
    client: Client,
    config: WebConfig,
    know: Option<geoloc_know::report::Sources>,
) -> Router {
    let st = Arc::new(AppState {
        client,
        config,
        know,
        audits: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/", get(index))
        .route("/assets/{*path}", get(asset))
        .route("/api/config", get(config_api))
        .route("/api/probes", get(probes))
        .route("/api/locate", get(locate))
        .route("/api/result/{id}", get(result))
        .route("/api/history", get(history))
        .route("/api/localtime", get(localtime))
        .route("/api/know", get(know_api))
        .route("/api/audit", post(audit_start))
        .route("/api/audit/{id}", get(audit_status))
        .route("/api/audit/{id}/{file}", get(audit_file))
        .layer(DefaultBodyLimit::max(audit_job::MAX_AUDIT_BYTES))
        .with_state(st)
}

/// Connects to the coordinator and serves the interface on `listen` (loopback only) until
/// the process ends.
pub async fn serve(
    listen: SocketAddr,
    coordinator: &str,
    config: WebConfig,
) -> Result<(), WebError> {
    serve_with(listen, coordinator, &ConnectOptions::default(), config).await
}

/// [`serve`] reaching the coordinator with `opts` (`--ca FILE` for an https:// URL).
pub async fn serve_with(
    listen: SocketAddr,
    coordinator: &str,
    opts: &ConnectOptions,
    config: WebConfig,
) -> Result<(), WebError> {
    serve_full(listen, coordinator, opts, config, None).await
}

/// [`serve_with`] with the know sources of `/api/know`.
pub async fn serve_full(
    listen: SocketAddr,
    coordinator: &str,
    opts: &ConnectOptions,
    config: WebConfig,
    know: Option<geoloc_know::report::Sources>,
) -> Result<(), WebError> {
    check_listen(listen)?;
    config.check()?;
    let client = Client::connect_with(coordinator, opts)
        .await
        .map_err(|e| WebError::Coordinator(format!("{e:#}")))?;
    let l = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| WebError::Bind {
            addr: listen,
            source,
        })?;
    eprintln!(
        "geoloc web: http://{} (coordinator {coordinator})",
        l.local_addr().map_err(WebError::Serve)?
    );
    axum::serve(l, router_full(client, config, know))
        .await
        .map_err(WebError::Serve)
}

/// Serves the interface over `client` on an already bound `listener` until `shutdown`
/// resolves (what the coordinator's `--http-listen` runs). Checks nothing about the
/// address: the caller decides what it may listen on.
/// `know`: the sources of `/api/know` ([`open_know`]), None to not offer it.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    client: Client,
    config: WebConfig,
    know: Option<geoloc_know::report::Sources>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), WebError> {
    config.check()?;
    axum::serve(listener, router_full(client, config, know))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(WebError::Serve)
}

/// `geoloc web`
#[derive(Debug, clap::Args)]
pub struct WebArgs {
    /// Address to serve on; loopback only until API keys land.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// Coordinator URL.
    #[arg(long, env = "GEOLOC_COORDINATOR", default_value = geoloc_client::DEFAULT_COORDINATOR, value_name = "URL")]
    pub coordinator: String,
    #[command(flatten)]
    pub ca: geoloc_client::CaArg,
    /// Optional online tile layer under the embedded outlines, e.g.
    /// https://tile.openstreetmap.org/{z}/{x}/{y}.png (default: none, works offline).
    #[arg(long, env = "GEOLOC_WEB_TILE_URL", value_name = "URL")]
    pub tile_url: Option<String>,
    /// Attribution shown for --tile-url.
    #[arg(long, value_name = "TEXT")]
    pub tile_attribution: Option<String>,
    /// Show the know fields (reverse DNS, AS, RDAP record, cached reputation, links) in the
    /// answer panel, from this folder's asn-ipv4.csv / asn-ipv6.csv (scripts/fetch-asn-db.sh).
    #[arg(long, value_name = "DIR")]
    pub asn_db: Option<std::path::PathBuf>,
    /// Show the know fields with the sources of this TOML file (know/know.sample.toml).
    #[arg(long, env = "GEOLOC_KNOW_CONFIG", value_name = "FILE")]
    pub know_config: Option<std::path::PathBuf>,
}

/// The sources of the answer panel's know fields (`/api/know`) from an ASN database folder
/// and/or a know configuration file (know/know.sample.toml): reverse DNS (the file's
/// `dns-server`, else the system's resolvers), the ASN database, RDAP (the file's
/// `rdap-url`, else rdap.org) and the providers' cache. None when both are None (not
/// offered). What `geoloc web --asn-db/--know-config` and the coordinator's `asn-db` /
/// `know-config` keys open; provider keys may come from the environment.
pub fn open_know(
    asn_db: Option<&std::path::Path>,
    know_config: Option<&std::path::Path>,
) -> Result<Option<geoloc_know::report::Sources>, geoloc_know::KnowError> {
    if asn_db.is_none() && know_config.is_none() {
        return Ok(None);
    }
    let opts = geoloc_know::config::SourceOptions {
        config: know_config.map(std::path::Path::to_path_buf),
        asn_db: asn_db.map(std::path::Path::to_path_buf),
        rdns: Some(None),
        rdap: Some(None),
        ..Default::default()
    };
    opts.open(|k| std::env::var(k).ok()).map(Some)
}

/// `geoloc web`.
pub fn run(args: WebArgs) -> anyhow::Result<()> {
    check_listen(args.listen)?;
    let cfg = WebConfig {
        tile_url: args.tile_url,
        tile_attribution: args.tile_attribution,
    };
    cfg.check()?;
    let know = open_know(args.asn_db.as_deref(), args.know_config.as_deref())?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(serve_full(
            args.listen,
            &args.coordinator,
            &args.ca.options(),
            cfg,
            know,
        ))?;
    Ok(())
}

fn bad_request(msg: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": msg.into()}))).into_response()
}

/// The API key of a request: the token of its `Authorization: Bearer <key>` header; None
/// without one. Err (answered with 401) when the header is there but is not a bearer key.
pub fn bearer(headers: &HeaderMap) -> Result<Option<String>, String> {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| "Authorization header is not visible ASCII".to_string())?;
    let key = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .ok_or("Authorization header: expected `Bearer <API key>`")?
        .trim();
    if key.is_empty() {
        return Ok(None);
    }
    Ok(Some(key.to_string()))
}

/// The client for one request: the shared connection, carrying the request's API key.
fn client_for(st: &AppState, headers: &HeaderMap) -> Result<Client, Box<Response>> {
    let unauthorized =
        |m: String| Box::new((StatusCode::UNAUTHORIZED, Json(json!({"error": m}))).into_response());
    match bearer(headers).map_err(unauthorized)? {
        None => Ok(st.client.clone()),
        Some(k) => st
            .client
            .with_bearer(&k)
            .map_err(|f| unauthorized(f.message)),
    }
}

/// A failed call to the coordinator as a response: 401/403 when the coordinator refused
/// the key (so the page can ask for one), 429 over a quota, 400 for bad input, 502
/// otherwise.
fn failure_response(f: &Failure) -> Response {
    let code = match f.code.as_str() {
        "unauthenticated" => StatusCode::UNAUTHORIZED,
        "permission-denied" => StatusCode::FORBIDDEN,
        "quota-exceeded" => StatusCode::TOO_MANY_REQUESTS,
        "unreachable" | "bad-result" | "internal" => StatusCode::BAD_GATEWAY,
        _ => StatusCode::BAD_REQUEST,
    };
    (code, Json(json!({"error": f.message, "code": f.code}))).into_response()
}

async fn index() -> Response {
    asset(Path("index.html".to_string())).await
}

async fn asset(Path(path): Path<String>) -> Response {
    match assets::get(&path) {
        Some((mime, bytes)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(mime)),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

async fn config_api(State(st): State<Shared>) -> Json<Value> {
    Json(json!({
        "tile_url": st.config.tile_url,
        "tile_attribution": st.config.tile_attribution,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn probes(State(st): State<Shared>, headers: HeaderMap) -> Response {
    let mut c = match client_for(&st, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match c.list_probes().await {
        Ok(ps) => Json(json!({
            "now_unix_ms": geoloc_client::unix_ms(),
            "probes": geoloc_client::probes::probes_json(&ps),
        }))
        .into_response(),
        Err(s) => failure_response(&c.failure(&s)),
    }
}

/// The JSON the page gets for a result: the `geoloc locate --json` line (same schema) plus
/// what that line leaves out: the RTT of each probe and the local time now.
pub fn result_view(ip: &str, r: &Located) -> Value {
    let rtts: Vec<Value> = r
        .probe_rtts
        .iter()
        .map(|m| json!({"probe_id": m.landmark, "lat": m.pos.lat, "lon": m.pos.lon, "rtt_ms": m.rtt_ms}))
        .collect();
    let now = chrono::Utc::now();
    json!({
        "located": geoloc_client::locate::result_json(ip, r),
        "probe_rtts": rtts,
        "local_time_now": geoloc_client::localtime::local_times(&r.solution, now),
    })
}

#[derive(Deserialize)]
struct LocateQuery {
    ip: String,
    mode: Option<String>,
}

fn progress_json(p: &pb::Progress) -> Value {
    let outcome = pb::ProbeOutcome::try_from(p.outcome)
        .map(|o| {
            o.as_str_name()
                .trim_start_matches("PROBE_OUTCOME_")
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    json!({
        "probe_id": p.probe_id,
        "done": p.done,
        "total": p.total,
        "stage": p.stage,
        "rtt_ms": p.min_rtt_ms.filter(|x| x.is_finite()),
        "outcome": outcome,
        "error": p.error,
        // When the web server received it, for the page's latency figure.
        "server_unix_ms": geoloc_client::unix_ms(),
    })
}

fn event(name: &str, v: &Value) -> Event {
    Event::default().event(name).data(v.to_string())
}

/// `GET /api/locate?ip=...`: server-sent events `progress` (one per probe), then `result`
/// or `failure`.
async fn locate(
    State(st): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<LocateQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let client = client_for(&st, &headers);
    tokio::spawn(async move {
        let mut c = match client {
            Ok(c) => c,
            Err(_) => {
                let _ = tx.send(event("failure", &json!({"code": "unauthenticated", "message": "Authorization header: expected `Bearer <API key>` (visible ASCII, no spaces)"})));
                return;
            }
        };
        let ip = q.ip.trim().to_string();
        let mode = match q.mode.as_deref() {
            None | Some("") => None,
            Some("all") => Some(geoloc_client::Mode::All),
            Some("two-stage") => Some(geoloc_client::Mode::TwoStage),
            Some(_) => {
                let _ = tx.send(event("failure", &json!({"code": "invalid-argument", "message": "mode must be all or two-stage"})));
                return;
            }
        };
        if let Err(e) = geoloc_policy::parse_target(&ip, true) {
            let _ = tx.send(event(
                "failure",
                &json!({"code": e.code, "message": e.message}),
            ));
            return;
        }
        let req = pb::LocateRequest {
            ip: ip.clone(),
            mode: geoloc_client::Mode::to_pb(mode) as i32,
            timeout_ms: 0,
            k: 0,
            reuse_stored: false,
            ping_count: 0,
            ..Default::default()
        };
        let ptx = tx.clone();
        let out = c
            .locate(req, |p| {
                let _ = ptx.send(event("progress", &progress_json(p)));
            })
            .await;
        match out {
            Ok(r) => {
                let _ = tx.send(event("result", &result_view(&ip, &r)));
            }
            Err(Failure { code, message }) => {
                let _ = tx.send(event("failure", &json!({"code": code, "message": message})));
            }
        }
    });
    Sse::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map_ok())
        .keep_alive(KeepAlive::default())
}

#[derive(Deserialize)]
struct KnowQuery {
    ip: String,
}

/// The answer panel's know fields for `ip`: `{ip, address_class, lines: [[label, text]],
/// links: [{source, url}], report}` (`report`: `geoloc know --json`'s document; providers'
/// cached answers only, so a page view spends no quota). Err: the status and message.
pub async fn know_view(
    sources: &geoloc_know::report::Sources,
    ip: &str,
) -> Result<Value, (StatusCode, String)> {
    let addr = geoloc_policy::parse_target(ip.trim(), true)
        .map_err(|e| (StatusCode::BAD_REQUEST, e.message))?;
    let now =
        chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp(), 0).unwrap_or_default();
    let r = sources.know_with(addr, None, now, false).await;
    let lines: Vec<(String, String)> = geoloc_know::report::lines(&r)
        .into_iter()
        // The panel shows the measured location and local times already.
        .filter(|(l, _)| l != "location" && l != "local time" && l != "link")
        .collect();
    Ok(json!({
        "ip": r.ip,
        "address_class": r.address_class,
        "lines": lines,
        "links": r.links,
        "report": r,
    }))
}

/// `GET /api/know?ip=IP`: [`know_view`]; 404 when `geoloc web` was started without know
/// sources. The lookups (reverse DNS, RDAP) are this server's, so the browser's key is
/// checked first by the coordinator (a `ListProbes` call, scope `read`): without a valid
/// key, where the coordinator requires keys, nothing is looked up (401/403).
async fn know_api(
    State(st): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<KnowQuery>,
) -> Response {
    let Some(sources) = &st.know else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "not offered: start geoloc web with --asn-db DIR or --know-config FILE \
                (geoloc-coordinator: asn-db / know-config)"})),
        )
            .into_response();
    };
    let mut c = match client_for(&st, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    if let Err(s) = c.list_probes().await {
        return failure_response(&c.failure(&s));
    }
    match know_view(sources, &q.ip).await {
        Ok(v) => Json(v).into_response(),
        Err((code, msg)) => (code, Json(json!({ "error": msg }))).into_response(),
    }
}

/// A stream of server-sent events that never fails.
type OkEvents<S> = futures::stream::Map<S, fn(Event) -> Result<Event, Infallible>>;

trait MapOk: Sized {
    fn map_ok(self) -> OkEvents<Self>;
}

impl<S: Stream<Item = Event>> MapOk for S {
    fn map_ok(self) -> OkEvents<Self> {
        futures::StreamExt::map(self, Ok)
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

async fn fetch_result(st: &AppState, headers: &HeaderMap, id: &str) -> Result<Located, Response> {
    if !valid_id(id) {
        return Err(bad_request("a result id is 1-64 letters, digits or '-'"));
    }
    let mut c = client_for(st, headers).map_err(|r| *r)?;
    match c.get_result(id).await {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err((
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no stored result {id}")})),
        )
            .into_response()),
        Err(f) => Err(failure_response(&f)),
    }
}

/// `GET /api/result/{id}`: a stored result (`GetResult`), shareable as `/#/result/{id}`.
async fn result(State(st): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    match fetch_result(&st, &headers, &id).await {
        Ok(r) => {
            let ip = r.ip.clone();
            Json(result_view(&ip, &r)).into_response()
        }
        Err(resp) => resp,
    }
}

#[derive(Deserialize)]
struct HistoryQuery {
    ip: Option<String>,
    limit: Option<u32>,
    page_token: Option<String>,
}

/// `GET /api/history?ip=&limit=&page_token=`: the coordinator's stored results, newest
/// first (`ListResults`): `{results: [...], next_page_token}`.
async fn history(
    State(st): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HistoryQuery>,
) -> Response {
    let ip = q.ip.as_deref().unwrap_or("").trim();
    if ip.len() > 64 {
        return bad_request("ip: longer than 64 characters");
    }
    let token = q.page_token.as_deref().unwrap_or("");
    if token.len() > 128 {
        return bad_request("page_token: longer than 128 characters");
    }
    let limit = q.limit.unwrap_or(50).min(geoloc_client::history::MAX_PAGE);
    let mut c = match client_for(&st, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match c.list_results(ip, limit, token).await {
        Ok(page) => Json(page).into_response(),
        Err(f) => failure_response(&f),
    }
}

#[derive(Deserialize)]
struct LocalTimeQuery {
    result_id: String,
    at: String,
}

/// `GET /api/localtime?result_id=...&at=2026-03-14T02:30:00Z`: the local time at that
/// instant in every candidate zone of a stored result.
async fn localtime(
    State(st): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<LocalTimeQuery>,
) -> Response {
    let at = match geoloc_client::localtime::parse_instant(&q.at) {
        Ok(t) => t,
        Err(e) => return bad_request(format!("at: {e}")),
    };
    match fetch_result(&st, &headers, &q.result_id).await {
        Ok(r) => Json(json!({
            "at": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "zones": geoloc_client::localtime::local_times(&r.solution, at),
        }))
        .into_response(),
        Err(resp) => resp,
    }
}

async fn audit_start(State(st): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let client = match client_for(&st, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let job = match AuditJob::new(&body) {
        Ok(j) => Arc::new(j),
        Err(e) => return bad_request(e),
    };
    let id = job.id.clone();
    {
        let mut a = st.audits.lock().unwrap_or_else(|e| e.into_inner());
        audit_job::evict(&mut a);
        a.insert(id.clone(), job.clone());
    }
    tokio::spawn(async move { job.run(client).await });
    Json(json!({"id": id})).into_response()
}

/// The audit job `id`, or the 404 response to send (boxed: a response is large).
fn job(st: &AppState, id: &str) -> Result<Arc<AuditJob>, Box<Response>> {
    st.audits
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(id)
        .cloned()
        .ok_or_else(|| {
            (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "no such audit (audits live in this server's memory)"})),
            )
                .into_response()
                .into()
        })
}

async fn audit_status(State(st): State<Shared>, Path(id): Path<String>) -> Response {
    match job(&st, &id) {
        Ok(j) => Json(j.status()).into_response(),
        Err(r) => *r,
    }
}

async fn audit_file(
    State(st): State<Shared>,
    Path((id, file)): Path<(String, String)>,
) -> Response {
    let j = match job(&st, &id) {
        Ok(j) => j,
        Err(r) => return *r,
    };
    let (mime, body) = match file.as_str() {
        "audit.csv" => ("text/csv; charset=utf-8", j.csv()),
        "audit.geojson" => ("application/geo+json", j.geojson()),
        "report.html" => ("text/html; charset=utf-8", j.report_html()),
        "report.md" => ("text/markdown; charset=utf-8", j.report_md()),
        _ => {
            return (
                StatusCode::NOT_FOUND,
                "audit.csv, audit.geojson, report.html or report.md",
            )
                .into_response()
        }
    };
    let disposition = format!("attachment; filename=\"{file}\"");
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(mime)),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition)
                    .unwrap_or(HeaderValue::from_static("attachment")),
            ),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_are_served() {
        assert!(check_listen("127.0.0.1:8080".parse().unwrap()).is_ok());
        assert!(check_listen("[::1]:8080".parse().unwrap()).is_ok());
        for bad in ["0.0.0.0:8080", "[::]:8080", "192.0.2.1:80"] {
            let e = check_listen(bad.parse().unwrap()).unwrap_err().to_string();
            assert!(e.contains("only listens on loopback"), "{e}");
        }
    }

    #[test]
    fn bearer_keys_are_read_from_the_authorization_header() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            m
        };
        assert_eq!(bearer(&HeaderMap::new()), Ok(None));
        assert_eq!(bearer(&h("Bearer k1")), Ok(Some("k1".into())));
        assert_eq!(bearer(&h("bearer  k2 ")), Ok(Some("k2".into())));
        assert_eq!(bearer(&h("Bearer ")), Ok(None));
        assert!(bearer(&h("Basic dXNlcjpwdw=="))
            .unwrap_err()
            .contains("Bearer"));
        let mut m = HeaderMap::new();
        m.insert(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer \xff").unwrap(),
        );
        assert!(bearer(&m).is_err());
    }

    #[test]
    fn tile_urls_are_checked() {
        let ok = WebConfig {
            tile_url: Some("https://tile.example/{z}/{x}/{y}.png".into()),
            tile_attribution: None,
        };
        assert!(ok.check().is_ok());
        for bad in [
            "javascript:alert(1)//{z}{x}{y}",
            "https://tile.example/{z}/{x}.png",
            "https://x/{z}/{x}/{y}\"><script>",
        ] {
            let c = WebConfig {
                tile_url: Some(bad.into()),
                tile_attribution: None,
            };
            assert!(c.check().is_err(), "{bad}");
        }
    }

    /// The answer panel's know fields: offline ownership and links, cached reputation only,
    /// bad and bogon addresses answered without a lookup.
    #[tokio::test]
    async fn know_view_has_ownership_and_links() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("asn-ipv4.csv"),
            "8.8.8.0,8.8.8.255,15169,Google LLC\n",
        )
        .unwrap();
        let sources = geoloc_know::config::SourceOptions {
            asn_db: Some(dir.path().to_path_buf()),
            cache_dir: Some(dir.path().join("cache")),
            ..Default::default()
        }
        .open(|_| None)
        .unwrap();
        let v = know_view(&sources, " 8.8.8.8 ").await.unwrap();
        assert_eq!(v["ip"], "8.8.8.8");
        let lines: Vec<(String, String)> = serde_json::from_value(v["lines"].clone()).unwrap();
        let get = |l: &str| lines.iter().find(|x| x.0 == l).map(|x| x.1.as_str());
        assert_eq!(get("AS"), Some("AS15169 Google LLC  (8.8.8.0-8.8.8.255)"));
        assert_eq!(get("reverse DNS"), Some("no resolver"));
        assert_eq!(get("abuseipdb"), Some("not-configured"));
        assert_eq!(get("location"), None, "the panel shows the measured one");
        let links = v["links"].as_array().unwrap();
        assert!(links
            .iter()
            .any(|l| l["url"] == "https://bgp.tools/as/15169"));
        assert!(links
            .iter()
            .any(|l| l["url"] == "https://www.shodan.io/host/8.8.8.8"));
        let (code, msg) = know_view(&sources, "8.8.8").await.unwrap_err();
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert!(!msg.is_empty());
        let b = know_view(&sources, "192.168.1.1").await.unwrap();
        let lines: Vec<(String, String)> = serde_json::from_value(b["lines"].clone()).unwrap();
        assert!(lines
            .iter()
            .any(|l| l.0 == "AS" && l.1 == "private address: not looked up"));
    }

    #[test]
    fn every_embedded_asset_is_there_with_its_licence() {
        for p in [
            "index.html",
            "app.js",
            "vendor/leaflet/leaflet.js",
            "vendor/leaflet/LICENSE",
            "vendor/topojson-client/LICENSE",
            "vendor/world-atlas/LICENSE",
            "vendor/world-atlas/countries-110m.json",
        ] {
            let (_, b) = assets::get(p).unwrap_or_else(|| panic!("{p} missing"));
            assert!(!b.is_empty(), "{p}");
        }
        // The page loads nothing from outside.
        let (_, html) = assets::get("index.html").unwrap();
        let html = std::str::from_utf8(html).unwrap();
        assert!(!html.contains("http://") && !html.contains("https://"));
        let (_, js) = assets::get("app.js").unwrap();
        let js = std::str::from_utf8(js).unwrap();
        assert!(
            !js.contains("innerHTML"),
            "texts must go through textContent"
        );
    }
}
