//! The load test's errors: one enum, each variant with its context.

/// Why a load test could not run (or stopped).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An option out of its bounds or options that do not fit together.
    #[error("{0}")]
    Options(String),
    /// The coordinator binary was not found, did not start or died.
    #[error("coordinator: {0}")]
    Coordinator(String),
    /// The PostgreSQL schema could not be created (psql).
    #[error("postgres: {0}")]
    Postgres(String),
    /// The simulated fleet did not come up.
    #[error("probes: {0}")]
    Probes(String),
    /// A client call failed outright.
    #[error("client: {0}")]
    Client(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

/// The load test's result type.
pub type Result<T> = std::result::Result<T, Error>;
