//! The binary's configuration surface: `--print-config` (effective configuration, secrets
//! redacted), layer errors (exit 64 naming the key and its layer), completions, man pages.
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_geoloc-coordinator");

/// The binary with no `GEOLOC_COORDINATOR_*` from the test's own environment.
fn coordinator() -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("GEOLOC_COORDINATOR_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn print_config_shows_each_layer_and_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "ping-count = 5\nbatch-concurrency = 9\nprobe-token = \"file-secret\"\n",
    )
    .unwrap();
    let out = coordinator()
        .args(["--print-config", "--ping-count", "7"])
        .env("GEOLOC_COORDINATOR_CONFIG", &cfg)
        .env("GEOLOC_COORDINATOR_PING_COUNT", "6")
        .env("GEOLOC_COORDINATOR_MODE", "two-stage")
        .env(
            "GEOLOC_COORDINATOR_DATABASE",
            "postgres://geoloc:pw-secret@127.0.0.1/geoloc",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "ping-count = 7",
        "mode = \"two-stage\"",
        "batch-concurrency = 9",
        "heartbeat-interval-ms = 5000",
        "probe-token = \"<redacted>\"",
        "database = \"postgres://geoloc:***@127.0.0.1/geoloc\"",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
    assert!(!text.contains("secret"), "{text}");
}

#[test]
fn bad_values_exit_64_naming_the_key_and_layer() {
    let out = coordinator()
        .env("GEOLOC_COORDINATOR_BATCH_CONCURRENCY", "many")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("GEOLOC_COORDINATOR_BATCH_CONCURRENCY") && err.contains("environment"),
        "{err}"
    );
    let out = coordinator()
        .args(["--print-config", "--batch-concurrency", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("batch-concurrency 0 not in 1..=256")
            && err.contains("--batch-concurrency on the command line"),
        "{err}"
    );
}

#[test]
fn completions_and_man_page_name_the_flags() {
    let out = coordinator().args(["completions", "zsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let script = String::from_utf8_lossy(&out.stdout);
    for flag in ["--listen", "--database", "--probe-token", "--print-config"] {
        assert!(script.contains(flag), "completions lack {flag}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = coordinator().arg("man").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let page = std::fs::read_to_string(dir.path().join("geoloc-coordinator.1")).unwrap();
    assert!(
        page.contains("listen") && page.contains("GEOLOC_COORDINATOR"),
        "{page}"
    );
}
