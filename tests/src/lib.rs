//! Helpers for the end-to-end tests in `tests/tests/`: they run the real
//! `geoloc-coordinator`, `geoloc-probe-agent`s and `geoloc` on the lab's emulated Internet.
//!
//! Each test skips, printing why, when it is not root, when `/dev/net/tun` is missing, or
//! when the binaries are not built (`cargo build --workspace --bins` first).
use std::sync::{Mutex, MutexGuard};

use geoloc_lab::demo::{find_binary, DemoArgs};

/// One world at a time: the machine has 2 cores and the RTTs must stay honest.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why the end-to-end tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    if let Err(e) = geoloc_lab::netns::check_privileges() {
        return Some(e.to_string());
    }
    for b in ["geoloc", "geoloc-coordinator", "geoloc-probe-agent"] {
        if let Err(e) = find_binary(b, None) {
            return Some(format!("{e:#}"));
        }
    }
    None
}

/// Returns early from a test, printing why, when the lab cannot run.
#[macro_export]
macro_rules! require_lab {
    () => {
        if let Some(why) = $crate::skip_reason() {
            eprintln!("SKIPPED (end-to-end): {why}");
            return;
        }
    };
}

/// Demo arguments for a small, fast world.
pub fn small(probes: usize, targets: usize, seed: u64) -> DemoArgs {
    DemoArgs {
        probes,
        targets,
        seed,
        jitter_ms: 0.05,
        timeout_secs: 300,
        anycast_instances: 2,
        ..DemoArgs::default()
    }
}
