//! `geoloc lab ...` subcommands.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::demo::{self, DemoArgs};
use crate::geo::{self, DelayModel};
use crate::signals::{cleanup_on_signal, wait_for_signal};
use crate::world::{self, Placement, World};
use crate::{netns, Behaviour, Lab};

#[derive(Debug, Args)]
pub struct LabArgs {
    #[command(subcommand)]
    pub command: LabCommand,
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Bring up the emulated Internet, locate every target through the real system, tear down.
    Demo(DemoArgs),
    /// Bring up hosts in cities around the world and keep them until Ctrl-C (for manual use:
    /// `ip netns exec <ns> ping ...`).
    Up(UpArgs),
    /// Remove namespaces left behind by lab runs that died.
    Cleanup(CleanupArgs),
    /// Fit the path-inflation distribution to a nodes.csv/rtts.csv data set.
    Fit(FitArgs),
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Number of hosts, placed in cities spread over the world.
    #[arg(long, default_value_t = 5)]
    pub hosts: usize,
    /// Seed for placement, access delays and path inflation.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Mean per-packet jitter, ms (exponential).
    #[arg(long, default_value_t = 0.0)]
    pub jitter_ms: f64,
    /// Stop after this many seconds instead of waiting for Ctrl-C.
    #[arg(long)]
    pub for_secs: Option<u64>,
    /// Place the hosts at nodes of a measured RTT matrix (folder with nodes.csv/rtts.csv)
    /// and replay its delays.
    #[arg(long, value_name = "DIR")]
    pub replay: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Also remove namespaces of labs whose process still runs.
    #[arg(long)]
    pub all: bool,
    /// SIGKILL processes still running inside the namespaces removed.
    #[arg(long)]
    pub kill: bool,
}

#[derive(Debug, Args)]
pub struct FitArgs {
    /// Folder with nodes.csv and rtts.csv.
    #[arg(long, default_value = "../shared/data/wondernetwork-train")]
    pub data: PathBuf,
}

pub fn run(args: LabArgs) -> anyhow::Result<()> {
    match args.command {
        LabCommand::Demo(a) => run_demo(a),
        LabCommand::Up(a) => up(a),
        LabCommand::Cleanup(a) => cleanup(a),
        LabCommand::Fit(a) => fit(a),
    }
}

/// `geoloc lab demo`: runs the demo within `--timeout-secs`, cleaning up on Ctrl-C / SIGTERM,
/// prints the table and writes the files asked for.
fn run_demo(a: DemoArgs) -> anyhow::Result<()> {
    netns::check_privileges()?;
    cleanup_on_signal()?;
    let limit = Duration::from_secs(a.timeout_secs);
    let args = a.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(demo::run_demo(&args));
    });
    let (report, gj) = match rx.recv_timeout(limit) {
        Ok(r) => r?,
        Err(_) => {
            netns::cleanup_registered();
            bail!("the demo did not finish within {limit:?}; everything was torn down");
        }
    };
    demo::print_table(&report);
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
        println!("summary: {}", p.display());
    }
    if let Some(p) = &a.geojson {
        // Through a Value: keys sorted, as before the typed GeoJSON.
        std::fs::write(p, serde_json::to_value(&gj)?.to_string())
            .with_context(|| format!("writing {}", p.display()))?;
        println!("geojson: {}", p.display());
    }
    Ok(())
}

fn up(a: UpArgs) -> anyhow::Result<()> {
    let builtin = geo::builtin_cities();
    let replay = a.replay.as_deref().map(geo::read_rtt_set).transpose()?;
    let pool = match &replay {
        Some(set) => geo::rtt_set_cities(set, &builtin),
        None => builtin,
    };
    let cities = world::spread(&pool, a.hosts, a.seed)?;
    let node_of: Vec<Option<usize>> = cities
        .iter()
        .map(|c| pool.iter().position(|p| p.name == c.name))
        .collect();
    let placements = cities
        .into_iter()
        .enumerate()
        .map(|(i, city)| Placement {
            name: format!("h{i}"),
            city,
            behaviour: Behaviour::Normal,
            anycast_group: None,
        })
        .collect::<Vec<_>>();
    let w = match &replay {
        Some(set) => World::replayed(
            placements,
            set,
            &node_of,
            &DelayModel::default(),
            a.seed,
            a.jitter_ms,
        )?,
        None => World::build(placements, &DelayModel::default(), a.seed, a.jitter_ms)?,
    };
    cleanup_on_signal()?;
    let lab = Lab::up(w.topology.clone(), a.seed).context("bringing the lab up")?;
    println!(
        "{:<5} {:<16} {:<34} {:<12} {:<18} namespace",
        "host", "city", "", "ipv4", "ipv6"
    );
    for (h, p) in lab.hosts().iter().zip(&w.placements) {
        println!(
            "{:<5} {:<16} ({:>8.3}, {:>9.3}) {:>10} {:<12} {:<18} {}",
            h.name, p.city.name, p.city.pos.lat, p.city.pos.lon, "", h.v4, h.v6, h.ns
        );
    }
    println!("\none-way delays, ms:");
    let n = lab.hosts().len();
    for i in 0..n {
        let row: Vec<String> = (0..n)
            .map(|j| format!("{:7.2}", w.topology.one_way_ms(i, j)))
            .collect();
        println!("  {:<5}{}", lab.hosts()[i].name, row.join(""));
    }
    println!(
        "\ntry: ip netns exec {} ping {}   (Ctrl-C to stop and clean up)",
        lab.hosts()[0].ns,
        lab.hosts()[n - 1].v4
    );
    wait_for_signal(a.for_secs.map(Duration::from_secs))?;
    let stats = lab.stats();
    lab.down()?;
    println!("stopped; {}", serde_json::to_string(&stats)?);
    Ok(())
}

fn cleanup(a: CleanupArgs) -> anyhow::Result<()> {
    netns::check_privileges()?;
    let r = netns::cleanup_stale(a.all, a.kill)?;
    for ns in &r.removed {
        println!("removed {ns}");
    }
    for ns in &r.kept_live {
        println!("kept {ns} (its lab is still running; --all removes it)");
    }
    if !r.killed.is_empty() {
        println!("killed pids {:?}", r.killed);
    }
    if r.removed.is_empty() && r.kept_live.is_empty() {
        println!("nothing to clean up");
    }
    Ok(())
}

fn fit(a: FitArgs) -> anyhow::Result<()> {
    let set = geo::read_rtt_set(&a.data)?;
    let f = geo::fit_inflation(&set)?;
    println!("{}", serde_json::to_string_pretty(&f)?);
    println!(
        "constants in lab/src/geo.rs: INFLATION_LN_MU = {:.4}, INFLATION_LN_SIGMA = {:.4}, INFLATION_LN_SIGMA_HOST = {:.4}",
        geo::INFLATION_LN_MU,
        geo::INFLATION_LN_SIGMA,
        geo::INFLATION_LN_SIGMA_HOST
    );
    Ok(())
}
