//! Shell completions and man pages of `geoloc` (hidden `completions SHELL` and `man DIR`).
use std::process::Command;

fn geoloc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_geoloc"))
}

#[test]
fn completions_name_every_subcommand_and_their_flags() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = geoloc().args(["completions", shell]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{shell}: {out:?}");
        let script = String::from_utf8_lossy(&out.stdout);
        for word in ["locate", "audit", "probes", "solve", "eval-anycast", "lab"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
        // fish spells a long flag `-l coordinator`, the others `--coordinator`.
        let flag = if shell == "fish" {
            "-l coordinator"
        } else {
            "--coordinator"
        };
        assert!(script.contains(flag), "{shell} completions lack {flag}");
    }
    let out = geoloc().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn man_pages_one_per_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = geoloc().arg("man").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for page in [
        "geoloc.1",
        "geoloc-locate.1",
        "geoloc-audit.1",
        "geoloc-lab.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page} is not roff"
        );
    }
    let audit = std::fs::read_to_string(dir.path().join("geoloc-audit.1")).unwrap();
    assert!(audit.contains("retry"), "{audit}");
    let help = geoloc().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        !help.contains("completions") && !help.contains("\n  man"),
        "{help}"
    );
}
