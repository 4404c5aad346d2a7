//! The coordinator under test: the real `geoloc-coordinator` binary as a child process on
//! a loopback port, its resource use read from `/proc/<pid>`, and the fresh PostgreSQL
//! schema it runs in (made and dropped with `psql`, so the load test links no database
//! code).
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::error::{Error, Result};

/// How long the coordinator may take to print where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`: 100 on every Linux ABI).
const USER_HZ: f64 = 100.0;

/// The database a run uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A fresh SQLite file (WAL) in the run's temporary folder.
    Sqlite,
    /// A fresh schema in this PostgreSQL database, dropped at the end.
    Postgres { url: String },
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }
}

/// Finds `name` as the lab does ([`geoloc_lab::demo::find_binary`]: `bin_dir`, next to
/// the running executable or its parent, then PATH).
pub fn find_binary(name: &str, bin_dir: Option<&Path>) -> Result<PathBuf> {
    geoloc_lab::demo::find_binary(name, bin_dir).map_err(|e| Error::Coordinator(format!("{e:#}")))
}

/// A PostgreSQL schema made for one run (`CREATE SCHEMA`), dropped on [`PgSchema::drop_now`]
/// or when dropped.
pub struct PgSchema {
    url: String,
    name: String,
    dropped: bool,
}

fn psql(url: &str, sql: &str) -> Result<()> {
    let out = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Postgres(format!("running psql (is it installed?): {e}")))?;
    if !out.status.success() {
        return Err(Error::Postgres(format!(
            "psql -c {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

impl PgSchema {
    /// Creates `loadtest_<pid>_<ms>` in the database of `url`.
    pub fn create(url: &str) -> Result<PgSchema> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(Error::Options(format!(
                "--postgres-url must start with postgres:// (got {:?})",
                url.chars().take(40).collect::<String>()
            )));
        }
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let name = format!("loadtest_{}_{ms}", std::process::id());
        psql(url, &format!("CREATE SCHEMA {name}"))?;
        Ok(PgSchema {
            url: url.to_string(),
            name,
            dropped: false,
        })
    }

    /// The database URL whose `search_path` is this schema.
    pub fn database_url(&self) -> String {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-c%20search_path%3D{}", self.url, self.name)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the schema and everything in it.
    pub fn drop_now(&mut self) -> Result<()> {
        self.dropped = true;
        psql(
            &self.url,
            &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
        )
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if !self.dropped {
            let _ = self.drop_now();
        }
    }
}

/// Environment variable that, when set, is the coordinators' `RUST_LOG` (default `warn`)
/// and keeps their logs after the run.
pub const LOG_ENV: &str = "GEOLOC_LOADTEST_COORDINATOR_LOG";

/// The coordinator's settings for a run.
#[derive(Debug, Clone)]
pub struct Launch {
    pub binary: PathBuf,
    pub database_url: String,
    pub probe_token: String,
    pub max_probes: u32,
    pub new_probes_per_s: u32,
    pub heartbeat_interval_ms: u32,
    pub log_file: PathBuf,
    /// Cluster mode (`--cluster --replica-id ID`) with this replica id; None: one process.
    pub replica_id: Option<String>,
}

/// The running coordinator; killed and reaped when dropped.
pub struct Coordinator {
    child: Child,
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    /// Its replica id in cluster mode.
    pub replica_id: Option<String>,
    /// Its resource use just before [`Coordinator::kill`] (None while it runs).
    pub killed: Option<Usage>,
}

impl Coordinator {
    /// Starts the coordinator on `127.0.0.1:0` (gRPC, client auth off: loopback only) and
    /// waits for its `listening on ADDR` line. Landmark checks and calibration are off (no
    /// landmarks exist in a load test), private targets are allowed (the targets are
    /// addresses in 10.0.0.0/8 that nothing ever sends a packet to), and the per-target
    /// packet cap is raised so every locate of every fleet size is measured.
    pub fn start(l: &Launch) -> Result<Coordinator> {
        let log = std::fs::File::create(&l.log_file)
            .map_err(Error::io(format!("creating {}", l.log_file.display())))?;
        let mut cmd = Command::new(&l.binary);
        cmd.args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(["--database", &l.database_url])
            .args(["--probe-token", &l.probe_token])
            .args(["--auth", "none", "--allow-private", "true"])
            .args(["--landmark-checks", "false", "--calibrate", "false"])
            .args(["--reconnect-grace-ms", "0"])
            .args(["--per-target-packets-per-hour", "4000000000"])
            .args(["--max-probes", &l.max_probes.to_string()])
            .args(["--new-probes-per-s", &l.new_probes_per_s.to_string()])
            .args([
                "--heartbeat-interval-ms",
                &l.heartbeat_interval_ms.to_string(),
            ])
            // The coordinator's log filter: `warn` unless LOG_ENV says otherwise (e.g.
            // `info` to see each locate's setup time).
            .env(
                "RUST_LOG",
                std::env::var(LOG_ENV).unwrap_or_else(|_| "warn".into()),
            )
            .env_remove("GEOLOC_COORDINATOR_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        if let Some(id) = &l.replica_id {
            cmd.args(["--cluster", "true", "--replica-id", id]);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Coordinator(format!("starting {}: {e}", l.binary.display())))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::Coordinator("no stdout".into()))?;
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                let _ = tx.send(line);
            }
        });
        let mut c = Coordinator {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_addr: None,
            replica_id: l.replica_id.clone(),
            killed: None,
        };
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        while c.addr.port() == 0 || c.metrics_addr.is_none() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx.recv_timeout(left).map_err(|_| {
                Error::Coordinator(format!(
                    "it printed no `listening on` line within {START_TIMEOUT:?} (log: {})",
                    l.log_file.display()
                ))
            })?;
            if let Some(a) = line.strip_prefix("metrics listening on ") {
                c.metrics_addr = a.trim().parse().ok();
            } else if let Some(a) = line.strip_prefix("listening on ") {
                c.addr = a
                    .trim()
                    .parse()
                    .map_err(|_| Error::Coordinator(format!("unreadable listen line {line:?}")))?;
            }
        }
        if !c.addr.ip().is_loopback() {
            return Err(Error::Coordinator(format!(
                "listens on {} (not loopback)",
                c.addr
            )));
        }
        Ok(c)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Exited already (crashed)?
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Resource use now, or just before it was killed.
    pub fn usage(&self) -> Result<Usage> {
        match self.killed {
            Some(u) => Ok(u),
            None => Usage::of(self.pid()),
        }
    }

    /// SIGKILLs it (no shutdown of any kind) and reaps it; keeps its resource use of just
    /// before. A second call does nothing.
    pub fn kill(&mut self) -> Result<Usage> {
        if let Some(u) = self.killed {
            return Ok(u);
        }
        let before = Usage::of(self.pid())?;
        // std's Child::kill sends SIGKILL on Unix.
        self.child
            .kill()
            .map_err(Error::io(format!("SIGKILL of pid {}", self.pid())))?;
        let _ = self.child.wait();
        self.killed = Some(before);
        Ok(before)
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process's memory and CPU time, from `/proc/<pid>/status` and `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// Resident set size now, bytes (VmRSS).
    pub rss_bytes: u64,
    /// Peak resident set size, bytes (VmHWM).
    pub hwm_bytes: u64,
    /// User plus system CPU time, seconds.
    pub cpu_s: f64,
}

impl Usage {
    pub fn of(pid: u32) -> Result<Usage> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(Error::io(format!("reading /proc/{pid}/status")))?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(Error::io(format!("reading /proc/{pid}/stat")))?;
        parse_usage(&status, &stat)
            .ok_or_else(|| Error::Coordinator(format!("unreadable /proc/{pid}/status or stat")))
    }
}

/// VmRSS, VmHWM (kB) from a `status` text and utime + stime (fields 14 and 15, ticks) from a
/// `stat` text, whose second field (the command in parentheses) may hold spaces.
fn parse_usage(status: &str, stat: &str) -> Option<Usage> {
    let kb = |key: &str| -> Option<u64> {
        let l = status.lines().find(|l| l.starts_with(key))?;
        l[key.len()..]
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
    };
    let after = &stat[stat.rfind(')')? + 1..];
    // After the command: field 3 (state) is index 0, so utime (14) is index 11.
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(Usage {
        rss_bytes: kb("VmRSS:")?.checked_mul(1024)?,
        hwm_bytes: kb("VmHWM:")?.checked_mul(1024)?,
        cpu_s: (utime + stime) as f64 / USER_HZ,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_from_proc_texts() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        let stat = "42 (geoloc coord) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        let u = parse_usage(status, stat).unwrap();
        assert_eq!(u.rss_bytes, 1024 * 1024);
        assert_eq!(u.hwm_bytes, 2048 * 1024);
        assert!((u.cpu_s - 3.0).abs() < 1e-9, "{u:?}");
        assert!(parse_usage("VmRSS: x kB", stat).is_none());
        assert!(parse_usage(status, "no parenthesis").is_none());
    }

    #[test]
    fn own_usage_is_readable() {
        let u = Usage::of(std::process::id()).unwrap();
        assert!(u.rss_bytes > 0 && u.hwm_bytes >= u.rss_bytes);
    }
}
