//! Configuration: TOML file, environment (`GEOLOC_PROBE_*`) and command-line flags.
//!
//! Precedence for every option: **flag > environment > file > default**, decided in one
//! place for both daemons (`geoloc_rt::config::Layers`). The environment is read through
//! [`EnvSource`] so tests inject a map instead of touching the process environment.
//!
//! Every option has the same name everywhere: `max-ttl` in the file, `--max-ttl` on the
//! command line, `GEOLOC_PROBE_MAX_TTL` in the environment. Lists are comma-separated in
//! the environment (`GEOLOC_PROBE_TCP_PORTS=443,80`) and repeated or comma-separated on the
//! command line (`--tcp-ports 443,80`). The file path itself comes from `--config FILE` or
//! `GEOLOC_PROBE_CONFIG`. [`ConfigFlags`] is one layer (flags, and the file's schema);
//! [`AgentConfig`] is the effective configuration.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;
use std::{fmt, result};

use geoloc_rt::config::{duration_ms, float, float_opt, list_or_comma_separated, Layers};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use geoloc_rt::config::{EnvSource, ProcessEnv};
pub use geoloc_rt::ops::LogFormat;

/// Default values, in one place.
pub mod defaults {
    /// Coordinator gRPC endpoint.
    pub const COORDINATOR: &str = "http://127.0.0.1:7470";
    /// Agent-wide packet rate cap, packets per second.
    pub const MAX_PACKETS_PER_SECOND: f64 = 200.0;
    /// Agent-wide burst, packets.
    pub const PACKET_BURST: f64 = 50.0;
    /// Per-target packet rate cap, packets per second.
    pub const TARGET_PACKETS_PER_SECOND: f64 = 20.0;
    /// Per-target burst, packets.
    pub const TARGET_PACKET_BURST: f64 = 10.0;
    /// Highest TTL the agent ever sends.
    pub const MAX_TTL: u8 = 30;
    /// Echo requests per ping measurement.
    pub const PING_COUNT: u32 = 5;
    /// Spacing between echo requests, ms.
    pub const PING_INTERVAL_MS: u64 = 200;
    /// Wait for each echo reply, ms (always cut at the request's deadline). Above 1 s:
    /// satellite paths (and the emulated lab) have RTTs over a second.
    pub const PING_TIMEOUT_MS: u64 = 2000;
    /// TCP ports for the handshake RTT.
    pub const TCP_PORTS: [u16; 3] = [443, 80, 22];
    /// TCP connect timeout, ms.
    pub const TCP_TIMEOUT_MS: u64 = 2000;
    /// Wait for traceroute replies after the last probe, ms.
    pub const TRACEROUTE_TIMEOUT_MS: u64 = 1000;
    /// Probes per TTL (minimum RTT kept).
    pub const TRACEROUTE_PROBES_PER_HOP: u32 = 2;
    /// UDP destination port of traceroute probes (constant: Paris).
    pub const TRACEROUTE_UDP_PORT: u16 = 33434;
    /// TCP destination port of traceroute probes.
    pub const TRACEROUTE_TCP_PORT: u16 = 80;
    /// Measurement requests executed at once (one pool: the agent is not told why it
    /// measures).
    pub const MAX_CONCURRENT_MEASUREMENTS: usize = 8;
    /// Budget of a request that gives none, ms.
    pub const REQUEST_TIMEOUT_MS: u64 = 30_000;
    /// First reconnect delay, ms.
    pub const RECONNECT_MIN_MS: u64 = 500;
    /// Largest reconnect delay, ms.
    pub const RECONNECT_MAX_MS: u64 = 30_000;
    /// Heartbeat interval when the coordinator does not say, ms.
    pub const HEARTBEAT_INTERVAL_MS: u64 = 10_000;
}

/// Prefix of the agent's environment variables.
pub const ENV_PREFIX: &str = "GEOLOC_PROBE_";

/// Most coordinator URLs in `coordinator`.
pub const MAX_COORDINATORS: usize = 16;

/// Environment variable name of an option: `max-ttl` → `GEOLOC_PROBE_MAX_TTL`.
pub fn env_key(option: &str) -> String {
    geoloc_rt::config::env_key(ENV_PREFIX, option)
}

/// Traceroute probe protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case", try_from = "String")]
pub enum TracerouteProtocol {
    /// ICMP echo requests with a constant checksum.
    Icmp,
    /// UDP datagrams with constant ports, identified by their checksum.
    Udp,
    /// TCP SYNs with constant ports, identified by their sequence number.
    Tcp,
}

impl FromStr for TracerouteProtocol {
    type Err = String;
    fn from_str(s: &str) -> result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "icmp" => Ok(Self::Icmp),
            "udp" => Ok(Self::Udp),
            "tcp" => Ok(Self::Tcp),
            other => Err(format!("expected icmp, udp or tcp, got {other:?}")),
        }
    }
}

impl TryFrom<String> for TracerouteProtocol {
    type Error = String;
    fn try_from(s: String) -> result::Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for TracerouteProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Icmp => "icmp",
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        })
    }
}

/// The TOML file: the same keys as the flags, every key optional, unknown keys rejected.
/// Its `config` holds the path it was read from (for messages).
pub type FileConfig = ConfigFlags;

impl ConfigFlags {
    /// Parses TOML text; `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let mut file: ConfigFlags = toml::from_str(text)
            .map_err(|e| Error::Config(format!("{origin}: {}", e.message())))?;
        file.config = Some(PathBuf::from(origin));
        Ok(file)
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text, &path.display().to_string())
    }
}

/// One layer of options, all optional: the command-line flags, and the file's schema.
#[derive(Debug, Default, Clone, clap::Args, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ConfigFlags {
    /// TOML configuration file (env GEOLOC_PROBE_CONFIG).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Probe identity, 1..=64 of [A-Za-z0-9._-].
    #[arg(long)]
    pub id: Option<String>,
    /// Declared latitude, decimal degrees (WGS84).
    #[arg(long, allow_negative_numbers = true)]
    pub lat: Option<f64>,
    /// Declared longitude, decimal degrees (WGS84).
    #[arg(long, allow_negative_numbers = true)]
    pub lon: Option<f64>,
    /// Coordinator URL, or the URLs of a cluster's replicas separated by commas (the agent
    /// moves to the next one when its session ends) [default: http://127.0.0.1:7470].
    #[arg(long)]
    pub coordinator: Option<String>,
    /// Credential shared with the coordinator (prefer GEOLOC_PROBE_TOKEN: flags show in ps).
    /// Lab-only: enrolled probes use --enrolment-token once, then their own credential.
    #[arg(long)]
    pub token: Option<String>,
    /// CA certificate (PEM) that signed the coordinator's TLS certificate, for an https://
    /// coordinator [default: the built-in public roots].
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// One-time enrolment token (`geoloc-coordinator probes enroll`), exchanged on the first
    /// start for this probe's own credential, kept in --state-dir.
    #[arg(long)]
    pub enrolment_token: Option<String>,
    /// Folder where the agent keeps its credential (file `credential`, mode 0600).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// IPv4 address at which this probe can itself be measured.
    #[arg(long)]
    pub advertise_ipv4: Option<String>,
    /// IPv6 address at which this probe can itself be measured.
    #[arg(long)]
    pub advertise_ipv6: Option<String>,
    /// Accept private/loopback/reserved targets (the coordinator must ask for it too).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub allow_private: Option<bool>,
    /// Agent-wide packet rate cap, packets/s.
    #[arg(long)]
    pub max_packets_per_second: Option<f64>,
    /// Agent-wide burst, packets.
    #[arg(long)]
    pub packet_burst: Option<f64>,
    /// Per-target packet rate cap, packets/s.
    #[arg(long)]
    pub target_packets_per_second: Option<f64>,
    /// Per-target burst, packets.
    #[arg(long)]
    pub target_packet_burst: Option<f64>,
    /// Highest TTL ever sent (1..=255).
    #[arg(long)]
    pub max_ttl: Option<u8>,
    /// Echo requests per ping measurement.
    #[arg(long)]
    pub ping_count: Option<u32>,
    /// Spacing between echo requests, ms.
    #[arg(long)]
    pub ping_interval_ms: Option<u64>,
    /// Wait for each echo reply, ms.
    #[arg(long)]
    pub ping_timeout_ms: Option<u64>,
    /// TCP ports for the handshake RTT (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub tcp_ports: Option<Vec<u16>>,
    /// TCP connect timeout, ms.
    #[arg(long)]
    pub tcp_timeout_ms: Option<u64>,
    /// Traceroute probe protocol.
    #[arg(long, value_enum)]
    pub traceroute_protocol: Option<TracerouteProtocol>,
    /// Probes per TTL.
    #[arg(long)]
    pub traceroute_probes_per_hop: Option<u32>,
    /// Wait for traceroute replies after the last probe, ms.
    #[arg(long)]
    pub traceroute_timeout_ms: Option<u64>,
    /// UDP destination port of traceroute probes.
    #[arg(long)]
    pub traceroute_udp_port: Option<u16>,
    /// TCP destination port of traceroute probes.
    #[arg(long)]
    pub traceroute_tcp_port: Option<u16>,
    /// Measurement requests executed at once.
    #[arg(long)]
    pub max_concurrent_measurements: Option<usize>,
    /// Budget of a request that gives none, ms.
    #[arg(long)]
    pub request_timeout_ms: Option<u64>,
    /// First reconnect delay, ms.
    #[arg(long)]
    pub reconnect_min_ms: Option<u64>,
    /// Largest reconnect delay, ms.
    #[arg(long)]
    pub reconnect_max_ms: Option<u64>,
    /// Address of the operations listener serving /metrics (Prometheus) and /healthz
    /// [default: none, off].
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Log lines on stderr: text or json (one object per line) [default: text].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

/// The resolved, validated configuration (serialized with the file's keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct AgentConfig {
    /// Probe identity (required to run the agent, not for `measure`).
    pub id: Option<String>,
    /// Declared latitude, degrees.
    #[serde(default, deserialize_with = "float_opt")]
    pub lat: Option<f64>,
    /// Declared longitude, degrees.
    #[serde(default, deserialize_with = "float_opt")]
    pub lon: Option<f64>,
    /// Coordinator URL, or several separated by commas (replicas of one cluster, tried in
    /// turn: see [`AgentConfig::coordinators`]).
    pub coordinator: String,
    /// Credential.
    pub token: String,
    /// CA certificate file trusted for an https:// coordinator (else the webpki roots).
    pub ca: Option<PathBuf>,
    /// One-time enrolment token.
    pub enrolment_token: Option<String>,
    /// Where the credential is kept.
    pub state_dir: Option<PathBuf>,
    /// Announced IPv4 address.
    pub advertise_ipv4: Option<Ipv4Addr>,
    /// Announced IPv6 address.
    pub advertise_ipv6: Option<Ipv6Addr>,
    /// The agent's half of the private-target permission.
    pub allow_private: bool,
    /// Agent-wide packets/s.
    #[serde(deserialize_with = "float")]
    pub max_packets_per_second: f64,
    /// Agent-wide burst.
    #[serde(deserialize_with = "float")]
    pub packet_burst: f64,
    /// Per-target packets/s.
    #[serde(deserialize_with = "float")]
    pub target_packets_per_second: f64,
    /// Per-target burst.
    #[serde(deserialize_with = "float")]
    pub target_packet_burst: f64,
    /// Highest TTL ever sent.
    pub max_ttl: u8,
    /// Echo requests per ping.
    pub ping_count: u32,
    /// Spacing between echo requests.
    #[serde(rename = "ping-interval-ms", with = "duration_ms")]
    pub ping_interval: Duration,
    /// Wait for each echo reply.
    #[serde(rename = "ping-timeout-ms", with = "duration_ms")]
    pub ping_timeout: Duration,
    /// TCP ports.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub tcp_ports: Vec<u16>,
    /// TCP connect timeout.
    #[serde(rename = "tcp-timeout-ms", with = "duration_ms")]
    pub tcp_timeout: Duration,
    /// Traceroute protocol.
    pub traceroute_protocol: TracerouteProtocol,
    /// Probes per TTL.
    pub traceroute_probes_per_hop: u32,
    /// Wait after the last traceroute probe.
    #[serde(rename = "traceroute-timeout-ms", with = "duration_ms")]
    pub traceroute_timeout: Duration,
    /// UDP traceroute destination port.
    pub traceroute_udp_port: u16,
    /// TCP traceroute destination port.
    pub traceroute_tcp_port: u16,
    /// Concurrent measurement requests.
    pub max_concurrent_measurements: usize,
    /// Default request budget.
    #[serde(rename = "request-timeout-ms", with = "duration_ms")]
    pub request_timeout: Duration,
    /// First reconnect delay.
    #[serde(rename = "reconnect-min-ms", with = "duration_ms")]
    pub reconnect_min: Duration,
    /// Largest reconnect delay.
    #[serde(rename = "reconnect-max-ms", with = "duration_ms")]
    pub reconnect_max: Duration,
    /// Operations listener (/metrics, /healthz); None = off.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Log format.
    #[serde(default)]
    pub log_format: LogFormat,
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            id: None,
            lat: None,
            lon: None,
            coordinator: defaults::COORDINATOR.to_string(),
            token: String::new(),
            ca: None,
            enrolment_token: None,
            state_dir: None,
            advertise_ipv4: None,
            advertise_ipv6: None,
            allow_private: false,
            max_packets_per_second: defaults::MAX_PACKETS_PER_SECOND,
            packet_burst: defaults::PACKET_BURST,
            target_packets_per_second: defaults::TARGET_PACKETS_PER_SECOND,
            target_packet_burst: defaults::TARGET_PACKET_BURST,
            max_ttl: defaults::MAX_TTL,
            ping_count: defaults::PING_COUNT,
            ping_interval: ms(defaults::PING_INTERVAL_MS),
            ping_timeout: ms(defaults::PING_TIMEOUT_MS),
            tcp_ports: defaults::TCP_PORTS.to_vec(),
            tcp_timeout: ms(defaults::TCP_TIMEOUT_MS),
            traceroute_protocol: TracerouteProtocol::Icmp,
            traceroute_probes_per_hop: defaults::TRACEROUTE_PROBES_PER_HOP,
            traceroute_timeout: ms(defaults::TRACEROUTE_TIMEOUT_MS),
            traceroute_udp_port: defaults::TRACEROUTE_UDP_PORT,
            traceroute_tcp_port: defaults::TRACEROUTE_TCP_PORT,
            max_concurrent_measurements: defaults::MAX_CONCURRENT_MEASUREMENTS,
            request_timeout: ms(defaults::REQUEST_TIMEOUT_MS),
            reconnect_min: ms(defaults::RECONNECT_MIN_MS),
            reconnect_max: ms(defaults::RECONNECT_MAX_MS),
            metrics_listen: None,
            log_format: LogFormat::Text,
        }
    }
}

fn config_error(e: geoloc_rt::Error) -> Error {
    match e {
        geoloc_rt::Error::Parse(m) => Error::Config(m),
        other => Error::Config(other.to_string()),
    }
}

impl AgentConfig {
    /// Resolves flags, environment, the file (from `--config` or `GEOLOC_PROBE_CONFIG`)
    /// and defaults, then validates.
    pub fn load(flags: &ConfigFlags, env: &dyn EnvSource) -> Result<Self> {
        let path = flags.config.clone().or_else(|| {
            env.var(&env_key("config"))
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        });
        let file = match path {
            Some(p) => FileConfig::load(&p)?,
            None => FileConfig::default(),
        };
        Self::resolve(flags, &file, env)
    }

    /// Resolves already-parsed layers (flag > environment > file > default) and
    /// validates; errors name the option and the layer its value came from.
    pub fn resolve(flags: &ConfigFlags, file: &FileConfig, env: &dyn EnvSource) -> Result<Self> {
        let origin = file
            .config
            .as_ref()
            .map_or_else(|| "(config)".to_string(), |p| p.display().to_string());
        let layers = Layers::new(ENV_PREFIX, &AgentConfig::default())
            .and_then(|l| l.file(&origin, file))
            .and_then(|l| l.env(env))
            .and_then(|l| l.flags(flags))
            .map_err(config_error)?;
        let cfg: AgentConfig = layers.extract().map_err(config_error)?;
        cfg.check()
            .map_err(|(key, message)| config_error(layers.invalid(key, message)))?;
        Ok(cfg)
    }

    /// The configuration as TOML (the file's keys) with the token redacted.
    pub fn to_redacted_toml(&self) -> Result<String> {
        let mut shown = self.clone();
        if !shown.token.is_empty() {
            shown.token = geoloc_rt::config::REDACTED.into();
        }
        if shown.enrolment_token.is_some() {
            shown.enrolment_token = Some(geoloc_rt::config::REDACTED.into());
        }
        geoloc_rt::config::to_toml(&shown).map_err(config_error)
    }

    /// Checks ranges; the message names the option.
    pub fn validate(&self) -> Result<()> {
        self.check().map_err(|(_, message)| Error::Config(message))
    }

    /// Range checks: the option at fault and what is wrong.
    fn check(&self) -> result::Result<(), (&'static str, String)> {
        let bad = |key: &'static str, m: String| Err((key, m));
        if self.enrolment_token.is_some() && self.state_dir.is_none() {
            return bad(
                "enrolment-token",
                "enrolment-token needs state-dir (where the credential it is exchanged for is kept)"
                    .into(),
            );
        }
        if let Some(id) = &self.id {
            if let Some(problem) = probe_id_problem(id) {
                return Err(("id", problem));
            }
        }
        if let Some(lat) = self.lat {
            if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
                return bad(
                    "lat",
                    format!("lat must be within -90..=90 degrees, got {lat}"),
                );
            }
        }
        if let Some(lon) = self.lon {
            if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
                return bad(
                    "lon",
                    format!("lon must be within -180..=180 degrees, got {lon}"),
                );
            }
        }
        let urls = self.coordinators();
        if urls.is_empty() || urls.len() > MAX_COORDINATORS {
            return bad(
                "coordinator",
                format!(
                    "coordinator must hold 1 to {MAX_COORDINATORS} URLs separated by commas, got {:?}",
                    self.coordinator
                ),
            );
        }
        for url in &urls {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return bad(
                    "coordinator",
                    format!("coordinator must be an http:// or https:// URL, got {url:?}"),
                );
            }
        }
        if let Some(ca) = &self.ca {
            if let Some(plain) = urls.iter().find(|u| !geoloc_rt::tls::is_https(u)) {
                return bad(
                    "ca",
                    format!(
                        "ca {} is set but coordinator {} is plaintext http://: use an https:// \
                         coordinator URL (or drop ca)",
                        ca.display(),
                        plain
                    ),
                );
            }
        }
        for (name, v) in [
            ("max-packets-per-second", self.max_packets_per_second),
            ("target-packets-per-second", self.target_packets_per_second),
        ] {
            if !v.is_finite() || v <= 0.0 {
                return bad(name, format!("{name} must be a positive number, got {v}"));
            }
        }
        for (name, v) in [
            ("packet-burst", self.packet_burst),
            ("target-packet-burst", self.target_packet_burst),
        ] {
            if !v.is_finite() || v < 1.0 {
                return bad(name, format!("{name} must be at least 1, got {v}"));
            }
        }
        if self.max_ttl == 0 {
            return bad("max-ttl", "max-ttl must be within 1..=255".into());
        }
        if !(1..=1000).contains(&self.ping_count) {
            return bad(
                "ping-count",
                format!(
                    "ping-count must be within 1..=1000, got {}",
                    self.ping_count
                ),
            );
        }
        if !(1..=16).contains(&self.traceroute_probes_per_hop) {
            return bad(
                "traceroute-probes-per-hop",
                format!(
                    "traceroute-probes-per-hop must be within 1..=16, got {}",
                    self.traceroute_probes_per_hop
                ),
            );
        }
        if self.tcp_ports.is_empty() || self.tcp_ports.contains(&0) {
            return bad(
                "tcp-ports",
                "tcp-ports must list at least one port, none of them 0".into(),
            );
        }
        if self.traceroute_udp_port == 0 || self.traceroute_tcp_port == 0 {
            return bad(
                if self.traceroute_udp_port == 0 {
                    "traceroute-udp-port"
                } else {
                    "traceroute-tcp-port"
                },
                "traceroute-udp-port and traceroute-tcp-port must not be 0".into(),
            );
        }
        for (name, d) in [
            ("ping-timeout-ms", self.ping_timeout),
            ("tcp-timeout-ms", self.tcp_timeout),
            ("traceroute-timeout-ms", self.traceroute_timeout),
            ("request-timeout-ms", self.request_timeout),
            ("reconnect-min-ms", self.reconnect_min),
        ] {
            if d.is_zero() {
                return bad(name, format!("{name} must be greater than 0"));
            }
        }
        if self.max_concurrent_measurements == 0 {
            return bad(
                "max-concurrent-measurements",
                "max-concurrent-measurements must be at least 1".into(),
            );
        }
        if self.reconnect_max < self.reconnect_min {
            return bad(
                "reconnect-max-ms",
                "reconnect-max-ms must not be below reconnect-min-ms".into(),
            );
        }
        Ok(())
    }

    /// The coordinator URLs of `coordinator` (one, or a cluster's replicas), in order.
    pub fn coordinators(&self) -> Vec<&str> {
        self.coordinator
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// Identity needed to register: id, lat and lon.
    pub fn identity(&self) -> Result<(String, f64, f64)> {
        let missing = |what: &str| {
            Error::Config(format!(
                "{what} is required to run the agent: set `{what}` in the config file, {} or --{what}",
                env_key(what)
            ))
        };
        Ok((
            self.id.clone().ok_or_else(|| missing("id"))?,
            self.lat.ok_or_else(|| missing("lat"))?,
            self.lon.ok_or_else(|| missing("lon"))?,
        ))
    }
}

/// Probe ids: 1..=64 characters of `[A-Za-z0-9._-]`.
pub fn validate_probe_id(id: &str) -> Result<()> {
    match probe_id_problem(id) {
        Some(problem) => Err(Error::Config(problem)),
        None => Ok(()),
    }
}

fn probe_id_problem(id: &str) -> Option<String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    (!ok).then(|| format!("id must be 1..=64 characters of [A-Za-z0-9._-], got {id:?}"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_keys() {
        assert_eq!(env_key("max-ttl"), "GEOLOC_PROBE_MAX_TTL");
        assert_eq!(env_key("id"), "GEOLOC_PROBE_ID");
    }

    #[test]
    fn precedence_flag_env_file_default() {
        let file = FileConfig::parse("max-ttl = 20\nping-count = 7\nid = \"file\"\n", "t").unwrap();
        let flags = ConfigFlags {
            max_ttl: Some(10),
            ..Default::default()
        };
        let e = env(&[
            ("GEOLOC_PROBE_MAX_TTL", "15"),
            ("GEOLOC_PROBE_PING_COUNT", "9"),
        ]);
        let c = AgentConfig::resolve(&flags, &file, &e).unwrap();
        assert_eq!(c.max_ttl, 10, "flag beats env and file");
        assert_eq!(c.ping_count, 9, "env beats file");
        assert_eq!(c.id.as_deref(), Some("file"), "file beats default");
        assert_eq!(c.tcp_ports, vec![443, 80, 22], "default");
        // RTTs over 1 s (satellite) must not count as lost.
        assert_eq!(c.ping_timeout, Duration::from_millis(2000), "default");
        assert_eq!(c.coordinator, "http://127.0.0.1:7470");

        let c = AgentConfig::resolve(&ConfigFlags::default(), &file, &HashMap::new()).unwrap();
        assert_eq!(c.max_ttl, 20);
        assert_eq!(c.ping_count, 7);
        let c = AgentConfig::resolve(&ConfigFlags::default(), &FileConfig::default(), &e).unwrap();
        assert_eq!(c.max_ttl, 15);
    }

    #[test]
    fn env_parsing_of_lists_bools_and_enums() {
        let e = env(&[
            ("GEOLOC_PROBE_TCP_PORTS", "8443, 8080"),
            ("GEOLOC_PROBE_ALLOW_PRIVATE", "yes"),
            ("GEOLOC_PROBE_TRACEROUTE_PROTOCOL", "UDP"),
            ("GEOLOC_PROBE_LAT", "-33.86"),
            ("GEOLOC_PROBE_TOKEN", "s3cret"),
        ]);
        let c = AgentConfig::resolve(&ConfigFlags::default(), &FileConfig::default(), &e).unwrap();
        assert_eq!(c.tcp_ports, vec![8443, 8080]);
        assert!(c.allow_private);
        assert_eq!(c.traceroute_protocol, TracerouteProtocol::Udp);
        assert_eq!(c.lat, Some(-33.86));
        assert_eq!(c.token, "s3cret");
        // A flag `--allow-private=false` beats the environment's yes.
        let flags = ConfigFlags {
            allow_private: Some(false),
            ..Default::default()
        };
        assert!(
            !AgentConfig::resolve(&flags, &FileConfig::default(), &e)
                .unwrap()
                .allow_private
        );
    }

    #[test]
    fn errors_name_the_option() {
        let e = env(&[("GEOLOC_PROBE_MAX_TTL", "300")]);
        let err = AgentConfig::resolve(&ConfigFlags::default(), &FileConfig::default(), &e)
            .unwrap_err()
            .to_string();
        assert!(err.contains("GEOLOC_PROBE_MAX_TTL"), "{err}");

        let err = FileConfig::parse("max-tll = 3", "probe.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("probe.toml") && err.contains("max-tll"),
            "{err}"
        );

        let file = FileConfig::parse("lat = 95.0", "t").unwrap();
        let err = AgentConfig::resolve(&ConfigFlags::default(), &file, &HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("lat"), "{err}");

        let file = FileConfig::parse("id = \"bad id!\"", "t").unwrap();
        assert!(AgentConfig::resolve(&ConfigFlags::default(), &file, &HashMap::new()).is_err());

        let file = FileConfig::parse("coordinator = \"127.0.0.1:7470\"", "t").unwrap();
        let err = AgentConfig::resolve(&ConfigFlags::default(), &file, &HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("coordinator"), "{err}");

        let c = AgentConfig::resolve(
            &ConfigFlags::default(),
            &FileConfig::default(),
            &HashMap::new(),
        )
        .unwrap();
        let err = c.identity().unwrap_err().to_string();
        assert!(err.contains("GEOLOC_PROBE_ID"), "{err}");
    }

    #[test]
    fn sample_config_file_parses_and_lists_every_option() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/probe-agent.toml");
        let text = std::fs::read_to_string(path).expect("deploy/probe-agent.toml exists");
        // The sample is fully commented out: uncomment every `# key = value` line and it
        // must parse with deny_unknown_fields and validate.
        let uncommented: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                l.split_once(" = ").is_some_and(|(k, _)| {
                    k.chars()
                        .all(|c| c.is_ascii_lowercase() || c == '-' || c.is_ascii_digit())
                })
            })
            .collect::<Vec<_>>()
            .join("\n");
        let file = FileConfig::parse(&uncommented, path).unwrap();
        let c = AgentConfig::resolve(&ConfigFlags::default(), &file, &HashMap::new()).unwrap();
        assert!(c.id.is_some() && c.lat.is_some() && c.lon.is_some());
        // Every option of the effective configuration appears in the sample.
        let shown = toml::to_string(&file).unwrap();
        let all = AgentConfig {
            id: Some("x".into()),
            lat: Some(0.0),
            lon: Some(0.0),
            advertise_ipv4: Some(Ipv4Addr::LOCALHOST),
            advertise_ipv6: Some(Ipv6Addr::LOCALHOST),
            ca: Some("x".into()),
            metrics_listen: Some("127.0.0.1:9465".parse().unwrap()),
            enrolment_token: Some("x".into()),
            state_dir: Some("x".into()),
            ..AgentConfig::default()
        };
        let every = toml::to_string(&all).unwrap();
        for key in every
            .lines()
            .filter_map(|l| l.split_once(" = ").map(|(k, _)| k))
        {
            assert!(
                shown.lines().any(|l| l.starts_with(&format!("{key} = "))),
                "sample misses `{key}`: {shown}"
            );
        }
    }

    #[test]
    fn ca_needs_an_https_coordinator() {
        let file = FileConfig::parse(
            "coordinator = \"http://192.0.2.1:7470\"\nca = \"/etc/geoloc/ca.pem\"",
            "/etc/geoloc/probe-agent.toml",
        )
        .unwrap();
        let err = AgentConfig::resolve(&ConfigFlags::default(), &file, &HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "ca /etc/geoloc/ca.pem is set but coordinator http://192.0.2.1:7470 is plaintext"
            ),
            "{err}"
        );
        let file = FileConfig::parse(
            "coordinator = \"https://192.0.2.1:7470\"\nca = \"/etc/geoloc/ca.pem\"",
            "t",
        )
        .unwrap();
        let c = AgentConfig::resolve(&ConfigFlags::default(), &file, &HashMap::new()).unwrap();
        assert_eq!(c.ca.as_deref(), Some(Path::new("/etc/geoloc/ca.pem")));
    }

    #[test]
    fn range_errors_name_the_layer_the_value_came_from() {
        let file = FileConfig::parse("ping-count = 0", "/etc/geoloc/probe-agent.toml").unwrap();
        let err = AgentConfig::resolve(&ConfigFlags::default(), &file, &HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ping-count must be within 1..=1000, got 0")
                && err.contains("ping-count in file /etc/geoloc/probe-agent.toml"),
            "{err}"
        );
        let e = env(&[("GEOLOC_PROBE_RECONNECT_MAX_MS", "100")]);
        let err = AgentConfig::resolve(&ConfigFlags::default(), &file, &e)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ping-count in file"),
            "first problem first: {err}"
        );
        let flags = ConfigFlags {
            lon: Some(200.0),
            ..Default::default()
        };
        let err = AgentConfig::resolve(&flags, &FileConfig::default(), &HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("--lon on the command line"), "{err}");
        let err = AgentConfig::resolve(&ConfigFlags::default(), &FileConfig::default(), &e)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("GEOLOC_PROBE_RECONNECT_MAX_MS in the environment"),
            "{err}"
        );
    }

    #[test]
    fn printed_configuration_redacts_the_token() {
        let file = FileConfig::parse(
            "id = \"par-1\"\nlat = 48.8566\nlon = 2.3522\ntoken = \"s3cret\"\n\
             tcp-ports = [443, 8443]\nadvertise-ipv4 = \"192.0.2.10\"\n",
            "t",
        )
        .unwrap();
        let c = AgentConfig::resolve(&ConfigFlags::default(), &file, &HashMap::new()).unwrap();
        let text = c.to_redacted_toml().unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        insta::assert_snapshot!(text);
        // What is printed reads back as a file giving the same configuration (token aside).
        let back = FileConfig::parse(&text, "printed").unwrap();
        let again = AgentConfig::resolve(&ConfigFlags::default(), &back, &HashMap::new()).unwrap();
        assert_eq!(again.token, geoloc_rt::config::REDACTED);
        assert_eq!(
            AgentConfig {
                token: c.token.clone(),
                ..again
            },
            c
        );
    }

    #[test]
    fn enrolment_token_is_redacted_and_needs_a_state_dir() {
        let file = FileConfig::parse(
            "id = \"par-1\"\nlat = 48.8566\nlon = 2.3522\nenrolment-token = \"gle_s3cret\"\n",
            "t",
        )
        .unwrap();
        let err = AgentConfig::resolve(&ConfigFlags::default(), &file, &HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("enrolment-token needs state-dir"), "{err}");
        let file = FileConfig::parse(
            "id = \"par-1\"\nlat = 48.8566\nlon = 2.3522\nenrolment-token = \"gle_s3cret\"\n\
             state-dir = \"/var/lib/geoloc-probe-agent\"\n",
            "t",
        )
        .unwrap();
        let c = AgentConfig::resolve(&ConfigFlags::default(), &file, &HashMap::new()).unwrap();
        assert_eq!(c.enrolment_token.as_deref(), Some("gle_s3cret"));
        let text = c.to_redacted_toml().unwrap();
        assert!(!text.contains("gle_s3cret"), "{text}");
        assert!(
            text.contains("state-dir = \"/var/lib/geoloc-probe-agent\""),
            "{text}"
        );
    }
}
