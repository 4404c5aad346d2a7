//! The one error type of this crate.
use std::path::PathBuf;

/// What went wrong in a run-time helper.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A signal handler could not be installed.
    #[error("cannot install the SIGINT/SIGTERM handlers: {0}")]
    Signal(#[source] std::io::Error),
    /// A configuration value has the wrong type or cannot be parsed; the message names the
    /// key as its layer spells it (`--max-ttl`, `GEOLOC_PROBE_MAX_TTL`, `max-ttl`) and the
    /// layer.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A configuration value parsed but is out of range.
    #[error("{message} (set by {origin})")]
    Invalid {
        /// What is wrong, naming the key.
        message: String,
        /// Where the value came from, e.g. `GEOLOC_PROBE_MAX_TTL in the environment`.
        origin: String,
    },
    /// The effective configuration cannot be written as TOML.
    #[error("cannot print the configuration as TOML: {0}")]
    Print(#[from] toml::ser::Error),
    /// Writing completions or man pages failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// File or directory written to.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;
