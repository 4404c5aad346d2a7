//! Figures for the emulator: how close `ping` RTTs come to the configured delays, and the
//! CPU the emulator uses at a given packet rate.
//!
//! ```text
//! cargo run --release -p geoloc-lab --example rtt_accuracy -- [HOSTS] [PAIRS] [PINGS] [INTERVAL_S]
//! ```
//! (root; defaults 12 hosts, 24 pairs, 50 pings each, 0.02 s between pings, 4 pairs at once.)
use std::time::{Duration, Instant};

use geoloc_lab::geo::{builtin_cities, DelayModel};
use geoloc_lab::world::{spread, Placement, World};
use geoloc_lab::{Behaviour, Lab};
use nix::sys::resource::{getrusage, UsageWho};

fn cpu_s() -> f64 {
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(u.user_time()) + t(u.system_time())
}

fn main() -> anyhow::Result<()> {
    let arg = |i: usize, d: f64| {
        std::env::args()
            .nth(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let (hosts, pairs, pings, interval) = (
        arg(1, 12.0) as usize,
        arg(2, 24.0) as usize,
        arg(3, 50.0) as usize,
        arg(4, 0.02),
    );
    geoloc_lab::netns::check_privileges()?;
    let cities = spread(&builtin_cities(), hosts, 1)?;
    let placements = cities
        .into_iter()
        .enumerate()
        .map(|(i, city)| Placement {
            name: format!("h{i}"),
            city,
            behaviour: Behaviour::Normal,
            anycast_group: None,
        })
        .collect();
    let world = World::build(placements, &DelayModel::default(), 1, 0.0)?;
    let lab = Lab::up(world.topology.clone(), 1)?;
    let n = lab.hosts().len();
    let chosen: Vec<(usize, usize)> = (0..n)
        .flat_map(|a| ((a + 1)..n).map(move |b| (a, b)))
        .step_by(3)
        .take(pairs)
        .collect();
    let (cpu0, wall0, rx0) = (cpu_s(), Instant::now(), lab.stats().received);
    let mut errors = Vec::new();
    for batch in chosen.chunks(4) {
        let children: Vec<_> = batch
            .iter()
            .map(|&(a, b)| {
                let cmd = lab.command(
                    &lab.hosts()[a].name,
                    "ping",
                    [
                        "-n",
                        "-c",
                        &pings.to_string(),
                        "-i",
                        &interval.to_string(),
                        "-W",
                        "2",
                        &lab.hosts()[b].v4.to_string(),
                    ],
                );
                let mut cmd = cmd.expect("host");
                cmd.stdout(std::process::Stdio::piped());
                (a, b, cmd.spawn().expect("ping"))
            })
            .collect();
        for (a, b, child) in children {
            let out = child.wait_with_output()?;
            // iputils prints per-reply times with 3 significant digits (whole ms above
            // 100 ms); the summary line `rtt min/avg/max/mdev = ...` has microseconds.
            let text = String::from_utf8_lossy(&out.stdout);
            let summary: Vec<f64> = text
                .lines()
                .find(|l| l.contains("min/avg/max"))
                .and_then(|l| l.split('=').nth(1))
                .map(|v| {
                    v.split(" ms")
                        .next()
                        .unwrap_or("")
                        .trim()
                        .split('/')
                        .filter_map(|x| x.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            let replies = text.lines().filter(|l| l.contains("time=")).count();
            let want = 2.0 * lab.topology().one_way_ms(a, b);
            if let [min, avg, _max, mdev] = summary[..] {
                println!(
                    "{a:>3} -> {b:<3} configured {want:8.3} ms  min {min:8.3}  avg {avg:8.3} (mdev {mdev:.3})  error of avg {:+.3} ms  ({replies} replies)",
                    avg - want
                );
                errors.push(avg - want);
            } else {
                println!("{a:>3} -> {b:<3} no replies: {text}");
            }
        }
    }
    let wall = wall0.elapsed().as_secs_f64();
    let cpu = cpu_s() - cpu0;
    let s = lab.stats();
    let pps = (s.received - rx0) as f64 / wall;
    errors.sort_by(|a, b| a.abs().total_cmp(&b.abs()));
    anyhow::ensure!(!errors.is_empty(), "no pair answered");
    let q = |p: f64| errors[((errors.len() - 1) as f64 * p) as usize].abs();
    println!(
        "\n{} pairs: |mean RTT - configured| median {:.3} ms, p90 {:.3} ms, max {:.3} ms",
        errors.len(),
        q(0.5),
        q(0.9),
        q(1.0)
    );
    println!(
        "emulator: {pps:.0} packets/s for {wall:.1} s, CPU {:.1}% of one core; delivery lateness mean {} µs, max {} µs",
        100.0 * cpu / wall,
        s.mean_lateness_us,
        s.max_lateness_us
    );
    lab.down()?;
    std::thread::sleep(Duration::from_millis(10));
    Ok(())
}
