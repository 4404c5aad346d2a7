//! The client side of geoloc: everything that talks to a coordinator over gRPC and nothing
//! that reaches its storage.
//!
//! - [`Client`] / [`connect`]: the typed async client; [`Located`] is a result as clients
//!   use it (the engine's [`geoloc_engine::Solution`], converted once from the wire by
//!   `geoloc_proto::convert`).
//! - [`locate`], [`probes`], [`audit`]: the `geoloc locate | probes | audit` commands and the
//!   formats they print (schemas in client/README.md).
use std::path::PathBuf;
use std::time::Duration;

use geoloc_proto::v1 as pb;
use pb::locate_service_client::LocateServiceClient;
use tonic::transport::{Channel, Endpoint};

pub mod audit;
mod extra;
pub mod localtime;
pub mod locate;
pub mod probes;
mod result;

pub use audit::{run_audit, AuditArgs};
pub use extra::BatchEvent;
pub use locate::{run_locate, LocateArgs};
pub use probes::{run_probes, ProbesArgs};
pub use result::{Failure, LocateLine, Located, Mode};

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
}

impl ConnectOptions {
    /// Options trusting `ca` (when `Some`).
    pub fn with_ca(mut self, ca: Option<PathBuf>) -> Self {
        self.ca = ca;
        self
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

/// Connects to a coordinator (plaintext `http://` or `https://` with the public roots),
/// with a clear error when it cannot be reached.
pub async fn connect(url: &str) -> anyhow::Result<LocateServiceClient<Channel>> {
    connect_with(url, &ConnectOptions::default()).await
}

/// Connects to a coordinator with `opts` (see [`ConnectOptions`]); errors say what to do
/// (plaintext against TLS, an untrusted certificate, a wrong host name).
pub async fn connect_with(
    url: &str,
    opts: &ConnectOptions,
) -> anyhow::Result<LocateServiceClient<Channel>> {
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
    Ok(LocateServiceClient::new(ch).max_decoding_message_size(64 << 20))
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
        tonic::Code::InvalidArgument => s.message().to_string(),
        c => format!("{c:?}: {}", s.message()),
    }
}

/// The typed client of a coordinator's `LocateService`.
pub struct Client {
    inner: LocateServiceClient<Channel>,
    url: String,
    opts: ConnectOptions,
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
        })
    }

    /// A failed call's status as a message (see [`call_error`]).
    pub fn call_error(&self, s: &tonic::Status) -> String {
        call_error(&self.url, &self.opts, s)
    }

    /// The generated client, for calls this type does not wrap.
    pub fn raw(&mut self) -> &mut LocateServiceClient<Channel> {
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
        let mut stream = match self.inner.locate(req).await {
            Ok(s) => s.into_inner(),
            Err(s) if s.code() == tonic::Code::InvalidArgument => {
                return Err(Failure::new(&invalid_code(&s), s.message()))
            }
            Err(s) => return Err(Failure::new("unreachable", self.call_error(&s))),
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
                Ok(Err(s)) => return Err(Failure::new("unreachable", self.call_error(&s))),
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
            .list_probes(pb::ListProbesRequest {})
            .await?
            .into_inner()
            .probes)
    }
}
