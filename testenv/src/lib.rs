//! What a test does when the machine lacks something it needs (root, PostgreSQL,
//! `setpriv`, `/dev/net/tun`, the data in `../shared`, an IPv6 loopback ...).
//!
//! On a developer's machine the test prints one `SKIPPED <test>: <why>` line and passes.
//! Under `GEOLOC_REQUIRE_ENV=1` (set by `.ci/run`) the same call panics, so CI can never
//! report a test as passed that did not run.
//!
//! ```no_run
//! fn needs_root() {
//!     if !geoloc_testenv::is_root() {
//!         geoloc_testenv::skip("needs_root", "needs root");
//!         return;
//!     }
//! }
//! ```

use std::path::{Path, PathBuf};

pub mod daemon;
pub mod http;

pub use daemon::Daemon;

/// Name of the environment variable that turns every skip into a failure.
pub const REQUIRE_ENV: &str = "GEOLOC_REQUIRE_ENV";

/// True when `GEOLOC_REQUIRE_ENV` is set to anything but empty or `0`.
pub fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Reports that `test` cannot run because of `why`: prints a SKIPPED line, or panics when
/// [`required`]. The caller returns right after.
#[track_caller]
pub fn skip(test: &str, why: &str) {
    if required() {
        panic!("{test}: {why} ({REQUIRE_ENV} is set, so a missing environment is a failure)");
    }
    eprintln!("SKIPPED {test}: {why}");
}

/// True when the effective user is root (from `/proc/self/status`).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// `../shared/data/<name>` seen from the workspace root (the crate's manifest dir is one
/// level below it), when it exists. `GEOLOC_SHARED_DATA` overrides the `../shared/data`
/// folder.
pub fn shared_data(name: &str) -> Option<PathBuf> {
    let base = match std::env::var_os("GEOLOC_SHARED_DATA") {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join("../shared/data"),
    };
    let p = base.join(name);
    p.exists().then_some(p)
}

/// The workspace root: the folder above this crate's manifest.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testenv lives one level below the workspace root")
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let m = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(m.contains("[workspace]"));
    }

    #[test]
    fn skip_panics_only_when_required() {
        // Only this test touches the variable in this binary.
        std::env::remove_var(REQUIRE_ENV);
        skip("t", "nothing missing really");
        std::env::set_var(REQUIRE_ENV, "1");
        let r = std::panic::catch_unwind(|| skip("t", "missing thing"));
        std::env::set_var(REQUIRE_ENV, "0");
        assert!(!required());
        std::env::remove_var(REQUIRE_ENV);
        let msg = *r.unwrap_err().downcast::<String>().unwrap();
        assert!(msg.contains("missing thing"), "{msg}");
    }
}
