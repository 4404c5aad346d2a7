//! `geoloc loadtest`: how much one coordinator (or N replicas in cluster mode) takes.
//! Starts the real `geoloc-coordinator` binary on a loopback port (SQLite or a fresh
//! PostgreSQL schema; `--replicas N`: N cluster replicas on one schema),
//! connects N simulated probes as in-process gRPC clients of `ProbeService` (each its own
//! registered session, answering pings with RTTs from the lab's delay model), runs
//! simulated clients (locates at a rate, an audit as one `LocateBatch`) through the client
//! API, and measures: probes held, the coordinator's memory and memory per probe, results
//! ingested per second, dispatch latency (locate start to request at a probe) p50/p99,
//! locates per second and CPU seconds per 1,000 results. With replicas, the probes move to
//! the next replica when theirs dies, keep a request-id cache across sessions, and the
//! audit (with job keys) re-asks another replica for what it lacks; `--kill-one-at`
//! SIGKILLs the audit's replica midway and `--compare-kill` compares with a run without
//! the kill. See README.md.
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
pub mod requests;

pub use error::{Error, Result};
pub use report::Report;

use geoloc_proto::v1::locate_service_client::LocateServiceClient;

use coordinator::{Backend, Coordinator, Launch, PgSchema};
use report::{Calls, CompareKill, Cpu, Kill, Latency, Memory, ReplicaUsage, Results};

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
    /// Most coordinator replicas.
    pub const MAX_REPLICAS: u32 = 5;
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
    /// Coordinator replicas in cluster mode on one fresh PostgreSQL schema (1..=5; above 1
    /// needs --backend postgres).
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,
    /// SIGKILL the replica the audit client is connected to when this fraction of the
    /// audit's addresses is answered (0 < F < 1; needs --replicas 2 or more and --audit).
    #[arg(long, value_name = "F")]
    pub kill_one_at: Option<f64>,
    /// Run the audit twice in one invocation, each on a fresh schema: first without the
    /// kill, then with --kill-one-at; report both wall times and their ratio.
    #[arg(long)]
    pub compare_kill: bool,
    /// Give up the audit, re-asks included, after this long, s (1..=86400).
    #[arg(long, default_value_t = 3_600)]
    pub audit_timeout_s: u64,
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
            replicas: 1,
            kill_one_at: None,
            compare_kill: false,
            audit_timeout_s: 3_600,
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
        if !(1..=limits::MAX_REPLICAS).contains(&self.replicas) {
            return bad(format!(
                "--replicas {} not in 1..={}",
                self.replicas,
                limits::MAX_REPLICAS
            ));
        }
        if self.replicas > 1 && self.backend != BackendArg::Postgres {
            return bad(format!(
                "--replicas {} needs --backend postgres (replicas share one PostgreSQL \
                 database; SQLite is single-node)",
                self.replicas
            ));
        }
        if let Some(f) = self.kill_one_at {
            if !(f > 0.0 && f < 1.0) {
                return bad(format!("--kill-one-at {f} not in 0 < F < 1"));
            }
            if self.replicas < 2 {
                return bad(format!(
                    "--kill-one-at needs --replicas 2 or more (got {}): someone must finish \
                     the killed replica's work",
                    self.replicas
                ));
            }
            if self.audit == 0 {
                return bad(
                    "--kill-one-at needs --audit N (the kill is timed by the audit)".into(),
                );
            }
        }
        if self.compare_kill && self.kill_one_at.is_none() {
            return bad("--compare-kill needs --kill-one-at F".into());
        }
        if !(1..=86_400).contains(&self.audit_timeout_s) {
            return bad(format!(
                "--audit-timeout-s {} not in 1..=86400",
                self.audit_timeout_s
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

/// Runs one load test (see the crate doc); with --compare-kill, the same run twice (without
/// the kill, then with it), the first one's report inside the second's.
pub async fn run(a: LoadtestArgs) -> Result<Report> {
    a.check()?;
    if !a.compare_kill {
        return run_once(&a).await;
    }
    let without = LoadtestArgs {
        kill_one_at: None,
        compare_kill: false,
        ..a.clone()
    };
    let base = run_once(&without).await?;
    let mut r = run_once(&a).await?;
    let wall = |r: &Report| r.audit.as_ref().map_or(0.0, |c| c.wall_s);
    let (w0, w1) = (wall(&base), wall(&r));
    r.compare_kill = Some(CompareKill {
        without_kill_audit_wall_s: w0,
        with_kill_audit_wall_s: w1,
        ratio: if w0 > 0.0 { w1 / w0 } else { f64::NAN },
        without_kill: Box::new(base),
    });
    Ok(r)
}

/// The replica id of replica `i` of `n` (None: one process, no cluster mode).
fn replica_id(i: usize, n: u32) -> Option<String> {
    (n > 1).then(|| format!("lt-r{i}"))
}

/// One run on a fresh database.
async fn run_once(a: &LoadtestArgs) -> Result<Report> {
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
    let launches: Vec<Launch> = (0..a.replicas as usize)
        .map(|i| Launch {
            binary: binary.clone(),
            database_url: database_url.clone(),
            probe_token: token.clone(),
            max_probes: a.probes as u32,
            // Registration is not what is measured: let every probe in at once.
            new_probes_per_s: (a.probes as u32).clamp(20, 100_000),
            heartbeat_interval_ms: a.heartbeat_ms,
            log_file: tmp.path().join(format!("coordinator-{i}.log")),
            replica_id: replica_id(i, a.replicas),
        })
        .collect();
    let result = measure(a, &backend, &launches, &token).await;
    if let Some(mut s) = schema {
        let dropped = s.drop_now();
        if result.is_ok() {
            dropped?;
        }
    }
    if result.is_err() || std::env::var_os(coordinator::LOG_ENV).is_some() {
        // Keep the coordinators' logs for the reader of the error (or of the log asked for).
        for (i, l) in launches.iter().enumerate() {
            let kept = std::env::temp_dir().join(format!(
                "geoloc-loadtest-{}-coordinator{}.log",
                std::process::id(),
                if launches.len() > 1 {
                    format!("-{i}")
                } else {
                    String::new()
                }
            ));
            if std::fs::copy(&l.log_file, &kept).is_ok() {
                eprintln!(
                    "geoloc loadtest: the coordinator's log is in {}",
                    kept.display()
                );
            }
        }
    }
    result
}

/// Probes held (ListProbes: connected and healthy) as the replica that sees fewest of
/// them says, over the replicas not killed.
async fn held_by_all(
    clients: &[LocateServiceClient<tonic::transport::Channel>],
    alive: &[bool],
) -> Result<u64> {
    let mut least = None;
    for (c, &up) in clients.iter().zip(alive) {
        if up {
            let n = clients::probes_held(&mut c.clone()).await?;
            least = Some(least.map_or(n, |l: u64| l.min(n)));
        }
    }
    Ok(least.unwrap_or(0))
}

async fn measure(
    a: &LoadtestArgs,
    backend: &Backend,
    launches: &[Launch],
    token: &str,
) -> Result<Report> {
    // Replica 0 first: it makes the schema's tables; the others start on them.
    let mut started = Vec::with_capacity(launches.len());
    for l in launches {
        started.push(Coordinator::start(l)?);
    }
    let coords = Arc::new(std::sync::Mutex::new(started));
    let lock = || {
        coords
            .lock()
            .map_err(|_| Error::Coordinator("coordinator list poisoned".into()))
    };
    let addrs: Vec<std::net::SocketAddr> = lock()?.iter().map(|c| c.addr).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let usage_all =
        || -> Result<Vec<coordinator::Usage>> { lock()?.iter().map(|c| c.usage()).collect() };
    let idle = usage_all()?;
    let world = Arc::new(delay::World::new(a.seed));
    let shared = Arc::new(fleet::Shared::default());

    let ramp = Instant::now();
    let fleet = fleet::Fleet::start(fleet::FleetSpec {
        coordinators: addrs.clone(),
        probes: a.probes as usize,
        token: token.to_string(),
        world: Arc::clone(&world),
        shared: Arc::clone(&shared),
        ramp_timeout: Duration::from_secs(a.ramp_timeout_s),
    })
    .await?;
    let ramp_s = ramp.elapsed().as_secs_f64();
    let mut client_list = Vec::with_capacity(addrs.len());
    for &addr in &addrs {
        client_list.push(clients::connect_lazy(addr)?);
    }
    // Every replica must see the whole fleet (in cluster mode each one reads the others'
    // sessions) before the workload starts.
    let all_alive = vec![true; addrs.len()];
    let mut held = 0;
    let wait = Instant::now();
    while wait.elapsed() < HEALTHY_WAIT {
        held = held_by_all(&client_list, &all_alive).await?;
        if held >= a.probes {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held_usage = usage_all()?;

    let load = clients::LocateLoad {
        per_minute: a.locates_per_minute,
        duration: Duration::from_secs(a.duration_s),
        timeout_ms: a.timeout_ms,
        budget: a.budget,
        first_target: 0,
    };
    let work = Instant::now();
    let cpu0: Vec<f64> = usage_all()?.iter().map(|u| u.cpu_s).collect();
    let locates = (a.locates_per_minute > 0).then(|| {
        tokio::spawn(clients::run_locates(
            client_list.clone(),
            Arc::clone(&world),
            Arc::clone(&shared),
            load,
        ))
    });
    let killer: clients::Killer = {
        let coords = Arc::clone(&coords);
        Arc::new(move |i: usize| {
            let mut g = coords.lock().ok()?;
            let c = g.get_mut(i)?;
            c.kill().ok()?;
            Some(c.replica_id.clone().unwrap_or_else(|| "single".into()))
        })
    };
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let audit = (a.audit > 0).then(|| {
        tokio::spawn(clients::run_audit(
            clients::AuditSpec {
                replicas: client_list.clone(),
                n: a.audit,
                concurrency: a.audit_concurrency,
                load,
                first_target: fleet::AUDIT_FIRST_TARGET,
                run_id: format!("lt-{}-{ms}", std::process::id()),
                kill_at: a.kill_one_at,
                killer: a.kill_one_at.map(|_| killer),
                timeout: Duration::from_secs(a.audit_timeout_s),
            },
            Arc::clone(&world),
            Arc::clone(&shared),
        ))
    });
    let locates = match locates {
        Some(h) => h
            .await
            .map_err(|e| Error::Client(format!("locate task: {e}")))?,
        None => clients::Tally::default(),
    };
    let audit = match audit {
        Some(h) => Some(
            h.await
                .map_err(|e| Error::Client(format!("audit task: {e}")))?,
        ),
        None => None,
    };
    let work_s = work.elapsed().as_secs_f64();
    let end = usage_all()?;
    let alive: Vec<bool> = lock()?.iter().map(|c| c.killed.is_none()).collect();
    let held_end = held_by_all(&client_list, &alive).await.unwrap_or(0);
    fleet.stop().await;
    for c in lock()?.iter_mut() {
        if c.killed.is_none() {
            if let Some(status) = c.exited() {
                return Err(Error::Coordinator(format!(
                    "{} exited during the run ({status})",
                    c.replica_id.as_deref().unwrap_or("the coordinator")
                )));
            }
        }
    }

    let audit_tally = audit.as_ref().map(|o| &o.tally);
    let ingested = locates.probe_answers + audit_tally.map_or(0, |t| t.probe_answers);
    let cpu_each: Vec<f64> = end.iter().zip(&cpu0).map(|(e, c0)| e.cpu_s - c0).collect();
    let cpu_s: f64 = cpu_each.iter().sum();
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
    if let Some(t) = audit_tally {
        errors.extend(t.errors.iter().cloned());
    }
    errors.truncate(10);
    let sum = |v: &[coordinator::Usage], f: fn(&coordinator::Usage) -> u64| -> u64 {
        v.iter().map(f).sum()
    };
    let (idle_rss, held_rss) = (
        sum(&idle, |u| u.rss_bytes),
        sum(&held_usage, |u| u.rss_bytes),
    );
    let replica_usage = (0..launches.len())
        .map(|i| ReplicaUsage {
            replica_id: replica_id(i, a.replicas).unwrap_or_else(|| "single".into()),
            idle_rss_bytes: idle[i].rss_bytes,
            held_rss_bytes: held_usage[i].rss_bytes,
            end_rss_bytes: end[i].rss_bytes,
            peak_rss_bytes: end[i].hwm_bytes,
            cpu_seconds: cpu_each[i],
            killed: !alive[i],
        })
        .collect();
    let kill = audit.as_ref().and_then(|o| o.kill.as_ref()).map(|k| Kill {
        replica_id: k.replica_id.clone(),
        at_fraction: a.kill_one_at.unwrap_or(0.0),
        at_s: k.at_s,
        answered_at_kill: k.answered_at_kill,
        stall_s: k.stall_s,
        re_asked: k.re_asked,
    });
    let audit_answers = audit.as_ref().map(|o| o.counts.clone());
    let n = |x: &std::sync::atomic::AtomicU64| x.load(Ordering::Relaxed);
    Ok(Report {
        schema: report::SCHEMA,
        backend: backend.name().into(),
        replicas: a.replicas,
        probes: a.probes,
        probes_held: held,
        probes_held_end: held_end,
        ramp_s,
        memory: Memory {
            idle_rss_bytes: idle_rss,
            held_rss_bytes: held_rss,
            end_rss_bytes: sum(&end, |u| u.rss_bytes),
            peak_rss_bytes: sum(&end, |u| u.hwm_bytes),
            per_probe_bytes: held_rss.saturating_sub(idle_rss) as f64 / a.probes as f64,
        },
        locates: calls(&locates),
        audit: audit_tally.map(calls),
        results: Results {
            sent: n(&shared.results_sent),
            ingested,
            per_s: if work_s > 0.0 {
                ingested as f64 / work_s
            } else {
                0.0
            },
            unknown_targets: n(&shared.unknown_targets),
            measurements: n(&shared.measurements),
            repeated_requests: n(&shared.repeated_requests),
            double_measurements: n(&shared.double_measurements),
        },
        dispatch_ms: Latency::of(shared.take_dispatch()),
        cpu: Cpu {
            seconds: cpu_s,
            per_1000_results: (ingested > 0).then(|| cpu_s / (ingested as f64 / 1000.0)),
        },
        errors,
        replica_usage,
        probe_sessions_moved: n(&shared.sessions_moved),
        audit_answers,
        kill,
        compare_kill: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_options_are_refused_with_the_option_named() {
        let ok = LoadtestArgs::default();
        ok.check().unwrap();
        let cluster = LoadtestArgs {
            replicas: 3,
            backend: BackendArg::Postgres,
            audit: 100,
            kill_one_at: Some(0.5),
            compare_kill: true,
            ..ok.clone()
        };
        cluster.check().unwrap();
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
            (
                LoadtestArgs {
                    replicas: 0,
                    ..ok.clone()
                },
                "--replicas 0 not in 1..=5",
            ),
            (
                LoadtestArgs {
                    replicas: 6,
                    backend: BackendArg::Postgres,
                    ..ok.clone()
                },
                "--replicas 6 not in 1..=5",
            ),
            (
                LoadtestArgs {
                    replicas: 2,
                    ..ok.clone()
                },
                "--replicas 2 needs --backend postgres",
            ),
            (
                LoadtestArgs {
                    kill_one_at: Some(1.0),
                    ..cluster.clone()
                },
                "--kill-one-at 1 not in 0 < F < 1",
            ),
            (
                LoadtestArgs {
                    kill_one_at: Some(0.0),
                    ..cluster.clone()
                },
                "--kill-one-at 0 not in 0 < F < 1",
            ),
            (
                LoadtestArgs {
                    replicas: 1,
                    ..cluster.clone()
                },
                "--kill-one-at needs --replicas 2",
            ),
            (
                LoadtestArgs {
                    audit: 0,
                    ..cluster.clone()
                },
                "--kill-one-at needs --audit",
            ),
            (
                LoadtestArgs {
                    kill_one_at: None,
                    ..cluster.clone()
                },
                "--compare-kill needs --kill-one-at",
            ),
            (
                LoadtestArgs {
                    audit_timeout_s: 0,
                    ..ok.clone()
                },
                "--audit-timeout-s",
            ),
        ];
        for (a, name) in cases {
            let e = a.check().unwrap_err().to_string();
            assert!(e.contains(name), "{name}: {e}");
        }
    }
}
