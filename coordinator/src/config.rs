//! Coordinator configuration: command-line flags > `GEOLOC_COORDINATOR_*` environment
//! variables > TOML file (`--config FILE`) > defaults, layered by `geoloc_rt::config` (the
//! same mechanism as the probe agent). See `deploy/coordinator.toml` for a complete
//! commented sample; `--print-config` prints the effective configuration.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use geoloc_rt::config::{EnvSource, Layers, ProcessEnv};
use serde::{Deserialize, Serialize};

use crate::error::{CoordinatorError, Result};

/// Defaults, in one place.
pub mod defaults {
    pub const LISTEN: &str = "127.0.0.1:7470";
    pub const DATABASE: &str = "sqlite://geoloc.sqlite";
    pub const HEARTBEAT_INTERVAL_MS: u32 = 5_000;
    pub const PROBE_TIMEOUT_MS: u32 = 5_000;
    pub const PING_COUNT: u32 = 3;
    pub const PING_INTERVAL_MS: u32 = 50;
    pub const TWO_STAGE_FIRST: u32 = 8;
    pub const TWO_STAGE_K: u32 = 24;
    pub const BATCH_CONCURRENCY: u32 = 4;
    pub const RECONNECT_GRACE_MS: u32 = 30_000;
    /// Measured in the lab (`geoloc lab demo`, seed 1): with a 20-probe fleet (19 RTTs per
    /// probe) the fitted bestlines excluded the truth for 3 of 8 targets that the sound bound
    /// contained (median 1199 vs 1023 km); with 100 probes (99 RTTs each) they improved the
    /// median from 205 to 173 km with the same containment (11 of 12).
    pub const CALIBRATION_MIN_RTTS: u32 = 40;
    /// Fleet-wide probe packets toward one target address per clock hour: with 100 probes
    /// and 3 echo requests each, about 33 locates of the same address an hour (a few
    /// packets a second at most, far below what any host notices).
    pub const PER_TARGET_PACKETS_PER_HOUR: u32 = 10_000;
    /// Days raw measurements that no result needs are kept (landmark checks: 16 per
    /// connecting probe); 0 = forever.
    pub const RAW_RETENTION_DAYS: u32 = 30;
    /// RIPE Atlas credits one locate may spend at most: a 50-probe budget of one-off pings
    /// (3 packets) costs at most 50 x 3 x 2 = 300.
    pub const ATLAS_MAX_CREDITS: u64 = 1_000;
    /// How long an Atlas one-off measurement's results are awaited, ms (real one-offs take
    /// one to a few minutes to be scheduled and answered).
    pub const ATLAS_WAIT_MS: u32 = 120_000;
    /// Known-answer checks passed at its current position before a probe's RTTs are used.
    pub const VETTING_MIN_CHECKS: u32 = 2;
    /// Probes one coordinator accepts (the fleet token's and enrolled probes together).
    pub const MAX_PROBES: u32 = 2_000;
    /// New probe ids registering per second (all addresses together); the burst is 10x.
    pub const NEW_PROBES_PER_S: u32 = 20;
    /// Share of a locate's vantage points that also get one known-answer check, percent.
    pub const KNOWN_ANSWER_PERCENT: u32 = 10;
}

/// Whether clients need an API key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Auth {
    /// Every client call needs `authorization: Bearer <key>` (`geoloc-coordinator keys`).
    #[default]
    Keys,
    /// No key needed (every caller may do everything, no quotas): only accepted when the
    /// listen address is a loopback address.
    None,
}

/// How probes are chosen for a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Every healthy probe.
    All,
    /// A few probes spread over the world, then the K nearest the first region.
    TwoStage,
    /// A few spread probes, then round by round the probes nearest the shrinking region,
    /// until it stops shrinking or the locate's budget is spent (engine `select::Phased`).
    Phased,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::All => "all",
            Mode::TwoStage => "two-stage",
            Mode::Phased => "phased",
        }
    }
}

/// Prefix of the coordinator's environment variables (`GEOLOC_COORDINATOR_LISTEN`, ...).
pub const ENV_PREFIX: &str = "GEOLOC_COORDINATOR_";
/// Environment variable naming the configuration file.
pub const ENV_CONFIG: &str = "GEOLOC_COORDINATOR_CONFIG";

/// Command line of `geoloc-coordinator`.
#[derive(Debug, Default, Parser)]
#[command(
    name = "geoloc-coordinator",
    version,
    about = "geoloc coordinator: probe registry, scheduling, storage and solving over gRPC",
    after_help = "Every option is also an environment variable GEOLOC_COORDINATOR_<OPTION> \
                  (e.g. GEOLOC_COORDINATOR_PROBE_TOKEN) and a key of the --config file \
                  (probe-token). Precedence: flag > environment > file > default.",
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// TOML configuration file (flags and environment override it) [env: GEOLOC_COORDINATOR_CONFIG].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as TOML (secrets redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
    #[command(flatten)]
    pub settings: Settings,
    /// Without a subcommand, the coordinator serves; a subcommand runs one job and exits.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands of `geoloc-coordinator`: administration jobs run against the configured
/// database, and the hidden documentation generators.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    #[command(flatten)]
    Docs(geoloc_rt::docs::DocsCommand),
    /// Client API keys: create (printed once), list, revoke.
    Keys(crate::keys_cmd::KeysCommand),
    /// Probe identities: enroll (one-time token), revoke, list, approve-position.
    Probes(crate::probes_admin::ProbesArgs),
}

/// One layer of settings, every key optional: the command-line flags, and the schema of
/// the TOML file (unknown keys rejected). The environment layer has the same keys.
#[derive(Debug, Default, Clone, clap::Args, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on for probes and clients [default: 127.0.0.1:7470].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Database URL: sqlite://FILE or postgres://USER@HOST/DB [default: sqlite://geoloc.sqlite].
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
    /// MaxMind-format .mmdb file for the GeoIP comparison.
    #[arg(long, value_name = "FILE.mmdb")]
    pub geoip: Option<PathBuf>,
    /// Credential probes must present when registering (none = any probe may register).
    #[arg(long, value_name = "TOKEN")]
    pub probe_token: Option<String>,
    /// Allow private/loopback targets (lab only).
    #[arg(long, num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    pub allow_private: Option<bool>,
    /// Landmarks file (landmarks/README.md).
    #[arg(long, value_name = "FILE")]
    pub landmarks: Option<PathBuf>,
    /// Heartbeat interval asked of probes, ms [default: 5000].
    #[arg(long, value_name = "MS")]
    pub heartbeat_interval_ms: Option<u32>,
    /// Default per-probe timeout, ms [default: 5000].
    #[arg(long, value_name = "MS")]
    pub probe_timeout_ms: Option<u32>,
    /// Default echo requests per probe [default: 3].
    #[arg(long, value_name = "N")]
    pub ping_count: Option<u32>,
    /// Spacing of echo requests, ms [default: 50].
    #[arg(long, value_name = "MS")]
    pub ping_interval_ms: Option<u32>,
    /// Default scheduling mode [default: all].
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Two-stage: probes in the first, world-spread stage [default: 8].
    #[arg(long, value_name = "N")]
    pub two_stage_first: Option<u32>,
    /// Two-stage: probes nearest the first region in the second stage [default: 24].
    #[arg(long, value_name = "K")]
    pub two_stage_k: Option<u32>,
    /// Addresses of a batch measured at the same time [default: 4].
    #[arg(long, value_name = "N")]
    pub batch_concurrency: Option<u32>,
    /// Measure probe-to-landmark RTTs and flag faster-than-light probes [default: true].
    #[arg(long, value_name = "BOOL", value_parser = clap::builder::BoolishValueParser::new())]
    pub landmark_checks: Option<bool>,
    /// Fit per-probe delay models on probe-to-landmark RTTs and solve with them [default: true].
    #[arg(long, value_name = "BOOL", value_parser = clap::builder::BoolishValueParser::new())]
    pub calibrate: Option<bool>,
    /// Fewest landmark RTTs a probe's delay model is fitted on; probes with fewer use the
    /// sound bound [default: 40].
    #[arg(long, value_name = "N")]
    pub calibration_min_rtts: Option<u32>,
    /// After a start, how long a locate waits for the probes seen before the restart to
    /// reconnect before it measures with fewer (or answers `no-probes`), ms [default: 30000].
    #[arg(long, value_name = "MS")]
    pub reconnect_grace_ms: Option<u32>,
    /// Certificate chain (PEM, leaf first) to serve gRPC over TLS; needs --tls-key.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Also serve the web interface (locate map, fleet, audit, history) over HTTP on this
    /// address, e.g. 127.0.0.1:8080 [default: off]. Plain HTTP: a non-loopback address needs
    /// --insecure-plaintext (put a TLS reverse proxy in front).
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,
    /// Web interface: show the answered address's origin AS and organisation in the answer
    /// panel, from this folder's asn-ipv4.csv / asn-ipv6.csv (scripts/fetch-asn-db.sh)
    /// [default: none].
    #[arg(long, value_name = "DIR")]
    pub asn_db: Option<PathBuf>,
    /// Web interface: show reverse DNS, AS, RDAP record, cached reputation and links in the
    /// answer panel, with the sources of this geoloc-know TOML file (know/know.sample.toml)
    /// [default: none].
    #[arg(long, value_name = "FILE")]
    pub know_config: Option<PathBuf>,
    /// Serve plaintext gRPC on a non-loopback --listen address without TLS (lab only:
    /// probe tokens and results cross the network in clear) [default: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    pub insecure_plaintext: Option<bool>,
    /// Client authentication: `keys` (every call needs an API key) or `none` (loopback
    /// listen addresses only) [default: keys].
    #[arg(long, value_enum)]
    pub auth: Option<Auth>,
    /// Fleet-wide probe packets toward one target address per clock hour [default: 10000].
    #[arg(long, value_name = "N")]
    pub per_target_packets_per_hour: Option<u32>,
    /// Address of the operations listener serving /metrics (Prometheus) and /healthz
    /// [default: none, off].
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Log lines on stderr: text or json (one object per line) [default: text].
    #[arg(long, value_enum)]
    pub log_format: Option<geoloc_rt::ops::LogFormat>,
    /// Days raw measurements that no stored result needs are kept; 0 = forever
    /// [default: 30].
    #[arg(long, value_name = "DAYS")]
    pub raw_retention_days: Option<u32>,
    /// RIPE Atlas API base URL (https://atlas.ripe.net, or a loopback stand-in); enables
    /// `source = atlas | both` in locate requests [default: none, off].
    #[arg(long, value_name = "URL")]
    pub atlas_base_url: Option<String>,
    /// File holding the RIPE Atlas API key (first line) [default: the RIPE_ATLAS_KEY
    /// environment variable].
    #[arg(long, value_name = "FILE")]
    pub atlas_key_file: Option<PathBuf>,
    /// Most RIPE Atlas credits one locate may spend; a locate whose estimate is above is
    /// refused before anything is spent [default: 1000].
    #[arg(long, value_name = "N")]
    pub atlas_max_credits: Option<u64>,
    /// File of RIPE Atlas probe ids never used (commas, spaces or lines; `#` comments).
    #[arg(long, value_name = "FILE")]
    pub atlas_exclude_file: Option<PathBuf>,
    /// Atlas measurements of pings among probes (e.g. the anchors' mesh) whose RTTs vet the
    /// probes' declared positions, comma-separated ids [default: none].
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    pub atlas_mesh_msm: Option<Vec<u64>>,
    /// How long an Atlas measurement's results are awaited, ms [default: 120000].
    #[arg(long, value_name = "MS")]
    pub atlas_wait_ms: Option<u32>,
    /// With landmark checks on: distinct landmarks a probe must have passed a known-answer
    /// check with, at its current position, before its RTTs enter an answer; 0 = every
    /// unflagged probe counts [default: 2].
    #[arg(long, value_name = "N")]
    pub vetting_min_checks: Option<u32>,
    /// With landmark checks on: percent of the vantage points of a locate that are also sent
    /// one known-answer check (a landmark or another probe) at a random moment of the run
    /// [default: 10].
    #[arg(long, value_name = "PERCENT")]
    pub known_answer_percent: Option<u32>,
    /// Cluster mode: one of several replicas on one PostgreSQL database; probes connected
    /// to any replica measure for locates accepted by any replica [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub cluster: Option<bool>,
    /// This replica's name in the cluster (letters, digits, `-`, `_`, `.`; at most 64)
    /// [default: a random one per start].
    #[arg(long, value_name = "NAME")]
    pub replica_id: Option<String>,
    /// Most probes this coordinator registers (1..=100000) [default: 2000].
    #[arg(long, value_name = "N")]
    pub max_probes: Option<u32>,
    /// New probe ids accepted per second, all addresses together (1..=100000; the burst is
    /// ten times this) [default: 20].
    #[arg(long, value_name = "N")]
    pub new_probes_per_s: Option<u32>,
}

/// The TOML file: the same keys as the flags, every key optional.
pub type FileConfig = Settings;

/// The effective configuration (keys as in the file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Config {
    pub listen: SocketAddr,
    pub database: String,
    pub geoip: Option<PathBuf>,
    pub probe_token: Option<String>,
    pub allow_private: bool,
    pub landmarks: Option<PathBuf>,
    pub heartbeat_interval_ms: u32,
    pub probe_timeout_ms: u32,
    pub ping_count: u32,
    pub ping_interval_ms: u32,
    pub mode: Mode,
    pub two_stage_first: u32,
    pub two_stage_k: u32,
    pub batch_concurrency: u32,
    pub landmark_checks: bool,
    pub calibrate: bool,
    pub calibration_min_rtts: u32,
    pub reconnect_grace_ms: u32,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub insecure_plaintext: bool,
    #[serde(default)]
    pub auth: Auth,
    #[serde(default = "default_per_target_packets")]
    pub per_target_packets_per_hour: u32,
    pub http_listen: Option<SocketAddr>,
    #[serde(default)]
    pub asn_db: Option<PathBuf>,
    #[serde(default)]
    pub know_config: Option<PathBuf>,
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    #[serde(default)]
    pub log_format: geoloc_rt::ops::LogFormat,
    #[serde(default = "default_raw_retention_days")]
    pub raw_retention_days: u32,
    #[serde(default)]
    pub atlas_base_url: Option<String>,
    #[serde(default)]
    pub atlas_key_file: Option<PathBuf>,
    #[serde(default = "default_atlas_max_credits")]
    pub atlas_max_credits: u64,
    #[serde(default)]
    pub atlas_exclude_file: Option<PathBuf>,
    #[serde(
        default,
        deserialize_with = "geoloc_rt::config::list_or_comma_separated"
    )]
    pub atlas_mesh_msm: Vec<u64>,
    #[serde(default = "default_atlas_wait_ms")]
    pub atlas_wait_ms: u32,
    #[serde(default = "default_vetting_min_checks")]
    pub vetting_min_checks: u32,
    #[serde(default = "default_known_answer_percent")]
    pub known_answer_percent: u32,
    #[serde(default)]
    pub cluster: bool,
    #[serde(default)]
    pub replica_id: Option<String>,
    #[serde(default = "default_max_probes")]
    pub max_probes: u32,
    #[serde(default = "default_new_probes_per_s")]
    pub new_probes_per_s: u32,
}

fn default_atlas_max_credits() -> u64 {
    defaults::ATLAS_MAX_CREDITS
}

fn default_atlas_wait_ms() -> u32 {
    defaults::ATLAS_WAIT_MS
}

fn default_per_target_packets() -> u32 {
    defaults::PER_TARGET_PACKETS_PER_HOUR
}

fn default_raw_retention_days() -> u32 {
    defaults::RAW_RETENTION_DAYS
}

fn default_vetting_min_checks() -> u32 {
    defaults::VETTING_MIN_CHECKS
}

fn default_max_probes() -> u32 {
    defaults::MAX_PROBES
}

fn default_new_probes_per_s() -> u32 {
    defaults::NEW_PROBES_PER_S
}

fn default_known_answer_percent() -> u32 {
    defaults::KNOWN_ANSWER_PERCENT
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: defaults::LISTEN.parse().expect("valid default"),
            database: defaults::DATABASE.to_string(),
            geoip: None,
            probe_token: None,
            allow_private: false,
            landmarks: None,
            heartbeat_interval_ms: defaults::HEARTBEAT_INTERVAL_MS,
            probe_timeout_ms: defaults::PROBE_TIMEOUT_MS,
            ping_count: defaults::PING_COUNT,
            ping_interval_ms: defaults::PING_INTERVAL_MS,
            mode: Mode::All,
            two_stage_first: defaults::TWO_STAGE_FIRST,
            two_stage_k: defaults::TWO_STAGE_K,
            batch_concurrency: defaults::BATCH_CONCURRENCY,
            landmark_checks: true,
            calibrate: true,
            calibration_min_rtts: defaults::CALIBRATION_MIN_RTTS,
            reconnect_grace_ms: defaults::RECONNECT_GRACE_MS,
            tls_cert: None,
            tls_key: None,
            insecure_plaintext: false,
            auth: Auth::Keys,
            per_target_packets_per_hour: defaults::PER_TARGET_PACKETS_PER_HOUR,
            http_listen: None,
            asn_db: None,
            know_config: None,
            metrics_listen: None,
            log_format: geoloc_rt::ops::LogFormat::Text,
            raw_retention_days: defaults::RAW_RETENTION_DAYS,
            atlas_base_url: None,
            atlas_key_file: None,
            atlas_max_credits: defaults::ATLAS_MAX_CREDITS,
            atlas_exclude_file: None,
            atlas_mesh_msm: Vec::new(),
            atlas_wait_ms: defaults::ATLAS_WAIT_MS,
            vetting_min_checks: defaults::VETTING_MIN_CHECKS,
            known_answer_percent: defaults::KNOWN_ANSWER_PERCENT,
            cluster: false,
            replica_id: None,
            max_probes: defaults::MAX_PROBES,
            new_probes_per_s: defaults::NEW_PROBES_PER_S,
        }
    }
}

impl Settings {
    /// Reads and parses a TOML file (unknown keys rejected).
    pub fn load(path: &Path) -> Result<Settings> {
        let text = std::fs::read_to_string(path).map_err(|source| CoordinatorError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| CoordinatorError::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

fn config_error(e: geoloc_rt::Error) -> CoordinatorError {
    match e {
        geoloc_rt::Error::Parse(m) => CoordinatorError::InvalidConfig(m),
        other => CoordinatorError::InvalidConfig(other.to_string()),
    }
}

impl Config {
    /// Flags, `GEOLOC_COORDINATOR_*` from the process environment, the file (`--config` or
    /// `GEOLOC_COORDINATOR_CONFIG`) and defaults, then validated.
    pub fn from_args(args: Args) -> Result<Config> {
        Config::load(&args, &ProcessEnv)
    }

    /// [`Config::from_args`] with the environment read from `env`.
    pub fn load(args: &Args, env: &dyn EnvSource) -> Result<Config> {
        let path = args.config.clone().or_else(|| {
            env.var(ENV_CONFIG)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        });
        let file = match &path {
            Some(p) => Settings::load(p)?,
            None => Settings::default(),
        };
        let origin = path.map(|p| p.display().to_string());
        Config::resolve(&args.settings, &file, origin.as_deref(), env)
    }

    /// Flags over the file over defaults (no environment), then validated.
    pub fn merge(a: Args, f: FileConfig) -> Result<Config> {
        Config::resolve(&a.settings, &f, None, &std::collections::HashMap::new())
    }

    /// The one precedence rule: flag > environment > file > default; then validated, with
    /// errors naming the key and the layer its value came from.
    pub fn resolve(
        flags: &Settings,
        file: &Settings,
        file_origin: Option<&str>,
        env: &dyn EnvSource,
    ) -> Result<Config> {
        let layers = Layers::new(ENV_PREFIX, &Config::default())
            .and_then(|l| l.file(file_origin.unwrap_or("(config)"), file))
            .and_then(|l| l.env(env))
            .and_then(|l| l.flags(flags))
            .map_err(config_error)?;
        let mut c: Config = layers.extract().map_err(config_error)?;
        c.probe_token = c.probe_token.filter(|t| !t.is_empty());
        c.check()
            .map_err(|(key, message)| config_error(layers.invalid(key, message)))?;
        Ok(c)
    }

    /// The effective configuration as TOML with the probe token and any database password
    /// replaced (`--print-config`).
    pub fn to_redacted_toml(&self) -> Result<String> {
        let mut shown = self.clone();
        if shown.probe_token.is_some() {
            shown.probe_token = Some(geoloc_rt::config::REDACTED.into());
        }
        shown.database = redact_database(&shown.database);
        geoloc_rt::config::to_toml(&shown).map_err(config_error)
    }

    /// Checks ranges; the error names the option.
    pub fn validate(&self) -> Result<()> {
        self.check()
            .map_err(|(_, message)| CoordinatorError::InvalidConfig(message))
    }

    /// Range checks: the key at fault and what is wrong.
    fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        let bad = |key: &'static str, m: String| Err((key, m));
        if !(100..=600_000).contains(&self.heartbeat_interval_ms) {
            return bad(
                "heartbeat-interval-ms",
                format!(
                    "heartbeat-interval-ms {} not in 100..=600000",
                    self.heartbeat_interval_ms
                ),
            );
        }
        if !(50..=600_000).contains(&self.probe_timeout_ms) {
            return bad(
                "probe-timeout-ms",
                format!(
                    "probe-timeout-ms {} not in 50..=600000",
                    self.probe_timeout_ms
                ),
            );
        }
        if !(1..=100).contains(&self.ping_count) {
            return bad(
                "ping-count",
                format!("ping-count {} not in 1..=100", self.ping_count),
            );
        }
        if self.ping_interval_ms > 10_000 {
            return bad(
                "ping-interval-ms",
                format!("ping-interval-ms {} above 10000", self.ping_interval_ms),
            );
        }
        if self.two_stage_first == 0 || self.two_stage_k == 0 {
            let key = if self.two_stage_first == 0 {
                "two-stage-first"
            } else {
                "two-stage-k"
            };
            return bad(
                key,
                "two-stage-first and two-stage-k must be at least 1".into(),
            );
        }
        if self.vetting_min_checks > 1000 {
            return bad(
                "vetting-min-checks",
                format!("vetting-min-checks {} above 1000", self.vetting_min_checks),
            );
        }
        if self.cluster
            && !(self.database.starts_with("postgres:") || self.database.starts_with("postgresql:"))
        {
            return bad(
                "cluster",
                format!(
                    "cluster = true needs a postgres:// database, got {}",
                    crate::storage::redact(&self.database)
                ),
            );
        }
        if let Some(id) = &self.replica_id {
            if id.is_empty()
                || id.len() > 64
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return bad(
                    "replica-id",
                    format!("replica-id {id:?}: use 1 to 64 letters, digits, '-', '_' or '.'"),
                );
            }
        }
        if !(1..=100_000).contains(&self.max_probes) {
            return bad(
                "max-probes",
                format!("max-probes {} not in 1..=100000", self.max_probes),
            );
        }
        if !(1..=100_000).contains(&self.new_probes_per_s) {
            return bad(
                "new-probes-per-s",
                format!(
                    "new-probes-per-s {} not in 1..=100000",
                    self.new_probes_per_s
                ),
            );
        }
        if self.known_answer_percent > 100 {
            return bad(
                "known-answer-percent",
                format!(
                    "known-answer-percent {} not in 0..=100",
                    self.known_answer_percent
                ),
            );
        }
        if (self.calibration_min_rtts as usize) < geoloc_engine::delay::MIN_CALIBRATION_POINTS {
            return bad(
                "calibration-min-rtts",
                format!(
                    "calibration-min-rtts {} below the engine's minimum of {}",
                    self.calibration_min_rtts,
                    geoloc_engine::delay::MIN_CALIBRATION_POINTS
                ),
            );
        }
        if self.reconnect_grace_ms > 600_000 {
            return bad(
                "reconnect-grace-ms",
                format!(
                    "reconnect-grace-ms {} above 600000",
                    self.reconnect_grace_ms
                ),
            );
        }
        if self.raw_retention_days > 36_500 {
            return bad(
                "raw-retention-days",
                format!(
                    "raw-retention-days {} above 36500 (use 0 to keep raw measurements forever)",
                    self.raw_retention_days
                ),
            );
        }
        if !(1..=256).contains(&self.batch_concurrency) {
            return bad(
                "batch-concurrency",
                format!(
                    "batch-concurrency {} not in 1..=256",
                    self.batch_concurrency
                ),
            );
        }
        if let Some((key, message)) = crate::core::atlas_source::config_problem(self) {
            return bad(key, message);
        }
        if let Some((key, message)) = self.transport_problem() {
            return bad(key, message);
        }
        if self.auth == Auth::None && !self.listen.ip().is_loopback() {
            return bad(
                "auth",
                format!(
                    "auth = \"none\" is only accepted on a loopback listen address, not {}: \
                     create API keys with `geoloc-coordinator keys create`",
                    self.listen
                ),
            );
        }
        if self.per_target_packets_per_hour == 0 {
            return bad(
                "per-target-packets-per-hour",
                "per-target-packets-per-hour must be at least 1".into(),
            );
        }
        if let Some(a) = self.http_listen.filter(|a| !a.ip().is_loopback()) {
            if !self.insecure_plaintext {
                return bad(
                    "http-listen",
                    format!(
                        "http-listen {a} is not a loopback address: the web interface is plain \
                         HTTP (no TLS yet); serve it on 127.0.0.1 behind a TLS reverse proxy, or \
                         set insecure-plaintext to accept sending results in clear"
                    ),
                );
            }
        }
        if !(self.database.starts_with("sqlite:")
            || self.database.starts_with("postgres:")
            || self.database.starts_with("postgresql:"))
        {
            return bad(
                "database",
                format!(
                    "database {:?}: expected sqlite://FILE or postgres://...",
                    redact_database(&self.database)
                ),
            );
        }
        Ok(())
    }
}

impl Config {
    /// Whether gRPC is served over TLS (`tls-cert` and `tls-key` both set).
    pub fn tls(&self) -> Option<(&Path, &Path)> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Some((c, k)),
            _ => None,
        }
    }

    /// TLS keys given by halves, or plaintext on a non-loopback address without
    /// `insecure-plaintext`: the key at fault and what to do.
    pub fn transport_problem(&self) -> Option<(&'static str, String)> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Some((
                    "tls-cert",
                    "tls-cert is set without tls-key: give both (the certificate chain and \
                     its private key) or neither"
                        .into(),
                ))
            }
            (None, Some(_)) => {
                return Some((
                    "tls-key",
                    "tls-key is set without tls-cert: give both (the certificate chain and \
                     its private key) or neither"
                        .into(),
                ))
            }
            _ => {}
        }
        if self.tls().is_none() && !self.listen.ip().is_loopback() && !self.insecure_plaintext {
            return Some((
                "listen",
                format!(
                    "refusing to serve plaintext gRPC on {}, which is not a loopback address: \
                     probe tokens and results would cross the network in clear. Either serve \
                     TLS with --tls-cert FILE --tls-key FILE (keys tls-cert, tls-key), or, in \
                     a lab only, pass --insecure-plaintext (key insecure-plaintext)",
                    self.listen
                ),
            ));
        }
        None
    }
}

/// A database URL with its password (user:PASSWORD@ or ?password=...) replaced.
pub fn redact_database(url: &str) -> String {
    let url = crate::storage::redact(url);
    match url.split_once('?') {
        Some((base, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{base}?{}", query.join("&"))
        }
        None => url,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_flag_over_file_over_default() {
        let file: FileConfig =
            toml::from_str("listen = \"127.0.0.1:9000\"\nping-count = 5\nmode = \"two-stage\"\n")
                .unwrap();
        let args =
            Args::try_parse_from(["geoloc-coordinator", "--ping-count", "7", "--allow-private"])
                .unwrap();
        let c = Config::merge(args, file).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(c.ping_count, 7);
        assert!(c.allow_private);
        assert_eq!(c.mode, Mode::TwoStage);
        assert_eq!(c.database, defaults::DATABASE);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        let e = toml::from_str::<FileConfig>("lissten = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field"), "{e}");
        let file: FileConfig = toml::from_str("ping-count = 0").unwrap();
        let e = Config::merge(Args::default(), file)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ping-count 0"), "{e}");
        let file: FileConfig = toml::from_str("database = \"mysql://x\"").unwrap();
        assert!(Config::merge(Args::default(), file).is_err());
    }

    #[test]
    fn sample_config_parses_and_names_every_key() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/coordinator.toml");
        let f = Settings::load(Path::new(path)).unwrap();
        Config::merge(Args::default(), f).unwrap();
        // Every key of the effective configuration is shown in the sample (set or
        // commented out), so operators find each one there.
        let text = std::fs::read_to_string(path).unwrap();
        let all = Config {
            geoip: Some("x".into()),
            probe_token: Some("x".into()),
            landmarks: Some("x".into()),
            tls_cert: Some("x".into()),
            tls_key: Some("x".into()),
            http_listen: Some("127.0.0.1:8080".parse().unwrap()),
            asn_db: Some("x".into()),
            know_config: Some("x".into()),
            metrics_listen: Some("127.0.0.1:9464".parse().unwrap()),
            ..Config::default()
        };
        let keys = toml::to_string(&all).unwrap();
        for key in keys
            .lines()
            .filter_map(|l| l.split_once(" = ").map(|(k, _)| k))
        {
            assert!(
                text.lines()
                    .any(|l| l.trim_start_matches("# ").starts_with(&format!("{key} = "))),
                "deploy/coordinator.toml misses `{key}`"
            );
        }
    }

    fn env(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn precedence_flag_over_env_over_file_over_default() {
        let file: FileConfig =
            toml::from_str("ping-count = 5\nbatch-concurrency = 9\nmode = \"all\"\n").unwrap();
        let args = Args::try_parse_from(["geoloc-coordinator", "--ping-count", "7"]).unwrap();
        let e = env(&[
            ("GEOLOC_COORDINATOR_PING_COUNT", "8"),
            ("GEOLOC_COORDINATOR_MODE", "two-stage"),
            ("GEOLOC_COORDINATOR_CALIBRATE", "false"),
            ("GEOLOC_COORDINATOR_LISTEN", "127.0.0.1:9001"),
            ("GEOLOC_COORDINATOR_CONFIG", "/ignored/by/resolve.toml"),
        ]);
        let c = Config::resolve(&args.settings, &file, Some("c.toml"), &e).unwrap();
        assert_eq!(c.ping_count, 7, "flag beats env and file");
        assert_eq!(c.mode, Mode::TwoStage, "env beats file");
        assert!(!c.calibrate, "env beats default");
        assert_eq!(c.listen.to_string(), "127.0.0.1:9001");
        assert_eq!(c.batch_concurrency, 9, "file beats default");
        assert_eq!(c.two_stage_k, defaults::TWO_STAGE_K, "default");
    }

    #[test]
    fn errors_name_the_key_and_its_layer() {
        let none = Settings::default();
        let e = Config::resolve(
            &none,
            &none,
            None,
            &env(&[("GEOLOC_COORDINATOR_PING_COUNT", "lots")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("GEOLOC_COORDINATOR_PING_COUNT") && e.contains("environment"),
            "{e}"
        );
        let e = Config::resolve(
            &none,
            &none,
            None,
            &env(&[("GEOLOC_COORDINATOR_PING_COUNT", "0")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("ping-count 0 not in 1..=100")
                && e.contains("GEOLOC_COORDINATOR_PING_COUNT in the environment"),
            "{e}"
        );
        let file: FileConfig = toml::from_str("two-stage-k = 0").unwrap();
        let e = Config::resolve(&none, &file, Some("/etc/c.toml"), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("two-stage-k in file /etc/c.toml"), "{e}");
        let args = Args::try_parse_from(["geoloc-coordinator", "--database", "mysql://x"]).unwrap();
        let e = Config::merge(args, FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("expected sqlite://FILE or postgres://")
                && e.contains("--database on the command line"),
            "{e}"
        );
    }

    #[test]
    fn plaintext_only_on_loopback_unless_insecure_plaintext() {
        let none = Settings::default();
        let args =
            Args::try_parse_from(["geoloc-coordinator", "--listen", "0.0.0.0:7470"]).unwrap();
        let e = Config::resolve(&args.settings, &none, None, &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("refusing to serve plaintext gRPC on 0.0.0.0:7470")
                && e.contains("--tls-cert FILE --tls-key FILE")
                && e.contains("--insecure-plaintext")
                && e.contains("--listen on the command line"),
            "{e}"
        );
        let file: FileConfig =
            toml::from_str("listen = \"[::]:7470\"\ninsecure-plaintext = true\n").unwrap();
        let c = Config::resolve(&none, &file, Some("c.toml"), &env(&[])).unwrap();
        assert!(c.insecure_plaintext && c.tls().is_none());
        let c = Config::resolve(
            &none,
            &none,
            None,
            &env(&[
                ("GEOLOC_COORDINATOR_LISTEN", "192.0.2.1:7470"),
                ("GEOLOC_COORDINATOR_TLS_CERT", "/etc/geoloc/c.crt"),
                ("GEOLOC_COORDINATOR_TLS_KEY", "/etc/geoloc/c.key"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.tls(),
            Some((
                Path::new("/etc/geoloc/c.crt"),
                Path::new("/etc/geoloc/c.key")
            ))
        );
        // Loopback needs neither.
        for listen in ["127.0.0.1:0", "[::1]:7470", "127.0.0.53:7470"] {
            let args = Args::try_parse_from(["geoloc-coordinator", "--listen", listen]).unwrap();
            Config::resolve(&args.settings, &none, None, &env(&[])).unwrap();
        }
    }

    #[test]
    fn tls_cert_and_key_go_together() {
        let none = Settings::default();
        let args = Args::try_parse_from(["geoloc-coordinator", "--tls-cert", "c.pem"]).unwrap();
        let e = Config::resolve(&args.settings, &none, None, &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls-cert is set without tls-key"), "{e}");
        let file: FileConfig = toml::from_str("tls-key = \"k.pem\"").unwrap();
        let e = Config::resolve(&none, &file, Some("/etc/c.toml"), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tls-key is set without tls-cert") && e.contains("/etc/c.toml"),
            "{e}"
        );
    }

    #[test]
    fn http_listen_is_off_by_default_and_loopback_unless_insecure_plaintext() {
        let c = Config::merge(Args::default(), FileConfig::default()).unwrap();
        assert_eq!(c.http_listen, None);
        let file: FileConfig = toml::from_str("http-listen = \"127.0.0.1:8080\"").unwrap();
        let c = Config::merge(Args::default(), file).unwrap();
        assert_eq!(c.http_listen, Some("127.0.0.1:8080".parse().unwrap()));
        let args =
            Args::try_parse_from(["geoloc-coordinator", "--http-listen", "0.0.0.0:8080"]).unwrap();
        let e = Config::merge(args, FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("http-listen 0.0.0.0:8080 is not a loopback address")
                && e.contains("--http-listen on the command line"),
            "{e}"
        );
        let args = Args::try_parse_from([
            "geoloc-coordinator",
            "--http-listen",
            "[::]:8080",
            "--insecure-plaintext",
        ])
        .unwrap();
        let c = Config::merge(args, FileConfig::default()).unwrap();
        assert!(c.insecure_plaintext);
        let e = Config::resolve(
            &Settings::default(),
            &Settings::default(),
            None,
            &env(&[("GEOLOC_COORDINATOR_HTTP_LISTEN", "192.0.2.1:80")]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("GEOLOC_COORDINATOR_HTTP_LISTEN"), "{e}");
    }

    #[test]
    fn printed_configuration_redacts_secrets() {
        let file: FileConfig = toml::from_str(
            "probe-token = \"s3cret-token\"\n\
             database = \"postgres://geoloc:hunter2@db.example:5432/geoloc?sslmode=require&password=hunter3\"\n\
             geoip = \"/var/lib/geoloc/GeoLite2-City.mmdb\"\nmode = \"two-stage\"\n",
        )
        .unwrap();
        let c = Config::merge(Args::default(), file).unwrap();
        let text = c.to_redacted_toml().unwrap();
        assert!(
            !text.contains("s3cret") && !text.contains("hunter"),
            "{text}"
        );
        insta::assert_snapshot!(text);
    }
}
