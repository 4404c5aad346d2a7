//! `geoloc solve`: one target from a CSV of landmark RTTs.
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use geoloc_engine::{dataset, solve, Method, SolveOptions};

/// An engine error about an option, named by the flag that set it
/// (`bestline_tolerance` → `--bestline-tolerance: ...`).
pub fn flag_error(e: geoloc_engine::EngineError) -> anyhow::Error {
    match &e {
        geoloc_engine::EngineError::InvalidOption { name, .. } => {
            anyhow::anyhow!("--{}: {e}", name.replace('_', "-"))
        }
        _ => e.into(),
    }
}

#[derive(Debug, Args)]
pub struct SolveArgs {
    /// CSV of `landmark,lat,lon,rtt_ms[,kind]` (kind: echo | last-hop); `-` for stdin.
    #[arg(long)]
    input: PathBuf,
    /// The target's address, for the GeoIP comparison.
    #[arg(long)]
    ip: Option<IpAddr>,
    /// A GeoIP2/GeoLite2 City database to compare with (needs --ip).
    #[arg(long, value_name = "FILE.mmdb", requires = "ip")]
    geoip: Option<PathBuf>,
    /// Write the region's outline as a GeoJSON Feature to this file.
    #[arg(long, value_name = "OUT")]
    geojson: Option<PathBuf>,
    /// Share of bestline discs allowed to miss the region (0–1).
    #[arg(long, default_value_t = geoloc_engine::solve::DEFAULT_BESTLINE_TOLERANCE)]
    bestline_tolerance: f64,
    /// Method: bestline (default; `solve` has no landmark-to-landmark RTTs to calibrate
    /// with, so each landmark falls back to the sound bound), cbg, shortest-ping.
    #[arg(long, default_value = "bestline")]
    method: String,
    /// How far a silent target may be from its last responsive router, km.
    #[arg(long, default_value_t = 50.0)]
    last_hop_slack_km: f64,
}

pub(crate) fn read_input(path: &PathBuf) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).context("reading stdin")?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    }
}

pub fn run(a: SolveArgs) -> anyhow::Result<()> {
    let method: Method = a.method.parse()?;
    let mut opts = SolveOptions {
        method,
        last_hop_slack_km: a.last_hop_slack_km,
        bestline_tolerance: a.bestline_tolerance,
        ..SolveOptions::default()
    };
    opts.validate().map_err(flag_error)?;
    let text = read_input(&a.input)?;
    let ms = dataset::parse_measurements(&text, &a.input.display().to_string())?;
    if let (Some(db), Some(ip)) = (&a.geoip, a.ip) {
        let db = geoloc_geoip::GeoIpDb::open(db)?;
        opts.geoip = db.lookup(ip)?;
        opts.geoip_checked = true;
    }
    let sol = solve(&ms, &opts)?;
    if let Some(out) = &a.geojson {
        let feature = serde_json::json!({
            "type": "FeatureCollection",
            "features": [
                {"type": "Feature", "geometry": sol.region, "properties": {"kind": "region", "region_km2": sol.region_km2}},
                {"type": "Feature", "geometry": {"type": "Point", "coordinates": [sol.estimate.lon, sol.estimate.lat]},
                 "properties": {"kind": "estimate", "radius_km": sol.radius_km, "city": sol.place.city, "country": sol.place.country}},
            ]
        });
        crate::write_json(out, &feature)?;
    }
    println!("{}", serde_json::to_string_pretty(&sol)?);
    Ok(())
}
