//! Operations of both daemons (feature `ops`): the log set-up (`--log-format text|json`) and
//! the operations listener (`--metrics-listen ADDR`) serving
//!
//! - `GET /metrics`: the daemon's Prometheus registry in the text exposition format
//!   (OpenMetrics 1.0 text, which Prometheus scrapes natively);
//! - `GET /healthz`: `200 ok` while the daemon runs, `503 stopping` once it is shutting down.
//!
//! The listener answers nothing else (404) and reads no request body ([`MAX_HTTP_BODY`]).
//! Its limits are listed with every other limit in `docs/limits.md`.
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

/// Largest request body the operations listener reads: its two routes take none.
pub const MAX_HTTP_BODY: usize = 1024;
/// Content type of `/metrics` (the OpenMetrics text format written by `prometheus-client`).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines (ANSI colours on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message`)
    /// and the open `span`s, for log shippers.
    Json,
}

/// Installs the global `tracing` subscriber: `RUST_LOG` filter (default `info`), stderr, in
/// `format`. Does nothing when a subscriber is already installed (tests).
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// What the operations listener serves.
#[derive(Clone)]
pub struct OpsState {
    /// The metrics served at `/metrics`.
    pub registry: Arc<Registry>,
    /// Called before each `/metrics` encoding, to set gauges read from the daemon's state.
    pub refresh: Arc<dyn Fn() + Send + Sync>,
    /// `/healthz`: true while serving, false once stopping.
    pub healthy: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl OpsState {
    /// `registry` with no refresh hook, healthy as `healthy` says.
    pub fn new(registry: Registry, healthy: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        OpsState {
            registry: Arc::new(registry),
            refresh: Arc::new(|| {}),
            healthy: Arc::new(healthy),
        }
    }

    /// Sets the hook called before each `/metrics` encoding.
    pub fn with_refresh(mut self, refresh: impl Fn() + Send + Sync + 'static) -> Self {
        self.refresh = Arc::new(refresh);
        self
    }

    /// The registry as text (after the refresh hook).
    pub fn encode(&self) -> String {
        (self.refresh)();
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

async fn metrics(State(s): State<OpsState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], s.encode())
}

async fn healthz(State(s): State<OpsState>) -> impl IntoResponse {
    if (s.healthy)() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping\n")
    }
}

/// The routes of the operations listener.
pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(MAX_HTTP_BODY))
        .with_state(state)
}

/// Binds `addr` (port 0 = any free port); the error names the address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} for metrics: {e}"),
        )
    })?;
    let a = l.local_addr()?;
    Ok((l, a))
}

/// Serves [`router`] on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: OpsState,
    stop: crate::CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

/// Binds `addr` and serves the listener in a background task until `stop`; returns the
/// bound address (logged as `metrics listening on ADDR`).
pub async fn spawn(
    addr: SocketAddr,
    state: OpsState,
    stop: crate::CancellationToken,
) -> std::io::Result<SocketAddr> {
    let (listener, bound) = bind(addr).await?;
    if !bound.ip().is_loopback() {
        tracing::warn!(%bound, "the metrics listener is plain HTTP without authentication: keep it on a private network");
    }
    tracing::info!(addr = %bound, "metrics listening");
    tokio::spawn(async move {
        if let Err(e) = serve(listener, state, stop).await {
            tracing::error!(error = %e, "metrics listener failed");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn encodes_the_registry_after_the_refresh_hook() {
        let mut r = Registry::default();
        let c: Counter = Counter::default();
        r.register("geoloc_test_things", "Things", c.clone());
        let c2 = c.clone();
        let s = OpsState::new(r, || true).with_refresh(move || {
            c2.inc();
        });
        let text = s.encode();
        assert!(text.contains("geoloc_test_things_total 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
