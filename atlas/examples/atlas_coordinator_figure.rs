//! Figure: a live lab run of `geoloc locate IP --source atlas --budget 50` through a real
//! `geoloc-coordinator` configured with the RIPE Atlas stand-in (127.0.0.1 only): time to
//! answer, credits spent, error against the stand-in's truth.
//!
//! The stand-in holds probes at the 767 RIPE Atlas anchor positions of
//! `../shared/data/ripe-atlas-2023/anchors.csv` and answers from the lab's fitted delay model,
//! delivering each measurement's results over `SPREAD_S` seconds (real one-offs take one to
//! a few minutes: the spread is a parameter, not a measurement). Targets are cities of the
//! lab's built-in list moved 40 km (documentation addresses, hence `--allow-private`). The
//! coordinator and the CLI are the built binaries, run as a user would:
//!
//!     cargo build --release --bins
//!     cargo run --release -p geoloc-atlas --features stand-in --example atlas_coordinator_figure -- [BUDGET] [TARGETS] [SPREAD_S] [MAX_CREDITS]
//!
//! Binaries are taken from `GEOLOC_BIN_DIR` (default `target/release`).
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use geoloc_atlas::standin::{anchors_from_csv, StandIn, StandInConfig};
use geoloc_engine::{distance_km, LatLon};

const KEY: &str = "0b3c6a2e-1d4f-4a5b-9c8d-7e6f5a4b3c2d";

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let budget: u32 = args.first().map_or(Ok(50), |a| a.parse())?;
    let n_targets: usize = args.get(1).map_or(Ok(10), |a| a.parse())?;
    let spread_s: f64 = args.get(2).map_or(Ok(2.0), |a| a.parse())?;
    let max_credits: u64 = args.get(3).map_or(Ok(300), |a| a.parse())?;
    let bin = PathBuf::from(std::env::var("GEOLOC_BIN_DIR").unwrap_or("target/release".into()));
    for b in ["geoloc", "geoloc-coordinator"] {
        anyhow::ensure!(
            bin.join(b).exists(),
            "{} not found: build the binaries (cargo build --release --bins) or set GEOLOC_BIN_DIR",
            bin.join(b).display()
        );
    }
    let path = "../shared/data/ripe-atlas-2023/anchors.csv";
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading {path}: {e} (run from the repository root)"))?;
    let probes = anchors_from_csv(&text);
    let cities = geoloc_lab::geo::builtin_cities();
    let step = (cities.len() / n_targets.max(1)).max(1);
    let targets: Vec<(IpAddr, LatLon, String)> = cities
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
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1 + i as u8)),
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

    let dir = tempfile::tempdir()?;
    let key = dir.path().join("atlas.key");
    std::fs::write(&key, format!("{KEY}\n"))?;
    let listen = free_port()?;
    let _coord = Kill(
        Command::new(bin.join("geoloc-coordinator"))
            .args(["--listen", &listen.to_string()])
            .args([
                "--database",
                &format!("sqlite://{}", dir.path().join("c.sqlite").display()),
            ])
            .args([
                "--auth",
                "none",
                "--allow-private",
                "--landmark-checks",
                "false",
            ])
            .args(["--atlas-base-url", &s.url])
            .args(["--atlas-key-file", &key.display().to_string()])
            .args(["--atlas-max-credits", &max_credits.to_string()])
            .args(["--atlas-mesh-msm", "1000", "--atlas-wait-ms", "60000"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?,
    );
    let url = format!("http://{listen}");
    let t0 = Instant::now();
    while std::net::TcpStream::connect(listen).is_err() {
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(20),
            "the coordinator did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "{} anchors in the stand-in, `geoloc locate IP --source atlas --budget {budget}`, atlas-max-credits {max_credits}, results spread over {spread_s} s\n",
        probes.len()
    );
    println!("| target | probes asked | rounds | credits (coordinator) | credits (stand-in) | time to answer s | error km | radius km |");
    println!("|---|---|---|---|---|---|---|---|");
    let (mut times, mut errors, mut spent) = (Vec::new(), Vec::new(), 0u64);
    for (ip, truth, name) in &targets {
        let before = s.credits_charged();
        let t = Instant::now();
        let out = Command::new(bin.join("geoloc"))
            .args(["locate", &ip.to_string(), "--source", "atlas"])
            .args(["--budget", &budget.to_string(), "--json"])
            .args(["--coordinator", &url])
            .output()?;
        let took = t.elapsed().as_secs_f64();
        anyhow::ensure!(
            out.status.success(),
            "geoloc locate {ip}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let est = LatLon::new(
            v["solution"]["estimate"]["lat"]
                .as_f64()
                .unwrap_or(f64::NAN),
            v["solution"]["estimate"]["lon"]
                .as_f64()
                .unwrap_or(f64::NAN),
        );
        let err = distance_km(est, *truth);
        let credits = v["atlas_credits"].as_u64().unwrap_or(0);
        let rounds = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter_map(|l| l.split(" stage ").nth(1))
            .filter_map(|r| r.split_whitespace().next()?.parse::<u32>().ok())
            .max()
            .unwrap_or(0);
        println!(
            "| {name} +40 km | {} | {rounds} | {credits} | {:.0} | {took:.2} | {err:.0} | {:.0} |",
            v["probes_asked"],
            s.credits_charged() - before,
            v["solution"]["radius_km"].as_f64().unwrap_or(f64::NAN)
        );
        times.push(took);
        errors.push(err);
        spent += credits;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "\n{} locates: median time to answer {:.2} s, median error {:.0} km, credits spent {spent} ({:.0} per locate, at most {max_credits} allowed)",
        targets.len(),
        median(&mut times),
        median(&mut errors),
        spent as f64 / targets.len() as f64
    );
    s.stop().await;
    Ok(())
}
