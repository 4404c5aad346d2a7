//! `geoloc web`, and `geoloc web --lab`: the lab's demo world (coordinator, probe agents,
//! targets in network namespaces; root) with the web interface in front of it, so a new
//! user goes from nothing to a live locate in the browser with one command. The web server
//! runs inside the coordinator's namespace; a small TCP relay (hand-written, std only) joins
//! the loopback `--listen` address of this machine to it.
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use geoloc_lab::demo::{DemoArgs, DemoWorld, COORDINATOR_HOST, COORDINATOR_PORT};

/// The web server's port inside the coordinator's namespace.
const INNER_PORT: u16 = 18080;

/// `geoloc web`
#[derive(Debug, Args)]
pub struct WebCmd {
    #[command(flatten)]
    pub web: geoloc_web::WebArgs,
    /// Bring up the lab's demo world (root) and serve its coordinator until Ctrl-C.
    #[arg(long)]
    pub lab: bool,
    /// Probes of the lab world (with --lab).
    #[arg(long, default_value_t = 30, value_name = "N")]
    pub lab_probes: usize,
    /// Targets of the lab world (with --lab).
    #[arg(long, default_value_t = 6, value_name = "N")]
    pub lab_targets: usize,
    /// Seed of the lab world (with --lab).
    #[arg(long, default_value_t = 1, value_name = "SEED")]
    pub lab_seed: u64,
}

pub fn run(c: WebCmd) -> anyhow::Result<()> {
    if !c.lab {
        return geoloc_web::run(c.web);
    }
    geoloc_web::check_listen(c.web.listen)?;
    let listener = TcpListener::bind(c.web.listen)
        .with_context(|| format!("cannot listen on {}", c.web.listen))?;
    // Ctrl-C / SIGTERM: the lab's processes and namespaces go away with us.
    geoloc_lab::signals::cleanup_on_signal()?;
    let args = DemoArgs {
        probes: c.lab_probes,
        targets: c.lab_targets,
        seed: c.lab_seed,
        timeout_secs: 24 * 3600,
        ..DemoArgs::default()
    };
    eprintln!(
        "bringing up the lab: {} probes, {} targets ...",
        args.probes, args.targets
    );
    let w = DemoWorld::up(&args)?;
    let mut cmd_args = vec![
        "web".to_string(),
        "--listen".into(),
        format!("127.0.0.1:{INNER_PORT}"),
        "--coordinator".into(),
        format!("http://127.0.0.1:{COORDINATOR_PORT}"),
    ];
    if let Some(u) = &c.web.tile_url {
        cmd_args.extend(["--tile-url".to_string(), u.clone()]);
    }
    let mut cmd = w.lab.command(COORDINATOR_HOST, &w.geoloc, &cmd_args)?;
    cmd.env("GEOLOC_API_KEY", &w.api_key);
    w.lab.spawn("web", cmd)?;
    let ns = w.lab.host(COORDINATOR_HOST)?.ns.clone();
    println!("lab targets to locate:");
    for t in &w.plans {
        if let Ok(ip) = w.target_ip(t) {
            let city = t.cities.first().map_or(String::new(), |c| c.name.clone());
            println!("  {ip:<24} {:?} in {city}", t.kind);
        }
    }
    println!(
        "web interface: http://{}/  (Ctrl-C to stop and take the lab down)",
        c.web.listen
    );
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let ns = ns.clone();
        std::thread::spawn(move || {
            if let Err(e) = relay(conn, &ns) {
                eprintln!("geoloc web: relay: {e:#}");
            }
        });
    }
    w.down()?;
    Ok(())
}

/// Connects to the web server inside namespace `ns` (from this thread, which enters it:
/// the socket keeps the namespace) and copies bytes both ways until either side closes.
fn relay(down: TcpStream, ns: &str) -> anyhow::Result<()> {
    let f = std::fs::File::open(format!("/var/run/netns/{ns}"))?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)?;
    let inner: SocketAddr = ([127, 0, 0, 1], INNER_PORT).into();
    let mut up = None;
    for _ in 0..50 {
        match TcpStream::connect_timeout(&inner, Duration::from_secs(2)) {
            Ok(s) => {
                up = Some(s);
                break;
            }
            // The web server may still be starting.
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let up = up.context("the web server in the lab does not answer")?;
    let (mut d2, mut u2) = (down.try_clone()?, up.try_clone()?);
    let t = std::thread::spawn(move || copy(&mut d2, &mut u2));
    let (mut d, mut u) = (down, up);
    copy(&mut u, &mut d);
    let _ = t.join();
    Ok(())
}

fn copy(from: &mut TcpStream, to: &mut TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
