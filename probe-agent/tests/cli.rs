//! The binary's configuration handling: one clear message and exit 64 on invalid
//! configuration; precedence through real flags, environment and file.

use std::io::Write;
use std::process::Command;

fn agent() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_geoloc-probe-agent"));
    // A clean environment for GEOLOC_PROBE_*: only what each test sets.
    for (k, _) in std::env::vars() {
        if k.starts_with("GEOLOC_PROBE_") {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "error");
    c
}

fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

#[test]
fn run_without_identity_exits_64_naming_the_option() {
    let out = agent().arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("id is required") && err.contains("GEOLOC_PROBE_ID"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one clear message: {err}");
}

#[test]
fn unknown_key_in_file_exits_64() {
    let f = config_file("id = \"p1\"\nmax-tll = 3\n");
    let out = agent()
        .args(["check", "--config"])
        .arg(f.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max-tll"), "{err}");
}

#[test]
fn bad_env_value_exits_64_naming_the_variable() {
    let out = agent()
        .arg("check")
        .env("GEOLOC_PROBE_PING_COUNT", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("GEOLOC_PROBE_PING_COUNT"), "{err}");
}

#[test]
fn check_shows_precedence_and_redacts_the_token() {
    let f = config_file("id = \"from-file\"\nmax-ttl = 20\nping-count = 7\ntoken = \"t0p\"\n");
    let out = agent()
        .args(["check", "--max-ttl", "12", "--config"])
        .arg(f.path())
        .env("GEOLOC_PROBE_MAX_TTL", "15")
        .env("GEOLOC_PROBE_PING_COUNT", "9")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("max-ttl = 12\n"), "{stdout}");
    assert!(stdout.contains("ping-count = 9\n"), "{stdout}");
    assert!(stdout.contains("\"from-file\""), "{stdout}");
    assert!(
        !stdout.contains("t0p") && stdout.contains("<redacted>"),
        "{stdout}"
    );
}

#[test]
fn print_config_prints_the_effective_toml_without_needing_an_identity() {
    let out = agent()
        .args(["run", "--print-config", "--ping-count", "4"])
        .env("GEOLOC_PROBE_TOKEN", "hunter2")
        .env("GEOLOC_PROBE_TCP_PORTS", "8443,8080")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ping-count = 4\n"), "{stdout}");
    assert!(stdout.contains("tcp-ports = [8443, 8080]\n"), "{stdout}");
    assert!(
        stdout.contains("token = \"<redacted>\"\n") && !stdout.contains("hunter2"),
        "{stdout}"
    );
    // The printed configuration is a valid configuration file.
    let f = config_file(&stdout.replace("<redacted>", "x"));
    let out = agent()
        .args(["run", "--print-config", "--config"])
        .arg(f.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), stdout);
}

#[test]
fn completions_and_man_pages_name_the_subcommands_and_flags() {
    let out = agent().args(["completions", "bash"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let script = String::from_utf8_lossy(&out.stdout);
    for word in ["run", "measure", "check", "--max-ttl", "--print-config"] {
        assert!(script.contains(word), "completion script lacks {word}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = agent().arg("man").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let page = std::fs::read_to_string(dir.path().join("geoloc-probe-agent-run.1")).unwrap();
    assert!(
        page.contains("max\\-ttl") || page.contains("max-ttl"),
        "{page}"
    );
    let main = std::fs::read_to_string(dir.path().join("geoloc-probe-agent.1")).unwrap();
    assert!(main.contains("measure"), "{main}");
    // Hidden from the help: they are for packagers.
    let help = agent().arg("--help").output().unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains("completions"));
}

/// The agent as built for packages and the lab has no fault-injection code (the test-only
/// `fault-injection` feature is off by default).
#[cfg(not(feature = "fault-injection"))]
#[test]
fn the_default_build_has_no_fault_injection_code() {
    let bin = std::fs::read(env!("CARGO_BIN_EXE_geoloc-probe-agent")).unwrap();
    for needle in [
        b"GEOLOC_FAULT_DELAY_MS".as_slice(),
        b"GEOLOC_FAULT_HONEST_TARGETS",
        b"FAULT INJECTION BUILD",
    ] {
        assert!(
            !bin.windows(needle.len()).any(|w| w == needle),
            "the agent binary contains {:?}",
            String::from_utf8_lossy(needle)
        );
    }
}
