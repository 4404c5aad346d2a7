//! `geoloc-coordinator probes enroll|revoke|list|approve-position`: administration of probe
//! identities, run against the configured database (a running coordinator sees the change
//! within a second: it reads revocations from the same database).
use std::io::Write;
use std::path::PathBuf;

use geoloc_engine::LatLon;

use crate::config::{Args, Config, Settings};
use crate::core::identity::{self, IdentityRow, ENROLMENT_TTL_MS};
use crate::storage::{ProbeRow, Storage};
use crate::{unix_ms, CoordinatorError, Result};

/// Longest validity of an enrolment token, hours (a week).
const MAX_TTL_HOURS: u32 = 168;

/// `geoloc-coordinator probes ...`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbesArgs {
    /// TOML configuration file (its `database` is used) [env: GEOLOC_COORDINATOR_CONFIG].
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Database URL (overrides the file) [env: GEOLOC_COORDINATOR_DATABASE].
    #[arg(long, value_name = "URL", global = true)]
    pub database: Option<String>,
    #[command(subcommand)]
    pub command: ProbesCommand,
}

/// The probe administration jobs.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ProbesCommand {
    /// Print a one-time enrolment token for a probe (valid 24 h by default); the agent
    /// exchanges it for its own credential (`--enrolment-token`).
    Enroll {
        /// Probe id, 1..=64 characters of [A-Za-z0-9._-].
        #[arg(long)]
        id: String,
        /// Approved latitude, degrees (default: the first registration's).
        #[arg(long, allow_negative_numbers = true, requires = "lon")]
        lat: Option<f64>,
        /// Approved longitude, degrees.
        #[arg(long, allow_negative_numbers = true, requires = "lat")]
        lon: Option<f64>,
        /// Hours the token can be exchanged [default: 24, at most 168].
        #[arg(long, value_name = "H", default_value_t = (ENROLMENT_TTL_MS / 3_600_000) as u32)]
        ttl_hours: u32,
    },
    /// Revoke a probe: its credential (or the shared token for its id) is refused at once
    /// and its open session is closed within a second.
    Revoke {
        /// Probe id.
        id: String,
    },
    /// List enrolled and registered probes: position, approval, state, last seen, flag.
    List,
    /// Approve a probe's pending position change (it then needs fresh vetting).
    ApprovePosition {
        /// Probe id.
        id: String,
    },
}

impl ProbesArgs {
    /// Runs the job against the configured database, writing to `out`.
    pub async fn run(&self, out: &mut dyn Write) -> Result<()> {
        let args = Args {
            config: self.config.clone(),
            settings: Settings {
                database: self.database.clone(),
                ..Settings::default()
            },
            ..Args::default()
        };
        let config = Config::from_args(args)?;
        let storage = Storage::connect(&config.database).await?;
        let r = run(&storage, &self.command, out).await;
        storage.close().await;
        r
    }
}

fn io(e: std::io::Error) -> CoordinatorError {
    CoordinatorError::Io {
        path: PathBuf::from("(stdout)"),
        source: e,
    }
}

fn bad(m: String) -> CoordinatorError {
    CoordinatorError::InvalidConfig(m)
}

/// Runs one job on `storage`.
pub async fn run(storage: &Storage, cmd: &ProbesCommand, out: &mut dyn Write) -> Result<()> {
    let now = unix_ms();
    match cmd {
        ProbesCommand::Enroll {
            id,
            lat,
            lon,
            ttl_hours,
        } => {
            if !crate::core::landmarks::valid_id(id) {
                return Err(bad(format!(
                    "bad probe id {id:?}: 1..=64 characters of A-Z a-z 0-9 . _ -"
                )));
            }
            if !(1..=MAX_TTL_HOURS).contains(ttl_hours) {
                return Err(bad(format!(
                    "--ttl-hours {ttl_hours} not in 1..={MAX_TTL_HOURS}"
                )));
            }
            let pos = match (lat, lon) {
                (Some(lat), Some(lon)) => Some(
                    LatLon::checked(*lat, *lon).map_err(|e| bad(format!("bad position: {e}")))?,
                ),
                _ => None,
            };
            let token = identity::new_enrolment_token();
            let expires = now + i64::from(*ttl_hours) * 3_600_000;
            storage
                .create_enrolment(id, &identity::hash_secret(&token), pos, now, expires)
                .await?;
            writeln!(out, "{token}").map_err(io)?;
            eprintln!(
                "enrolment token for probe {id} printed above: valid once, for {ttl_hours} h; \
                 give it to the agent (--enrolment-token or `enrolment-token` in its config)"
            );
        }
        ProbesCommand::Revoke { id } => {
            let known =
                storage.identity(id).await?.is_some() || storage.get_probe(id).await?.is_some();
            if !known {
                return Err(CoordinatorError::NotFound(format!("probe {id:?}")));
            }
            if storage.revoke_probe(id, now).await? {
                writeln!(out, "probe {id} revoked").map_err(io)?;
            } else {
                writeln!(out, "probe {id} was already revoked").map_err(io)?;
            }
        }
        ProbesCommand::ApprovePosition { id } => {
            let Some(i) = storage.identity(id).await? else {
                return Err(CoordinatorError::NotFound(format!("enrolled probe {id:?}")));
            };
            let Some(p) = i.pending else {
                return Err(bad(format!("probe {id} has no position awaiting approval")));
            };
            storage.approve_position(id, p, now).await?;
            writeln!(
                out,
                "probe {id}: position ({:.4}, {:.4}) approved; it needs fresh vetting there",
                p.lat, p.lon
            )
            .map_err(io)?;
        }
        ProbesCommand::List => {
            let ids = storage.list_identities().await?;
            let probes = storage.list_probes().await?;
            write_list(out, &ids, &probes).map_err(io)?;
        }
    }
    Ok(())
}

fn pos(p: Option<LatLon>) -> String {
    p.map_or_else(|| "-".into(), |p| format!("{:.4},{:.4}", p.lat, p.lon))
}

fn when(ms: i64) -> String {
    if ms <= 0 {
        return "never".into();
    }
    let ago = (unix_ms() - ms).max(0) / 1000;
    match ago {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

/// The table of `probes list`: one line per probe known as enrolled or registered.
fn write_list(
    out: &mut dyn Write,
    ids: &[IdentityRow],
    probes: &[ProbeRow],
) -> std::io::Result<()> {
    let mut all: Vec<&str> = ids
        .iter()
        .map(|i| i.probe_id.as_str())
        .chain(probes.iter().map(|p| p.probe_id.as_str()))
        .collect();
    all.sort_unstable();
    all.dedup();
    writeln!(
        out,
        "{:<24} {:<20} {:<20} {:<20} {:<12} {:<10} FLAG",
        "ID", "POSITION", "APPROVED", "PENDING", "STATE", "LAST SEEN"
    )?;
    for id in all {
        let i = ids.iter().find(|i| i.probe_id == id);
        let p = probes.iter().find(|p| p.probe_id == id);
        let state = match i {
            None => "shared-token",
            Some(i) if i.revoked() => "revoked",
            Some(i) if i.credential_hash.is_some() => "enrolled",
            Some(_) => "token-issued",
        };
        let flag = match p {
            Some(p) if p.flagged => format!("flagged: {}", p.flag_reason),
            _ => "-".into(),
        };
        writeln!(
            out,
            "{:<24} {:<20} {:<20} {:<20} {:<12} {:<10} {}",
            id,
            pos(p.map(|p| p.pos())),
            pos(i.and_then(|i| i.approved)),
            pos(i.and_then(|i| i.pending)),
            state,
            p.map_or_else(|| "never".into(), |p| when(p.last_seen_unix_ms)),
            crate::core::text::printable(&flag),
        )?;
    }
    Ok(())
}
