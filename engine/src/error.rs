//! The engine's one error type.

/// What went wrong, naming the offending input.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EngineError {
    /// No measurement to solve from.
    #[error("no measurements: at least one landmark RTT is needed")]
    NoMeasurements,
    /// A measurement with an impossible value.
    #[error("measurement {index} (landmark {landmark:?}): {reason}")]
    InvalidMeasurement {
        index: usize,
        landmark: String,
        reason: String,
    },
    /// A CSV or data line that could not be read.
    #[error("{source_name} line {line}: {reason}")]
    Parse {
        source_name: String,
        line: usize,
        reason: String,
    },
    /// A solver option out of its range.
    #[error("option {name}: {reason}")]
    InvalidOption { name: &'static str, reason: String },
    /// An unknown method name.
    #[error("unknown method {0:?} (expected one of: {methods})", methods = crate::Method::NAMES.join(", "))]
    UnknownMethod(String),
}

/// Result with [`EngineError`].
pub type Result<T> = std::result::Result<T, EngineError>;
