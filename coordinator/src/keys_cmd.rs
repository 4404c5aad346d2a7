//! `geoloc-coordinator keys create|list|revoke`: client API keys, run against the configured
//! database (`--database`, else `GEOLOC_COORDINATOR_DATABASE`, else the `database` of the
//! `--config` file or `GEOLOC_COORDINATOR_CONFIG`, else the default), then exit.
use std::io::Write;
use std::path::PathBuf;

use geoloc_rt::config::ProcessEnv;

use crate::config::{Args, Config, Settings};
use crate::core::access::{self, NewKey, Quotas, Scope};
use crate::storage::Storage;
use crate::{CoordinatorError, Result};

/// `geoloc-coordinator keys ...`.
#[derive(Debug, Clone, clap::Args)]
pub struct KeysCommand {
    /// TOML configuration file whose `database` is used [env: GEOLOC_COORDINATOR_CONFIG].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Database URL (overrides the configuration) [env: GEOLOC_COORDINATOR_DATABASE].
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
    #[command(subcommand)]
    pub action: KeysAction,
}

/// A scope as a command-line value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScopeArg {
    /// Results and the fleet view (GetResult, ListProbes).
    Read,
    /// Start measurements (Locate, LocateBatch).
    Locate,
    /// Clear flags and administer probes; implies read and locate.
    Admin,
}

impl From<ScopeArg> for Scope {
    fn from(s: ScopeArg) -> Scope {
        match s {
            ScopeArg::Read => Scope::Read,
            ScopeArg::Locate => Scope::Locate,
            ScopeArg::Admin => Scope::Admin,
        }
    }
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysAction {
    /// Creates a key and prints it once on standard output (the database keeps its hash).
    Create {
        /// Unique name, shown on results and in `keys list` (letters, digits, . _ -).
        #[arg(long, value_name = "NAME")]
        name: String,
        /// What the key may do; repeat for several.
        #[arg(long = "scope", value_enum, required = true, value_name = "SCOPE")]
        scopes: Vec<ScopeArg>,
        /// Addresses the key may have measured per clock hour [default: 1000].
        #[arg(long, value_name = "N")]
        addresses_per_hour: Option<u32>,
        /// Locates of the key running at the same time [default: 4].
        #[arg(long, value_name = "N")]
        concurrent: Option<u32>,
    },
    /// Lists the keys (never the keys themselves): name, scopes, quotas, created, last used,
    /// revoked.
    List {
        /// One JSON object per key instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revokes a key: every call with it is refused from now on, also on open streams.
    Revoke {
        /// The key's name.
        name: String,
    },
}

impl KeysCommand {
    /// The database this command works on, resolved like the server's.
    pub fn database(&self) -> Result<String> {
        let args = Args {
            config: self.config.clone(),
            settings: Settings {
                database: self.database.clone(),
                ..Settings::default()
            },
            ..Args::default()
        };
        Ok(Config::load(&args, &ProcessEnv)?.database)
    }

    /// Runs the command; what it prints goes to `out`.
    pub async fn run(&self, out: &mut dyn Write) -> Result<()> {
        let storage = Storage::connect(&self.database()?).await?;
        let r = self.run_on(&storage, out).await;
        storage.close().await;
        r
    }

    /// Runs the command on an open store.
    pub async fn run_on(&self, storage: &Storage, out: &mut dyn Write) -> Result<()> {
        let io = |source| CoordinatorError::Io {
            path: "standard output".into(),
            source,
        };
        match &self.action {
            KeysAction::Create {
                name,
                scopes,
                addresses_per_hour,
                concurrent,
            } => {
                let d = Quotas::default();
                let new = NewKey {
                    name: name.clone(),
                    scopes: scopes.iter().map(|&s| Scope::from(s)).collect(),
                    quotas: Quotas {
                        addresses_per_hour: addresses_per_hour.unwrap_or(d.addresses_per_hour),
                        concurrent: concurrent.unwrap_or(d.concurrent),
                    },
                };
                let key = access::create_key(storage, &new).await?;
                writeln!(out, "{key}").map_err(io)?;
                eprintln!(
                    "key {name:?} created with scope {} ({} addresses per hour, {} concurrent \
                     locates): shown only now, store it (clients read GEOLOC_API_KEY or \
                     --api-key-file FILE)",
                    access::scopes_text(&new.scopes),
                    new.quotas.addresses_per_hour,
                    new.quotas.concurrent
                );
            }
            KeysAction::List { json } => {
                let keys = storage.list_api_keys().await?;
                if *json {
                    for k in &keys {
                        let v = serde_json::json!({
                            "name": k.name,
                            "scopes": k.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                            "addresses_per_hour": k.addresses_per_hour,
                            "concurrent": k.concurrent,
                            "created_unix_ms": k.created_unix_ms,
                            "last_used_unix_ms": k.last_used_unix_ms,
                            "revoked_unix_ms": k.revoked_unix_ms,
                        });
                        writeln!(out, "{v}").map_err(io)?;
                    }
                } else {
                    writeln!(
                        out,
                        "{:<24} {:<18} {:>10} {:>10} {:<20} {:<20} revoked",
                        "name", "scopes", "addr/hour", "concurrent", "created", "last used"
                    )
                    .map_err(io)?;
                    for k in &keys {
                        writeln!(
                            out,
                            "{:<24} {:<18} {:>10} {:>10} {:<20} {:<20} {}",
                            k.name,
                            access::scopes_text(&k.scopes),
                            k.addresses_per_hour,
                            k.concurrent,
                            utc(Some(k.created_unix_ms)),
                            utc(k.last_used_unix_ms),
                            utc(k.revoked_unix_ms)
                        )
                        .map_err(io)?;
                    }
                }
            }
            KeysAction::Revoke { name } => {
                if storage.revoke_api_key(name, crate::unix_ms()).await? {
                    writeln!(out, "key {name:?} revoked").map_err(io)?;
                } else {
                    return Err(match storage.get_api_key(name).await? {
                        Some(_) => CoordinatorError::InvalidConfig(format!(
                            "key {name:?} is revoked already"
                        )),
                        None => CoordinatorError::InvalidConfig(format!("no key named {name:?}")),
                    });
                }
            }
        }
        Ok(())
    }
}

/// A time as `YYYY-MM-DD HH:MM:SS` UTC, `-` for none.
fn utc(ms: Option<i64>) -> String {
    let Some(ms) = ms else {
        return "-".into();
    };
    let secs = ms.div_euclid(1000);
    let (days, s) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(Some(0)), "1970-01-01 00:00:00");
        assert_eq!(super::utc(Some(1_796_000_000_000)), "2026-11-30 00:53:20");
        assert_eq!(super::utc(None), "-");
    }
}
