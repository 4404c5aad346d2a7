//! The coordinator (server). The client side of `geoloc locate|audit|probes` is the crate
//! `geoloc-client`, which talks to it over gRPC only.
//!
//! Dependencies point inwards: [`grpc`] (the two gRPC services, wire checks, connection
//! limits) -> [`core`] (the domain: fleet, measurement sources, locate jobs, vetting) and
//! [`storage`] (SQLite/PostgreSQL, storing the core's rows) -> [`core::rows`]. The core
//! imports neither `geoloc-proto` nor `tonic` nor `sqlx`; results leave it as the engine's
//! `Solution` and cross the wire typed (`geoloc_proto::convert`). [`http`] serves the web
//! interface (`--http-listen`) as a client of the gRPC port.
pub mod cluster;
pub mod config;
pub mod core;
pub mod error;
pub mod grpc;
pub mod http;
pub mod keys_cmd;
pub mod ops;
pub mod probes_admin;
pub mod storage;

/// The gRPC edge under its former name (`server::bind`, `server::serve`).
pub mod server {
    pub use crate::grpc::{bind, serve, serve_with, Limits};
}

pub use crate::core::Coordinator;
pub use config::{Auth, Config, Mode};
pub use error::{CoordinatorError, Result};

/// Version of this coordinator.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub use geoloc_rt::unix_ms;

/// A random 128-bit id in hex.
pub fn new_id() -> String {
    let v: u128 = rand::random();
    format!("{v:032x}")
}
