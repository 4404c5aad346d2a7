//! Configuration of `geoloc know` / `geoloc enrich`: a TOML file (sample in
//! `know/know.sample.toml`), with keys also taken from the environment
//! (`GEOLOC_ABUSEIPDB_KEY`, `GEOLOC_VIRUSTOTAL_KEY`, `GEOLOC_SHODAN_KEY`,
//! `GEOLOC_CENSYS_TOKEN`), the environment winning over the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{KnowError, Result};
use crate::providers::{ProviderConfig, ProviderKind};

/// One provider's section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ProviderSection {
    /// API key (Censys: Personal Access Token).
    pub key: Option<String>,
    /// Base URL of the API (default: the provider's public one).
    pub base_url: Option<String>,
    /// Average requests per minute (default: the free tier's).
    pub rate_per_minute: Option<f64>,
    /// Requests allowed at once before the rate applies (default 1).
    pub burst: Option<u32>,
    /// Per-request timeout, s (default 10).
    pub timeout_s: Option<f64>,
}

/// The `[rdap]` section: how fast each RDAP host (the bootstrap redirector, each registry)
/// may be asked.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RdapSection {
    /// Average requests per minute per host (default 60).
    pub rate_per_minute: Option<f64>,
    /// Requests allowed at once per host before the rate applies (default 5).
    pub burst: Option<u32>,
    /// Per-request timeout, s (default 10).
    pub timeout_s: Option<f64>,
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct KnowConfig {
    /// Folder of the provider-answer cache (default `$XDG_CACHE_HOME/geoloc/know` or
    /// `~/.cache/geoloc/know`).
    pub cache_dir: Option<PathBuf>,
    /// How long a cached answer is served, s (default 7 days).
    pub cache_ttl_s: Option<u64>,
    /// Folder holding `asn-ipv4.csv` / `asn-ipv6.csv` (`scripts/fetch-asn-db.sh`).
    pub asn_db: Option<PathBuf>,
    /// GeoIP2/GeoLite2 City database.
    pub geoip: Option<PathBuf>,
    /// RDAP base URL (default `https://rdap.org`).
    pub rdap_url: Option<String>,
    /// RDAP rate per host and timeout.
    pub rdap: Option<RdapSection>,
    /// DNS server for reverse lookups, `IP:port` (default: the system's).
    pub dns_server: Option<SocketAddr>,
    pub abuseipdb: Option<ProviderSection>,
    pub virustotal: Option<ProviderSection>,
    pub shodan: Option<ProviderSection>,
    pub censys: Option<ProviderSection>,
}

/// Default cache time to live: 7 days.
pub const DEFAULT_TTL_S: u64 = 7 * 86_400;

impl KnowConfig {
    /// Reads a TOML file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| KnowError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| KnowError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// The configured providers (those with a key, from the file or `env`), checked.
    pub fn providers(&self, env: impl Fn(&str) -> Option<String>) -> Result<Vec<ProviderConfig>> {
        let mut out = Vec::new();
        for kind in ProviderKind::ALL {
            let (section, var) = match kind {
                ProviderKind::AbuseIpDb => (&self.abuseipdb, "GEOLOC_ABUSEIPDB_KEY"),
                ProviderKind::VirusTotal => (&self.virustotal, "GEOLOC_VIRUSTOTAL_KEY"),
                ProviderKind::Shodan => (&self.shodan, "GEOLOC_SHODAN_KEY"),
                ProviderKind::Censys => (&self.censys, "GEOLOC_CENSYS_TOKEN"),
            };
            let s = section.clone().unwrap_or_default();
            let key = env(var).filter(|k| !k.is_empty()).or(s.key.clone());
            let Some(key) = key else { continue };
            let bad = |reason: String| KnowError::Config {
                path: PathBuf::from(format!("[{}]", kind.name())),
                reason,
            };
            let mut c = ProviderConfig::new(kind, key);
            if let Some(u) = s.base_url {
                if !(u.starts_with("https://") || u.starts_with("http://")) {
                    return Err(bad(format!("base-url {u:?} is not an http(s) URL")));
                }
                c.base_url = u;
            }
            if let Some(r) = s.rate_per_minute {
                if !(r.is_finite() && r > 0.0 && r <= 60_000.0) {
                    return Err(bad(format!("rate-per-minute {r} not in (0, 60000]")));
                }
                c.period = Duration::from_secs_f64(60.0 / r);
            }
            if let Some(b) = s.burst {
                if !(1..=10_000).contains(&b) {
                    return Err(bad(format!("burst {b} not in 1..=10000")));
                }
                c.burst = b;
            }
            if let Some(t) = s.timeout_s {
                if !(t.is_finite() && t > 0.0 && t <= 300.0) {
                    return Err(bad(format!("timeout-s {t} not in (0, 300]")));
                }
                c.timeout = Duration::from_secs_f64(t);
            }
            out.push(c);
        }
        Ok(out)
    }

    /// The RDAP limits per host and the per-request timeout, checked.
    pub fn rdap_limits(&self) -> Result<(crate::rdap::RdapLimits, Duration)> {
        let s = self.rdap.clone().unwrap_or_default();
        let bad = |reason: String| KnowError::Config {
            path: PathBuf::from("[rdap]"),
            reason,
        };
        let mut limits = crate::rdap::RdapLimits::default();
        let mut timeout = Duration::from_secs(10);
        if let Some(r) = s.rate_per_minute {
            if !(r.is_finite() && r > 0.0 && r <= 60_000.0) {
                return Err(bad(format!("rate-per-minute {r} not in (0, 60000]")));
            }
            limits.period = Duration::from_secs_f64(60.0 / r);
        }
        if let Some(b) = s.burst {
            if !(1..=10_000).contains(&b) {
                return Err(bad(format!("burst {b} not in 1..=10000")));
            }
            limits.burst = b;
        }
        if let Some(t) = s.timeout_s {
            if !(t.is_finite() && t > 0.0 && t <= 300.0) {
                return Err(bad(format!("timeout-s {t} not in (0, 300]")));
            }
            timeout = Duration::from_secs_f64(t);
        }
        Ok((limits, timeout))
    }

    /// The cache folder.
    pub fn cache_dir(&self, env: impl Fn(&str) -> Option<String>) -> PathBuf {
        if let Some(d) = &self.cache_dir {
            return d.clone();
        }
        if let Some(x) = env("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
            return PathBuf::from(x).join("geoloc/know");
        }
        match env("HOME") {
            Some(h) => PathBuf::from(h).join(".cache/geoloc/know"),
            None => PathBuf::from(".geoloc-cache/know"),
        }
    }

    /// The cache time to live.
    pub fn cache_ttl(&self) -> Duration {
        Duration::from_secs(self.cache_ttl_s.unwrap_or(DEFAULT_TTL_S))
    }
}

/// Which sources to open: a configuration file and the command line's overrides (each
/// override wins over the file's value).
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    pub config: Option<PathBuf>,
    pub geoip: Option<PathBuf>,
    pub asn_db: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    /// `None`: no reverse DNS; `Some(server)`: `server`, else the file's, else the system's.
    pub rdns: Option<Option<SocketAddr>>,
    /// `None`: no RDAP; `Some(url)`: `url`, else the file's, else `https://rdap.org`.
    pub rdap: Option<Option<String>>,
}

/// Default RDAP base URL (the bootstrap redirector).
pub const DEFAULT_RDAP_URL: &str = "https://rdap.org";

impl SourceOptions {
    /// Opens the sources (databases read, clients built; nothing is sent). `env` gives the
    /// provider keys and the cache folder's defaults.
    pub fn open(&self, env: impl Fn(&str) -> Option<String>) -> Result<crate::report::Sources> {
        let cfg = match &self.config {
            Some(p) => KnowConfig::load(p)?,
            None => KnowConfig::default(),
        };
        let geoip = self.geoip.clone().or(cfg.geoip.clone());
        let asn = self.asn_db.clone().or(cfg.asn_db.clone());
        let cache_dir = self
            .cache_dir
            .clone()
            .unwrap_or_else(|| cfg.cache_dir(&env));
        let providers = cfg
            .providers(&env)?
            .into_iter()
            .map(crate::providers::ProviderClient::new)
            .collect::<Result<Vec<_>>>()?;
        Ok(crate::report::Sources {
            geoip: geoip.map(geoloc_geoip::GeoIpDb::open).transpose()?,
            asn: asn.map(crate::asn::AsnDb::open).transpose()?,
            rdns: match self.rdns {
                Some(server) => Some(crate::rdns::Rdns::new(
                    server.or(cfg.dns_server),
                    Duration::from_secs(5),
                )?),
                None => None,
            },
            rdap: match &self.rdap {
                Some(url) => {
                    let (limits, timeout) = cfg.rdap_limits()?;
                    Some(crate::rdap::RdapClient::with_limits(
                        url.clone()
                            .or(cfg.rdap_url.clone())
                            .unwrap_or_else(|| DEFAULT_RDAP_URL.into()),
                        timeout,
                        limits,
                    )?)
                }
                None => None,
            },
            providers,
            cache: Some(crate::cache::Cache::new(cache_dir, cfg.cache_ttl())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_file_parses_and_env_wins() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("know.sample.toml");
        let c = KnowConfig::load(&p).unwrap();
        let env = |k: &str| (k == "GEOLOC_SHODAN_KEY").then(|| "from-env".to_string());
        let ps = c.providers(env).unwrap();
        let shodan = ps.iter().find(|p| p.kind == ProviderKind::Shodan).unwrap();
        assert_eq!(shodan.key, "from-env");
        assert_eq!(shodan.period, Duration::from_secs(1));
        // Sections without a key are not configured.
        assert!(!ps.iter().any(|p| p.kind == ProviderKind::Censys));
    }

    #[test]
    fn bad_values_are_named() {
        let c: KnowConfig =
            toml::from_str("[virustotal]\nkey = \"k\"\nrate-per-minute = -1\n").unwrap();
        let e = c.providers(|_| None).unwrap_err().to_string();
        assert!(
            e.contains("rate-per-minute") && e.contains("virustotal"),
            "{e}"
        );
        assert!(toml::from_str::<KnowConfig>("[shodan]\nkee = \"k\"\n").is_err());
        let c: KnowConfig = toml::from_str("[rdap]\nburst = 0\n").unwrap();
        let e = c.rdap_limits().unwrap_err().to_string();
        assert!(e.contains("[rdap]") && e.contains("burst 0"), "{e}");
    }

    #[test]
    fn rdap_limits_from_the_sample_and_defaults() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("know.sample.toml");
        let (l, t) = KnowConfig::load(&p).unwrap().rdap_limits().unwrap();
        assert_eq!(
            (l.period, l.burst, t),
            (Duration::from_secs(2), 3, Duration::from_secs(10))
        );
        let (d, t) = KnowConfig::default().rdap_limits().unwrap();
        assert_eq!(
            (d, t),
            (crate::rdap::RdapLimits::default(), Duration::from_secs(10))
        );
    }
}
