//! RIPE Atlas as a measurement source for geoloc.
//!
//! - [`probes`]: probe metadata from the API or a downloaded archive file;
//! - [`request`]: one-off ping/traceroute requests, probe selection, the credit estimate;
//! - [`client`]: the v2 REST API (probes, create, status, results, credits), key handling;
//! - [`results`]: Atlas result JSON → minimum RTT per probe, malformed results reported;
//! - [`vet`]: exclusion list, speed-of-light check among probes, calibration from the mesh;
//! - [`locate`]: offline import and the live measurement, solved by the engine;
//! - `standin` (feature `stand-in`): a loopback stand-in for the API answering from the
//!   lab's delay model, for tests and figures.
pub mod client;
pub mod error;
pub mod locate;
pub mod probes;
pub mod request;
pub mod results;
#[cfg(feature = "stand-in")]
pub mod standin;
pub mod vet;

pub use client::{ApiKey, AtlasClient, DEFAULT_BASE_URL, KEY_ENV};
pub use error::{AtlasError, Result};
pub use probes::{Probe, ProbeSet, ProbeStatus};
pub use request::{CostEstimate, Definition, MeasurementRequest, MeasurementType, ProbeSpec};
pub use results::{parse_results, Expect, ParseReport, Parsed, ProbeRtt, RttKind};
