//! Helpers for the end-to-end tests in `tests/tests/`: they run the real
//! `geoloc-coordinator`, `geoloc-probe-agent`s and `geoloc` on the lab's emulated Internet.
//!
//! Each test skips, printing why, when it is not root, when `/dev/net/tun` is missing, or
//! when the binaries are not built (`cargo build --workspace --bins` first); under
//! `GEOLOC_REQUIRE_ENV=1` (set by `.ci/run`) the same test fails instead.
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use geoloc_lab::demo::{find_binary, DemoArgs, DemoWorld};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Row};

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

/// Returns early from test `$test` when the lab cannot run: prints a SKIPPED line with the
/// reason, or fails under `GEOLOC_REQUIRE_ENV=1` (CI) through [`geoloc_testenv::skip`].
#[macro_export]
macro_rules! require_lab {
    ($test:expr) => {
        if let Some(why) = $crate::skip_reason() {
            $crate::skip($test, &why);
            return;
        }
    };
}

pub use geoloc_testenv::skip;

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

/// How often the coordinator located one address, read from its own database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocateRuns {
    /// Locate runs started (one `results` row each, written before any probe is asked).
    pub started: usize,
    /// Of those, runs that finished (`status = 'done'`).
    pub done: usize,
    /// Probe answers recorded for this address's runs (`measurements`, purpose `locate`).
    pub measurements: usize,
}

/// The locate runs of every address in the coordinator's SQLite database (the world's
/// `geoloc.sqlite`, see `DemoWorld::start_coordinator`), read while it runs. Addresses
/// are parsed, so textual forms of one IPv6 address count together.
pub fn locate_runs(w: &DemoWorld) -> anyhow::Result<HashMap<IpAddr, LocateRuns>> {
    let db = w.tmp.path().join("geoloc.sqlite");
    anyhow::ensure!(db.exists(), "no coordinator database at {}", db.display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut conn = SqliteConnectOptions::new()
            .filename(&db)
            .read_only(true)
            .busy_timeout(Duration::from_secs(10))
            .connect()
            .await
            .with_context(|| format!("open {}", db.display()))?;
        let rows = sqlx::query(
            "SELECT r.ip, r.status, \
             (SELECT COUNT(*) FROM measurements m \
              WHERE m.result_id = r.result_id AND m.purpose = 'locate') AS answers \
             FROM results r",
        )
        .fetch_all(&mut conn)
        .await
        .context("read results")?;
        let mut out: HashMap<IpAddr, LocateRuns> = HashMap::new();
        for row in rows {
            let ip: String = row.try_get("ip")?;
            let status: String = row.try_get("status")?;
            let answers: i64 = row.try_get("answers")?;
            let ip: IpAddr = ip
                .parse()
                .with_context(|| format!("results.ip {ip:?} is not an address"))?;
            let e = out.entry(ip).or_default();
            e.started += 1;
            e.done += usize::from(status == "done");
            e.measurements += usize::try_from(answers).unwrap_or(0);
        }
        Ok(out)
    })
}

/// The three binaries of an end-to-end test.
pub struct Bins {
    pub coordinator: PathBuf,
    pub agent: PathBuf,
    pub geoloc: PathBuf,
}

/// The built binaries, or None after `geoloc_testenv::skip` (which fails under
/// `GEOLOC_REQUIRE_ENV=1`) naming what is missing.
pub fn bins(test: &str) -> Option<Bins> {
    let find = |n: &str| find_binary(n, None);
    match (
        find("geoloc-coordinator"),
        find("geoloc-probe-agent"),
        find("geoloc"),
    ) {
        (Ok(coordinator), Ok(agent), Ok(geoloc)) => Some(Bins {
            coordinator,
            agent,
            geoloc,
        }),
        (a, b, c) => {
            let why = [a.err(), b.err(), c.err()]
                .into_iter()
                .flatten()
                .map(|e| format!("{e:#}"))
                .collect::<Vec<_>>()
                .join("; ");
            geoloc_testenv::skip(test, &why);
            None
        }
    }
}

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Waits up to `limit` for the process to exit.
    pub fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(s) = self.0.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    pub fn terminate(&self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    }
}
