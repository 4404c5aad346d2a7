//! `geoloc eval`: leave-one-out on a nodes.csv/rtts.csv data set; `geoloc eval-anycast`:
//! anycast detection and placement on iGreedy's ground truth.
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use geoloc_engine::anycast_eval;
use geoloc_engine::dataset::{self, Dataset};
use geoloc_engine::eval::{leave_one_out, EvalOptions};
use geoloc_engine::Method;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// nodes.csv: `id,lat,lon,label,ip`.
    #[arg(long)]
    nodes: PathBuf,
    /// rtts.csv: `src,dst,rtt_ms` (src measured dst).
    #[arg(long)]
    rtts: PathBuf,
    /// Share of bestline discs allowed to miss the region (0–1).
    #[arg(long, default_value_t = geoloc_engine::solve::DEFAULT_BESTLINE_TOLERANCE)]
    bestline_tolerance: f64,
    /// Method: bestline (default), cbg, shortest-ping.
    #[arg(long, default_value = "bestline")]
    method: String,
    /// Skip targets measured by fewer landmarks.
    #[arg(long, default_value_t = 3)]
    min_landmarks: usize,
    /// Write the summary and per-target rows as JSON here.
    #[arg(long, value_name = "OUT")]
    json: Option<PathBuf>,
    /// Instant for UTC offsets (seconds since 1970 UTC); default now.
    #[arg(long)]
    at_unix_s: Option<i64>,
}

/// Reads a nodes.csv/rtts.csv data set (`geoloc eval`'s format), each error naming its file.
pub fn read_dataset(nodes: &std::path::Path, rtts: &std::path::Path) -> anyhow::Result<Dataset> {
    let nodes_text =
        std::fs::read_to_string(nodes).with_context(|| format!("reading {}", nodes.display()))?;
    let rtts_text =
        std::fs::read_to_string(rtts).with_context(|| format!("reading {}", rtts.display()))?;
    let nodes = dataset::parse_nodes(&nodes_text, &nodes.display().to_string())?;
    let rtts = dataset::parse_rtts(&rtts_text, &rtts.display().to_string(), &nodes)?;
    Ok(Dataset { nodes, rtts })
}

pub fn run(a: EvalArgs) -> anyhow::Result<()> {
    let method: Method = a.method.parse()?;
    let ds = crate::eval::read_dataset(&a.nodes, &a.rtts)?;
    let at = a.at_unix_s.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    });
    geoloc_engine::solve::check_bestline_tolerance(a.bestline_tolerance)
        .map_err(crate::solve::flag_error)?;
    let opts = EvalOptions {
        method,
        min_landmarks: a.min_landmarks,
        at_unix_s: at,
        bestline_tolerance: a.bestline_tolerance,
    };
    let s = leave_one_out(&ds, &opts);
    println!("method         {}", method.name());
    println!("targets        {}", s.targets);
    println!("median_km      {:.1}", s.median_km);
    println!("p80_km         {:.1}", s.p80_km);
    println!("mean_km        {:.1}", s.mean_km);
    println!("within_40km    {:.3}", s.within_40km);
    println!("within_100km   {:.3}", s.within_100km);
    println!("contained      {:.3}", s.contained);
    println!("empty          {}", s.empty);
    println!("anycast        {}", s.anycast);
    println!("tz_match       {:.3}", s.tz_match);
    println!("country_match  {:.3}", s.country_match);
    println!("seconds        {:.3}", s.seconds);
    for r in s
        .per_target
        .iter()
        .filter(|r| r.anycast || !r.dropped.is_empty())
    {
        let names: Vec<&str> = r.dropped.iter().map(|d| d.landmark.as_str()).collect();
        eprintln!(
            "note: target {} ({}){}: dropped {:?}",
            r.id,
            r.label,
            if r.anycast { " called ANYCAST" } else { "" },
            names
        );
    }
    if let Some(out) = &a.json {
        crate::write_json(out, &s)?;
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct EvalAnycastArgs {
    /// The iGreedy ground truth: `airports.csv` and `measurements/<target>` files.
    #[arg(long)]
    dir: PathBuf,
    /// Write the table as JSON here.
    #[arg(long, value_name = "OUT")]
    json: Option<PathBuf>,
}

/// `geoloc eval-anycast`: every target of the iGreedy ground truth, solved with CBG.
pub fn run_anycast(a: EvalAnycastArgs) -> anyhow::Result<()> {
    let airports_path = a.dir.join("airports.csv");
    let text = std::fs::read_to_string(&airports_path)
        .with_context(|| format!("reading {}", airports_path.display()))?;
    let airports = anycast_eval::parse_airports(&text, &airports_path.display().to_string())?;
    let mdir = a.dir.join("measurements");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&mdir)
        .with_context(|| format!("reading {}", mdir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", mdir.display()))?;
    files.retain(|p| p.is_file());
    files.sort();
    if files.is_empty() {
        anyhow::bail!("{}: no measurement files", mdir.display());
    }
    let mut targets = Vec::with_capacity(files.len());
    for f in &files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        targets.push(anycast_eval::parse_target(
            &name,
            &text,
            &f.display().to_string(),
        )?);
    }
    let s = anycast_eval::evaluate(&targets, &airports)?;
    print!("{}", s.markdown());
    if let Some(out) = &a.json {
        crate::write_json(out, &s)?;
    }
    Ok(())
}
