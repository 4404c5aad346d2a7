//! The lab's one error type.
use std::net::IpAddr;

pub type Result<T, E = LabError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the lab needs root (network namespaces, TUN devices); running as uid {0}")]
    NotRoot(u32),
    #[error("/dev/net/tun is missing or unusable: {0}")]
    NoTun(#[source] std::io::Error),
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("network namespace {ns}: {what}: {source}")]
    Namespace {
        ns: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("address {0} is outside the lab's ranges (10.77.0.0/17 and fd77::/48 for hosts)")]
    AddressOutsideLab(IpAddr),
    #[error("bad topology: {0}")]
    Topology(String),
    #[error("unknown host {0:?}")]
    UnknownHost(String),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Data { path: String, detail: String },
    #[error("emulator thread: {0}")]
    Emulator(String),
}
