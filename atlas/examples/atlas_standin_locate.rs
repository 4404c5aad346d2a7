//! Figure: live locates through the RIPE Atlas stand-in with a probe budget — time to
//! answer and credits spent.
//!
//! The stand-in (127.0.0.1 only) holds probes at the 767 RIPE Atlas anchor positions of
//! `../shared/data/ripe-atlas-2023/anchors.csv`, answers with RTTs from the lab's fitted
//! delay model and delivers each measurement's results spread over `SPREAD_S` seconds
//! (real one-offs take minutes; the spread is a parameter, not a measurement). Each target
//! is a city of the lab's built-in list moved 40 km; each locate runs the same path as
//! `geoloc atlas locate IP --requested BUDGET --max-credits ... --mesh-msm 1000`:
//! estimate, create, poll, fetch probe metadata and the anchors' mesh, vet, solve.
//!
//!     cargo run --release -p geoloc-atlas --example atlas_standin_locate -- [BUDGET] [TARGETS] [SPREAD_S] [METHOD]
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use geoloc_atlas::locate::{live, solve_vetted, LiveOptions};
use geoloc_atlas::request::{Definition, MeasurementRequest, MeasurementType, ProbeSpec};
use geoloc_atlas::standin::{anchors_from_csv, StandIn, StandInConfig};
use geoloc_atlas::{ApiKey, AtlasClient, ProbeSet};
use geoloc_engine::{distance_km, LatLon, SolveOptions};

const KEY: &str = "0b3c6a2e-1d4f-4a5b-9c8d-7e6f5a4b3c2d";

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let budget: u32 = args.first().map_or(Ok(50), |a| a.parse())?;
    let n_targets: usize = args.get(1).map_or(Ok(10), |a| a.parse())?;
    let spread_s: f64 = args.get(2).map_or(Ok(2.0), |a| a.parse())?;
    let method: geoloc_engine::Method =
        args.get(3).map_or(Ok(Default::default()), |a| a.parse())?;
    let path = "../shared/data/ripe-atlas-2023/anchors.csv";
    let text = std::fs::read_to_string(path)
        .or_else(|_| std::fs::read_to_string(format!("../{path}")))
        .map_err(|e| anyhow::anyhow!("reading {path}: {e} (run from the repository root)"))?;
    let probes = anchors_from_csv(&text);
    let cities = geoloc_lab::geo::builtin_cities();
    let step = (cities.len() / n_targets.max(1)).max(1);
    let targets: Vec<(std::net::IpAddr, LatLon, String)> = cities
        .iter()
        .step_by(step)
        .take(n_targets)
        .enumerate()
        .map(|(i, c)| {
            let p = geoloc_engine::sphere::destination(
                LatLon::new(c.pos.lat, c.pos.lon),
                (i * 37 % 360) as f64,
                40.0,
            );
            (
                std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1 + i as u8)),
                p,
                c.name.clone(),
            )
        })
        .collect();
    let mut cfg = StandInConfig::new(
        probes.clone(),
        targets.iter().map(|t| (t.0, t.1)).collect(),
        KEY,
    );
    cfg.result_spread = Duration::from_secs_f64(spread_s);
    let s = StandIn::start(cfg).await?;
    let client = AtlasClient::new(&s.url, Some(ApiKey::new(KEY)?), Duration::from_secs(30))?;
    println!(
        "{} anchors in the stand-in, budget {budget} probes (area WW), results spread over {spread_s} s, poll 0.25 s\n",
        probes.len()
    );
    println!("| target | probes answered | credits estimated | credits charged | time to answer s | of which solving s | error km |");
    println!("|---|---|---|---|---|---|---|");
    let (mut times, mut errors, mut spent) = (Vec::new(), Vec::new(), 0.0);
    for (ip, pos, name) in &targets {
        let before = s.credits_charged();
        let opts = LiveOptions {
            request: MeasurementRequest {
                definitions: vec![Definition::new(MeasurementType::Ping, *ip)],
                probes: vec![ProbeSpec::Area {
                    area: "WW".into(),
                    requested: budget,
                }],
            },
            max_credits: budget as u64 * 6,
            deadline: Duration::from_secs(120),
            poll: Duration::from_millis(250),
            exclude: BTreeSet::new(),
            mesh_msm_ids: vec![1000],
            probes: ProbeSet::default(),
        };
        let t0 = Instant::now();
        let l = live(&client, &opts, |_| {}).await?;
        let t1 = Instant::now();
        let sol = solve_vetted(
            &l.vetted,
            SolveOptions {
                method,
                ..SolveOptions::default()
            },
        )?;
        let took = t0.elapsed().as_secs_f64();
        let charged = s.credits_charged() - before;
        let err = distance_km(sol.estimate, *pos);
        println!(
            "| {name} +40 km | {} | {} | {charged:.0} | {took:.2} | {:.2} | {err:.0} |",
            l.summary.probes_with_rtt,
            l.summary.estimate.total_credits,
            t1.elapsed().as_secs_f64()
        );
        times.push(took);
        errors.push(err);
        spent += charged;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "\n{} locates: median time to answer {:.2} s, median error {:.0} km, credits spent {spent:.0} ({:.0} per locate)",
        targets.len(),
        median(&mut times),
        median(&mut errors),
        spent / targets.len() as f64
    );
    s.stop().await;
    Ok(())
}
