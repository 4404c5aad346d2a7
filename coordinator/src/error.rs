//! The coordinator library's error type.
use std::path::PathBuf;

/// Everything that can go wrong in the coordinator library.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("database {url}: {source}")]
    DatabaseConnect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("unsupported database URL {0:?}: expected sqlite://FILE or postgres://...")]
    DatabaseUrl(String),
    #[error("applying database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database query ({what}): {source}")]
    Query {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("stored data is corrupt ({what}): {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Landmarks {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("GeoIP database {path}: {message}")]
    GeoIp { path: PathBuf, message: String },
    #[error("replayed measurements: {0}")]
    Replay(String),
    #[error("no result {0}")]
    NotFound(String),
    #[error("engine: {0}")]
    Engine(String),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Tls(#[from] geoloc_rt::tls::TlsError),
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("web interface (--http-listen): {0}")]
    Web(String),
}

/// Result alias of the coordinator library.
pub type Result<T, E = CoordinatorError> = std::result::Result<T, E>;

/// Helper to tag sqlx errors with what was being done.
pub(crate) fn q(what: &'static str) -> impl FnOnce(sqlx::Error) -> CoordinatorError {
    move |source| CoordinatorError::Query { what, source }
}
