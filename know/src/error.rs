//! The one error type of `geoloc-know`.

use std::path::PathBuf;

/// Errors of this crate. Provider failures are not errors: they are a
/// [`crate::providers::Outcome`] with a reason, so one failing provider never stops a run.
#[derive(Debug, thiserror::Error)]
pub enum KnowError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ASN database {path}, line {line}: {reason}")]
    AsnDb {
        path: PathBuf,
        line: u64,
        reason: String,
    },
    #[error("ASN database folder {0} holds neither asn-ipv4.csv nor asn-ipv6.csv (run scripts/fetch-asn-db.sh)")]
    AsnDbEmpty(PathBuf),
    #[error("configuration {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("input CSV {path}: {reason}")]
    Input { path: PathBuf, reason: String },
    #[error("CSV output {path}: {source}")]
    Csv { path: PathBuf, source: csv::Error },
    #[error("Parquet output {path}: {reason}")]
    Parquet { path: PathBuf, reason: String },
    #[error(transparent)]
    GeoIp(#[from] geoloc_geoip::GeoIpError),
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    #[error("cannot build the DNS resolver: {0}")]
    Resolver(String),
}

/// Result with [`KnowError`].
pub type Result<T> = std::result::Result<T, KnowError>;
