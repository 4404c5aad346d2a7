//! The crate's single error type.

use std::net::IpAddr;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong inside the probe agent library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---- packet parsing (hostile input) ----
    /// A packet was shorter than the structure being read from it.
    #[error("truncated packet: {what} needs {need} bytes, got {got}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        got: usize,
    },
    /// A header field had an impossible value.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// A well-formed packet that is not a reply to any kind of probe we send.
    #[error("not a probe reply: {0}")]
    NotAReply(String),

    // ---- configuration ----
    /// Configuration could not be read or is invalid. The message names the option.
    #[error("invalid configuration: {0}")]
    Config(String),

    // ---- safety ----
    /// The target is not allowed by the agent's safety policy.
    #[error("target {target} refused: {reason}")]
    TargetRefused {
        /// The refused address.
        target: IpAddr,
        /// Why it is refused.
        reason: String,
    },

    // ---- privileges / sockets ----
    /// The process can open neither a raw nor an unprivileged ICMP socket.
    #[error("{0}")]
    NoIcmpPermission(String),
    /// Raw sockets (CAP_NET_RAW) are needed for this measurement.
    #[error("{what} needs raw sockets (CAP_NET_RAW): {source}")]
    RawSocketDenied {
        /// The measurement that needed it.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// Any other socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// An ICMP echo operation failed inside surge-ping.
    #[error("ping {target}: {message}")]
    Ping {
        /// The target.
        target: IpAddr,
        /// surge-ping's message.
        message: String,
    },
    /// A request was invalid (bad target, bad option).
    #[error("invalid measurement request: {0}")]
    InvalidRequest(String),

    // ---- coordinator ----
    /// The coordinator could not be reached or the session failed.
    #[error("coordinator: {0}")]
    Coordinator(String),
    /// The coordinator rejected this agent for good (bad credential, invalid identity).
    #[error("coordinator rejected the agent: {0}")]
    Rejected(String),
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
