//! The crate's one error type.
use std::path::PathBuf;

/// Everything that can go wrong talking to RIPE Atlas or reading its files.
#[derive(Debug, thiserror::Error)]
pub enum AtlasError {
    /// The request would cost more than the caller allows; nothing was spent.
    #[error("the measurement would cost {estimated} credits, more than --max-credits {max_credits}; nothing was created ({detail})")]
    OverBudget {
        estimated: u64,
        max_credits: u64,
        detail: String,
    },
    /// A measurement definition or probe selection is invalid (checked before sending).
    #[error("invalid measurement request: {0}")]
    InvalidRequest(String),
    /// Creating a measurement needs an API key.
    #[error("no RIPE Atlas API key: set RIPE_ATLAS_KEY or pass --key-file")]
    NoKey,
    /// The API key is not of the documented shape.
    #[error("the RIPE Atlas API key {0}")]
    BadKey(String),
    /// The API answered with an error status and (usually) its documented error body.
    #[error("RIPE Atlas API {method} {path}: HTTP {status} {title}: {detail}")]
    Api {
        method: &'static str,
        path: String,
        status: u16,
        title: String,
        detail: String,
    },
    /// The request did not complete (connection, TLS, timeout).
    #[error("RIPE Atlas API {method} {path}: {source}")]
    Http {
        method: &'static str,
        path: String,
        #[source]
        source: reqwest::Error,
    },
    /// A response or file was not what the documentation describes.
    #[error("{what}: {reason}")]
    Malformed { what: String, reason: String },
    /// A response or file is larger than this client accepts.
    #[error("{what} is larger than {limit_bytes} bytes")]
    TooLarge { what: String, limit_bytes: usize },
    /// The deadline passed before every result arrived (the results so far are kept by
    /// the caller of [`crate::client::AtlasClient::wait_results`], which returns them
    /// rather than this error; this is for a deadline before any result).
    #[error("measurement {msm_id}: no result before the deadline ({waited_s:.1} s)")]
    Timeout { msm_id: u64, waited_s: f64 },
    /// Reading a local file.
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The base URL option is not a usable http(s) URL.
    #[error("base URL {url:?}: {reason}")]
    BaseUrl { url: String, reason: String },
    /// The engine refused the measurements.
    #[error(transparent)]
    Engine(#[from] geoloc_engine::EngineError),
}

/// Result with [`AtlasError`].
pub type Result<T> = std::result::Result<T, AtlasError>;
