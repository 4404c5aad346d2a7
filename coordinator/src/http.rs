//! The HTTP edge: the web interface (crate `geoloc-web`) served by the coordinator itself on
//! `--http-listen`. It is an adapter like the gRPC services: it talks to this coordinator
//! through the typed client over a private plaintext loopback gRPC port that serves
//! `LocateService` only ([`crate::grpc::serve_internal`]; private so that it works the same
//! when the public port serves TLS under a name that loopback cannot verify). It sees
//! exactly what other clients see, API keys included: a browser's `Authorization: Bearer`
//! header is forwarded as the calls' metadata, and the process's own `GEOLOC_API_KEY` is
//! never used. It never reaches the core or the storage directly.
//!
//! Plain HTTP: a non-loopback `--http-listen` is refused unless `insecure-plaintext` is set
//! ([`crate::config::Config`]); in production put it on loopback behind a TLS reverse proxy.
use std::net::SocketAddr;
use std::sync::Arc;

use crate::{Coordinator, CoordinatorError, Result};

/// Serves the web interface on `listener` until `shutdown` resolves, with its private
/// gRPC port bound on 127.0.0.1 (any free port).
pub async fn serve(
    coord: Arc<Coordinator>,
    listener: tokio::net::TcpListener,
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
        stop.cancelled_owned(),
    )
    .await
    .map_err(|e| CoordinatorError::Web(e.to_string()));
    grpc.abort();
    web
}
