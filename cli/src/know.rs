//! `geoloc know IP` and `geoloc enrich`: the `geoloc-know` crate behind two subcommands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use geoloc_know::config::KnowConfig;
use geoloc_know::report::{Location, Sources};

/// Options shared by `know` and `enrich`: where the sources are.
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// TOML configuration (sample: know/know.sample.toml): keys, rates, cache, databases.
    #[arg(long, env = "GEOLOC_KNOW_CONFIG")]
    pub config: Option<PathBuf>,
    /// GeoIP2/GeoLite2 City database (overrides the config's `geoip`).
    #[arg(long)]
    pub geoip: Option<PathBuf>,
    /// Folder with asn-ipv4.csv / asn-ipv6.csv (scripts/fetch-asn-db.sh; overrides `asn-db`).
    #[arg(long)]
    pub asn_db: Option<PathBuf>,
    /// Cache folder of provider answers (overrides `cache-dir`).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct KnowArgs {
    /// The address.
    pub ip: String,
    /// Measure the location through this coordinator (else GeoIP).
    #[arg(long)]
    pub coordinator: Option<String>,
    #[command(flatten)]
    pub ca: geoloc_client::CaArg,
    /// DNS server for the reverse lookup, IP:port (default: the config's, else the system's).
    #[arg(long)]
    pub dns_server: Option<SocketAddr>,
    /// RDAP base URL (default: the config's, else https://rdap.org).
    #[arg(long)]
    pub rdap_url: Option<String>,
    /// Print the report as JSON (schema in know/README.md).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sources: SourceArgs,
}

#[derive(Debug, Args)]
pub struct EnrichArgs {
    /// Connection log, CSV with a header.
    #[arg(long)]
    pub input: PathBuf,
    /// Column holding the address.
    #[arg(long)]
    pub ip_column: String,
    /// Column holding the time (RFC 3339, `YYYY-MM-DD HH:MM:SS` UTC, or Unix seconds).
    #[arg(long)]
    pub time_column: String,
    /// Output file; `.parquet` writes Parquet, anything else CSV (default: CSV on stdout).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Ask the configured providers for addresses not in the cache (spends quota, waits
    /// for each provider's rate); without it only cached answers fill the columns.
    #[arg(long)]
    pub query_providers: bool,
    /// Measure addresses through a coordinator (not implemented yet: refused).
    #[arg(long)]
    pub measure: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub sources: SourceArgs,
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

fn build_sources(
    a: &SourceArgs,
    rdns: Option<Option<SocketAddr>>,
    rdap: Option<Option<String>>,
) -> anyhow::Result<Sources> {
    let cfg = match &a.config {
        Some(p) => KnowConfig::load(p)?,
        None => KnowConfig::default(),
    };
    let geoip = a.geoip.clone().or(cfg.geoip.clone());
    let asn = a.asn_db.clone().or(cfg.asn_db.clone());
    let cache_dir = a.cache_dir.clone().unwrap_or_else(|| cfg.cache_dir(env));
    let providers = cfg
        .providers(env)?
        .into_iter()
        .map(geoloc_know::providers::ProviderClient::new)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Sources {
        geoip: geoip
            .map(geoloc_geoip::GeoIpDb::open)
            .transpose()
            .context("GeoIP database")?,
        asn: asn
            .map(geoloc_know::asn::AsnDb::open)
            .transpose()
            .context("ASN database")?,
        rdns: match rdns {
            Some(server) => Some(geoloc_know::rdns::Rdns::new(
                server.or(cfg.dns_server),
                Duration::from_secs(5),
            )?),
            None => None,
        },
        rdap: match rdap {
            Some(url) => Some(geoloc_know::rdap::RdapClient::new(
                url.or(cfg.rdap_url.clone())
                    .unwrap_or_else(|| "https://rdap.org".into()),
                Duration::from_secs(10),
            )?),
            None => None,
        },
        providers,
        cache: Some(geoloc_know::cache::Cache::new(cache_dir, cfg.cache_ttl())),
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `geoloc know IP`.
pub fn run_know(a: KnowArgs) -> anyhow::Result<()> {
    let ip = geoloc_policy::parse_target(&a.ip, true)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("bad address {:?}", geoloc_know::printable(&a.ip, 60)))?;
    runtime()?.block_on(async {
        let sources = build_sources(&a.sources, Some(a.dns_server), Some(a.rdap_url.clone()))?;
        let measured = match &a.coordinator {
            None => None,
            Some(url) => Some(measure(url, &a.ca.options(), ip).await?),
        };
        let now =
            chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp(), 0).unwrap_or_default();
        let report = sources.know(ip, measured, now).await;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", geoloc_know::report::render_text(&report));
        }
        Ok(())
    })
}

async fn measure(
    url: &str,
    opts: &geoloc_client::ConnectOptions,
    ip: std::net::IpAddr,
) -> anyhow::Result<Location> {
    let mut c = geoloc_client::Client::connect_with(url, opts).await?;
    let req = geoloc_proto::v1::LocateRequest {
        ip: ip.to_string(),
        reuse_stored: true,
        ..Default::default()
    };
    let r = c
        .locate(req, |_| {})
        .await
        .map_err(|f| anyhow::anyhow!("measuring {ip} failed: {}: {}", f.code, f.message))?;
    let s = &r.solution;
    Ok(Location {
        source: "measured".into(),
        lat: s.estimate.lat,
        lon: s.estimate.lon,
        radius_km: Some(s.radius_km),
        city: Some(s.place.city.clone()),
        country: Some(s.place.country.clone()),
    })
}

/// `geoloc enrich`.
pub fn run_enrich(a: EnrichArgs) -> anyhow::Result<()> {
    if a.measure {
        anyhow::bail!(
            "--measure is not implemented yet: enrich uses GeoIP and cached answers only"
        );
    }
    let format = match a.output.as_ref().and_then(|p| p.extension()) {
        Some(e) if e.eq_ignore_ascii_case("parquet") => geoloc_know::enrich::Format::Parquet,
        _ => geoloc_know::enrich::Format::Csv,
    };
    let opts = geoloc_know::enrich::EnrichOptions {
        input: a.input.clone(),
        ip_column: a.ip_column.clone(),
        time_column: a.time_column.clone(),
        output: a.output.clone(),
        format,
        query_providers: a.query_providers,
        progress: !a.quiet,
    };
    runtime()?.block_on(async {
        let sources = build_sources(&a.sources, None, None)?;
        let t0 = std::time::Instant::now();
        let st = geoloc_know::enrich::enrich(&opts, &sources).await?;
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "geoloc enrich: {} rows ({} with a reason), {} distinct addresses, {} provider requests, {:.2} s, {:.0} rows/s",
            st.rows,
            st.rows_with_reason,
            st.distinct_addresses,
            st.provider_requests,
            secs,
            st.rows as f64 / secs.max(1e-9)
        );
        Ok(())
    })
}
