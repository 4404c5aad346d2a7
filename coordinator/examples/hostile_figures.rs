//! Figures for issue 14 (attacks over loopback), measured on an in-process coordinator with
//! the default limits:
//! - `batch`: CPU seconds to accept, validate and answer a 100k-address LocateBatch with
//!   no probe connected (every address ends `no-probes`: no measuring, only the batch's
//!   own cost);
//! - `idle`: 1,100 TCP connections that never speak; how many the coordinator still holds
//!   after the handshake timeout, and whether an honest call gets through meanwhile;
//! - `register`: 22,000 registrations with new ids and declared addresses; how many were
//!   accepted and the resident memory before and after.
//!
//! `cargo run --release -p geoloc-coordinator --example hostile_figures -- batch|idle|register`
use std::sync::Arc;
use std::time::{Duration, Instant};

use geoloc_coordinator::config::{Args, Config, FileConfig};
use geoloc_coordinator::{server, Coordinator};
use geoloc_proto::v1 as pb;

/// Process CPU time (user + system), seconds, from /proc/self/stat (clock ticks of 10 ms).
fn cpu_s() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of the file; 12 and 13 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Resident memory, MB.
fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

async fn start(dir: &tempfile::TempDir) -> (Arc<Coordinator>, std::net::SocketAddr) {
    let mut config = Config::merge(Args::default(), FileConfig::default()).unwrap();
    config.database = format!("sqlite://{}", dir.path().join("g.sqlite").display());
    config.allow_private = true;
    config.probe_token = Some("t".into());
    config.landmark_checks = true;
    // Loopback only: the figures are about probes and connections, not client keys.
    config.auth = geoloc_coordinator::Auth::None;
    let coord = Coordinator::new(config).await.unwrap();
    let (listener, addr) = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let c = Arc::clone(&coord);
    tokio::spawn(async move {
        server::serve(c, listener, std::future::pending())
            .await
            .unwrap();
    });
    (coord, addr)
}

async fn batch(addr: std::net::SocketAddr) {
    let mut c = geoloc_client::connect(&format!("http://{addr}"))
        .await
        .unwrap();
    let n = 100_000usize;
    let ips: Vec<String> = (0..n)
        .map(|i| format!("127.{}.{}.{}", 1 + i / 65536, (i / 256) % 256, i % 256))
        .collect();
    let (t, c0) = (Instant::now(), cpu_s());
    let mut s = c
        .locate_batch(pb::LocateBatchRequest {
            ips,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut answered = 0;
    while let Some(ev) = s.message().await.unwrap() {
        if matches!(ev.event, Some(pb::locate_event::Event::Error(_))) {
            answered += 1;
        }
    }
    println!(
        "batch: {answered} of {n} addresses answered; {:.2} CPU-s (client and server), {:.2} s wall",
        cpu_s() - c0,
        t.elapsed().as_secs_f64()
    );
}

async fn idle(addr: std::net::SocketAddr) {
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..1_100 {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => held.push(s),
            Err(_) => refused += 1,
        }
    }
    let t = Instant::now();
    let mut c = geoloc_client::connect(&format!("http://{addr}"))
        .await
        .unwrap();
    let ok = c.list_probes(pb::ListProbesRequest {}).await.is_ok();
    println!(
        "idle: 1100 idle connections opened ({refused} refused); honest call {} in {:.2} s",
        if ok { "answered" } else { "failed" },
        t.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(12)).await;
    let mut open = 0;
    for s in &held {
        let mut b = [0u8; 1];
        match s.try_read(&mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => open += 1,
            _ => {}
        }
    }
    println!("idle: after 12 s the coordinator still holds {open} of them");
}

async fn register(coord: &Coordinator, addr: std::net::SocketAddr) {
    let mut pc = pb::probe_service_client::ProbeServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let before = rss_mb();
    let t = Instant::now();
    let (mut ok, mut refused) = (0, 0);
    for i in 0..22_000u32 {
        let r = pc
            .register(pb::RegisterRequest {
                probe_id: format!("sybil-{i}"),
                lat: 10.0,
                lon: 10.0,
                credential: "t".into(),
                agent_version: "x".into(),
                allow_private: true,
                ipv4: format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
                ipv6: String::new(),
            })
            .await;
        if r.is_ok() {
            ok += 1
        } else {
            refused += 1
        }
    }
    println!(
        "register: 22000 attempts in {:.1} s: {ok} accepted, {refused} refused; {} probes known; RSS {before:.0} -> {:.0} MB",
        t.elapsed().as_secs_f64(),
        coord.fleet.registry.len(),
        rss_mb()
    );
}

#[tokio::main]
async fn main() {
    let what = std::env::args().nth(1).unwrap_or_default();
    let dir = tempfile::tempdir().unwrap();
    let (coord, addr) = start(&dir).await;
    match what.as_str() {
        "batch" => batch(addr).await,
        "idle" => idle(addr).await,
        "register" => register(&coord, addr).await,
        _ => eprintln!("usage: hostile_figures batch|idle|register"),
    }
}
