//! The HTTP edge: the web interface (crate `geoloc-web`) served by the coordinator itself on
//! `--http-listen`. It is an adapter like the gRPC services: it talks to this coordinator
//! through the typed client over a private plaintext loopback gRPC port that serves
//! `LocateService` only ([`crate::grpc::serve_internal`]; private so that it works the same
//! when the public port serves TLS under a name that loopback cannot verify). It sees
//! exactly what other clients see, API keys included: a browser's `Authorization: Bearer`
//! header is forwarded as the calls' metadata, and the process's own `GEOLOC_API_KEY` is
//! never used. It never reaches the core or the storage directly.
//!
//! With `asn-db` and/or `know-config` ([`know_sources`]) the answer panel also shows what
//! is known of the answered address (`GET /api/know`: ownership, cached reputation, links),
//! looked up by this process with the geoloc-know sources, as `geoloc web` does.
//!
//! Plain HTTP: a non-loopback `--http-listen` is refused unless `insecure-plaintext` is set
//! ([`crate::config::Config`]); in production put it on loopback behind a TLS reverse proxy.
use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::{Coordinator, CoordinatorError, Result};

/// The sources of the answer panel's know fields from the `asn-db` and `know-config` keys
/// (databases read, clients built, nothing sent); None when neither is set. A file that
/// cannot be read or is invalid is a configuration error naming it.
pub fn know_sources(config: &Config) -> Result<Option<geoloc_know::report::Sources>> {
    geoloc_web::open_know(config.asn_db.as_deref(), config.know_config.as_deref()).map_err(|e| {
        let key = if config.know_config.is_some() {
            "know-config"
        } else {
            "asn-db"
        };
        CoordinatorError::InvalidConfig(format!("{key}: {e}"))
    })
}

/// Serves the web interface on `listener` until `shutdown` resolves, with its private
/// gRPC port bound on 127.0.0.1 (any free port), and the know fields of the configuration's
/// `asn-db` / `know-config` ([`know_sources`]).
pub async fn serve(
    coord: Arc<Coordinator>,
    listener: tokio::net::TcpListener,
    stop: geoloc_rt::CancellationToken,
) -> Result<()> {
    let know = know_sources(&coord.config)?;
    serve_with(coord, listener, know, stop).await
}

/// [`serve`] with know sources already opened (None: `/api/know` answers 404).
pub async fn serve_with(
    coord: Arc<Coordinator>,
    listener: tokio::net::TcpListener,
    know: Option<geoloc_know::report::Sources>,
    stop: geoloc_rt::CancellationToken,
) -> Result<()> {
    let (internal, addr) =
        crate::grpc::bind(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0))).await?;
    let grpc = tokio::spawn(crate::grpc::serve_internal(
        coord,
        internal,
        stop.clone().cancelled_owned(),
    ));
    let url = format!("http://{addr}");
    // No key of its own: each browser's key is forwarded per call (`Client::with_bearer`).
    let client = geoloc_client::Client::connect_with(
        &url,
        &geoloc_client::ConnectOptions::default().with_key(None),
    )
    .await
    .map_err(|e| {
        CoordinatorError::Web(format!("connecting to the internal gRPC port {url}: {e:#}"))
    })?;
    let web = geoloc_web::serve_on(
        listener,
        client,
        geoloc_web::WebConfig::default(),
        know,
        stop.cancelled_owned(),
    )
    .await
    .map_err(|e| CoordinatorError::Web(e.to_string()));
    grpc.abort();
    web
}
