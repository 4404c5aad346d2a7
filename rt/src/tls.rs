//! TLS on the gRPC port, the parts the coordinator, the probe agent and the clients share.
//!
//! - Client side: [`endpoint`] turns a coordinator URL into a tonic [`Endpoint`]: `https://`
//!   verifies the server against the CA in `--ca FILE` (only that one) or, without it, the
//!   embedded webpki (Mozilla) roots; `http://` is plaintext h2c. [`explain`] turns a failed
//!   connection or call into a sentence naming the likely cause (plaintext against TLS, an
//!   untrusted certificate, a wrong host name) and what to do.
//! - Server side: [`server_identity`] reads the coordinator's certificate chain and private
//!   key, checks that they parse and belong together, and names the file at fault.
//!
//! rustls with the ring provider everywhere: no system OpenSSL.
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::{CertificateError, Error as RustlsError};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// Longest TLS handshake a client waits for.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest certificate or key file read (a chain is a few KiB).
const MAX_PEM_BYTES: u64 = 1 << 20;

/// What can go wrong setting up TLS; every variant names the URL or the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The coordinator URL does not parse or has an unsupported scheme.
    #[error("bad coordinator URL {url:?}: {message}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// A CA, certificate or key file cannot be read or holds nothing usable.
    #[error("{what} {path}: {message}")]
    File {
        /// `CA file`, `TLS certificate` or `TLS key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The certificate and key parse but rustls refuses them together.
    #[error("TLS certificate {cert} and key {key} cannot be used together: {message}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason (e.g. the key does not match the certificate).
        message: String,
    },
    /// `--ca` was given with a plaintext `http://` URL.
    #[error(
        "--ca {ca} is given but {url} is plaintext http://: use an https:// URL (or drop --ca)"
    )]
    CaWithoutTls {
        /// The URL.
        url: String,
        /// The CA file.
        ca: PathBuf,
    },
}

/// Whether `url` is `https://`.
pub fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

/// The host of a URL (without brackets around an IPv6 address), if it has one.
pub fn url_host(url: &str) -> Option<String> {
    let uri: tonic::codegen::http::Uri = url.parse().ok()?;
    let host = uri.host()?;
    Some(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )
}

/// Whether `host` is `localhost` or a loopback address.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `url` is plaintext `http://` to a host that is not loopback: tokens and results
/// would cross the network in clear. Callers warn (the lab uses it inside its namespaces).
pub fn plaintext_to_remote(url: &str) -> bool {
    !is_https(url) && url_host(url).is_some_and(|h| !is_loopback_host(&h))
}

fn read_pem_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let err = |message: String| TlsError::File {
        what,
        path: path.to_path_buf(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    if !meta.is_file() {
        return Err(err("not a regular file".into()));
    }
    if meta.len() > MAX_PEM_BYTES {
        return Err(err(format!(
            "{} bytes, more than the {MAX_PEM_BYTES} a PEM file may have here",
            meta.len()
        )));
    }
    std::fs::read(path).map_err(|e| err(format!("cannot read it: {e}")))
}

/// The certificates of a PEM file (at least one), naming the file on error.
fn read_certificates(
    what: &'static str,
    path: &Path,
) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>), TlsError> {
    let pem = read_pem_file(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::File {
            what,
            path: path.to_path_buf(),
            message: format!("not a valid PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::File {
            what,
            path: path.to_path_buf(),
            message: "no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)".into(),
        });
    }
    Ok((pem, certs))
}

/// Reads a CA file (PEM, one or more certificates) for `--ca`.
pub fn read_ca(path: &Path) -> Result<Certificate, TlsError> {
    let (pem, certs) = read_certificates("CA file", path)?;
    // Parse each as a trust anchor now: tonic would skip an unusable one silently and the
    // handshake would later fail with a confusing "unknown issuer".
    for c in &certs {
        webpki_anchor_check(c).map_err(|message| TlsError::File {
            what: "CA file",
            path: path.to_path_buf(),
            message,
        })?;
    }
    Ok(Certificate::from_pem(pem))
}

fn webpki_anchor_check(c: &CertificateDer<'_>) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(c.clone())
        .map_err(|e| format!("a certificate in it cannot be a trust anchor: {e}"))
}

/// A client endpoint for `url`: `https://` with TLS trusting `ca` (only it) or the
/// embedded webpki roots; `http://` plaintext. The caller adds its timeouts.
pub fn endpoint(url: &str, ca: Option<&Path>) -> Result<Endpoint, TlsError> {
    let bad = |message: String| TlsError::Url {
        url: url.to_string(),
        message,
    };
    let https = is_https(url);
    if !https
        && !url
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
    {
        return Err(bad(
            "expected http://HOST:PORT or https://HOST:PORT (e.g. https://coordinator.example:7470)"
                .into(),
        ));
    }
    let ep = Endpoint::from_shared(url.to_string()).map_err(|e| bad(e.to_string()))?;
    if url_host(url).is_none_or(|h| h.is_empty()) {
        return Err(bad("no host in it".into()));
    }
    if !https {
        if let Some(ca) = ca {
            return Err(TlsError::CaWithoutTls {
                url: url.to_string(),
                ca: ca.to_path_buf(),
            });
        }
        return Ok(ep);
    }
    let mut tls = ClientTlsConfig::new().timeout(HANDSHAKE_TIMEOUT);
    tls = match ca {
        Some(path) => tls.ca_certificate(read_ca(path)?),
        None => tls.with_webpki_roots(),
    };
    ep.tls_config(tls)
        .map_err(|e| bad(format!("TLS setup: {e}")))
}

/// Reads the coordinator's certificate chain (`--tls-cert`, PEM, leaf first) and private
/// key (`--tls-key`, PEM: PKCS#8, PKCS#1 or SEC1) and checks that rustls accepts them
/// together (the key matches the leaf certificate).
pub fn server_identity(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
    let (cert_pem, certs) = read_certificates("TLS certificate", cert)?;
    let key_pem = read_pem_file("TLS key", key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::File {
        what: "TLS key",
        path: key.to_path_buf(),
        message: match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no PEM private key in it (expected -----BEGIN PRIVATE KEY-----, \
                 RSA PRIVATE KEY or EC PRIVATE KEY)"
                    .into()
            }
            e => format!("not a valid PEM private key: {e}"),
        },
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Pair {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            message: e.to_string(),
        })?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| TlsError::Pair {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            message: e.to_string(),
        })?;
    Ok(Identity::from_pem(cert_pem, key_pem))
}

/// The first rustls error in `err`'s chain (looking inside `std::io::Error`s, which hide
/// their payload from `source()`).
fn find_rustls<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a RustlsError> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<RustlsError>() {
            return Some(r);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(r) = find_rustls(inner) {
                    return Some(r);
                }
            }
        }
        cur = e.source();
    }
    None
}

/// `err` and its sources, joined with `: ` (repeated texts dropped).
pub fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let t = e.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// Error texts (lower case) a plaintext client gets from a server that speaks TLS. Which
/// one depends on timing: the server's TLS alert read as an HTTP/2 frame, the connection
/// reset or closed under the client, or (the server closed it before the request went out)
/// hyper's cancelled call, "operation was canceled" / "connection was not ready".
const PLAINTEXT_REFUSED: &[&str] = &[
    "frame with invalid size",
    "connection reset",
    "broken pipe",
    "invalid http version",
    "connection closed",
    "unexpected end of file",
    "protocol error",
    "operation was canceled",
    "connection was not ready",
];

/// What a user should read when connecting to (or calling) the coordinator at `url`
/// failed with `err`: the likely cause and what to do, or `None` when nothing points at
/// TLS. `ca` is the `--ca` file in use, if any.
pub fn hint(
    url: &str,
    ca: Option<&Path>,
    err: &(dyn std::error::Error + 'static),
) -> Option<String> {
    let host = url_host(url).unwrap_or_default();
    if let Some(r) = find_rustls(err) {
        return Some(match r {
            RustlsError::InvalidCertificate(c) => certificate_hint(&host, ca, c),
            RustlsError::InvalidMessage(_) | RustlsError::InappropriateMessage { .. } => format!(
                "{url} did not answer with TLS: it may serve plaintext (a coordinator without \
                 --tls-cert); then use http://{}",
                url.split_once("://").map_or("", |(_, rest)| rest)
            ),
            RustlsError::AlertReceived(a) => {
                format!("the coordinator at {url} refused the TLS handshake (alert {a:?})")
            }
            other => format!("TLS with the coordinator at {url} failed: {other}"),
        });
    }
    let text = chain_text(err).to_ascii_lowercase();
    if !is_https(url) && PLAINTEXT_REFUSED.iter().any(|t| text.contains(t)) {
        return Some(format!(
            "the coordinator at {url} closed the plaintext connection: if it serves TLS (it \
             was started with --tls-cert), use https://{} and --ca FILE (or GEOLOC_CA) when its \
             certificate is not from a public CA",
            url.split_once("://").map_or("", |(_, rest)| rest)
        ));
    }
    None
}

fn certificate_hint(host: &str, ca: Option<&Path>, c: &CertificateError) -> String {
    match c {
        CertificateError::UnknownIssuer => match ca {
            Some(ca) => format!(
                "the coordinator's certificate is not signed by the CA in {} (unknown issuer): \
                 check that --ca names the CA that issued the coordinator's --tls-cert",
                ca.display()
            ),
            None => "the coordinator's certificate is not signed by a CA this client trusts \
                     (unknown issuer; only the built-in public roots are trusted without --ca): \
                     pass --ca FILE (or GEOLOC_CA) with the CA certificate that signed it"
                .to_string(),
        },
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            let names = match c {
                CertificateError::NotValidForNameContext { presented, .. } => {
                    format!(" (it names {})", presented.join(", "))
                }
                _ => String::new(),
            };
            format!(
                "the coordinator's certificate is not valid for the host name {host:?}{names}: \
                 connect with a name the certificate lists, or issue the certificate for {host:?}"
            )
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            format!("the coordinator's certificate has expired ({c:?}): renew its --tls-cert")
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => format!(
            "the coordinator's certificate is not valid yet ({c:?}): check this machine's clock"
        ),
        other => format!("the coordinator's certificate was refused: {other:?}"),
    }
}

/// A one-line message for a failed connection or call to the coordinator at `url`: the
/// [`hint`] when there is one, then the error chain.
pub fn explain(url: &str, ca: Option<&Path>, err: &(dyn std::error::Error + 'static)) -> String {
    match hint(url, ca, err) {
        Some(h) => format!("{h} ({})", chain_text(err)),
        None => chain_text(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_remote_urls() {
        assert!(!plaintext_to_remote("http://127.0.0.1:7470"));
        assert!(!plaintext_to_remote("http://[::1]:7470"));
        assert!(!plaintext_to_remote("http://localhost:7470"));
        assert!(!plaintext_to_remote("https://203.0.113.5:7470"));
        assert!(plaintext_to_remote("http://203.0.113.5:7470"));
        assert!(plaintext_to_remote("http://coordinator.example:7470"));
        assert!(plaintext_to_remote("HTTP://[2001:db8::1]:7470"));
        assert_eq!(url_host("https://[::1]:7470").as_deref(), Some("::1"));
    }

    #[test]
    fn bad_urls_and_ca_with_plaintext_are_refused() {
        let e = endpoint("127.0.0.1:7470", None).unwrap_err().to_string();
        assert!(e.contains("expected http://HOST:PORT or https://"), "{e}");
        let e = endpoint("ftp://x:1", None).unwrap_err().to_string();
        assert!(e.contains("ftp://x:1"), "{e}");
        let e = endpoint("http://127.0.0.1:7470", Some(Path::new("/etc/ca.pem")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--ca /etc/ca.pem") && e.contains("https://"),
            "{e}"
        );
        assert!(endpoint("http://127.0.0.1:7470", None).is_ok());
        assert!(endpoint("https://coordinator.example:7470", None).is_ok());
    }

    #[test]
    fn unusable_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = endpoint("https://x:1", Some(&missing))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("CA file") && e.contains("missing.pem") && e.contains("cannot read"),
            "{e}"
        );
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "hello\n").unwrap();
        let e = read_ca(&junk).unwrap_err().to_string();
        assert!(
            e.contains("junk.pem") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = server_identity(&junk, &junk).unwrap_err().to_string();
        assert!(
            e.contains("TLS certificate") && e.contains("junk.pem"),
            "{e}"
        );

        let a = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let other_key = dir.path().join("other-key.pem");
        std::fs::write(&cert, a.cert.pem()).unwrap();
        std::fs::write(&key, a.signing_key.serialize_pem()).unwrap();
        std::fs::write(&other_key, b.signing_key.serialize_pem()).unwrap();
        server_identity(&cert, &key).unwrap();
        read_ca(&cert).unwrap();
        let e = server_identity(&cert, &junk).unwrap_err().to_string();
        assert!(
            e.contains("TLS key") && e.contains("junk.pem") && e.contains("no PEM private key"),
            "{e}"
        );
        let e = server_identity(&cert, &other_key).unwrap_err().to_string();
        assert!(e.contains("cert.pem") && e.contains("other-key.pem"), "{e}");
        // A key given as the certificate.
        let e = server_identity(&key, &key).unwrap_err().to_string();
        assert!(
            e.contains("TLS certificate") && e.contains("key.pem"),
            "{e}"
        );
    }

    #[test]
    fn hints_name_the_certificate_problem() {
        let unknown = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            RustlsError::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let h = hint("https://localhost:7470", None, &unknown).unwrap();
        assert!(
            h.contains("not signed by a CA this client trusts") && h.contains("--ca"),
            "{h}"
        );
        let h = hint(
            "https://localhost:7470",
            Some(Path::new("/x/ca.pem")),
            &unknown,
        )
        .unwrap();
        assert!(h.contains("/x/ca.pem"), "{h}");
        let name = RustlsError::InvalidCertificate(CertificateError::NotValidForName);
        let h = hint("https://127.0.0.1:7470", None, &name).unwrap();
        assert!(
            h.contains("not valid for the host name \"127.0.0.1\""),
            "{h}"
        );
        let plain = RustlsError::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
        let h = hint("https://127.0.0.1:7470", None, &plain).unwrap();
        assert!(h.contains("http://127.0.0.1:7470"), "{h}");
        let other = std::io::Error::other("connection refused");
        assert!(hint("https://127.0.0.1:7470", None, &other).is_none());
        // A plaintext client whose call was cancelled because the TLS server closed the
        // connection first (the text tonic gives hyper's cancelled call).
        let cancelled = std::io::Error::other("operation was canceled");
        let h = hint("http://127.0.0.1:7470", None, &cancelled).unwrap();
        assert!(
            h.contains("closed the plaintext connection") && h.contains("https://127.0.0.1:7470"),
            "{h}"
        );
        assert!(hint("https://127.0.0.1:7470", None, &cancelled).is_none());
    }
}
