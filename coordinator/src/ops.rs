//! The operations edge of the coordinator: the Prometheus registry (the core's
//! [`Metrics`](crate::core::metrics::Metrics) and the storage latency histogram) served at
//! `/metrics` with `/healthz` on `--metrics-listen` (`geoloc_rt::ops`). The gRPC health
//! service is on the gRPC port ([`crate::grpc`]).
use std::net::SocketAddr;
use std::sync::Arc;

use geoloc_rt::ops::OpsState;
use prometheus_client::registry::Registry;

use crate::Coordinator;

/// Every metric of the coordinator, registered once.
pub fn registry(coord: &Coordinator) -> Registry {
    let mut registry = Registry::default();
    coord.metrics.register(&mut registry);
    registry
        .sub_registry_with_prefix("geoloc_coordinator")
        .register(
            "storage_duration_seconds",
            "Duration of storage calls by backend (every store of the process)",
            crate::storage::STORAGE_SECONDS.clone(),
        );
    registry
}

/// What the operations listener serves for `coord`: its metrics (gauges refreshed at each
/// scrape), healthy until it starts shutting down (in cluster mode, also only while its
/// heartbeat reaches the database: the balancer's health check).
pub fn state(coord: &Arc<Coordinator>) -> OpsState {
    let refresh = Arc::clone(coord);
    let healthy = Arc::clone(coord);
    OpsState::new(registry(coord), move || {
        !healthy.is_shutting_down() && crate::cluster::healthy()
    })
    .with_refresh(move || refresh.refresh_metrics())
}

/// Serves `/metrics` and `/healthz` for `coord` on `addr` until `stop`; returns the bound
/// address.
pub async fn spawn(
    coord: &Arc<Coordinator>,
    addr: SocketAddr,
    stop: geoloc_rt::CancellationToken,
) -> std::io::Result<SocketAddr> {
    geoloc_rt::ops::spawn(addr, state(coord), stop).await
}
