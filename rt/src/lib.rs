//! `geoloc-rt`: what the two daemons and the `geoloc` CLI share at run time.
//!
//! - [`unix_ms`]: the one wall clock in milliseconds since the Unix epoch.
//! - [`shutdown_token`] / [`shutdown_signal`]: the one SIGINT/SIGTERM handler.
//! - [`config`]: the one way to layer configuration (flag > environment > file > default),
//!   with errors that name the key and the layer it came from, and a redacted TOML dump.
//! - [`docs`]: shell completions and man pages generated from a clap definition.
//! - [`tls`]: TLS on the gRPC port: client endpoints (`--ca FILE` or the webpki roots),
//!   the coordinator's certificate and key checks, and errors that say what to do.
//! - `ops` (feature `ops`, the two daemons): log format, `/metrics` and `/healthz`.
//!
//! Dependencies point inward only: this crate depends on no other `geoloc-*` crate.
#![warn(missing_docs)]

pub mod config;
pub mod docs;
mod error;
#[cfg(feature = "ops")]
pub mod ops;
pub mod tls;

pub use error::{Error, Result};
pub use tokio_util::sync::CancellationToken;

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Resolves when the process receives SIGINT or SIGTERM.
///
/// The handlers are installed when this is called (not when first polled), so a signal
/// that arrives after the call is never missed. Needs a tokio runtime.
pub fn shutdown_signal() -> Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

/// A token cancelled on the first SIGINT or SIGTERM (handlers installed before this
/// returns). Clone it to every task that must stop. Needs a tokio runtime.
pub fn shutdown_token() -> Result<CancellationToken> {
    let signal = shutdown_signal()?;
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        signal.await;
        cancel.cancel();
    });
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn unix_ms_is_now() {
        // 2026-01-01 .. 2100-01-01 in ms.
        let now = unix_ms();
        assert!(
            (1_767_225_600_000..4_102_444_800_000).contains(&now),
            "{now}"
        );
    }

    #[tokio::test]
    async fn sigterm_and_sigint_cancel_the_token() {
        use nix::sys::signal::{raise, Signal};
        for sig in [Signal::SIGTERM, Signal::SIGINT] {
            let token = shutdown_token().unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(!token.is_cancelled(), "{sig}: cancelled before the signal");
            raise(sig).unwrap();
            tokio::time::timeout(Duration::from_secs(5), token.cancelled())
                .await
                .unwrap_or_else(|_| panic!("{sig} did not cancel the token"));
        }
    }
}
