//! Configuration: TOML file, environment (`GEOLOC_PROBE_*`) and command-line flags.
//!
//! Precedence for every option: **flag > environment > file > default**, decided in one
//! place ([`Layers::pick`]). The environment is read through [`EnvSource`] so tests inject
//! a map instead of touching the process environment.
//!
//! Every option has the same name everywhere: `max-ttl` in the file, `--max-ttl` on the
//! command line, `GEOLOC_PROBE_MAX_TTL` in the environment. Lists are comma-separated in
//! the environment (`GEOLOC_PROBE_TCP_PORTS=443,80`) and repeated or comma-separated on the
//! command line (`--tcp-ports 443,80`). The file path itself comes from `--config FILE` or
//! `GEOLOC_PROBE_CONFIG`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

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
    /// Locate measurement requests executed at once (landmark requests: a quarter of it,
    /// at least 1, in a pool of their own).
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

/// Where environment variables come from.
pub trait EnvSource {
    /// The value of `key`, if set.
    fn var(&self, key: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl EnvSource for HashMap<String, String> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).cloned()
    }
}

/// Environment variable name of an option: `max-ttl` → `GEOLOC_PROBE_MAX_TTL`.
pub fn env_key(option: &str) -> String {
    format!(
        "GEOLOC_PROBE_{}",
        option.to_ascii_uppercase().replace('-', "_")
    )
}

/// Traceroute probe protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
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
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "icmp" => Ok(Self::Icmp),
            "udp" => Ok(Self::Udp),
            "tcp" => Ok(Self::Tcp),
            other => Err(format!("expected icmp, udp or tcp, got {other:?}")),
        }
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

/// The TOML file: every field optional, unknown fields rejected.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FileConfig {
    pub id: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub coordinator: Option<String>,
    pub token: Option<String>,
    pub advertise_ipv4: Option<String>,
    pub advertise_ipv6: Option<String>,
    pub allow_private: Option<bool>,
    pub max_packets_per_second: Option<f64>,
    pub packet_burst: Option<f64>,
    pub target_packets_per_second: Option<f64>,
    pub target_packet_burst: Option<f64>,
    pub max_ttl: Option<u8>,
    pub ping_count: Option<u32>,
    pub ping_interval_ms: Option<u64>,
    pub ping_timeout_ms: Option<u64>,
    pub tcp_ports: Option<Vec<u16>>,
    pub tcp_timeout_ms: Option<u64>,
    pub traceroute_protocol: Option<TracerouteProtocol>,
    pub traceroute_probes_per_hop: Option<u32>,
    pub traceroute_timeout_ms: Option<u64>,
    pub traceroute_udp_port: Option<u16>,
    pub traceroute_tcp_port: Option<u16>,
    pub max_concurrent_measurements: Option<usize>,
    pub request_timeout_ms: Option<u64>,
    pub reconnect_min_ms: Option<u64>,
    pub reconnect_max_ms: Option<u64>,
}

impl FileConfig {
    /// Parses TOML text; `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::Config(format!("{origin}: {}", e.message())))
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text, &path.display().to_string())
    }
}

/// Command-line flags: the same options as the file, all optional.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ConfigFlags {
    /// TOML configuration file (env GEOLOC_PROBE_CONFIG).
    #[arg(long, value_name = "FILE")]
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
    /// Coordinator URL [default: http://127.0.0.1:7470].
    #[arg(long)]
    pub coordinator: Option<String>,
    /// Credential shared with the coordinator (prefer GEOLOC_PROBE_TOKEN: flags show in ps).
    #[arg(long)]
    pub token: Option<String>,
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
    /// Locate measurement requests executed at once (landmark requests get a separate
    /// pool of a quarter of this, at least 1).
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
}

/// The resolved, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// Probe identity (required to run the agent, not for `measure`).
    pub id: Option<String>,
    /// Declared latitude, degrees.
    pub lat: Option<f64>,
    /// Declared longitude, degrees.
    pub lon: Option<f64>,
    /// Coordinator URL.
    pub coordinator: String,
    /// Credential.
    pub token: String,
    /// Announced IPv4 address.
    pub advertise_ipv4: Option<std::net::Ipv4Addr>,
    /// Announced IPv6 address.
    pub advertise_ipv6: Option<std::net::Ipv6Addr>,
    /// The agent's half of the private-target permission.
    pub allow_private: bool,
    /// Agent-wide packets/s.
    pub max_packets_per_second: f64,
    /// Agent-wide burst.
    pub packet_burst: f64,
    /// Per-target packets/s.
    pub target_packets_per_second: f64,
    /// Per-target burst.
    pub target_packet_burst: f64,
    /// Highest TTL ever sent.
    pub max_ttl: u8,
    /// Echo requests per ping.
    pub ping_count: u32,
    /// Spacing between echo requests.
    pub ping_interval: Duration,
    /// Wait for each echo reply.
    pub ping_timeout: Duration,
    /// TCP ports.
    pub tcp_ports: Vec<u16>,
    /// TCP connect timeout.
    pub tcp_timeout: Duration,
    /// Traceroute protocol.
    pub traceroute_protocol: TracerouteProtocol,
    /// Probes per TTL.
    pub traceroute_probes_per_hop: u32,
    /// Wait after the last traceroute probe.
    pub traceroute_timeout: Duration,
    /// UDP traceroute destination port.
    pub traceroute_udp_port: u16,
    /// TCP traceroute destination port.
    pub traceroute_tcp_port: u16,
    /// Concurrent locate measurement requests (the landmark pool is derived from it:
    /// [`crate::agent::landmark_permits`]).
    pub max_concurrent_measurements: usize,
    /// Default request budget.
    pub request_timeout: Duration,
    /// First reconnect delay.
    pub reconnect_min: Duration,
    /// Largest reconnect delay.
    pub reconnect_max: Duration,
}

/// Parses a value with [`FromStr`], for [`Layers::pick`].
fn from_str<T: FromStr>(s: &str) -> std::result::Result<T, String>
where
    T::Err: fmt::Display,
{
    s.trim().parse::<T>().map_err(|e| e.to_string())
}

fn parse_bool(s: &str) -> std::result::Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        other => Err(format!("expected true or false, got {other:?}")),
    }
}

fn parse_ports(s: &str) -> std::result::Result<Vec<u16>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u16>().map_err(|e| format!("port {p:?}: {e}")))
        .collect()
}

/// The one precedence helper: flag > environment > file > default.
pub struct Layers<'a> {
    env: &'a dyn EnvSource,
}

impl<'a> Layers<'a> {
    /// Reads the environment from `env`.
    pub fn new(env: &'a dyn EnvSource) -> Self {
        Layers { env }
    }

    /// Picks the value of `option` from the first layer that has it.
    pub fn pick_opt<T>(
        &self,
        option: &str,
        flag: Option<T>,
        file: Option<T>,
        parse: fn(&str) -> std::result::Result<T, String>,
    ) -> Result<Option<T>> {
        if flag.is_some() {
            return Ok(flag);
        }
        let key = env_key(option);
        if let Some(raw) = self.env.var(&key) {
            return parse(&raw)
                .map(Some)
                .map_err(|e| Error::Config(format!("{key}={raw:?}: {e}")));
        }
        Ok(file)
    }

    /// [`Self::pick_opt`] with a default.
    pub fn pick<T>(
        &self,
        option: &str,
        flag: Option<T>,
        file: Option<T>,
        default: T,
        parse: fn(&str) -> std::result::Result<T, String>,
    ) -> Result<T> {
        Ok(self.pick_opt(option, flag, file, parse)?.unwrap_or(default))
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl AgentConfig {
    /// Resolves flags, environment, the file (from `--config` or `GEOLOC_PROBE_CONFIG`)
    /// and defaults, then validates.
    pub fn load(flags: &ConfigFlags, env: &dyn EnvSource) -> Result<Self> {
        let layers = Layers::new(env);
        let path = layers.pick_opt("config", flags.config.clone(), None, |s| {
            Ok(PathBuf::from(s))
        })?;
        let file = match path {
            Some(p) => FileConfig::load(&p)?,
            None => FileConfig::default(),
        };
        Self::resolve(flags, &file, env)
    }

    /// Resolves already-parsed layers and validates.
    pub fn resolve(flags: &ConfigFlags, file: &FileConfig, env: &dyn EnvSource) -> Result<Self> {
        let l = Layers::new(env);
        let f = flags.clone();
        let fc = file.clone();
        let cfg = AgentConfig {
            id: l.pick_opt("id", f.id, fc.id, from_str)?,
            lat: l.pick_opt("lat", f.lat, fc.lat, from_str)?,
            lon: l.pick_opt("lon", f.lon, fc.lon, from_str)?,
            coordinator: l.pick(
                "coordinator",
                f.coordinator,
                fc.coordinator,
                defaults::COORDINATOR.to_string(),
                from_str,
            )?,
            token: l.pick("token", f.token, fc.token, String::new(), from_str)?,
            advertise_ipv4: l
                .pick_opt(
                    "advertise-ipv4",
                    f.advertise_ipv4,
                    fc.advertise_ipv4,
                    from_str,
                )?
                .map(|s| {
                    s.parse()
                        .map_err(|e| Error::Config(format!("advertise-ipv4 {s:?}: {e}")))
                })
                .transpose()?,
            advertise_ipv6: l
                .pick_opt(
                    "advertise-ipv6",
                    f.advertise_ipv6,
                    fc.advertise_ipv6,
                    from_str,
                )?
                .map(|s| {
                    s.parse()
                        .map_err(|e| Error::Config(format!("advertise-ipv6 {s:?}: {e}")))
                })
                .transpose()?,
            allow_private: l.pick(
                "allow-private",
                f.allow_private,
                fc.allow_private,
                false,
                parse_bool,
            )?,
            max_packets_per_second: l.pick(
                "max-packets-per-second",
                f.max_packets_per_second,
                fc.max_packets_per_second,
                defaults::MAX_PACKETS_PER_SECOND,
                from_str,
            )?,
            packet_burst: l.pick(
                "packet-burst",
                f.packet_burst,
                fc.packet_burst,
                defaults::PACKET_BURST,
                from_str,
            )?,
            target_packets_per_second: l.pick(
                "target-packets-per-second",
                f.target_packets_per_second,
                fc.target_packets_per_second,
                defaults::TARGET_PACKETS_PER_SECOND,
                from_str,
            )?,
            target_packet_burst: l.pick(
                "target-packet-burst",
                f.target_packet_burst,
                fc.target_packet_burst,
                defaults::TARGET_PACKET_BURST,
                from_str,
            )?,
            max_ttl: l.pick(
                "max-ttl",
                f.max_ttl,
                fc.max_ttl,
                defaults::MAX_TTL,
                from_str,
            )?,
            ping_count: l.pick(
                "ping-count",
                f.ping_count,
                fc.ping_count,
                defaults::PING_COUNT,
                from_str,
            )?,
            ping_interval: ms(l.pick(
                "ping-interval-ms",
                f.ping_interval_ms,
                fc.ping_interval_ms,
                defaults::PING_INTERVAL_MS,
                from_str,
            )?),
            ping_timeout: ms(l.pick(
                "ping-timeout-ms",
                f.ping_timeout_ms,
                fc.ping_timeout_ms,
                defaults::PING_TIMEOUT_MS,
                from_str,
            )?),
            tcp_ports: l.pick(
                "tcp-ports",
                f.tcp_ports,
                fc.tcp_ports,
                defaults::TCP_PORTS.to_vec(),
                parse_ports,
            )?,
            tcp_timeout: ms(l.pick(
                "tcp-timeout-ms",
                f.tcp_timeout_ms,
                fc.tcp_timeout_ms,
                defaults::TCP_TIMEOUT_MS,
                from_str,
            )?),
            traceroute_protocol: l.pick(
                "traceroute-protocol",
                f.traceroute_protocol,
                fc.traceroute_protocol,
                TracerouteProtocol::Icmp,
                from_str,
            )?,
            traceroute_probes_per_hop: l.pick(
                "traceroute-probes-per-hop",
                f.traceroute_probes_per_hop,
                fc.traceroute_probes_per_hop,
                defaults::TRACEROUTE_PROBES_PER_HOP,
                from_str,
            )?,
            traceroute_timeout: ms(l.pick(
                "traceroute-timeout-ms",
                f.traceroute_timeout_ms,
                fc.traceroute_timeout_ms,
                defaults::TRACEROUTE_TIMEOUT_MS,
                from_str,
            )?),
            traceroute_udp_port: l.pick(
                "traceroute-udp-port",
                f.traceroute_udp_port,
                fc.traceroute_udp_port,
                defaults::TRACEROUTE_UDP_PORT,
                from_str,
            )?,
            traceroute_tcp_port: l.pick(
                "traceroute-tcp-port",
                f.traceroute_tcp_port,
                fc.traceroute_tcp_port,
                defaults::TRACEROUTE_TCP_PORT,
                from_str,
            )?,
            max_concurrent_measurements: l.pick(
                "max-concurrent-measurements",
                f.max_concurrent_measurements,
                fc.max_concurrent_measurements,
                defaults::MAX_CONCURRENT_MEASUREMENTS,
                from_str,
            )?,
            request_timeout: ms(l.pick(
                "request-timeout-ms",
                f.request_timeout_ms,
                fc.request_timeout_ms,
                defaults::REQUEST_TIMEOUT_MS,
                from_str,
            )?),
            reconnect_min: ms(l.pick(
                "reconnect-min-ms",
                f.reconnect_min_ms,
                fc.reconnect_min_ms,
                defaults::RECONNECT_MIN_MS,
                from_str,
            )?),
            reconnect_max: ms(l.pick(
                "reconnect-max-ms",
                f.reconnect_max_ms,
                fc.reconnect_max_ms,
                defaults::RECONNECT_MAX_MS,
                from_str,
            )?),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges; the message names the option.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if let Some(id) = &self.id {
            validate_probe_id(id)?;
        }
        if let Some(lat) = self.lat {
            if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
                return bad(format!("lat must be within -90..=90 degrees, got {lat}"));
            }
        }
        if let Some(lon) = self.lon {
            if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
                return bad(format!("lon must be within -180..=180 degrees, got {lon}"));
            }
        }
        if !(self.coordinator.starts_with("http://") || self.coordinator.starts_with("https://")) {
            return bad(format!(
                "coordinator must be an http:// or https:// URL, got {:?}",
                self.coordinator
            ));
        }
        for (name, v) in [
            ("max-packets-per-second", self.max_packets_per_second),
            ("target-packets-per-second", self.target_packets_per_second),
        ] {
            if !v.is_finite() || v <= 0.0 {
                return bad(format!("{name} must be a positive number, got {v}"));
            }
        }
        for (name, v) in [
            ("packet-burst", self.packet_burst),
            ("target-packet-burst", self.target_packet_burst),
        ] {
            if !v.is_finite() || v < 1.0 {
                return bad(format!("{name} must be at least 1, got {v}"));
            }
        }
        if self.max_ttl == 0 {
            return bad("max-ttl must be within 1..=255".into());
        }
        if !(1..=1000).contains(&self.ping_count) {
            return bad(format!(
                "ping-count must be within 1..=1000, got {}",
                self.ping_count
            ));
        }
        if !(1..=16).contains(&self.traceroute_probes_per_hop) {
            return bad(format!(
                "traceroute-probes-per-hop must be within 1..=16, got {}",
                self.traceroute_probes_per_hop
            ));
        }
        if self.tcp_ports.is_empty() || self.tcp_ports.contains(&0) {
            return bad("tcp-ports must list at least one port, none of them 0".into());
        }
        if self.traceroute_udp_port == 0 || self.traceroute_tcp_port == 0 {
            return bad("traceroute-udp-port and traceroute-tcp-port must not be 0".into());
        }
        for (name, d) in [
            ("ping-timeout-ms", self.ping_timeout),
            ("tcp-timeout-ms", self.tcp_timeout),
            ("traceroute-timeout-ms", self.traceroute_timeout),
            ("request-timeout-ms", self.request_timeout),
            ("reconnect-min-ms", self.reconnect_min),
        ] {
            if d.is_zero() {
                return bad(format!("{name} must be greater than 0"));
            }
        }
        if self.max_concurrent_measurements == 0 {
            return bad("max-concurrent-measurements must be at least 1".into());
        }
        if self.reconnect_max < self.reconnect_min {
            return bad("reconnect-max-ms must not be below reconnect-min-ms".into());
        }
        Ok(())
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
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "id must be 1..=64 characters of [A-Za-z0-9._-], got {id:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
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
        // Every field of FileConfig appears in the sample.
        let debug = format!("{file:?}");
        assert!(!debug.contains("None"), "sample misses an option: {debug}");
    }
}
