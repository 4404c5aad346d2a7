//! The "all" versus "two-stage" trade-off, in numbers, on REAL RTTs: the WonderNetwork mesh
//! (`../shared/data/wondernetwork-train`, or `GEOLOC_WONDERNETWORK=DIR`). Every server is a
//! FAKE probe (tests/common) that answers with the measured RTT from the data set (no packets
//! are sent); each target in turn is located through the real coordinator over gRPC, leaving
//! it out as a landmark, once in each mode. Ignored by default (slow in debug builds):
//!
//! ```text
//! cargo test -p geoloc-coordinator --release --test tradeoff -- --ignored --nocapture
//! ```
mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use geoloc_engine::{distance_km, LatLon, Solution};
use geoloc_proto::v1 as pb;

fn dataset() -> Option<PathBuf> {
    let p = std::env::var("GEOLOC_WONDERNETWORK")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/data/wondernetwork-train"
            ))
        });
    p.join("nodes.csv").exists().then_some(p)
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "evaluation: run with --ignored --nocapture (release recommended)"]
async fn two_stage_tradeoff_on_wondernetwork() {
    let Some(dir) = dataset() else {
        eprintln!("SKIP: WonderNetwork data set not found (set GEOLOC_WONDERNETWORK)");
        return;
    };
    let targets_wanted: usize = std::env::var("GEOLOC_TRADEOFF_TARGETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let mut nodes: Vec<(String, f64, f64)> = Vec::new();
    for rec in csv::Reader::from_path(dir.join("nodes.csv"))
        .unwrap()
        .records()
    {
        let r = rec.unwrap();
        nodes.push((
            r[0].to_string(),
            r[1].parse().unwrap(),
            r[2].parse().unwrap(),
        ));
    }
    // Minimum RTT per unordered pair.
    let mut rtt: HashMap<(String, String), f64> = HashMap::new();
    for rec in csv::Reader::from_path(dir.join("rtts.csv"))
        .unwrap()
        .records()
    {
        let r = rec.unwrap();
        let (a, b, x): (String, String, f64) = (r[0].into(), r[1].into(), r[2].parse().unwrap());
        for k in [(a.clone(), b.clone()), (b, a)] {
            let e = rtt.entry(k).or_insert(x);
            *e = e.min(x);
        }
    }
    let rtt = Arc::new(rtt);
    let ip_of = |i: usize| format!("127.3.{}.{}", i / 250, i % 250 + 1);
    let ip_to_id: Arc<HashMap<String, String>> = Arc::new(
        nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (ip_of(i), n.0.clone()))
            .collect(),
    );

    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start(&sqlite_url(&tmp), |c| {
        c.probe_timeout_ms = 5000;
        c.heartbeat_interval_ms = 5000;
        c.batch_concurrency = 1;
        if let Some(v) = std::env::var("GEOLOC_TRADEOFF_FIRST")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            c.two_stage_first = v;
        }
        if let Some(v) = std::env::var("GEOLOC_TRADEOFF_K")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            c.two_stage_k = v;
        }
    })
    .await;
    let mut probes = Vec::new();
    for n in &nodes {
        let (me, rtt, ips) = (n.0.clone(), Arc::clone(&rtt), Arc::clone(&ip_to_id));
        let f: RttFn = Arc::new(move |t: &str| {
            ips.get(t)
                .and_then(|id| rtt.get(&(me.clone(), id.clone())).copied())
        });
        probes.push(
            FakeProbe::start_with(&srv.url, &n.0, (n.1, n.2), "", f, Behaviour::Honest).await,
        );
    }
    wait_healthy(&srv.coord, nodes.len()).await;
    let mut c = srv.client().await;

    // Targets: every k-th node with at least 100 measured peers.
    let eligible: Vec<usize> = (0..nodes.len())
        .filter(|&i| {
            nodes
                .iter()
                .filter(|m| rtt.contains_key(&(m.0.clone(), nodes[i].0.clone())))
                .count()
                >= 100
        })
        .collect();
    let step = (eligible.len() / targets_wanted.max(1)).max(1);
    let targets: Vec<usize> = eligible
        .iter()
        .step_by(step)
        .take(targets_wanted)
        .copied()
        .collect();

    type Stat = (&'static str, Vec<f64>, Vec<f64>, Vec<f64>);
    let mut stats: Vec<Stat> = Vec::new();
    for (mode, name) in [
        (pb::LocateMode::All, "all"),
        (pb::LocateMode::TwoStage, "two-stage"),
    ] {
        let (mut err, mut packets, mut asked) = (Vec::new(), Vec::new(), Vec::new());
        for &t in &targets {
            let req = pb::LocateRequest {
                ip: ip_of(t),
                mode: mode as i32,
                ..Default::default()
            };
            let mut s = c.locate(req).await.unwrap().into_inner();
            let mut res = None;
            while let Some(ev) = tokio::time::timeout(Duration::from_secs(120), s.message())
                .await
                .unwrap()
                .unwrap()
            {
                if let Some(pb::locate_event::Event::Result(r)) = ev.event {
                    res = Some(r);
                }
            }
            let Some(r) = res else { continue };
            let sol: Solution = serde_json::from_str(&r.solution_json).unwrap();
            err.push(distance_km(
                sol.estimate,
                LatLon {
                    lat: nodes[t].1,
                    lon: nodes[t].2,
                },
            ));
            // The target's own probe has no RTT to itself: it is asked but answers nothing,
            // as a real silent probe would; count what was spent.
            packets.push(r.packets_sent as f64);
            asked.push(f64::from(r.probes_asked));
        }
        stats.push((name, err, packets, asked));
    }
    println!("\nWonderNetwork mesh, {} servers as probes, {} targets (leave-one-out), defaults: first stage {}, K {}", nodes.len(), targets.len(), srv.coord.config.two_stage_first, srv.coord.config.two_stage_k);
    println!(
        "{:<10} {:>12} {:>14} {:>16} {:>16} {:>12}",
        "mode",
        "probes asked",
        "packets/target",
        "median error km",
        "p80 error km",
        "within 100 km"
    );
    for (name, mut err, packets, asked) in stats {
        let n = err.len() as f64;
        let within = err.iter().filter(|e| **e <= 100.0).count() as f64 / n * 100.0;
        println!(
            "{:<10} {:>12.1} {:>14.1} {:>16.0} {:>16.0} {:>11.0}%",
            name,
            asked.iter().sum::<f64>() / n,
            packets.iter().sum::<f64>() / n,
            pct(&mut err, 0.5),
            pct(&mut err, 0.8),
            within
        );
    }
    drop(probes);
    srv.stop().await;
}
