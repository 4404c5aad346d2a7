//! The geoloc gRPC API, package `geoloc.v1`.
//!
//! Two services share one port on the coordinator:
//! - [`v1::probe_service_server::ProbeService`]: probe agents register, then keep a
//!   bidirectional `Session` stream on which they receive measurement requests and send
//!   results and heartbeats.
//! - [`v1::locate_service_server::LocateService`]: clients locate addresses (with live
//!   progress), fetch stored results and list the probe fleet.
//!
//! The `.proto` files are in `proto/geoloc/v1/`; code is generated at build time by `protox`
//! and `tonic-prost-build`, so no system `protoc` is needed.
//!
//! [`convert`] is the one place where the engine's types (`geoloc_engine::Solution`,
//! `Measurement`) become wire messages and back; the way in checks every value.

/// Generated messages, clients and servers of `geoloc.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("geoloc.v1");
}

pub mod convert;
pub mod limits;
pub use convert::ConvertError;
