//! `geoloc import atlas` (offline, from downloaded Atlas files) and `geoloc atlas
//! probes | estimate | locate` (the live RIPE Atlas API, or a stand-in at `--base-url`).
//!
//! Both print the engine's answer as the same JSON as `geoloc solve` (schema in
//! `engine/SCHEMA.md`); probes left out by vetting are listed in its `dropped`. The parse
//! report, the cost and what was spent go to stderr.
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use geoloc_atlas::locate::{import, live, solve_vetted, LiveOptions};
use geoloc_atlas::probes::parse_probe_file;
use geoloc_atlas::request::{Definition, MeasurementRequest, MeasurementType, ProbeSpec};
use geoloc_atlas::results::{parse_results, Expect};
use geoloc_atlas::vet::parse_exclusions;
use geoloc_atlas::{ApiKey, AtlasClient, ProbeSet, DEFAULT_BASE_URL};
use geoloc_engine::{Method, SolveOptions};

/// `geoloc import ...`
#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    source: ImportSource,
}

#[derive(Debug, Subcommand)]
enum ImportSource {
    /// Solve from RIPE Atlas results downloaded earlier (ping or traceroute, IPv4 or IPv6:
    /// the API's JSON array or one result per line), offline.
    Atlas(ImportAtlasArgs),
}

#[derive(Debug, Args)]
struct ImportAtlasArgs {
    /// The measurement's results (`/api/v2/measurements/ID/results/`).
    results: PathBuf,
    /// Probe metadata: an API page (`/api/v2/probes/`), the daily probe archive
    /// (decompressed) or a JSON array of probe objects.
    #[arg(long)]
    probes: PathBuf,
    /// Results of pings among probes (e.g. the anchors' mesh) to vet the probes' positions;
    /// repeatable.
    #[arg(long)]
    mesh: Vec<PathBuf>,
    #[command(flatten)]
    vet: VetArgs,
    /// The target, when the results measured several.
    #[arg(long)]
    target: Option<IpAddr>,
    #[command(flatten)]
    solve: SolveFlags,
}

#[derive(Debug, Args)]
struct VetArgs {
    /// Probe ids never to use (comma-separated).
    #[arg(long, value_delimiter = ',')]
    exclude: Vec<u32>,
    /// A file of probe ids never to use (separated by commas, spaces or lines; `#` comments).
    #[arg(long)]
    exclude_file: Option<PathBuf>,
}

impl VetArgs {
    fn set(&self) -> anyhow::Result<BTreeSet<u32>> {
        let mut s: BTreeSet<u32> = self.exclude.iter().copied().collect();
        if let Some(f) = &self.exclude_file {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            s.extend(parse_exclusions(&text, &f.display().to_string())?);
        }
        Ok(s)
    }
}

#[derive(Debug, Args)]
struct SolveFlags {
    /// Method: bestline (default; calibrated on mesh RTTs when given), cbg, shortest-ping.
    #[arg(long, default_value = "bestline")]
    method: String,
    /// How far a silent target may be from the last router that answered, km.
    #[arg(long, default_value_t = 50.0)]
    last_hop_slack_km: f64,
}

impl SolveFlags {
    fn options(&self) -> anyhow::Result<SolveOptions> {
        let method: Method = self.method.parse()?;
        let o = SolveOptions {
            method,
            last_hop_slack_km: self.last_hop_slack_km,
            ..SolveOptions::default()
        };
        o.validate().map_err(crate::solve::flag_error)?;
        Ok(o)
    }
}

fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut b).context("reading stdin")?;
        Ok(b)
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    }
}

fn read_probes(path: &PathBuf) -> anyhow::Result<ProbeSet> {
    let page = parse_probe_file(&read(path)?, &path.display().to_string())?;
    for i in page.probes.issues.iter().take(20) {
        eprintln!(
            "geoloc: {}: probe {} (entry {}) skipped: {}",
            path.display(),
            i.probe_id.map_or("?".into(), |p| p.to_string()),
            i.index,
            i.problem
        );
    }
    Ok(page.probes)
}

/// `geoloc import ...`
pub fn run_import(a: ImportArgs) -> anyhow::Result<()> {
    let ImportSource::Atlas(a) = a.source;
    let opts = a.solve.options()?;
    let probes = read_probes(&a.probes)?;
    let mut mesh = Vec::new();
    for m in &a.mesh {
        mesh.push(parse_results(
            &read(m)?,
            &m.display().to_string(),
            &Expect::default(),
        )?);
    }
    let exclude = a.vet.set()?;
    let out = import(
        &read(&a.results)?,
        &a.results.display().to_string(),
        &probes,
        &mesh,
        &exclude,
        a.target,
        opts,
    )?;
    eprintln!("geoloc: {}: {}", a.results.display(), out.report);
    println!("{}", serde_json::to_string_pretty(&out.solution)?);
    Ok(())
}

/// `geoloc atlas ...`
#[derive(Debug, Args)]
pub struct AtlasArgs {
    #[command(subcommand)]
    command: AtlasCommand,
}

#[derive(Debug, Subcommand)]
enum AtlasCommand {
    /// List probes (from the API, or a downloaded file with --file).
    Probes(ProbesArgs),
    /// Show what a one-off measurement would cost, without a key and without spending.
    Estimate(EstimateArgs),
    /// Locate an address with a one-off RIPE Atlas measurement (spends credits: the cost
    /// is shown first, and nothing is created beyond --max-credits).
    Locate(Box<LocateArgs>),
}

#[derive(Debug, Args)]
struct ApiArgs {
    /// The API's base URL (a stand-in: http://127.0.0.1:PORT).
    #[arg(long, default_value = DEFAULT_BASE_URL)]
    base_url: String,
    /// A file whose first line is the API key (default: $RIPE_ATLAS_KEY).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Per-request timeout, s.
    #[arg(long, default_value_t = 30.0)]
    http_timeout_s: f64,
}

impl ApiArgs {
    fn client(&self) -> anyhow::Result<AtlasClient> {
        let key = ApiKey::from_file_or_env(self.key_file.as_deref())?;
        let t = positive_duration("--http-timeout-s", self.http_timeout_s)?;
        Ok(AtlasClient::new(&self.base_url, key, t)?)
    }
}

fn positive_duration(flag: &str, s: f64) -> anyhow::Result<Duration> {
    if !(s.is_finite() && s > 0.0 && s <= 86_400.0) {
        anyhow::bail!("{flag}: {s} is not a number of seconds between 0 and 86400");
    }
    Ok(Duration::from_secs_f64(s))
}

#[derive(Debug, Args)]
struct ProbesArgs {
    /// Read this file (API page, archive, or array) instead of the API.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Only anchors.
    #[arg(long)]
    anchors: bool,
    /// Only this country (ISO 3166-1 alpha-2).
    #[arg(long)]
    country: Option<String>,
    /// Only connected probes.
    #[arg(long)]
    connected: bool,
    /// At most this many probes from the API.
    #[arg(long, default_value_t = 100_000)]
    max: usize,
    /// Print JSON (an array of probes) instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Debug, Args)]
struct SelectArgs {
    /// ping or traceroute.
    #[arg(long = "type", default_value = "ping")]
    kind: String,
    /// Packets per result.
    #[arg(long, default_value_t = 3)]
    packets: u32,
    /// Packet size, bytes.
    #[arg(long, default_value_t = 48)]
    size: u32,
    /// These probes (comma-separated ids); overrides --area/--country/--asn.
    #[arg(long, value_delimiter = ',')]
    probe_ids: Vec<u32>,
    /// Area: WW, West, North-Central, South-Central, North-East, South-East.
    #[arg(long)]
    area: Option<String>,
    /// Country (ISO 3166-1 alpha-2).
    #[arg(long)]
    country: Option<String>,
    /// Autonomous system number.
    #[arg(long)]
    asn: Option<u32>,
    /// Probes requested (the budget in probes) for --area/--country/--asn.
    #[arg(long, default_value_t = 50)]
    requested: u32,
}

impl SelectArgs {
    fn request(
        &self,
        target: IpAddr,
        exclude: &BTreeSet<u32>,
    ) -> anyhow::Result<MeasurementRequest> {
        let kind: MeasurementType = self.kind.parse()?;
        let mut d = Definition::new(kind, target);
        d.packets = self.packets;
        d.size_bytes = self.size;
        let spec = if !self.probe_ids.is_empty() {
            // Excluded probes are not asked at all (nothing spent on them).
            let ids: Vec<u32> = self
                .probe_ids
                .iter()
                .copied()
                .filter(|i| !exclude.contains(i))
                .collect();
            ProbeSpec::Ids(ids)
        } else if let Some(c) = &self.country {
            ProbeSpec::Country {
                code: c.clone(),
                requested: self.requested,
            }
        } else if let Some(asn) = self.asn {
            ProbeSpec::Asn {
                asn,
                requested: self.requested,
            }
        } else {
            ProbeSpec::Area {
                area: self.area.clone().unwrap_or_else(|| "WW".into()),
                requested: self.requested,
            }
        };
        Ok(MeasurementRequest {
            definitions: vec![d],
            probes: vec![spec],
        })
    }
}

#[derive(Debug, Args)]
struct EstimateArgs {
    /// The address to measure.
    ip: IpAddr,
    #[command(flatten)]
    select: SelectArgs,
}

#[derive(Debug, Args)]
struct LocateArgs {
    /// The address to locate.
    ip: IpAddr,
    #[command(flatten)]
    select: SelectArgs,
    /// Refuse (exit 2, nothing created) when the estimate is above this many credits.
    #[arg(long)]
    max_credits: u64,
    /// Longest wait for results, s.
    #[arg(long, default_value_t = 300.0)]
    deadline_s: f64,
    /// Time between polls, s.
    #[arg(long, default_value_t = 5.0)]
    poll_s: f64,
    /// Existing measurements of pings among probes (e.g. the anchors' mesh) whose results
    /// vet the probes' positions (free to read); comma-separated ids.
    #[arg(long, value_delimiter = ',')]
    mesh_msm: Vec<u64>,
    /// Probe metadata from a file (API page, archive) instead of asking the API.
    #[arg(long)]
    probes_file: Option<PathBuf>,
    #[command(flatten)]
    vet: VetArgs,
    /// Also write what was spent and received as JSON to this file.
    #[arg(long)]
    summary: Option<PathBuf>,
    #[command(flatten)]
    api: ApiArgs,
    #[command(flatten)]
    solve: SolveFlags,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `geoloc atlas ...`
pub fn run(a: AtlasArgs) -> anyhow::Result<()> {
    match a.command {
        AtlasCommand::Probes(p) => run_probes(p),
        AtlasCommand::Estimate(e) => {
            let req = e.select.request(e.ip, &BTreeSet::new())?;
            println!("{}", req.estimate()?);
            Ok(())
        }
        AtlasCommand::Locate(l) => run_locate(*l),
    }
}

fn run_probes(p: ProbesArgs) -> anyhow::Result<()> {
    let set = match &p.file {
        Some(f) => read_probes(f)?,
        None => {
            let mut q: Vec<(&str, String)> = Vec::new();
            if p.anchors {
                q.push(("is_anchor", "true".into()));
            }
            if p.connected {
                q.push(("status", "1".into()));
            }
            if let Some(c) = &p.country {
                q.push(("country_code", c.to_ascii_uppercase()));
            }
            let c = p.api.client()?;
            runtime()?.block_on(c.probes(&q, p.max))?
        }
    };
    let list: Vec<&geoloc_atlas::Probe> = set
        .probes
        .values()
        .filter(|x| !p.anchors || x.is_anchor)
        .filter(|x| !p.connected || x.status == geoloc_atlas::ProbeStatus::Connected)
        .filter(|x| {
            p.country
                .as_ref()
                .is_none_or(|c| x.country.as_deref() == Some(c.to_ascii_uppercase().as_str()))
        })
        .take(p.max)
        .collect();
    if p.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!(
        "{:>8}  {:>9} {:>10}  {:<2}  {:>7}  {:<6}  status",
        "id", "lat", "lon", "cc", "asn_v4", "anchor"
    );
    for x in list {
        println!(
            "{:>8}  {:>9} {:>10}  {:<2}  {:>7}  {:<6}  {}",
            x.id,
            x.pos.map_or("-".into(), |q| format!("{:.4}", q.lat)),
            x.pos.map_or("-".into(), |q| format!("{:.4}", q.lon)),
            x.country.as_deref().unwrap_or("-"),
            x.asn_v4.map_or("-".into(), |a| a.to_string()),
            if x.is_anchor { "yes" } else { "no" },
            x.status.name()
        );
    }
    Ok(())
}

fn run_locate(l: LocateArgs) -> anyhow::Result<()> {
    let exclude = l.vet.set()?;
    let req = l.select.request(l.ip, &exclude)?;
    let solve_opts = l.solve.options()?;
    let probes = match &l.probes_file {
        Some(f) => read_probes(f)?,
        None => ProbeSet::default(),
    };
    let opts = LiveOptions {
        request: req,
        max_credits: l.max_credits,
        deadline: positive_duration("--deadline-s", l.deadline_s)?,
        poll: positive_duration("--poll-s", l.poll_s)?,
        exclude,
        mesh_msm_ids: l.mesh_msm.clone(),
        probes,
    };
    let client = l.api.client()?;
    let t0 = Instant::now();
    let out = runtime()?.block_on(live(&client, &opts, |est| {
        eprintln!("geoloc: cost before anything is spent:\n{est}");
        if est.total_credits > l.max_credits {
            eprintln!(
                "geoloc: refused: {} credits is more than --max-credits {}",
                est.total_credits, l.max_credits
            );
        }
    }))?;
    let sol = solve_vetted(&out.vetted, solve_opts)?;
    let s = &out.summary;
    eprintln!(
        "geoloc: measurement {}: {}{}",
        s.msm_ids
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(","),
        s.report,
        if s.timed_out {
            " (deadline reached: solved from what arrived)"
        } else {
            ""
        }
    );
    eprintln!(
        "geoloc: credits: {} charged for the results received (estimated at most {}); {:.2} s to the answer ({} polls)",
        s.credits_charged,
        s.estimate.total_credits,
        t0.elapsed().as_secs_f64(),
        s.polls
    );
    if let Some(f) = &l.summary {
        let mut v = serde_json::to_value(s)?;
        v["answer_s"] = serde_json::json!(t0.elapsed().as_secs_f64());
        crate::write_json(f, &v)?;
    }
    println!("{}", serde_json::to_string_pretty(&sol)?);
    Ok(())
}
