//! Coordinator configuration: command-line flags > `GEOLOC_COORDINATOR_*` environment
//! variables > TOML file (`--config FILE`) > defaults. See `deploy/coordinator.toml` for a
//! complete commented sample.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

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
}

/// How probes are chosen for a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Every healthy probe.
    All,
    /// A few probes spread over the world, then the K nearest the first region.
    TwoStage,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::All => "all",
            Mode::TwoStage => "two-stage",
        }
    }
}

/// Command line of `geoloc-coordinator`.
#[derive(Debug, Default, Parser)]
#[command(
    name = "geoloc-coordinator",
    version,
    about = "geoloc coordinator: probe registry, scheduling, storage and solving over gRPC"
)]
pub struct Args {
    /// TOML configuration file (flags and environment override it).
    #[arg(long, env = "GEOLOC_COORDINATOR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on for probes and clients [default: 127.0.0.1:7470].
    #[arg(long, env = "GEOLOC_COORDINATOR_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Database URL: sqlite://FILE or postgres://USER@HOST/DB [default: sqlite://geoloc.sqlite].
    #[arg(long, env = "GEOLOC_COORDINATOR_DATABASE", value_name = "URL")]
    pub database: Option<String>,
    /// MaxMind-format .mmdb file for the GeoIP comparison.
    #[arg(long, env = "GEOLOC_COORDINATOR_GEOIP", value_name = "FILE.mmdb")]
    pub geoip: Option<PathBuf>,
    /// Credential probes must present when registering (none = any probe may register).
    #[arg(long, env = "GEOLOC_COORDINATOR_PROBE_TOKEN", value_name = "TOKEN")]
    pub probe_token: Option<String>,
    /// Allow private/loopback targets (lab only).
    #[arg(long, env = "GEOLOC_COORDINATOR_ALLOW_PRIVATE", num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    pub allow_private: Option<bool>,
    /// Landmarks file (landmarks/README.md).
    #[arg(long, env = "GEOLOC_COORDINATOR_LANDMARKS", value_name = "FILE")]
    pub landmarks: Option<PathBuf>,
    /// Heartbeat interval asked of probes, ms [default: 5000].
    #[arg(
        long,
        env = "GEOLOC_COORDINATOR_HEARTBEAT_INTERVAL_MS",
        value_name = "MS"
    )]
    pub heartbeat_interval_ms: Option<u32>,
    /// Default per-probe timeout, ms [default: 5000].
    #[arg(long, env = "GEOLOC_COORDINATOR_PROBE_TIMEOUT_MS", value_name = "MS")]
    pub probe_timeout_ms: Option<u32>,
    /// Default echo requests per probe [default: 3].
    #[arg(long, env = "GEOLOC_COORDINATOR_PING_COUNT", value_name = "N")]
    pub ping_count: Option<u32>,
    /// Spacing of echo requests, ms [default: 50].
    #[arg(long, env = "GEOLOC_COORDINATOR_PING_INTERVAL_MS", value_name = "MS")]
    pub ping_interval_ms: Option<u32>,
    /// Default scheduling mode [default: all].
    #[arg(long, env = "GEOLOC_COORDINATOR_MODE", value_enum)]
    pub mode: Option<Mode>,
    /// Two-stage: probes in the first, world-spread stage [default: 8].
    #[arg(long, env = "GEOLOC_COORDINATOR_TWO_STAGE_FIRST", value_name = "N")]
    pub two_stage_first: Option<u32>,
    /// Two-stage: probes nearest the first region in the second stage [default: 24].
    #[arg(long, env = "GEOLOC_COORDINATOR_TWO_STAGE_K", value_name = "K")]
    pub two_stage_k: Option<u32>,
    /// Addresses of a batch measured at the same time [default: 4].
    #[arg(long, env = "GEOLOC_COORDINATOR_BATCH_CONCURRENCY", value_name = "N")]
    pub batch_concurrency: Option<u32>,
    /// Measure probe-to-landmark RTTs and flag faster-than-light probes [default: true].
    #[arg(long, env = "GEOLOC_COORDINATOR_LANDMARK_CHECKS", value_name = "BOOL",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub landmark_checks: Option<bool>,
    /// Fit per-probe delay models on probe-to-landmark RTTs and solve with them [default: true].
    #[arg(long, env = "GEOLOC_COORDINATOR_CALIBRATE", value_name = "BOOL",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub calibrate: Option<bool>,
    /// Fewest landmark RTTs a probe's delay model is fitted on; probes with fewer use the
    /// sound bound [default: 40].
    #[arg(
        long,
        env = "GEOLOC_COORDINATOR_CALIBRATION_MIN_RTTS",
        value_name = "N"
    )]
    pub calibration_min_rtts: Option<u32>,
    /// After a start, how long a locate waits for the probes seen before the restart to
    /// reconnect before it measures with fewer (or answers `no-probes`), ms [default: 30000].
    #[arg(long, env = "GEOLOC_COORDINATOR_RECONNECT_GRACE_MS", value_name = "MS")]
    pub reconnect_grace_ms: Option<u32>,
}

/// The TOML file; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub database: Option<String>,
    pub geoip: Option<PathBuf>,
    pub probe_token: Option<String>,
    pub allow_private: Option<bool>,
    pub landmarks: Option<PathBuf>,
    pub heartbeat_interval_ms: Option<u32>,
    pub probe_timeout_ms: Option<u32>,
    pub ping_count: Option<u32>,
    pub ping_interval_ms: Option<u32>,
    pub mode: Option<Mode>,
    pub two_stage_first: Option<u32>,
    pub two_stage_k: Option<u32>,
    pub batch_concurrency: Option<u32>,
    pub landmark_checks: Option<bool>,
    pub calibrate: Option<bool>,
    pub calibration_min_rtts: Option<u32>,
    pub reconnect_grace_ms: Option<u32>,
}

/// The effective configuration.
#[derive(Debug, Clone)]
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
}

impl Default for Config {
    fn default() -> Self {
        Config::merge(Args::default(), FileConfig::default()).expect("defaults are valid")
    }
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig> {
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

impl Config {
    /// Flags/env (already merged by clap) over the file over defaults, then validated.
    pub fn from_args(args: Args) -> Result<Config> {
        let file = match &args.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        Config::merge(args, file)
    }

    pub fn merge(a: Args, f: FileConfig) -> Result<Config> {
        let c = Config {
            listen: a
                .listen
                .or(f.listen)
                .unwrap_or_else(|| defaults::LISTEN.parse().expect("valid default")),
            database: a
                .database
                .or(f.database)
                .unwrap_or_else(|| defaults::DATABASE.to_string()),
            geoip: a.geoip.or(f.geoip),
            probe_token: a.probe_token.or(f.probe_token).filter(|t| !t.is_empty()),
            allow_private: a.allow_private.or(f.allow_private).unwrap_or(false),
            landmarks: a.landmarks.or(f.landmarks),
            heartbeat_interval_ms: a
                .heartbeat_interval_ms
                .or(f.heartbeat_interval_ms)
                .unwrap_or(defaults::HEARTBEAT_INTERVAL_MS),
            probe_timeout_ms: a
                .probe_timeout_ms
                .or(f.probe_timeout_ms)
                .unwrap_or(defaults::PROBE_TIMEOUT_MS),
            ping_count: a
                .ping_count
                .or(f.ping_count)
                .unwrap_or(defaults::PING_COUNT),
            ping_interval_ms: a
                .ping_interval_ms
                .or(f.ping_interval_ms)
                .unwrap_or(defaults::PING_INTERVAL_MS),
            mode: a.mode.or(f.mode).unwrap_or(Mode::All),
            two_stage_first: a
                .two_stage_first
                .or(f.two_stage_first)
                .unwrap_or(defaults::TWO_STAGE_FIRST),
            two_stage_k: a
                .two_stage_k
                .or(f.two_stage_k)
                .unwrap_or(defaults::TWO_STAGE_K),
            batch_concurrency: a
                .batch_concurrency
                .or(f.batch_concurrency)
                .unwrap_or(defaults::BATCH_CONCURRENCY),
            landmark_checks: a.landmark_checks.or(f.landmark_checks).unwrap_or(true),
            calibrate: a.calibrate.or(f.calibrate).unwrap_or(true),
            calibration_min_rtts: a
                .calibration_min_rtts
                .or(f.calibration_min_rtts)
                .unwrap_or(defaults::CALIBRATION_MIN_RTTS),
            reconnect_grace_ms: a
                .reconnect_grace_ms
                .or(f.reconnect_grace_ms)
                .unwrap_or(defaults::RECONNECT_GRACE_MS),
        };
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(CoordinatorError::InvalidConfig(m));
        if !(100..=600_000).contains(&self.heartbeat_interval_ms) {
            return bad(format!(
                "heartbeat-interval-ms {} not in 100..=600000",
                self.heartbeat_interval_ms
            ));
        }
        if !(50..=600_000).contains(&self.probe_timeout_ms) {
            return bad(format!(
                "probe-timeout-ms {} not in 50..=600000",
                self.probe_timeout_ms
            ));
        }
        if !(1..=100).contains(&self.ping_count) {
            return bad(format!("ping-count {} not in 1..=100", self.ping_count));
        }
        if self.ping_interval_ms > 10_000 {
            return bad(format!(
                "ping-interval-ms {} above 10000",
                self.ping_interval_ms
            ));
        }
        if self.two_stage_first == 0 || self.two_stage_k == 0 {
            return bad("two-stage-first and two-stage-k must be at least 1".into());
        }
        if (self.calibration_min_rtts as usize) < geoloc_engine::delay::MIN_CALIBRATION_POINTS {
            return bad(format!(
                "calibration-min-rtts {} below the engine's minimum of {}",
                self.calibration_min_rtts,
                geoloc_engine::delay::MIN_CALIBRATION_POINTS
            ));
        }
        if self.reconnect_grace_ms > 600_000 {
            return bad(format!(
                "reconnect-grace-ms {} above 600000",
                self.reconnect_grace_ms
            ));
        }
        if !(1..=256).contains(&self.batch_concurrency) {
            return bad(format!(
                "batch-concurrency {} not in 1..=256",
                self.batch_concurrency
            ));
        }
        if !(self.database.starts_with("sqlite:")
            || self.database.starts_with("postgres:")
            || self.database.starts_with("postgresql:"))
        {
            return bad(format!(
                "database {:?}: expected sqlite://FILE or postgres://...",
                crate::storage::redact(&self.database)
            ));
        }
        Ok(())
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
    fn sample_config_parses() {
        let text = include_str!("../../deploy/coordinator.toml");
        let f: FileConfig = toml::from_str(text).unwrap();
        Config::merge(Args::default(), f).unwrap();
    }
}
