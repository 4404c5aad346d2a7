//! TLS on the gRPC port: the coordinator's certificate and key (`tls-cert`, `tls-key`) as
//! tonic's server configuration, and the rule that plaintext is served only on loopback
//! addresses unless `insecure-plaintext` says otherwise. The file checks (each error names
//! its file) are `geoloc_rt::tls::server_identity`, shared with nothing else but kept
//! beside the client side's.
use std::net::SocketAddr;
use std::time::Duration;

use tonic::transport::ServerTlsConfig;

use crate::config::Config;
use crate::{CoordinatorError, Result};

/// The server's TLS configuration when `config` names a certificate and key (read and
/// checked now), `None` for plaintext. `handshake_timeout` bounds each TLS handshake.
pub fn server_tls(config: &Config, handshake_timeout: Duration) -> Result<Option<ServerTlsConfig>> {
    let Some((cert, key)) = config.tls() else {
        return Ok(None);
    };
    let identity = geoloc_rt::tls::server_identity(cert, key)?;
    Ok(Some(
        ServerTlsConfig::new()
            .identity(identity)
            .timeout(handshake_timeout),
    ))
}

/// Refuses plaintext on a non-loopback `addr` unless `insecure-plaintext` is set (also for
/// in-process servers whose configuration skipped [`Config`]'s checks).
pub fn check_plaintext(config: &Config, addr: SocketAddr) -> Result<()> {
    if config.tls().is_some() || addr.ip().is_loopback() || config.insecure_plaintext {
        return Ok(());
    }
    let shown = Config {
        listen: addr,
        ..config.clone()
    };
    match shown.transport_problem() {
        Some((_, message)) => Err(CoordinatorError::InvalidConfig(message)),
        None => Ok(()),
    }
}
