//! `deploy/install-probe.sh`, run for real (bash) in its modes that change nothing: bad
//! arguments are refused before anything happens, a host without systemd is refused
//! clearly, and `--dry-run` writes a configuration the agent itself accepts, never
//! showing the enrolment token. The installing run itself needs a systemd host (not here).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use geoloc_probe_agent::config::{AgentConfig, ConfigFlags, FileConfig};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/install-probe.sh")
}

fn run(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(script())
        .args(args)
        .env_remove("GEOLOC_PROBE_ENROLMENT_TOKEN")
        .output()
        .expect("bash runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const BASE: &[&str] = &[
    "--binary",
    "/bin/true",
    "--id",
    "par-1",
    "--lat",
    "48.8566",
    "--lon",
    "2.3522",
    "--coordinator",
    "https://coordinator.example.org:7470",
];

fn with(extra: &[&'static str]) -> Vec<&'static str> {
    BASE.iter().copied().chain(extra.iter().copied()).collect()
}

#[test]
fn help_lists_the_options() {
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = text(&out);
    for option in [
        "--deb",
        "--binary",
        "--enroll-token",
        "--enroll-token-file",
        "--enrolment-token",
        "--ca",
        "--dry-run",
        "CAP_NET_RAW",
    ] {
        assert!(t.contains(option), "--help misses {option}: {t}");
    }
}

#[test]
fn bad_arguments_exit_2_naming_what_is_wrong() {
    let cases: &[(Vec<&str>, &str)] = &[
        (vec!["--id", "x"], "--deb FILE or --binary FILE is required"),
        (
            BASE.iter()
                .map(|a| if *a == "par-1" { "bad id!" } else { a })
                .collect(),
            "--id must be",
        ),
        (
            BASE.iter()
                .map(|a| if *a == "48.8566" { "91" } else { a })
                .collect(),
            "--lat must be within -90..=90",
        ),
        (
            BASE.iter()
                .map(|a| if *a == "2.3522" { "east" } else { a })
                .collect(),
            "--lon must be a decimal number",
        ),
        (
            BASE.iter()
                .map(|a| {
                    if a.starts_with("https://") {
                        "http://coordinator.example.org:7470"
                    } else {
                        a
                    }
                })
                .collect(),
            "is plaintext",
        ),
        (
            with(&["--ca", "/nonexistent/ca.pem"]),
            "--ca /nonexistent/ca.pem",
        ),
        (with(&["--enroll-token", "a b"]), "enrolment token"),
        (with(&["--enrolment-token", "short"]), "enrolment token"),
        (
            with(&[
                "--enroll-token",
                "gle_0123456789",
                "--enroll-token-file",
                "-",
            ]),
            "not both",
        ),
        (
            with(&["--enroll-token-file", "/nonexistent/token"]),
            "--enroll-token-file /nonexistent/token: cannot read it",
        ),
        (with(&["--frobnicate"]), "unknown argument: --frobnicate"),
    ];
    for (args, expected) in cases {
        let out = run(args);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {t}");
        assert!(
            t.contains(expected),
            "{args:?}: expected {expected:?} in {t}"
        );
    }
}

#[test]
fn a_host_without_systemd_is_refused_with_exit_3() {
    if std::path::Path::new("/run/systemd/system").is_dir() {
        eprintln!("not applicable: this host runs systemd");
        return;
    }
    let out = run(&with(&["--enroll-token", "gle_0123456789"]));
    let t = text(&out);
    assert_eq!(out.status.code(), Some(3), "{t}");
    assert!(t.contains("systemd is not running here"), "{t}");
}

#[test]
fn dry_run_writes_a_config_the_agent_accepts_and_never_shows_the_token() {
    let token = "tok-secret-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let token_path = token_file.to_str().unwrap().to_string();
    let mut args = with(&["--dry-run", "--advertise-ipv4", "192.0.2.10"]);
    args.push("--enroll-token-file");
    args.push(&token_path);
    let out = run(&args);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(!t.contains(token), "the token is shown: {t}");
    // What would be written as /etc/geoloc/probe-agent.toml.
    let conf: String = t
        .lines()
        .skip_while(|l| !l.contains("would write /etc/geoloc/probe-agent.toml"))
        .skip(1)
        .map_while(|l| l.strip_prefix("[dry-run]   | "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(conf.contains("id = \"par-1\""), "{t}");
    let file = FileConfig::parse(&conf, "install-probe.sh output").expect("the agent parses it");
    let c = AgentConfig::resolve(&ConfigFlags::default(), &file, &HashMap::new())
        .expect("and accepts it");
    assert_eq!(
        c.identity().unwrap(),
        ("par-1".to_string(), 48.8566, 2.3522)
    );
    assert_eq!(c.coordinator, "https://coordinator.example.org:7470");
    assert_eq!(c.advertise_ipv4, Some("192.0.2.10".parse().unwrap()));
    // The token goes to the root-only env file, the unit runs unprivileged with CAP_NET_RAW.
    assert!(
        t.contains("would write /etc/geoloc/probe-agent.env (mode 0600, root:root"),
        "{t}"
    );
    assert!(t.contains("systemctl restart geoloc-probe-agent"), "{t}");
    let unit =
        std::fs::read_to_string(script().with_file_name("geoloc-probe-agent.service")).unwrap();
    for line in [
        "User=geoloc-probe",
        "AmbientCapabilities=CAP_NET_RAW",
        "CapabilityBoundingSet=CAP_NET_RAW",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=geoloc-probe-agent",
        "Environment=GEOLOC_PROBE_STATE_DIR=/var/lib/geoloc-probe-agent",
    ] {
        assert!(unit.lines().any(|l| l == line), "unit misses {line}");
    }
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let out = Command::new("bash")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/verify-units.sh"))
        .output()
        .unwrap();
    let t = text(&out);
    if out.status.code() == Some(3) {
        geoloc_testenv::skip(
            "units_pass_systemd_analyze_verify",
            "systemd-analyze not installed",
        );
        return;
    }
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("geoloc-probe-agent.service ok"), "{t}");
}
