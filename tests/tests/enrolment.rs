//! Per-probe enrolment with the real binaries on loopback, over TLS (a CA and a `localhost`
//! certificate made with rcgen at test time; nothing leaves 127.0.0.1). The coordinator
//! runs without `--probe-token`: per-probe credentials only.
//!
//! `geoloc-coordinator probes enroll` prints a one-time token; a real `geoloc-probe-agent`
//! exchanges it for its credential (kept in `--state-dir`, mode 0600) and registers; it is
//! stopped and started again and reconnects with the stored credential although the token
//! is used up; a second agent replaying the token is refused (exit 78, "already used") and
//! stores nothing; after `geoloc-coordinator probes revoke` the running agent is cut off
//! and stops (exit 78, "revoked"), and so does a fresh start with the stored credential.
//!
//! Needs the binaries (`cargo build --workspace --bins`) and root (the agent's ICMP
//! socket); otherwise SKIPPED, or a failure under `GEOLOC_REQUIRE_ENV=1`.
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use geoloc_e2e::{bins, Bins, Proc};
use geoloc_testenv::Daemon;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

const PROBE: &str = "e2e-par";

/// A CA (`ca.pem`) and the coordinator's certificate for `localhost` signed by it.
fn pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut ca = CertificateParams::new(Vec::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "geoloc enrolment test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (ca_path, cert_path, key_path) = (
        dir.join("ca.pem"),
        dir.join("coordinator.crt"),
        dir.join("coordinator.key"),
    );
    std::fs::write(&ca_path, ca_pem).unwrap();
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (ca_path, cert_path, key_path)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The world of one test: the coordinator over TLS on a fresh SQLite database.
struct World {
    b: Bins,
    dir: tempfile::TempDir,
    db: String,
    url: String,
    ca: PathBuf,
    _coordinator: Daemon,
}

impl World {
    fn start(b: Bins) -> World {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = pki(dir.path());
        let db = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("coordinator.sqlite").display()
        );
        let mut cmd = Command::new(&b.coordinator);
        cmd.args([
            "--database",
            &db,
            "--listen",
            "127.0.0.1:0",
            "--auth",
            "none",
        ])
        .args(["--allow-private", "--landmark-checks", "false"])
        .args([
            "--heartbeat-interval-ms",
            "300",
            "--probe-timeout-ms",
            "2000",
        ])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env_remove("GEOLOC_COORDINATOR_CONFIG")
        .env_remove("GEOLOC_COORDINATOR_PROBE_TOKEN");
        let coordinator = Daemon::spawn_echoing("coordinator", &mut cmd);
        let addr: std::net::SocketAddr = coordinator
            .stdout_after("listening on ", Duration::from_secs(60))
            .parse()
            .unwrap();
        World {
            url: format!("https://localhost:{}", addr.port()),
            b,
            dir,
            db,
            ca,
            _coordinator: coordinator,
        }
    }

    /// `geoloc-coordinator probes --database DB ARGS` (its own process), which must succeed.
    fn admin(&self, args: &[&str]) -> String {
        let out = Command::new(&self.b.coordinator)
            .args(["probes", "--database", &self.db])
            .args(args)
            .env_remove("GEOLOC_COORDINATOR_CONFIG")
            .env_remove("GEOLOC_COORDINATOR_DATABASE")
            .output()
            .unwrap();
        assert!(out.status.success(), "probes {args:?}: {}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    /// A real agent for [`PROBE`] keeping its credential in `state`, given `token` as
    /// `GEOLOC_PROBE_ENROLMENT_TOKEN`; its stderr goes to `log`.
    fn agent(&self, state: &Path, token: Option<&str>, log: &Path) -> Proc {
        let mut cmd = Command::new(&self.b.agent);
        cmd.args(["run", "--id", PROBE, "--lat=48.8566", "--lon=2.3522"])
            .args(["--coordinator", &self.url, "--allow-private"])
            .args(["--reconnect-min-ms", "200", "--reconnect-max-ms", "1000"])
            .arg("--ca")
            .arg(&self.ca)
            .arg("--state-dir")
            .arg(state)
            .env_remove("GEOLOC_PROBE_CONFIG")
            .env_remove("GEOLOC_PROBE_TOKEN")
            .env_remove("GEOLOC_PROBE_STATE_DIR")
            .env_remove("GEOLOC_PROBE_ENROLMENT_TOKEN")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap());
        if let Some(t) = token {
            cmd.env("GEOLOC_PROBE_ENROLMENT_TOKEN", t);
        }
        Proc(cmd.spawn().expect("spawn geoloc-probe-agent"))
    }

    /// Whether the coordinator lists [`PROBE`] as healthy (`geoloc probes --json` over TLS).
    fn healthy(&self) -> bool {
        let out = Command::new(&self.b.geoloc)
            .args(["probes", "--json", "--coordinator", &self.url])
            .arg("--ca")
            .arg(&self.ca)
            .env_remove("GEOLOC_CA")
            .env_remove("GEOLOC_API_KEY")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "geoloc probes: {}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .any(|p| p["probe_id"] == PROBE && p["healthy"] == serde_json::Value::Bool(true))
    }

    fn wait_healthy(&self, is: bool, what: &str, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.healthy() != is {
            assert!(
                Instant::now() < deadline,
                "{what} not within 60 s; the agent's log:\n{}",
                read(log)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Waits for the agent to stop with exit 78 (credential rejected) and returns its log.
fn expect_rejected(agent: &mut Proc, log: &Path, what: &str) -> String {
    let status = agent
        .exit_within(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("{what}: the agent still runs after 30 s:\n{}", read(log)));
    let log = read(log);
    assert_eq!(status.code(), Some(78), "{what}: {status:?}\n{log}");
    log
}

#[test]
fn agent_enrols_reconnects_with_its_credential_and_stops_when_revoked() {
    let test = "agent_enrols_reconnects_with_its_credential_and_stops_when_revoked";
    let Some(b) = bins(test) else { return };
    if !geoloc_testenv::is_root() {
        geoloc_testenv::skip(test, "not root: the probe agent needs its ICMP socket");
        return;
    }
    let w = World::start(b);
    let token = w
        .admin(&[
            "enroll", "--id", PROBE, "--lat", "48.8566", "--lon", "2.3522",
        ])
        .trim()
        .to_string();
    assert!(token.starts_with("gle_"), "{token}");
    let state = w.dir.path().join("state");
    let credential = state.join("credential");
    let log = w.dir.path().join("agent-1.log");

    // First start: the token is exchanged, the credential kept (0600), the probe registers.
    let mut agent = w.agent(&state, Some(&token), &log);
    w.wait_healthy(true, "the enrolled agent registered", &log);
    let stored = read(&credential);
    assert!(
        stored.contains("glc_") && stored.contains(PROBE) && !stored.contains(&token),
        "{stored}"
    );
    let mode = std::fs::metadata(&credential).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        read(&log).contains("enrolled: credential saved"),
        "{}",
        read(&log)
    );

    // Stopped (SIGTERM: exit 0), then started again with the token still in its
    // environment: it reconnects with the stored credential; the token is not sent again.
    agent.terminate();
    let status = agent.exit_within(Duration::from_secs(20)).expect("stops");
    assert!(status.success(), "{status:?}\n{}", read(&log));
    w.wait_healthy(false, "the stopped agent turned unhealthy", &log);
    let log2 = w.dir.path().join("agent-2.log");
    let mut agent = w.agent(&state, Some(&token), &log2);
    w.wait_healthy(true, "the restarted agent reconnected", &log2);
    assert!(
        read(&log2).contains("using the stored credential"),
        "{}",
        read(&log2)
    );
    assert_eq!(read(&credential), stored, "the credential was not replaced");

    // Another host replaying the used token is refused and keeps nothing.
    let other = w.dir.path().join("other-state");
    let log3 = w.dir.path().join("agent-3.log");
    let mut thief = w.agent(&other, Some(&token), &log3);
    let out = expect_rejected(&mut thief, &log3, "a replayed token");
    assert!(out.contains("already used"), "{out}");
    assert!(!other.join("credential").exists());
    assert!(w.healthy(), "the enrolled probe is untouched");

    // Revoked from another process: the running agent is cut off and stops, saying why.
    let revoked_at = Instant::now();
    assert!(w.admin(&["revoke", PROBE]).contains("revoked"));
    let out = expect_rejected(&mut agent, &log2, "after probes revoke");
    eprintln!(
        "the revoked agent stopped {} ms after `probes revoke` exited",
        revoked_at.elapsed().as_millis()
    );
    assert!(out.contains("was revoked"), "{out}");
    assert!(!w.healthy());

    // A fresh start with the stored credential is refused the same way.
    let log4 = w.dir.path().join("agent-4.log");
    let mut again = w.agent(&state, None, &log4);
    let out = expect_rejected(&mut again, &log4, "a restart after revocation");
    assert!(out.contains("was revoked"), "{out}");
    let list = w.admin(&["list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with(PROBE) && l.contains("revoked")),
        "{list}"
    );
}
