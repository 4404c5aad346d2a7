//! The client side of geoloc: everything that talks to a coordinator over gRPC and nothing
//! that reaches its storage.
//!
//! - [`Client`] / [`connect`]: the typed async client; [`Located`] is a result as clients
//!   use it (the engine's [`geoloc_engine::Solution`], converted once from the wire by
//!   `geoloc_proto::convert`).
//! - [`locate`], [`probes`], [`audit`]: the `geoloc locate | probes | audit` commands and the
//!   formats they print (schemas in client/README.md).
//! - [`trace`]: [`Client::trace`], a traceroute from one probe of the fleet ([`Traced`]),
//!   and its `traceroute` column group of `geoloc audit --know`.
use std::path::Path;
use std::path::PathBuf;
use std::sync::RwLock;
use std::time::Duration;

use geoloc_proto::v1 as pb;
use pb::locate_service_client::LocateServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

pub mod audit;
mod extra;
pub mod history;
pub mod localtime;
pub mod locate;
pub mod probes;
mod result;
pub mod trace;

pub use audit::{run_audit, AuditArgs};
pub use extra::BatchEvent;
pub use history::{ResultSummary, ResultsArgs, ResultsPage};
pub use locate::{run_locate, LocateArgs};
pub use probes::{run_probes, ProbesArgs};
pub use result::{Failure, LocateLine, Located, Mode, Source};
pub use trace::{TraceHop, Traced};

/// Default coordinator URL.
pub const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:7470";
/// Longest wait for the next event of a locate stream.
const EVENT_TIMEOUT: Duration = Duration::from_secs(180);

pub use geoloc_rt::unix_ms;

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))
}

/// How a client reaches a coordinator besides its URL: for `https://` URLs, the CA that
/// signed the coordinator's certificate (`--ca FILE`, `GEOLOC_CA`); without it the
/// built-in public (webpki) roots are trusted.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// PEM file of the CA certificate(s) to trust instead of the public roots.
    pub ca: Option<PathBuf>,
    /// The API key to send: `None` means the ambient one ([`api_key`]: `--api-key-file`,
    /// else `GEOLOC_API_KEY`); `Some(None)` sends no key; `Some(Some(k))` sends `k`.
    pub key: Option<Option<String>>,
}

impl ConnectOptions {
    /// Options trusting `ca` (when `Some`).
    pub fn with_ca(mut self, ca: Option<PathBuf>) -> Self {
        self.ca = ca;
        self
    }

    /// Options sending exactly `key` (None: no key) instead of the ambient [`api_key`].
    pub fn with_key(mut self, key: Option<&str>) -> Self {
        self.key = Some(key.map(str::to_string));
        self
    }

    /// The key these options send.
    fn key(&self) -> Option<String> {
        match &self.key {
            Some(k) => k.clone(),
            None => api_key(),
        }
    }
}

/// The `--ca FILE` option of every command that talks to a coordinator.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CaArg {
    /// CA certificate (PEM) that signed the coordinator's TLS certificate, for https://
    /// URLs (default: the built-in public roots).
    #[arg(long, env = "GEOLOC_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

impl CaArg {
    /// As [`ConnectOptions`].
    pub fn options(&self) -> ConnectOptions {
        ConnectOptions::default().with_ca(self.ca.clone())
    }
}

/// Environment variable holding the API key sent to the coordinator.
pub const ENV_API_KEY: &str = "GEOLOC_API_KEY";

/// The key set by [`set_api_key`] (the `--api-key-file` flag); it wins over the environment.
static API_KEY: RwLock<Option<String>> = RwLock::new(None);

/// Sets the API key every later [`connect`] sends (over `GEOLOC_API_KEY`).
pub fn set_api_key(key: Option<String>) {
    *API_KEY.write().unwrap_or_else(|e| e.into_inner()) = key;
}

/// Reads an API key file (`--api-key-file`): the key on its first line, blanks trimmed.
pub fn read_api_key_file(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading the API key file {}: {e}", path.display()))?;
    let key = text.lines().next().unwrap_or("").trim().to_string();
    if key.is_empty() {
        anyhow::bail!("the API key file {} is empty", path.display());
    }
    Ok(key)
}

/// The key [`connect`] sends: the one set by [`set_api_key`], else `GEOLOC_API_KEY`.
pub fn api_key() -> Option<String> {
    let set = API_KEY.read().unwrap_or_else(|e| e.into_inner()).clone();
    set.or_else(|| {
        std::env::var(ENV_API_KEY)
            .ok()
            .map(|k| k.trim().to_string())
    })
    .filter(|k| !k.is_empty())
}

/// Adds `authorization: Bearer <key>` to every call (nothing without a key).
#[derive(Clone, Default)]
pub struct ApiKey(Option<MetadataValue<Ascii>>);

impl ApiKey {
    /// The metadata of `key`; an error (without the key) when it cannot be sent.
    pub fn new(key: Option<&str>) -> anyhow::Result<ApiKey> {
        match key {
            None => Ok(ApiKey(None)),
            Some(k) => format!("Bearer {k}").parse().map(|v| ApiKey(Some(v))).map_err(|_| {
                anyhow::anyhow!(
                    "the API key ({ENV_API_KEY} or --api-key-file) has characters that cannot                      be sent (expected gk_ and hex digits)"
                )
            }),
        }
    }
}

impl tonic::service::Interceptor for ApiKey {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// The generated client with the API key on every call.
pub type Grpc = LocateServiceClient<InterceptedService<Channel, ApiKey>>;

/// Connects to a coordinator (plaintext `http://` or `https://` with the public roots)
/// with the key of [`api_key`], with a clear error when it cannot be reached.
pub async fn connect(url: &str) -> anyhow::Result<Grpc> {
    connect_with(url, &ConnectOptions::default()).await
}

/// Connects to a coordinator with `opts` (see [`ConnectOptions`]: the CA and the key);
/// errors say what to do (plaintext against TLS, an untrusted certificate, a wrong host
/// name). `url` may list the replicas of a cluster separated by commas: the first that
/// answers is used (a batch that loses its replica reconnects, and so moves on).
pub async fn connect_with(url: &str, opts: &ConnectOptions) -> anyhow::Result<Grpc> {
    let urls: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    if urls.len() > 1 {
        anyhow::ensure!(
            urls.len() <= 16,
            "{} coordinator URLs given (at most 16)",
            urls.len()
        );
        let mut errors = Vec::new();
        for u in &urls {
            match connect_one(u, opts).await {
                Ok(c) => return Ok(c),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        anyhow::bail!("no coordinator answered: {}", errors.join("; "));
    }
    connect_one(url, opts).await
}

async fn connect_one(url: &str, opts: &ConnectOptions) -> anyhow::Result<Grpc> {
    let key = opts.key();
    let auth = ApiKey::new(key.as_deref())?;
    let ep: Endpoint = geoloc_rt::tls::endpoint(url, opts.ca.as_deref())
        .map_err(|e| anyhow::anyhow!("{e} (e.g. {DEFAULT_COORDINATOR})"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_keepalive(Some(Duration::from_secs(30)));
    if geoloc_rt::tls::plaintext_to_remote(url) {
        eprintln!(
            "geoloc: warning: {url} is plaintext (http://) to a host that is not this machine: \
             requests and results cross the network in clear; prefer https://"
        );
    }
    let ch = ep.connect().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the coordinator at {url}: {}",
            geoloc_rt::tls::explain(url, opts.ca.as_deref(), &e)
        )
    })?;
    Ok(LocateServiceClient::with_interceptor(ch, auth)
        .max_decoding_message_size(geoloc_proto::limits::MAX_REPLY_MESSAGE)
        .max_encoding_message_size(geoloc_proto::limits::MAX_CLIENT_MESSAGE))
}

/// A failed call's status as a one-line message, led by what to do when TLS is the
/// likely cause (a plaintext URL against a TLS coordinator, an untrusted certificate).
pub fn call_error(url: &str, opts: &ConnectOptions, s: &tonic::Status) -> String {
    match geoloc_rt::tls::hint(url, opts.ca.as_deref(), s) {
        Some(h) => format!("{h} ({})", status_msg(s)),
        None => status_msg(s),
    }
}

/// Addresses were not located (exit code 1; every other error exits 2). See the README's
/// table of exit codes.
#[derive(Debug)]
pub struct NotLocated(pub String);

impl std::fmt::Display for NotLocated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotLocated {}

/// The error code of an INVALID_ARGUMENT status (`bogon`, `invalid-address`, ...), sent by
/// the coordinator in the `geoloc-error-code` metadata.
pub fn invalid_code(s: &tonic::Status) -> String {
    s.metadata()
        .get("geoloc-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("invalid-argument")
        .to_string()
}

/// A text from the coordinator made safe for a terminal: control characters (escape
/// sequences, newlines) are shown escaped.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A gRPC status as a one-line message.
pub fn status_msg(s: &tonic::Status) -> String {
    match s.code() {
        tonic::Code::Unavailable => format!("coordinator unavailable: {}", s.message()),
        tonic::Code::Unauthenticated => format!("not authenticated: {}", s.message()),
        tonic::Code::PermissionDenied => format!("permission denied: {}", s.message()),
        tonic::Code::ResourceExhausted => format!("limit reached: {}", s.message()),
        tonic::Code::InvalidArgument => s.message().to_string(),
        c => format!("{c:?}: {}", s.message()),
    }
}

/// The client-side code of a refused call: `unauthenticated`, `permission-denied`,
/// `quota-exceeded`, else `unreachable`.
fn refused_code(s: &tonic::Status) -> &'static str {
    match s.code() {
        tonic::Code::Unauthenticated => "unauthenticated",
        tonic::Code::PermissionDenied => "permission-denied",
        tonic::Code::ResourceExhausted => "quota-exceeded",
        _ => "unreachable",
    }
}

/// How long a keyed locate is asked again after its coordinator went away.
const KEYED_RETRY_FOR: Duration = Duration::from_secs(120);
/// Pause between two such attempts.
const KEYED_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// A new idempotency key for a locate or an audit run: `{prefix}-{16 hex digits}`, random
/// (the standard library's randomly seeded hasher, with the time and process id mixed in).
pub fn new_job_key(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    format!("{prefix}-{:016x}", h.finish())
}

/// The typed client of a coordinator's `LocateService`.
pub struct Client {
    inner: Grpc,
    url: String,
    opts: ConnectOptions,
    /// `authorization` metadata every call of this handle carries ([`Client::with_bearer`]).
    bearer: Option<tonic::metadata::AsciiMetadataValue>,
}

impl Client {
    /// Connects (see [`connect`]).
    pub async fn connect(url: &str) -> anyhow::Result<Client> {
        Self::connect_with(url, &ConnectOptions::default()).await
    }

    /// Connects with `opts` (see [`connect_with`]).
    pub async fn connect_with(url: &str, opts: &ConnectOptions) -> anyhow::Result<Client> {
        Ok(Client {
            inner: connect_with(url, opts).await?,
            url: url.to_string(),
            opts: opts.clone(),
            bearer: None,
        })
    }

    /// A failed call's status as a message (see [`call_error`]).
    pub fn call_error(&self, s: &tonic::Status) -> String {
        call_error(&self.url, &self.opts, s)
    }

    /// A refused call as a [`Failure`]: code `unauthenticated`, `permission-denied`,
    /// `quota-exceeded` or `unreachable`, with [`Client::call_error`]'s message.
    pub fn failure(&self, s: &tonic::Status) -> Failure {
        Failure::new(refused_code(s), self.call_error(s))
    }

    /// A handle on the same connection whose calls carry the API key `key` as gRPC metadata
    /// `authorization: Bearer <key>` (the web interface forwards each browser's key this
    /// way). The key must be 1-512 visible ASCII characters.
    pub fn with_bearer(&self, key: &str) -> Result<Client, Failure> {
        let ok = !key.is_empty() && key.len() <= 512 && key.bytes().all(|b| b.is_ascii_graphic());
        let value: tonic::metadata::AsciiMetadataValue = ok
            .then(|| format!("Bearer {key}").parse().ok())
            .flatten()
            .ok_or_else(|| {
                Failure::new(
                    "invalid-argument",
                    "an API key is 1-512 visible ASCII characters (no spaces)",
                )
            })?;
        Ok(Client {
            bearer: Some(value),
            ..self.clone()
        })
    }

    /// `msg` as a request carrying this handle's metadata.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(b) = &self.bearer {
            r.metadata_mut().insert("authorization", b.clone());
        }
        r
    }

    /// The generated client, for calls this type does not wrap.
    pub fn raw(&mut self) -> &mut Grpc {
        &mut self.inner
    }

    /// Locates one address; `progress` is called for each probe that finished. The result is
    /// converted (and checked) once here. Errors carry the coordinator's code
    /// (`no-probes`, ...) or a client-side one: `invalid-argument`, `unreachable`,
    /// `timeout`, `internal`, `bad-result` (the coordinator sent a result that does not
    /// pass the checks of `geoloc_proto::convert`).
    pub async fn locate(
        &mut self,
        req: pb::LocateRequest,
        mut progress: impl FnMut(&pb::Progress),
    ) -> Result<Located, Failure> {
        // A keyed locate whose coordinator went away (a cluster replica died) is asked
        // again, with the same key, of the replica that answers now: it returns the run
        // another replica finished or took over, never a second measurement.
        let started = std::time::Instant::now();
        loop {
            let r = self.locate_once(req.clone(), &mut progress).await;
            match r {
                Err(f)
                    if !req.job_key.is_empty()
                        && matches!(f.code.as_str(), "unreachable" | "interrupted")
                        && started.elapsed() < KEYED_RETRY_FOR =>
                {
                    eprintln!(
                        "geoloc: {}; asking again with job key {}",
                        f.message, req.job_key
                    );
                    tokio::time::sleep(KEYED_RETRY_PAUSE).await;
                    if let Ok(c) = connect_with(&self.url, &self.opts).await {
                        self.inner = c;
                    }
                }
                r => return r,
            }
        }
    }

    async fn locate_once(
        &mut self,
        req: pb::LocateRequest,
        mut progress: impl FnMut(&pb::Progress),
    ) -> Result<Located, Failure> {
        let mut stream = match self.inner.locate(self.request(req)).await {
            Ok(s) => s.into_inner(),
            Err(s) if s.code() == tonic::Code::InvalidArgument => {
                return Err(Failure::new(&invalid_code(&s), s.message()))
            }
            Err(s) => return Err(self.failure(&s)),
        };
        loop {
            let next = tokio::time::timeout(EVENT_TIMEOUT, stream.message()).await;
            let msg = match next {
                Err(_) => {
                    return Err(Failure::new(
                        "timeout",
                        format!(
                            "no news from the coordinator for {} s",
                            EVENT_TIMEOUT.as_secs()
                        ),
                    ))
                }
                Ok(Err(s)) if s.code() == tonic::Code::InvalidArgument => {
                    return Err(Failure::new(&invalid_code(&s), s.message()))
                }
                Ok(Err(s)) => return Err(self.failure(&s)),
                Ok(Ok(None)) => {
                    return Err(Failure::new(
                        "internal",
                        "the coordinator ended the stream without an answer",
                    ))
                }
                Ok(Ok(Some(m))) => m,
            };
            match msg.event {
                Some(pb::locate_event::Event::Progress(p)) => progress(&p),
                Some(pb::locate_event::Event::Result(r)) => {
                    return Located::try_from(&r)
                        .map_err(|e| Failure::new("bad-result", e.to_string()))
                }
                Some(pb::locate_event::Event::Error(e)) => return Err(Failure::from_pb(&e)),
                None => {}
            }
        }
    }

    /// The probe fleet.
    pub async fn list_probes(&mut self) -> Result<Vec<pb::ProbeInfo>, tonic::Status> {
        Ok(self
            .inner
            .list_probes(self.request(pb::ListProbesRequest {}))
            .await?
            .into_inner()
            .probes)
    }
}
