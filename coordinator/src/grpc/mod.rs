//! The gRPC edge: `ProbeService` (probe agents, [`probe`]) and `LocateService` (clients,
//! [`client`]) on one port. Each service checks the wire messages ([`validate`]), converts
//! them to the core's types once ([`convert`]) and calls the [`Coordinator`]; connection
//! limits are in [`conn`].
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use geoloc_proto::v1 as pb;
use pb::locate_service_server::LocateServiceServer;
use pb::probe_service_server::ProbeServiceServer;
use tonic::Status;

pub mod client;
pub mod conn;
pub mod convert;
pub mod locate_args;
pub mod probe;
pub mod tls;
pub mod validate;

pub use client::LocateSvc;
pub use conn::Limits;
pub use probe::ProbeSvc;

use crate::{Coordinator, CoordinatorError};

use geoloc_proto::limits::{MAX_HEADER_LIST, MAX_STREAMS_PER_CONNECTION};

/// Serves both services and the standard gRPC health service (`grpc.health.v1.Health`:
/// SERVING for "", `geoloc.v1.ProbeService` and `geoloc.v1.LocateService` while running,
/// NOT_SERVING from the moment `shutdown` resolves) on `listener` until `shutdown`
/// resolves, with the default [`Limits`].
pub async fn serve(
    coord: Arc<Coordinator>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> crate::Result<()> {
    serve_with(coord, listener, Limits::default(), shutdown).await
}

/// Like [`serve`] with explicit connection limits. Serves TLS when the coordinator's
/// configuration names a certificate and key ([`tls`]); plaintext only on a loopback
/// address unless `insecure-plaintext` is set.
pub async fn serve_with(
    coord: Arc<Coordinator>,
    listener: tokio::net::TcpListener,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> crate::Result<()> {
    let tls = tls::server_tls(&coord.config, limits.handshake_timeout)?;
    if tls.is_none() {
        if let Ok(addr) = listener.local_addr() {
            tls::check_plaintext(&coord.config, addr)?;
        }
    }
    let incoming = conn::accept(listener, &limits);
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, tonic_health::ServingStatus::Serving).await;
    let shutdown = async move {
        shutdown.await;
        set_health(&health, tonic_health::ServingStatus::NotServing).await;
    };
    let probes = ProbeServiceServer::new(ProbeSvc(Arc::clone(&coord)))
        .max_decoding_message_size(validate::MAX_PROBE_MESSAGE)
        .max_encoding_message_size(validate::MAX_PROBE_MESSAGE);
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls)?;
    }
    builder(server, &limits)
        .add_service(health_service)
        .add_service(probes)
        .add_service(locate_service(coord))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

/// Serves `LocateService` alone, in plaintext, on `listener`, which must be bound to a
/// loopback address: the private port through which the web interface ([`crate::http`])
/// reaches this coordinator as any other client does (API keys and quotas included), also
/// when the public port serves TLS. Probes cannot register there.
pub async fn serve_internal(
    coord: Arc<Coordinator>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> crate::Result<()> {
    let addr = listener
        .local_addr()
        .map_err(|e| CoordinatorError::Web(format!("internal gRPC port: {e}")))?;
    if !addr.ip().is_loopback() {
        return Err(CoordinatorError::Web(format!(
            "the internal gRPC port must be on loopback, not {addr}"
        )));
    }
    let limits = Limits::default();
    let incoming = conn::accept(listener, &limits);
    builder(tonic::transport::Server::builder(), &limits)
        .add_service(locate_service(coord))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

fn locate_service(coord: Arc<Coordinator>) -> LocateServiceServer<LocateSvc> {
    LocateServiceServer::new(LocateSvc(coord))
        .max_decoding_message_size(validate::MAX_CLIENT_MESSAGE)
        .max_encoding_message_size(validate::MAX_REPLY_MESSAGE)
}

fn builder(server: tonic::transport::Server, limits: &Limits) -> tonic::transport::Server {
    server
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .http2_max_header_list_size(Some(MAX_HEADER_LIST))
}

/// Sets the health of the whole server ("") and of each service.
async fn set_health(h: &tonic_health::server::HealthReporter, status: tonic_health::ServingStatus) {
    use tonic::server::NamedService;
    for name in [
        "",
        <ProbeServiceServer<ProbeSvc> as NamedService>::NAME,
        <LocateServiceServer<LocateSvc> as NamedService>::NAME,
    ] {
        h.set_service_status(name, status).await;
    }
}

/// Binds `addr` (port 0 = any free port) and returns the listener and its real address.
pub async fn bind(addr: SocketAddr) -> crate::Result<(tokio::net::TcpListener, SocketAddr)> {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| CoordinatorError::Listen { addr, source })?;
    let a = l
        .local_addr()
        .map_err(|source| CoordinatorError::Listen { addr, source })?;
    Ok((l, a))
}

/// INVALID_ARGUMENT with the machine-readable code (`bogon`, `invalid-address`,
/// `invalid-argument`) in the `geoloc-error-code` metadata, as batch events carry it.
fn invalid(code: &str, message: impl Into<String>) -> Status {
    let mut s = Status::invalid_argument(message);
    if let Ok(v) = code.parse() {
        s.metadata_mut().insert("geoloc-error-code", v);
    }
    s
}

fn internal(e: CoordinatorError) -> Status {
    tracing::error!(error = %e, "internal error");
    Status::internal(e.to_string())
}

/// A client- or probe-given text for a message or a log line: cut and escaped.
fn truncate(s: &str) -> String {
    validate::bounded_text(s, 80)
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;
