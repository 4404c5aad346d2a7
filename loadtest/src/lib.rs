//! `geoloc loadtest`: how much one coordinator takes. Starts the real
//! `geoloc-coordinator` binary on a loopback port (SQLite or a fresh PostgreSQL schema),
//! connects N simulated probes as in-process gRPC clients of `ProbeService` (each its own
//! registered session, answering pings with RTTs from the lab's delay model), runs
//! simulated clients (locates at a rate, an audit as one `LocateBatch`) through the client
//! API, and measures: probes held, the coordinator's memory and memory per probe, results
//! ingested per second, dispatch latency (locate start to request at a probe) p50/p99,
//! locates per second and CPU seconds per 1,000 results. See README.md.
//!
//! Links no coordinator code: only the wire API (`geoloc-proto`) and the lab's delay model.
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod clients;
pub mod coordinator;
pub mod delay;
pub mod error;
pub mod fleet;
pub mod report;

pub use error::{Error, Result};
pub use report::Report;

use coordinator::{Backend, Coordinator, Launch, PgSchema};
use report::{Calls, Cpu, Latency, Memory, Results};

/// Bounds of the options: a load test stays on one machine.
pub mod limits {
    /// Most simulated probes.
    pub const MAX_PROBES: u64 = 20_000;
    /// Most locates a minute.
    pub const MAX_LOCATES_PER_MINUTE: u32 = 60_000;
    /// Longest workload, s.
    pub const MAX_DURATION_S: u64 = 3_600;
    /// Most audit addresses (one `LocateBatch`; the client message limit fits 100,000).
    pub const MAX_AUDIT: u64 = 100_000;
    /// Longest wait for the fleet to connect, s.
    pub const MAX_RAMP_S: u64 = 3_600;
}

/// Which database the coordinator runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    Sqlite,
    Postgres,
}

/// `geoloc loadtest` options.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadtestArgs {
    /// Simulated probes (1..=20000).
    #[arg(long, default_value_t = 100)]
    pub probes: u64,
    /// Locates a minute, each of a new address, for --duration-s (0..=60000).
    #[arg(long, default_value_t = 60)]
    pub locates_per_minute: u32,
    /// How long the locates run, s (1..=3600).
    #[arg(long, default_value_t = 30)]
    pub duration_s: u64,
    /// Addresses of one audit (LocateBatch) run beside the locates (0..=100000).
    #[arg(long, default_value_t = 0)]
    pub audit: u64,
    /// Addresses of the audit measured at the same time (1..=256).
    #[arg(long, default_value_t = 16)]
    pub audit_concurrency: u32,
    /// Most vantage points per locate (0 = every healthy probe, the coordinator's `all`).
    #[arg(long, default_value_t = 0)]
    pub budget: u32,
    /// Per-probe budget asked in every locate, ms (0 = the coordinator's default).
    #[arg(long, default_value_t = 0)]
    pub timeout_ms: u32,
    /// Database of the coordinator.
    #[arg(long, value_enum, default_value_t = BackendArg::Sqlite)]
    pub backend: BackendArg,
    /// PostgreSQL database for --backend postgres (a fresh schema is made in it with `psql`
    /// and dropped at the end).
    #[arg(
        long,
        env = "GEOLOC_LOADTEST_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pub postgres_url: String,
    /// Folder with `geoloc-coordinator` (default: next to this program, then PATH).
    #[arg(long, env = "GEOLOC_BIN_DIR", value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Heartbeat interval the coordinator asks of the probes, ms.
    #[arg(long, default_value_t = 5_000)]
    pub heartbeat_ms: u32,
    /// Give up when the fleet is not connected after this long, s (1..=3600).
    #[arg(long, default_value_t = 600)]
    pub ramp_timeout_s: u64,
    /// Seed of the probes' and targets' positions and delays.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the report as JSON to FILE (schema in loadtest/README.md).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

impl Default for LoadtestArgs {
    fn default() -> Self {
        LoadtestArgs {
            probes: 100,
            locates_per_minute: 60,
            duration_s: 30,
            audit: 0,
            audit_concurrency: 16,
            budget: 0,
            timeout_ms: 0,
            backend: BackendArg::Sqlite,
            postgres_url: "postgres://postgres@127.0.0.1:5432/test".into(),
            bin_dir: None,
            heartbeat_ms: 5_000,
            ramp_timeout_s: 600,
            seed: 1,
            json: None,
        }
    }
}

impl LoadtestArgs {
    /// Every bound, with a message naming the option.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Options(m));
        if !(1..=limits::MAX_PROBES).contains(&self.probes) {
            return bad(format!(
                "--probes {} not in 1..={} (one machine; more is not a load test of one replica)",
                self.probes,
                limits::MAX_PROBES
            ));
        }
        if self.locates_per_minute > limits::MAX_LOCATES_PER_MINUTE {
            return bad(format!(
                "--locates-per-minute {} above {}",
                self.locates_per_minute,
                limits::MAX_LOCATES_PER_MINUTE
            ));
        }
        if !(1..=limits::MAX_DURATION_S).contains(&self.duration_s) {
            return bad(format!(
                "--duration-s {} not in 1..={}",
                self.duration_s,
                limits::MAX_DURATION_S
            ));
        }
        if self.audit > limits::MAX_AUDIT {
            return bad(format!(
                "--audit {} above {}",
                self.audit,
                limits::MAX_AUDIT
            ));
        }
        if !(1..=256).contains(&self.audit_concurrency) {
            return bad(format!(
                "--audit-concurrency {} not in 1..=256",
                self.audit_concurrency
            ));
        }
        if u64::from(self.budget) > self.probes {
            return bad(format!(
                "--budget {} above --probes {}",
                self.budget, self.probes
            ));
        }
        if self.timeout_ms != 0 && !(50..=60_000).contains(&self.timeout_ms) {
            return bad(format!(
                "--timeout-ms {} not 0 or in 50..=60000",
                self.timeout_ms
            ));
        }
        if !(100..=600_000).contains(&self.heartbeat_ms) {
            return bad(format!(
                "--heartbeat-ms {} not in 100..=600000",
                self.heartbeat_ms
            ));
        }
        if !(1..=limits::MAX_RAMP_S).contains(&self.ramp_timeout_s) {
            return bad(format!(
                "--ramp-timeout-s {} not in 1..={}",
                self.ramp_timeout_s,
                limits::MAX_RAMP_S
            ));
        }
        Ok(())
    }
}

/// Runs a load test on its own tokio runtime, prints the summary and writes the JSON
/// report when asked.
pub fn run_blocking(a: LoadtestArgs) -> Result<Report> {
    a.check()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::io("starting the tokio runtime"))?;
    let report = rt.block_on(run(a.clone()))?;
    print!("{}", report.text());
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::Options(format!("serializing the report: {e}")))?;
        std::fs::write(path, text).map_err(Error::io(format!("writing {}", path.display())))?;
    }
    Ok(report)
}

/// How long ListProbes is polled for every probe to show healthy.
const HEALTHY_WAIT: Duration = Duration::from_secs(60);

/// Runs one load test (see the crate doc).
pub async fn run(a: LoadtestArgs) -> Result<Report> {
    a.check()?;
    let tmp = tempfile::Builder::new()
        .prefix("geoloc-loadtest-")
        .tempdir()
        .map_err(Error::io("creating a temporary folder"))?;
    let backend = match a.backend {
        BackendArg::Sqlite => Backend::Sqlite,
        BackendArg::Postgres => Backend::Postgres {
            url: a.postgres_url.clone(),
        },
    };
    let mut schema = None;
    let database_url = match &backend {
        Backend::Sqlite => format!(
            "sqlite://{}?mode=rwc",
            tmp.path().join("geoloc.sqlite").display()
        ),
        Backend::Postgres { url } => {
            let s = PgSchema::create(url)?;
            let u = s.database_url();
            schema = Some(s);
            u
        }
    };
    let binary = coordinator::find_binary("geoloc-coordinator", a.bin_dir.as_deref())?;
    let token = format!("loadtest-{}", std::process::id());
    let log_file = tmp.path().join("coordinator.log");
    let launch = Launch {
        binary,
        database_url,
        probe_token: token.clone(),
        max_probes: a.probes as u32,
        // Registration is not what is measured: let every probe in at once.
        new_probes_per_s: (a.probes as u32).clamp(20, 100_000),
        heartbeat_interval_ms: a.heartbeat_ms,
        log_file: log_file.clone(),
    };
    let result = measure(&a, &backend, &launch, &token).await;
    if let Some(mut s) = schema {
        let dropped = s.drop_now();
        if result.is_ok() {
            dropped?;
        }
    }
    if result.is_err() {
        // Keep the coordinator's log for the reader of the error.
        let kept = std::env::temp_dir().join(format!(
            "geoloc-loadtest-{}-coordinator.log",
            std::process::id()
        ));
        if std::fs::copy(&log_file, &kept).is_ok() {
            eprintln!(
                "geoloc loadtest: the coordinator's log is in {}",
                kept.display()
            );
        }
    }
    result
}

async fn measure(
    a: &LoadtestArgs,
    backend: &Backend,
    launch: &Launch,
    token: &str,
) -> Result<Report> {
    let mut coord = Coordinator::start(launch)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = coord.usage()?;
    let world = Arc::new(delay::World::new(a.seed));
    let shared = Arc::new(fleet::Shared::default());

    let ramp = Instant::now();
    let fleet = fleet::Fleet::start(fleet::FleetSpec {
        coordinator: coord.addr,
        probes: a.probes as usize,
        token: token.to_string(),
        world: Arc::clone(&world),
        shared: Arc::clone(&shared),
        ramp_timeout: Duration::from_secs(a.ramp_timeout_s),
    })
    .await?;
    let ramp_s = ramp.elapsed().as_secs_f64();
    let mut client = clients::connect(coord.addr).await?;
    let mut held = 0;
    let wait = Instant::now();
    while wait.elapsed() < HEALTHY_WAIT {
        held = clients::probes_held(&mut client).await?;
        if held >= a.probes {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held_usage = coord.usage()?;

    let load = clients::LocateLoad {
        per_minute: a.locates_per_minute,
        duration: Duration::from_secs(a.duration_s),
        timeout_ms: a.timeout_ms,
        budget: a.budget,
        first_target: 0,
    };
    let work = Instant::now();
    let cpu0 = coord.usage()?.cpu_s;
    let locates = (a.locates_per_minute > 0).then(|| {
        tokio::spawn(clients::run_locates(
            client.clone(),
            Arc::clone(&world),
            Arc::clone(&shared),
            load,
        ))
    });
    let audit = (a.audit > 0).then(|| {
        tokio::spawn(clients::run_audit(
            client.clone(),
            Arc::clone(&world),
            Arc::clone(&shared),
            a.audit,
            a.audit_concurrency,
            load,
            fleet::AUDIT_FIRST_TARGET,
        ))
    });
    let join = |h: Option<tokio::task::JoinHandle<clients::Tally>>| async move {
        match h {
            Some(h) => h
                .await
                .map(Some)
                .map_err(|e| Error::Client(format!("client task: {e}"))),
            None => Ok(None),
        }
    };
    let locates = join(locates).await?.unwrap_or_default();
    let audit = join(audit).await?;
    let work_s = work.elapsed().as_secs_f64();
    let end = coord.usage()?;
    let held_end = clients::probes_held(&mut client).await.unwrap_or(0);
    fleet.stop().await;
    if let Some(status) = coord.exited() {
        return Err(Error::Coordinator(format!(
            "exited during the run ({status})"
        )));
    }

    let ingested = locates.probe_answers + audit.as_ref().map_or(0, |t| t.probe_answers);
    let cpu_s = end.cpu_s - cpu0;
    let calls = |t: &clients::Tally| Calls {
        asked: t.asked,
        answered: t.answered,
        failed: t.failed,
        per_s: if t.wall.as_secs_f64() > 0.0 {
            t.answered as f64 / t.wall.as_secs_f64()
        } else {
            0.0
        },
        wall_s: t.wall.as_secs_f64(),
        latency_ms: Latency::of(t.latency_ms.clone()),
    };
    let mut errors = locates.errors.clone();
    if let Some(t) = &audit {
        errors.extend(t.errors.iter().cloned());
    }
    errors.truncate(10);
    Ok(Report {
        schema: report::SCHEMA,
        backend: backend.name().into(),
        replicas: 1,
        probes: a.probes,
        probes_held: held,
        probes_held_end: held_end,
        ramp_s,
        memory: Memory {
            idle_rss_bytes: idle.rss_bytes,
            held_rss_bytes: held_usage.rss_bytes,
            end_rss_bytes: end.rss_bytes,
            peak_rss_bytes: end.hwm_bytes,
            per_probe_bytes: held_usage.rss_bytes.saturating_sub(idle.rss_bytes) as f64
                / a.probes as f64,
        },
        locates: calls(&locates),
        audit: audit.as_ref().map(calls),
        results: Results {
            sent: shared.results_sent.load(Ordering::Relaxed),
            ingested,
            per_s: if work_s > 0.0 {
                ingested as f64 / work_s
            } else {
                0.0
            },
            unknown_targets: shared.unknown_targets.load(Ordering::Relaxed),
        },
        dispatch_ms: Latency::of(shared.take_dispatch()),
        cpu: Cpu {
            seconds: cpu_s,
            per_1000_results: (ingested > 0).then(|| cpu_s / (ingested as f64 / 1000.0)),
        },
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_options_are_refused_with_the_option_named() {
        let ok = LoadtestArgs::default();
        ok.check().unwrap();
        let cases: Vec<(LoadtestArgs, &str)> = vec![
            (
                LoadtestArgs {
                    probes: 0,
                    ..ok.clone()
                },
                "--probes",
            ),
            (
                LoadtestArgs {
                    probes: 1_000_000,
                    ..ok.clone()
                },
                "--probes",
            ),
            (
                LoadtestArgs {
                    locates_per_minute: 1_000_000,
                    ..ok.clone()
                },
                "--locates-per-minute",
            ),
            (
                LoadtestArgs {
                    duration_s: 0,
                    ..ok.clone()
                },
                "--duration-s",
            ),
            (
                LoadtestArgs {
                    duration_s: 86_400,
                    ..ok.clone()
                },
                "--duration-s",
            ),
            (
                LoadtestArgs {
                    audit: 10_000_000,
                    ..ok.clone()
                },
                "--audit",
            ),
            (
                LoadtestArgs {
                    audit_concurrency: 0,
                    ..ok.clone()
                },
                "--audit-concurrency",
            ),
            (
                LoadtestArgs {
                    budget: 101,
                    ..ok.clone()
                },
                "--budget",
            ),
            (
                LoadtestArgs {
                    timeout_ms: 10,
                    ..ok.clone()
                },
                "--timeout-ms",
            ),
            (
                LoadtestArgs {
                    heartbeat_ms: 1,
                    ..ok.clone()
                },
                "--heartbeat-ms",
            ),
            (
                LoadtestArgs {
                    ramp_timeout_s: 0,
                    ..ok.clone()
                },
                "--ramp-timeout-s",
            ),
        ];
        for (a, name) in cases {
            let e = a.check().unwrap_err().to_string();
            assert!(e.contains(name), "{name}: {e}");
        }
    }
}
