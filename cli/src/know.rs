//! `geoloc know IP` and `geoloc enrich`: the `geoloc-know` crate behind two subcommands.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
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
    /// Print the report as JSON (schema in know/README.md; the `traceroute` section in
    /// client/README.md).
    #[arg(long)]
    pub json: bool,
    /// With --coordinator: add a traceroute toward the address from one vetted probe of
    /// the fleet (sends packets; the key needs the `locate` scope and is charged one
    /// address of its quota).
    #[arg(long, requires = "coordinator")]
    pub traceroute: bool,
    /// With --traceroute: the probe to trace from (default: the one nearest the address's
    /// stored or GeoIP location, else the first healthy vetted probe).
    #[arg(long, requires = "traceroute", value_name = "ID")]
    pub trace_probe: Option<String>,
    /// With --traceroute: the largest TTL probed (default 30, at most 64).
    #[arg(long, requires = "traceroute", value_name = "N")]
    pub max_ttl: Option<u32>,
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
    /// Coordinator whose stored results locate the addresses it has measured before (no
    /// packet sent); with --measure it also measures. The rest come from GeoIP.
    #[arg(long, value_name = "URL")]
    pub coordinator: Option<String>,
    #[command(flatten)]
    pub ca: geoloc_client::CaArg,
    /// Measure, through --coordinator, addresses that have no stored result: at most
    /// --budget of them, those on the most rows first. The `location_source` column says
    /// where each row's location came from.
    #[arg(long, requires = "coordinator", requires = "budget")]
    pub measure: bool,
    /// With --measure: the most addresses measured in this run.
    #[arg(long, requires = "measure", value_name = "N")]
    pub budget: Option<u64>,
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
    sources_from(
        a.config.as_deref(),
        a.geoip.clone(),
        a.asn_db.clone(),
        a.cache_dir.clone(),
        rdns,
        rdap,
    )
}

/// The sources from a configuration file and the command line's overrides. `rdns` /
/// `rdap`: `None` leaves that source out; `Some(server)` uses `server`, else the
/// configuration's, else the default.
pub fn sources_from(
    config: Option<&std::path::Path>,
    geoip: Option<PathBuf>,
    asn_db: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    rdns: Option<Option<SocketAddr>>,
    rdap: Option<Option<String>>,
) -> anyhow::Result<Sources> {
    Ok(geoloc_know::config::SourceOptions {
        config: config.map(PathBuf::from),
        geoip,
        asn_db,
        cache_dir,
        rdns,
        rdap,
    }
    .open(env)?)
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
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
        let traced = match (&a.coordinator, a.traceroute) {
            (Some(url), true) => {
                let mut c = geoloc_client::Client::connect_with(url, &a.ca.options()).await?;
                Some(
                    c.trace(
                        &ip.to_string(),
                        a.trace_probe.as_deref(),
                        a.max_ttl.unwrap_or(0),
                    )
                    .await,
                )
            }
            _ => None,
        };
        let now =
            chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp(), 0).unwrap_or_default();
        let report = sources.know(ip, measured, now).await;
        if a.json {
            let mut v = serde_json::to_value(&report)?;
            if let (Some(t), Some(obj)) = (&traced, v.as_object_mut()) {
                obj.insert("traceroute".into(), trace_json(t)?);
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            print!("{}", geoloc_know::report::render_text(&report));
            if let Some(t) = &traced {
                print!("{}", trace_text(t));
            }
        }
        Ok(())
    })
}

/// The `traceroute` section of `geoloc know --json`: the trace (client/README.md,
/// "Traceroute") or `{"error": {"code": ..., "message": ...}}`.
pub fn trace_json(
    t: &Result<geoloc_client::Traced, geoloc_client::Failure>,
) -> anyhow::Result<serde_json::Value> {
    Ok(match t {
        Ok(t) => serde_json::to_value(t)?,
        Err(f) => serde_json::json!({"error": f}),
    })
}

/// The traceroute section of `geoloc know`'s readable report.
pub fn trace_text(t: &Result<geoloc_client::Traced, geoloc_client::Failure>) -> String {
    match t {
        Ok(t) => format!("\n{}", t.render_text()),
        Err(f) => format!(
            "\nTraceroute: {}: {}\n",
            f.code,
            geoloc_client::printable(&f.message)
        ),
    }
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
    Ok(location_of(&r, "measured"))
}

/// `geoloc enrich`.
pub fn run_enrich(a: EnrichArgs) -> anyhow::Result<()> {
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
        let locator = match &a.coordinator {
            None => None,
            Some(url) => Some(CoordinatorLocator {
                client: geoloc_client::Client::connect_with(url, &a.ca.options()).await?,
                budget: if a.measure { a.budget.unwrap_or(0) } else { 0 },
                progress: !a.quiet,
            }),
        };
        let t0 = std::time::Instant::now();
        let st = geoloc_know::enrich::enrich_with(
            &opts,
            &sources,
            locator.as_ref().map(|l| l as &dyn geoloc_know::enrich::Locator),
        )
        .await?;
        let secs = t0.elapsed().as_secs_f64();
        let located: Vec<String> = st
            .located_by
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        eprintln!(
            "geoloc enrich: {} rows ({} with a reason), {} distinct addresses{}, {} provider requests, {:.2} s, {:.0} rows/s",
            st.rows,
            st.rows_with_reason,
            st.distinct_addresses,
            if located.is_empty() {
                String::new()
            } else {
                format!(" ({} by the coordinator, the rest by GeoIP)", located.join(", "))
            },
            st.provider_requests,
            secs,
            st.rows as f64 / secs.max(1e-9)
        );
        Ok(())
    })
}

/// Stored results of a coordinator, then (within `budget`) new measurements, for
/// `geoloc enrich --coordinator URL [--measure --budget N]`.
struct CoordinatorLocator {
    client: geoloc_client::Client,
    /// Addresses measured at most (0: stored results only).
    budget: u64,
    progress: bool,
}

/// Concurrent stored-result lookups (cheap: no packet is sent).
const STORED_LOOKUPS_AT_ONCE: usize = 16;

fn location_of(r: &geoloc_client::Located, source: &str) -> Location {
    let s = &r.solution;
    Location {
        source: source.into(),
        lat: s.estimate.lat,
        lon: s.estimate.lon,
        radius_km: Some(s.radius_km),
        city: Some(s.place.city.clone()).filter(|c| !c.is_empty()),
        country: Some(s.place.country.clone()).filter(|c| !c.is_empty()),
    }
}

impl CoordinatorLocator {
    async fn locate_all(&self, ips: &[IpAddr]) -> HashMap<IpAddr, Location> {
        use futures::StreamExt;
        let mut out = HashMap::new();
        let mut errors: Vec<String> = Vec::new();
        // Stored results first: they cost no packet.
        let stored: Vec<(
            IpAddr,
            Result<Option<geoloc_client::Located>, geoloc_client::Failure>,
        )> = futures::stream::iter(ips.iter().copied())
            .map(|ip| {
                let mut c = self.client.clone();
                async move { (ip, c.stored_result(&ip.to_string()).await) }
            })
            .buffered(STORED_LOOKUPS_AT_ONCE)
            .collect()
            .await;
        let mut missing = Vec::new();
        for (ip, r) in stored {
            match r {
                Ok(Some(l)) => {
                    out.insert(ip, location_of(&l, "stored"));
                }
                Ok(None) => missing.push(ip),
                Err(f) => {
                    errors.push(format!("stored result of {ip}: {}: {}", f.code, f.message));
                    missing.push(ip);
                }
            }
        }
        // Then measure, within the budget, in the order given (most rows first).
        let budget = usize::try_from(self.budget).unwrap_or(usize::MAX);
        let to_measure: Vec<IpAddr> = missing.into_iter().take(budget).collect();
        if !to_measure.is_empty() {
            let bar = if self.progress {
                let b = indicatif::ProgressBar::new(to_measure.len() as u64);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:40} {pos}/{len} addresses measured eta {eta}",
                    )
                    .expect("static template"),
                );
                b
            } else {
                indicatif::ProgressBar::hidden()
            };
            let req = geoloc_proto::v1::LocateBatchRequest {
                ips: to_measure.iter().map(IpAddr::to_string).collect(),
                reuse_stored: true,
                ..Default::default()
            };
            let mut c = self.client.clone();
            let r = c
                .locate_batch(req, |ev| {
                    if let geoloc_client::BatchEvent::Done(i, r) = ev {
                        bar.inc(1);
                        let Some(&ip) = to_measure.get(i) else { return };
                        match *r {
                            Ok(l) => {
                                let source = if l.cached { "stored" } else { "measured" };
                                out.insert(ip, location_of(&l, source));
                            }
                            Err(f) => {
                                errors.push(format!("measuring {ip}: {}: {}", f.code, f.message))
                            }
                        }
                    }
                })
                .await;
            bar.finish_and_clear();
            if let Err(f) = r {
                errors.push(format!("measuring: {}: {}", f.code, f.message));
            }
        }
        if !errors.is_empty() {
            eprintln!(
                "geoloc enrich: {} coordinator lookups failed (GeoIP used for those), first: {}",
                errors.len(),
                geoloc_know::printable(&errors[0], 300)
            );
        }
        out
    }
}

impl geoloc_know::enrich::Locator for CoordinatorLocator {
    fn locate<'a>(
        &'a self,
        ips: &'a [IpAddr],
    ) -> futures::future::BoxFuture<'a, HashMap<IpAddr, Location>> {
        Box::pin(self.locate_all(ips))
    }
}
