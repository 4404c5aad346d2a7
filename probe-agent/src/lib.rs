//! Probe agent for the geolocation system.
//!
//! * [`packet`]: probe building and reply parsing, no I/O, hostile-input safe.
//! * [`safety`]: target policy (no private/bogon targets unless allowed twice), packet
//!   rate caps (token buckets), TTL bounds.
//! * [`config`]: TOML file + environment + flags, one precedence helper.
//! * [`ping`], [`tcp`], [`traceroute`]: the measurements.
//! * [`measure`]: one request → one result, shared by the agent loop and the `measure`
//!   debugging subcommand.
//! * [`privileges`]: can we open ICMP sockets at all, and what to do if not.
//! * [`metrics`]: what the agent counts for `/metrics` (`--metrics-listen`).

pub mod error;
pub mod packet;

pub use error::{Error, Result};
pub mod agent;
pub mod config;
/// TEST ONLY: a dishonest probe (cargo feature `fault-injection`, off by default).
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod measure;
pub mod metrics;
pub mod ping;
pub mod privileges;
pub mod recent;
pub mod safety;
pub mod tcp;
pub mod traceroute;
