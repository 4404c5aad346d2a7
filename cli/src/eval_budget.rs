//! `geoloc eval-budget`: leave-one-out on a nodes.csv/rtts.csv data set with the phased
//! selection at several budgets and calibrated 50%/90% radii fitted without the target;
//! `geoloc eval-dense`: the same selection in a dense emulated world (RIPE Atlas anchor
//! positions plus population-weighted GeoNames cities, delays from the lab's model).
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use geoloc_engine::budget_eval::{fold_models, leave_one_out_phased, FigureRow};
use geoloc_engine::dataset::{self, Dataset};
use geoloc_engine::eval::{target_row, EvalOptions, TargetRow};
use geoloc_engine::select::{self, PhasedOptions};
use geoloc_engine::{
    solve, Bestline, Calibration, ConfidenceModel, Kind, LatLon, Measurement, Method, SolveOptions,
};
use geoloc_lab::geo::{self as labgeo, DelayModel};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A comma-separated list of probe counts given to `flag` (e.g. `--budgets 10,25,50`), each
/// 1 to `max` (`max_text`: `max` as the message writes it).
pub(crate) fn probe_counts(
    flag: &str,
    s: &str,
    max: usize,
    max_text: &str,
) -> anyhow::Result<Vec<usize>> {
    s.split(',')
        .map(|x| {
            let n: usize = x
                .trim()
                .parse()
                .with_context(|| format!("{flag}: {x:?} is not a count of probes"))?;
            anyhow::ensure!(
                (1..=max).contains(&n),
                "{flag}: {n} is not 1 to {max_text} probes"
            );
            Ok(n)
        })
        .collect()
}

fn parse_budgets(s: &str) -> anyhow::Result<Vec<usize>> {
    probe_counts("--budgets", s, 1_000_000, "1,000,000")
}

fn now_or(at: Option<i64>) -> i64 {
    at.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    })
}

#[derive(Debug, Args)]
pub struct EvalBudgetArgs {
    /// nodes.csv: `id,lat,lon,label,ip`.
    #[arg(long)]
    nodes: PathBuf,
    /// rtts.csv: `src,dst,rtt_ms` (src measured dst).
    #[arg(long)]
    rtts: PathBuf,
    /// Budgets in probes (landmarks asked per target), comma-separated.
    #[arg(long, default_value = "10,25,50")]
    budgets: String,
    /// Folds for calibrating the radii (a target's fold is left out of its calibration).
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// Stop when a round shrinks the region's area by less than this share.
    #[arg(long, default_value_t = PhasedOptions::default().min_shrink)]
    min_shrink: f64,
    /// Instant for UTC offsets (seconds since 1970 UTC); default now.
    #[arg(long)]
    at_unix_s: Option<i64>,
    /// Write the table as JSON here.
    #[arg(long, value_name = "OUT")]
    json: Option<PathBuf>,
}

/// `geoloc eval-budget`.
pub fn run_budget(a: EvalBudgetArgs) -> anyhow::Result<()> {
    let budgets = parse_budgets(&a.budgets)?;
    anyhow::ensure!(
        (2..=50).contains(&a.folds),
        "--folds: {} is not 2 to 50",
        a.folds
    );
    let ds = crate::eval::read_dataset(&a.nodes, &a.rtts)?;
    let opts = EvalOptions {
        method: Method::Bestline,
        min_landmarks: 3,
        at_unix_s: now_or(a.at_unix_s),
        bestline_tolerance: geoloc_engine::solve::DEFAULT_BESTLINE_TOLERANCE,
    };
    let started = std::time::Instant::now();
    let models = fold_models(
        &ds,
        &opts,
        a.folds,
        geoloc_engine::confidence::DEFAULT_FLOOR_KM,
    )?;
    // The model fitted on every target (what ConfidenceModel::default holds).
    let all = geoloc_engine::eval::leave_one_out(&ds, &opts);
    let samples: Vec<(f64, f64)> = all
        .per_target
        .iter()
        .map(|r| (r.error_km, r.region_km2))
        .collect();
    let full = ConfidenceModel::fit(&samples, geoloc_engine::confidence::DEFAULT_FLOOR_KM)?;
    eprintln!(
        "confidence fitted on all {} targets: ratio_50 {:.3}, ratio_90 {:.3}",
        full.targets, full.ratio_50, full.ratio_90
    );
    let mut table = Vec::new();
    let (row, _) = leave_one_out_phased(&ds, &opts, None, &models)?;
    table.push(row);
    for &b in &budgets {
        let (row, _) = leave_one_out_phased(
            &ds,
            &opts,
            Some(PhasedOptions {
                min_shrink: a.min_shrink,
                ..PhasedOptions::probes(b)
            }),
            &models,
        )?;
        table.push(row);
    }
    println!("{}", FigureRow::HEADER);
    for r in &table {
        println!("{}", r.markdown());
    }
    eprintln!("{:.1} s", started.elapsed().as_secs_f64());
    if let Some(out) = &a.json {
        crate::write_json(out, &table)?;
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct EvalDenseArgs {
    /// RIPE Atlas anchors: `id,ip,country,lat,lon` (every row is a probe).
    #[arg(long, default_value = "../shared/data/ripe-atlas-2023/anchors.csv")]
    anchors: PathBuf,
    /// GeoNames `cities15000.zip` (or its extracted .txt).
    #[arg(long, default_value = "../shared/data/geonames/cities15000.zip")]
    geonames: PathBuf,
    /// Probes added at population-weighted GeoNames cities.
    #[arg(long, default_value_t = 2000)]
    city_probes: usize,
    /// Targets at population-weighted GeoNames cities.
    #[arg(long, default_value_t = 200)]
    targets: usize,
    /// Budgets in probes, comma-separated.
    #[arg(long, default_value = "25,50,100,300")]
    budgets: String,
    /// Seed of the draws (places and delays).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stop when a round shrinks the region's area by less than this share.
    #[arg(long, default_value_t = PhasedOptions::default().min_shrink)]
    min_shrink: f64,
    /// Instant for UTC offsets (seconds since 1970 UTC); default now.
    #[arg(long)]
    at_unix_s: Option<i64>,
    /// Write the table as JSON here.
    #[arg(long, value_name = "OUT")]
    json: Option<PathBuf>,
}

/// Reads the anchors' positions; rows with a position off the globe are an error.
fn read_anchors(path: &std::path::Path) -> anyhow::Result<Vec<LatLon>> {
    let mut r =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let headers = r.headers()?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("{}: no {name:?} column", path.display()))
    };
    let (lat, lon) = (col("lat")?, col("lon")?);
    let mut out = Vec::new();
    for (i, rec) in r.records().enumerate() {
        let rec = rec.with_context(|| format!("{}: row {}", path.display(), i + 2))?;
        let f = |c: usize| -> anyhow::Result<f64> {
            rec.get(c)
                .unwrap_or("")
                .trim()
                .parse()
                .with_context(|| format!("{}: row {}: bad coordinate", path.display(), i + 2))
        };
        let p = LatLon::checked(f(lat)?, f(lon)?)
            .map_err(|e| anyhow::anyhow!("{}: row {}: {e}", path.display(), i + 2))?;
        out.push(p);
    }
    anyhow::ensure!(!out.is_empty(), "{}: no anchors", path.display());
    Ok(out)
}

/// `n` distinct cities drawn with probability proportional to population (Efraimidis–
/// Spirakis keys `u^(1/w)`, the largest `n`).
fn weighted_sample(cities: &[labgeo::City], n: usize, rng: &mut StdRng) -> Vec<usize> {
    let mut keys: Vec<(f64, usize)> = cities
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
            (u.ln() / (c.population.max(1) as f64), i)
        })
        .collect();
    keys.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    keys.into_iter().take(n).map(|k| k.1).collect()
}

/// `geoloc eval-dense`.
pub fn run_dense(a: EvalDenseArgs) -> anyhow::Result<()> {
    let budgets = parse_budgets(&a.budgets)?;
    anyhow::ensure!((1..=5_000).contains(&a.targets), "--targets: 1 to 5,000");
    anyhow::ensure!(a.city_probes <= 20_000, "--city-probes: at most 20,000");
    let at = now_or(a.at_unix_s);
    let anchors = read_anchors(&a.anchors)?;
    let cities = labgeo::geonames_cities(&a.geonames, 15_000)?;
    let mut rng = StdRng::seed_from_u64(a.seed);
    let probe_cities = weighted_sample(&cities, a.city_probes, &mut rng);
    let target_cities = weighted_sample(&cities, a.targets, &mut rng);
    let mut positions: Vec<LatLon> = anchors.clone();
    positions.extend(
        probe_cities
            .iter()
            .map(|&i| LatLon::new(cities[i].pos.lat, cities[i].pos.lon)),
    );
    let n_probes = positions.len();
    positions.extend(
        target_cities
            .iter()
            .map(|&i| LatLon::new(cities[i].pos.lat, cities[i].pos.lon)),
    );
    let started = std::time::Instant::now();
    let lab_pos: Vec<labgeo::LatLon> = positions
        .iter()
        .map(|p| labgeo::LatLon {
            lat: p.lat,
            lon: p.lon,
        })
        .collect();
    let (_, one_way) = DelayModel::default().matrix(&lab_pos, a.seed);
    let n = positions.len();
    let rtt = |i: usize, j: usize| 2.0 * one_way[i * n + j];
    // Bestlines from RTTs among the probes only (never a target's).
    let lines = (0..n_probes)
        .filter_map(|i| {
            let pts: Vec<(f64, f64)> = (0..n_probes)
                .filter(|&j| j != i)
                .map(|j| {
                    (
                        geoloc_engine::distance_km(positions[i], positions[j]),
                        rtt(i, j),
                    )
                })
                .collect();
            Bestline::fit(&pts).map(|l| (format!("p{i}"), l))
        })
        .collect();
    let calibration = Calibration::from_lines(lines);
    eprintln!(
        "world: {} probes ({} anchors + {} cities), {} targets, delays and bestlines in {:.1} s",
        n_probes,
        anchors.len(),
        probe_cities.len(),
        target_cities.len(),
        started.elapsed().as_secs_f64()
    );
    // Targets as a data set, for the rows (truth, time zone, country).
    let ds = Dataset {
        nodes: (n_probes..n)
            .map(|i| dataset::Node {
                id: format!("t{}", i - n_probes),
                pos: positions[i],
                label: cities[target_cities[i - n_probes]].name.clone(),
                ip: String::new(),
            })
            .collect(),
        rtts: vec![],
    };
    let so = SolveOptions {
        calibration: Some(calibration),
        region_geometry: false,
        timezone_shares: false,
        at_unix_s: Some(at),
        ..SolveOptions::default()
    };
    let probe_pos = &positions[..n_probes];
    let measure = |t: usize, idx: &[usize]| -> Vec<Measurement> {
        idx.iter()
            .map(|&i| Measurement {
                landmark: format!("p{i}"),
                pos: positions[i],
                rtt_ms: rtt(i, n_probes + t),
                kind: Kind::Echo,
            })
            .collect()
    };
    let mut table = Vec::new();
    let settings: Vec<Option<usize>> = std::iter::once(None)
        .chain(budgets.iter().map(|&b| Some(b)))
        .collect();
    for setting in settings {
        let t0 = std::time::Instant::now();
        let mut rows: Vec<TargetRow> = Vec::new();
        let mut probes = Vec::new();
        let mut empty = 0;
        for t in 0..ds.nodes.len() {
            let s0 = std::time::Instant::now();
            let result = match setting {
                None => {
                    let all: Vec<usize> = (0..n_probes).collect();
                    solve(&measure(t, &all), &so).map(|s| (s, n_probes))
                }
                Some(b) => select::run(
                    probe_pos,
                    PhasedOptions {
                        min_shrink: a.min_shrink,
                        ..PhasedOptions::probes(b)
                    },
                    &so,
                    |idx| measure(t, idx),
                )
                .map(|r| (r.solution, r.spent.probes)),
            };
            match result {
                Ok((sol, asked)) => {
                    rows.push(target_row(&ds, t, &sol, s0.elapsed().as_secs_f64(), at));
                    probes.push(asked);
                }
                Err(_) => empty += 1,
            }
        }
        let name = setting.map_or("all".to_string(), |b| b.to_string());
        let row = FigureRow::new(&name, &rows, &probes, &vec![n_probes; probes.len()], empty);
        eprintln!("{} ({:.1} s)", row.markdown(), t0.elapsed().as_secs_f64());
        table.push(row);
    }
    println!("{}", FigureRow::HEADER);
    for r in &table {
        println!("{}", r.markdown());
    }
    if let Some(out) = &a.json {
        crate::write_json(out, &table)?;
    }
    Ok(())
}
