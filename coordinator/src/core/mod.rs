//! The coordinator's core: the domain, free of the wire and of SQL. Nothing under `core/`
//! imports the crates `geoloc-proto`, `tonic`, `prost`, `axum` or `sqlx` (checked by
//! `core_imports_no_wire_types` below); the gRPC services in [`crate::grpc`] convert
//! proto <-> these types once. The store is reached through `crate::storage` (its rows are
//! defined here, in [`rows`]).
//!
//! - [`coordinator`]: the [`Coordinator`] composing the parts below.
//! - [`fleet`], [`registry`], [`register`], [`throttle`]: the own probes; [`identity`]:
//!   their enrolment, credentials, revocation and approved positions.
//! - [`source`]: where measurements come from ([`MeasurementSource`]); [`fleet`],
//!   [`replay`] and [`atlas_source`] (RIPE Atlas) implement it; [`sources`] picks the one a
//!   locate asks for (fleet, atlas or both merged) and counts what each spent.
//! - [`phased`]: the budgeted, phased choice of vantage points (the engine's `select`).
//! - [`measurement`]: one request (built in one place), its answer and outcome.
//! - [`locate`], [`schedule`], [`solve`]: a locate job from parameters to the engine's
//!   `Solution`; [`trace`]: a client's traceroute from one vetted probe, admitted like one.
//! - [`vetting`], [`landmarks`]: speed-of-light checks of declared positions.
//! - [`rows`]: the records the store keeps; [`target`]: what may be measured.
//! - [`access`]: who asks (API keys, scopes) and the abuse limits of locate runs.
//! - [`metrics`]: what the core counts for operators (served by `crate::ops`);
//!   [`retention`]: how long raw measurements are kept.
pub mod access;
pub mod atlas_source;
pub mod coordinator;
pub mod fleet;
pub mod geoip;
pub mod identity;
pub mod jobs;
pub mod landmarks;
pub mod locate;
pub mod measurement;
pub mod metrics;
pub mod phased;
pub mod register;
pub mod registry;
pub mod replay;
pub mod retention;
pub mod rows;
pub mod schedule;
pub mod solve;
pub mod source;
pub mod sources;
pub mod target;
pub mod text;
pub mod throttle;
pub mod trace;
pub mod vetting;

pub use coordinator::Coordinator;
pub use source::{MeasurementSource, VantagePoint};

#[cfg(test)]
mod tests {
    /// The rule of this module: no wire, RPC, HTTP or SQL crate is imported under `core/`.
    #[test]
    fn core_imports_no_wire_types() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
        let mut seen = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            seen += 1;
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                // Spelled in pieces so that this file passes its own check.
                for bad in [
                    concat!("geoloc", "_proto"),
                    concat!("to", "nic"),
                    concat!("ax", "um"),
                    concat!("sq", "lx"),
                    concat!("pro", "st"),
                ] {
                    assert!(
                        !code.contains(bad),
                        "{}:{}: core code names `{bad}`: {line}",
                        path.display(),
                        n + 1
                    );
                }
            }
        }
        assert!(seen > 10, "read only {seen} files under {}", dir.display());
    }
}
