//! `geoloc eval-verdicts`: false MaxMind proofs on a measured mesh (engine
//! [`geoloc_engine::verdict_eval`]): random probe sets, every other node the target, the
//! truth and a point 6,000 km away judged as if they were the database's answer.
use std::path::PathBuf;

use clap::Args;
use geoloc_engine::verdict_eval::{self, VerdictRow};

#[derive(Debug, Args)]
pub struct EvalVerdictsArgs {
    /// nodes.csv: `id,lat,lon,label,ip`.
    #[arg(long)]
    nodes: PathBuf,
    /// rtts.csv: `src,dst,rtt_ms` (src measured dst).
    #[arg(long)]
    rtts: PathBuf,
    /// Probe counts, comma-separated.
    #[arg(long, default_value = "20,50,100")]
    probes: String,
    /// Random probe sets per count.
    #[arg(long, default_value_t = 5)]
    sets: usize,
    /// Seed of the draws.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Targets measured by fewer probes are skipped.
    #[arg(long, default_value_t = 3)]
    min_landmarks: usize,
    /// Write the rows (with every false proof) as JSON here.
    #[arg(long, value_name = "OUT")]
    json: Option<PathBuf>,
}

fn parse_counts(s: &str) -> anyhow::Result<Vec<usize>> {
    crate::eval_budget::probe_counts("--probes", s, 100_000, "100,000")
}

/// `geoloc eval-verdicts`.
pub fn run(a: EvalVerdictsArgs) -> anyhow::Result<()> {
    let counts = parse_counts(&a.probes)?;
    anyhow::ensure!(
        (1..=1000).contains(&a.sets),
        "--sets: {} is not 1 to 1000",
        a.sets
    );
    let ds = crate::eval::read_dataset(&a.nodes, &a.rtts)?;
    let pairs = verdict_eval::pair_rtts(&ds);
    let (bad, ambiguous) = verdict_eval::mislabelled(&ds, &pairs);
    let id = |i: usize| ds.nodes[i].id.as_str();
    let bad: Vec<&str> = bad.into_iter().map(id).collect();
    println!(
        "mislabelled nodes (faster than light with two or more others for their labels): {}",
        if bad.is_empty() {
            "none".to_string()
        } else {
            bad.join(", ")
        }
    );
    if !ambiguous.is_empty() {
        let pairs: Vec<String> = ambiguous
            .iter()
            .map(|&(a, b)| format!("{}-{}", id(a), id(b)))
            .collect();
        println!(
            "pairs faster than light on their own (either node could be wrong; both judged as true positions): {}",
            pairs.join(", ")
        );
    }
    println!("{}", VerdictRow::MARKDOWN_HEADER);
    let mut rows = Vec::new();
    for k in counts {
        anyhow::ensure!(
            k < ds.nodes.len(),
            "--probes: {k} probes leave no target among {} nodes",
            ds.nodes.len()
        );
        let started = std::time::Instant::now();
        let row = verdict_eval::evaluate(&ds, &pairs, k, a.sets, a.seed, a.min_landmarks);
        println!("{}", row.markdown());
        eprintln!(
            "{k} probes: {:.1} s; mislabelled targets' labels: {} provably-wrong, {} likely-wrong, {} consistent",
            started.elapsed().as_secs_f64(),
            row.mislabelled_truth.provably_wrong,
            row.mislabelled_truth.likely_wrong,
            row.mislabelled_truth.consistent
        );
        for f in &row.false_proofs {
            let who: Vec<String> = f
                .rulings
                .iter()
                .map(|r| {
                    format!(
                        "{} ({} km, bound {} km)",
                        r.landmark, r.distance_km, r.bound_km
                    )
                })
                .collect();
            println!(
                "  FALSE PROOF: set {}, target {}: {}",
                f.set,
                f.target,
                who.join(", ")
            );
        }
        rows.push(row);
    }
    if let Some(path) = &a.json {
        crate::write_json(path, &rows)?;
    }
    let false_proofs: usize = rows.iter().map(|r| r.truth.provably_wrong).sum();
    anyhow::ensure!(
        false_proofs == 0,
        "{false_proofs} provably-wrong verdicts on true positions"
    );
    Ok(())
}
