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

/// A new measurement id: 32 hex digits, the creation time in milliseconds (12) then 80
/// random bits (20). Ids that grow with time land at the right edge of the primary-key
/// index instead of at a random page of it: inserting a row touches the pages the previous
/// insert touched.
pub fn new_time_ordered_id() -> String {
    let r: u128 = rand::random::<u128>() >> 48;
    format!("{:012x}{r:020x}", unix_ms() as u64 & 0xffff_ffff_ffff)
}

/// A random 128-bit id in hex.
pub fn new_id() -> String {
    let v: u128 = rand::random();
    format!("{v:032x}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn time_ordered_ids_are_32_hex_digits_and_grow_with_time() {
        let a = super::new_time_ordered_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = super::new_time_ordered_id();
        for id in [&a, &b] {
            assert_eq!(id.len(), 32, "{id}");
            assert!(id.bytes().all(|c| c.is_ascii_hexdigit()), "{id}");
        }
        assert!(a < b, "{a} then {b}");
        // The first 12 digits are the time in ms; the other 20 are random.
        let ms = i64::from_str_radix(&a[..12], 16).unwrap();
        assert!((super::unix_ms() - ms).abs() < 60_000, "{a}");
        assert_ne!(a[12..], b[12..]);
    }
}
