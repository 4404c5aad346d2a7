//! TLS on the gRPC port, with the real `geoloc-coordinator`, `geoloc-probe-agent` and
//! `geoloc` binaries on loopback. A CA and the coordinator's certificate (for `localhost`
//! only) are made at test time with rcgen in a temporary folder; nothing leaves 127.0.0.1
//! (the coordinator bound to 0.0.0.0 is never sent anything).
//!
//! - a real agent over https:// with `--ca` registers and answers a locate made by the CLI
//!   over https:// (CA from `GEOLOC_CA`); `geoloc probes` lists it;
//! - a plaintext client against the TLS coordinator, a client without the CA, a client with
//!   another CA, a client using a host name the certificate does not list and a TLS client
//!   against a plaintext coordinator each fail with an error that says why;
//! - the coordinator refuses plaintext on 0.0.0.0 (exit 64, naming the two ways out),
//!   starts there with `--insecure-plaintext` or with TLS, and names an unusable
//!   certificate or key file (exit 64).
//!
//! Needs the binaries (`cargo build --workspace --bins`); the locate test needs root (the
//! agent's ICMP socket). Otherwise each test prints SKIPPED, or fails under
//! `GEOLOC_REQUIRE_ENV=1`.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use geoloc_e2e::{bins, Bins, Proc};
use geoloc_testenv::Daemon;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

const TOKEN: &str = "tls-test-token";

/// A CA, the coordinator's certificate for `localhost` signed by it, and an unrelated CA.
struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn new_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, issuer) = new_ca("geoloc test CA");
    let (other_pem, _) = new_ca("some other CA");
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("ca.pem"), ca_pem).unwrap();
    std::fs::write(p("other-ca.pem"), other_pem).unwrap();
    std::fs::write(p("coordinator.crt"), cert.pem()).unwrap();
    std::fs::write(p("coordinator.key"), key.serialize_pem()).unwrap();
    Pki {
        ca: p("ca.pem"),
        other_ca: p("other-ca.pem"),
        cert: p("coordinator.crt"),
        key: p("coordinator.key"),
        dir,
    }
}

/// Starts the coordinator with `args` on a fresh SQLite database in `dir` and returns it
/// with the address it printed (`listening on ADDR`).
fn coordinator(b: &Bins, dir: &Path, args: &[&str]) -> (Daemon, SocketAddr) {
    let db = format!(
        "sqlite://{}?mode=rwc",
        dir.join(format!("c{}.sqlite", rand_suffix())).display()
    );
    let mut cmd = Command::new(&b.coordinator);
    cmd.args([
        "--database",
        &db,
        "--allow-private",
        "--probe-token",
        TOKEN,
        "--landmark-checks",
        "false",
        "--heartbeat-interval-ms",
        "300",
        "--probe-timeout-ms",
        "2000",
    ])
    .args(args)
    .env_remove("GEOLOC_COORDINATOR_CONFIG");
    let proc = Daemon::spawn_echoing("coordinator", &mut cmd);
    let addr = proc.stdout_after("listening on ", Duration::from_secs(60));
    (proc, addr.parse().expect("an address"))
}

/// A coordinator serving TLS with `pki`'s certificate on 127.0.0.1 (any port), without API
/// keys (loopback), with `extra` arguments.
fn tls_coordinator(b: &Bins, pki: &Pki, extra: &[&str]) -> (Daemon, SocketAddr) {
    let (cert, key) = (pki.cert.to_str().unwrap(), pki.key.to_str().unwrap());
    let mut args = vec!["--listen", "127.0.0.1:0", "--auth", "none"];
    args.extend(["--tls-cert", cert, "--tls-key", key]);
    args.extend(extra);
    coordinator(b, pki.dir.path(), &args)
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// `geoloc ARGS` with `GEOLOC_CA` set to `ca` (or unset), bounded in time.
fn geoloc(b: &Bins, args: &[&str], ca: Option<&Path>) -> Output {
    let mut cmd = Command::new(&b.geoloc);
    cmd.args(args)
        .env_remove("GEOLOC_CA")
        .env_remove("GEOLOC_COORDINATOR")
        .stdin(Stdio::null());
    if let Some(ca) = ca {
        cmd.env("GEOLOC_CA", ca);
    }
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("geoloc {args:?} did not finish within 120 s");
        }
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn agent_and_cli_over_tls_register_and_locate() {
    let test = "agent_and_cli_over_tls_register_and_locate";
    let Some(b) = bins(test) else { return };
    if !geoloc_testenv::is_root() {
        geoloc_testenv::skip(test, "not root: the probe agent needs its ICMP socket");
        return;
    }
    let pki = pki();
    let (_c, addr) = tls_coordinator(&b, &pki, &[]);
    let url = format!("https://localhost:{}", addr.port());
    let agent_log = pki.dir.path().join("agent.log");
    let _agent = Proc(
        Command::new(&b.agent)
            .args([
                "run",
                "--id",
                "tls-paris",
                "--lat=48.8566",
                "--lon=2.3522",
                "--coordinator",
                &url,
                "--ca",
                pki.ca.to_str().unwrap(),
                "--allow-private",
            ])
            .env("GEOLOC_PROBE_TOKEN", TOKEN)
            .env_remove("GEOLOC_PROBE_CONFIG")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&agent_log).unwrap())
            .spawn()
            .expect("spawn geoloc-probe-agent"),
    );
    // Registered and healthy, seen through `geoloc probes` over TLS (CA from --ca).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = geoloc(
            &b,
            &[
                "probes",
                "--json",
                "--coordinator",
                &url,
                "--ca",
                pki.ca.to_str().unwrap(),
            ],
            None,
        );
        assert!(out.status.success(), "geoloc probes: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let healthy =
            v.as_array().unwrap().iter().any(|p| {
                p["probe_id"] == "tls-paris" && p["healthy"] == serde_json::Value::Bool(true)
            });
        if healthy {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not register over TLS within 60 s; its log:\n{}",
            std::fs::read_to_string(&agent_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // A locate over TLS, the CA from GEOLOC_CA; the agent measures and answers.
    let out = geoloc(
        &b,
        &["locate", "127.0.0.1", "--json", "--coordinator", &url],
        Some(&pki.ca),
    );
    assert!(
        out.status.success(),
        "geoloc locate over TLS: {}\nagent log:\n{}",
        stderr(&out),
        std::fs::read_to_string(&agent_log).unwrap_or_default()
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["ip"], "127.0.0.1", "{line}");
    assert_eq!(line["probes_used"], 1, "{line}");
    assert_eq!(line["nearest_probe"], "tls-paris", "{line}");
    assert!(line["solution"].is_object(), "{line}");
}

#[test]
fn wrong_transport_or_certificate_is_refused_with_a_clear_error() {
    let test = "wrong_transport_or_certificate_is_refused_with_a_clear_error";
    let Some(b) = bins(test) else { return };
    let pki = pki();
    let (_c, addr) = tls_coordinator(&b, &pki, &[]);
    let port = addr.port();
    let probes = |url: &str, ca: Option<&Path>| {
        let out = geoloc(&b, &["probes", "--coordinator", url], ca);
        assert_eq!(out.status.code(), Some(2), "{url}: {}", stderr(&out));
        stderr(&out)
    };
    // The right CA works (sanity: the failures below are about what they change).
    let ok = geoloc(
        &b,
        &[
            "probes",
            "--coordinator",
            &format!("https://localhost:{port}"),
        ],
        Some(&pki.ca),
    );
    assert!(ok.status.success(), "{}", stderr(&ok));

    let e = probes(&format!("http://127.0.0.1:{port}"), None);
    assert!(
        e.contains("closed the plaintext connection") && e.contains("use https://127.0.0.1:"),
        "plaintext client against TLS: {e}"
    );
    let e = probes(&format!("https://localhost:{port}"), None);
    assert!(
        e.contains("not signed by a CA this client trusts") && e.contains("--ca FILE"),
        "client without the CA: {e}"
    );
    let e = probes(&format!("https://localhost:{port}"), Some(&pki.other_ca));
    assert!(
        e.contains("not signed by the CA in") && e.contains("other-ca.pem"),
        "client with another CA: {e}"
    );
    let e = probes(&format!("https://127.0.0.1:{port}"), Some(&pki.ca));
    assert!(
        e.contains("not valid for the host name \"127.0.0.1\"") && e.contains("localhost"),
        "host name the certificate does not list: {e}"
    );
    let e = probes(&format!("http://localhost:{port}"), Some(&pki.ca));
    assert!(
        e.contains("is plaintext http://") && e.contains("https://"),
        "a CA with an http:// URL: {e}"
    );

    // A TLS client against a plaintext coordinator.
    let (_p, plain) = coordinator(
        &b,
        pki.dir.path(),
        &["--listen", "127.0.0.1:0", "--auth", "none"],
    );
    let e = probes(
        &format!("https://localhost:{}", plain.port()),
        Some(&pki.ca),
    );
    assert!(
        e.contains("did not answer with TLS") && e.contains("use http://localhost:"),
        "TLS client against plaintext: {e}"
    );
}

#[test]
fn coordinator_serves_plaintext_only_on_loopback_unless_told() {
    let test = "coordinator_serves_plaintext_only_on_loopback_unless_told";
    let Some(b) = bins(test) else { return };
    let pki = pki();
    let db = format!(
        "sqlite://{}?mode=rwc",
        pki.dir.path().join("x.sqlite").display()
    );
    let run = |args: &[&str]| {
        Command::new(&b.coordinator)
            .args(["--database", &db])
            .args(args)
            .env_remove("GEOLOC_COORDINATOR_CONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run(&["--listen", "0.0.0.0:0"]);
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(64), "{e}");
    assert!(
        e.contains("refusing to serve plaintext gRPC on 0.0.0.0:0")
            && e.contains("--tls-cert FILE --tls-key FILE")
            && e.contains("--insecure-plaintext"),
        "{e}"
    );
    // Half of the TLS pair.
    let out = run(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        pki.cert.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("tls-cert is set without tls-key"));
    // Unusable files are named.
    let junk = pki.dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let out = run(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        junk.to_str().unwrap(),
        "--tls-key",
        pki.key.to_str().unwrap(),
    ]);
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(64), "{e}");
    assert!(
        e.contains("TLS certificate") && e.contains("junk.pem"),
        "{e}"
    );
    let missing = pki.dir.path().join("missing.key");
    let out = run(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        pki.cert.to_str().unwrap(),
        "--tls-key",
        missing.to_str().unwrap(),
    ]);
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(64), "{e}");
    assert!(e.contains("TLS key") && e.contains("missing.key"), "{e}");

    // With --insecure-plaintext, or with TLS, it binds 0.0.0.0 (and is sent nothing).
    let (mut c, addr) = coordinator(
        &b,
        pki.dir.path(),
        &["--listen", "0.0.0.0:0", "--insecure-plaintext"],
    );
    assert!(addr.ip().is_unspecified(), "{addr}");
    assert!(c.child().try_wait().unwrap().is_none(), "it keeps serving");
    let (mut t, addr) = coordinator(
        &b,
        pki.dir.path(),
        &[
            "--listen",
            "0.0.0.0:0",
            "--tls-cert",
            pki.cert.to_str().unwrap(),
            "--tls-key",
            pki.key.to_str().unwrap(),
        ],
    );
    assert!(addr.ip().is_unspecified(), "{addr}");
    assert!(t.child().try_wait().unwrap().is_none(), "it keeps serving");
}

/// The web interface (`--http-listen`) works when the gRPC port serves TLS: it reaches the
/// coordinator through its private loopback port, not through the TLS port.
#[test]
fn web_interface_works_beside_a_tls_grpc_port() {
    use std::io::{Read, Write};
    let test = "web_interface_works_beside_a_tls_grpc_port";
    let Some(b) = bins(test) else { return };
    let pki = pki();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let web = format!("127.0.0.1:{port}");
    let (_c, _) = tls_coordinator(&b, &pki, &["--http-listen", &web]);
    let mut s = std::net::TcpStream::connect(&web).expect("the web interface is up");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(format!("GET /api/probes HTTP/1.0\r\nHost: {web}\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.0 200"), "{out}");
    assert!(out.contains("\"probes\":[]"), "{out}");
}
