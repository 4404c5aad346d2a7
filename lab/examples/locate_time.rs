//! Figures: the time to locate one IP through the whole system, against its physical floor
//! (the largest RTT among the probes used times the pings sent in sequence).
//!
//! ```text
//! cargo build --release --workspace --bins --examples && \
//! ./target/release/examples/locate_time [PROBES] [TARGETS] [MODE] [SETTLE_S]
//! ```
//! (root; defaults 20 probes, 5 targets, mode `all`, no settling: the first locate starts as
//! soon as every probe is healthy, while the coordinator's landmark checks still run). The
//! coordinator's defaults are 3 pings per probe, 50 ms apart; the agents await the replies
//! concurrently. Columns: `floor` = largest probe-target RTT x 3 (the issue's floor);
//! `control` = what this architecture cannot beat (max over probes of the coordinator-probe
//! RTT + the paced pings + the probe-target RTT). Debugging: `GEOLOC_COORDINATOR_*` and
//! `RUST_LOG` are passed to the lab's coordinator; `LOCATE_TIME_KEEP_LOG=FILE` and
//! `LOCATE_TIME_KEEP_DB=FILE` keep its log (and the agents' logs) and its SQLite database.
//! Exits 1 when a target fails or is not located within 1.2 x floor + 50 ms.
use geoloc_lab::demo::{DemoArgs, DemoWorld, TargetKind, COORDINATOR_HOST};

/// `geoloc-coordinator` defaults (coordinator/src/config.rs).
const PING_COUNT: f64 = 3.0;
const PING_INTERVAL_MS: f64 = 50.0;

fn main() -> anyhow::Result<()> {
    let arg = |i: usize| std::env::args().nth(i);
    let probes: usize = arg(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let targets: usize = arg(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let mode = arg(3).unwrap_or_else(|| "all".into());
    let settle_secs: u64 = arg(4).and_then(|s| s.parse().ok()).unwrap_or(0);
    geoloc_lab::netns::check_privileges()?;
    // GEOLOC_COORDINATOR_* variables and RUST_LOG of this process are passed to the lab's
    // coordinator; LOCATE_TIME_KEEP_LOG=FILE keeps its log.
    let coordinator_env = std::env::vars()
        .filter(|(k, _)| k.starts_with("GEOLOC_COORDINATOR_") || k == "RUST_LOG")
        .collect();
    let a = DemoArgs {
        probes,
        targets: targets + 4,
        seed: 11,
        jitter_ms: 0.05,
        settle_secs,
        coordinator_env,
        ..DemoArgs::default()
    };
    let w = DemoWorld::up(&a)?;
    let topo = w.lab.topology();
    let coord = topo.index(COORDINATOR_HOST).expect("coordinator");
    println!(
        "{probes} probes, mode {mode}; floor = max RTT x {PING_COUNT} pings; paced = {} ms x {} + max RTT; control = max over probes of coordinator-probe RTT + paced pings + probe-target RTT",
        PING_INTERVAL_MS,
        PING_COUNT - 1.0
    );
    println!(
        "{:<4} {:>10} {:>10} {:>9} {:>10} {:>10} {:>7} {:>12}",
        "tgt", "locate ms", "max RTT", "floor", "paced", "control", "ratio", "target<="
    );
    let mut ratios = Vec::new();
    let mut attempted = 0usize;
    for t in w
        .plans
        .iter()
        .filter(|p| p.kind == TargetKind::Normal)
        .take(targets)
    {
        let ti = topo.index(&t.name).expect("target");
        let max_rtt = w
            .probes
            .iter()
            .map(|p| 2.0 * topo.one_way_ms(topo.index(p).unwrap(), ti))
            .fold(0.0, f64::max);
        // What this architecture cannot beat: per probe, the request's trip from the
        // coordinator, the paced pings, the reply, the result's trip back.
        let control = w
            .probes
            .iter()
            .map(|p| {
                let pi = topo.index(p).unwrap();
                2.0 * topo.one_way_ms(pi, coord)
                    + PING_INTERVAL_MS * (PING_COUNT - 1.0)
                    + 2.0 * topo.one_way_ms(pi, ti)
            })
            .fold(0.0, f64::max);
        attempted += 1;
        let r = w.locate_with(t, &["--mode", &mode])?;
        if let Some(e) = &r.error {
            println!("{}: failed: {e}", t.name);
            continue;
        }
        let floor = max_rtt * PING_COUNT;
        let paced = PING_INTERVAL_MS * (PING_COUNT - 1.0) + max_rtt;
        println!(
            "{:<4} {:>10.0} {:>10.1} {:>9.0} {:>10.0} {:>10.0} {:>7.2} {:>12.0}",
            t.name,
            r.locate_ms,
            max_rtt,
            floor,
            paced,
            control,
            r.locate_ms / floor,
            1.2 * floor + 50.0
        );
        ratios.push((r.locate_ms, floor));
    }
    let within = ratios.iter().filter(|(t, f)| *t <= 1.2 * f + 50.0).count();
    println!(
        "\n{within} of {} located within 1.2 x floor + 50 ms",
        ratios.len()
    );
    eprintln!("emulator: {:?}", w.lab.stats());
    // Packets the kernel dropped on the hosts' TUN interfaces (emulator not reading fast
    // enough): `ip -s link` TX drops in each namespace.
    let mut tun_drops = 0u64;
    for h in w.lab.hosts() {
        if let Ok(o) = std::process::Command::new("ip")
            .args(["-n", &h.ns, "-s", "-o", "link"])
            .output()
        {
            let text = String::from_utf8_lossy(&o.stdout).to_string();
            for line in text.lines().filter(|l| !l.contains(" lo:")) {
                // "... TX: bytes packets errors dropped carrier collsns \    N N N N ..."
                if let Some(tx) = line.split("TX:").nth(1) {
                    let nums: Vec<u64> = tx
                        .split_whitespace()
                        .filter_map(|t| t.parse().ok())
                        .collect();
                    tun_drops += nums.get(3).copied().unwrap_or(0);
                }
            }
        }
    }
    eprintln!("TUN TX drops over all hosts: {tun_drops}");
    if let Ok(to) = std::env::var("LOCATE_TIME_KEEP_DB") {
        for ext in ["", "-wal", "-shm"] {
            let from = w.tmp.path().join(format!("geoloc.sqlite{ext}"));
            if from.exists() {
                std::fs::copy(from, format!("{to}{ext}"))?;
            }
        }
    }
    if let Ok(to) = std::env::var("LOCATE_TIME_KEEP_LOG") {
        std::fs::copy(w.tmp.path().join("coordinator.log"), &to)?;
        let mut agents = String::new();
        for p in &w.probes {
            let log =
                std::fs::read_to_string(w.tmp.path().join(format!("{p}.log"))).unwrap_or_default();
            for l in log.lines() {
                agents.push_str(&format!("{p}: {l}\n"));
            }
        }
        std::fs::write(format!("{to}.agents"), agents)?;
    }
    w.down()?;
    // A missed bound (or a failed locate) is a failure: exit status 1, not a figure to
    // read past.
    anyhow::ensure!(
        within == attempted,
        "{} of {attempted} targets not located within 1.2 x floor + 50 ms",
        attempted - within
    );
    Ok(())
}
