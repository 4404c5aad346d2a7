//! Shared helpers for the privileged tests: root check, a three-namespace lab
//! (client — router — target) that is always deleted, and bounded process runs.
#![allow(dead_code)]

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// True when running as root with `ip` available. Otherwise reports why the test cannot
/// run through [`geoloc_testenv::skip`] (a SKIPPED line, or a failure under
/// `GEOLOC_REQUIRE_ENV=1`) and returns false.
pub fn root_or_skip(test: &str) -> bool {
    if !geoloc_testenv::is_root() {
        geoloc_testenv::skip(test, "needs root (raw sockets, network namespaces)");
        return false;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        geoloc_testenv::skip(test, "the `ip` command (iproute2) is not installed");
        return false;
    }
    true
}

/// Runs a command, killing it after `limit`. Panics with its output on spawn failure.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let start = Instant::now();
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let s = child.wait().expect("wait after kill");
            eprintln!("{cmd:?} killed after {limit:?}");
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

fn sh(args: &[&str]) {
    let out = run_bounded(
        Command::new(args[0]).args(&args[1..]),
        Duration::from_secs(10),
    );
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// client (10.231.1.2, fd31:1::2) — router (10.231.1.1 | 10.231.2.1) — target
/// (10.231.2.2, fd31:2::2). The target namespace forwards and blackholes 10.231.9.0/24
/// and fd31:9::/64, so those addresses are silent targets one hop behind it.
/// Everything is deleted on drop, also when the test fails.
pub struct Lab {
    pub client: String,
    pub router: String,
    pub target: String,
    created: Vec<String>,
}

pub const ROUTER_NEAR_V4: &str = "10.231.1.1";
pub const ROUTER_FAR_V4: &str = "10.231.2.1";
pub const TARGET_V4: &str = "10.231.2.2";
pub const SILENT_V4: &str = "10.231.9.9";
pub const ROUTER_NEAR_V6: &str = "fd31:1::1";
pub const ROUTER_FAR_V6: &str = "fd31:2::1";
pub const TARGET_V6: &str = "fd31:2::2";
pub const SILENT_V6: &str = "fd31:9::9";

impl Lab {
    pub fn new() -> Lab {
        let n = LAB_COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let base = format!("geoloc-pa-test-{pid}-{n}");
        let mut lab = Lab {
            client: format!("{base}-c"),
            router: format!("{base}-r"),
            target: format!("{base}-t"),
            created: Vec::new(),
        };
        for ns in [lab.client.clone(), lab.router.clone(), lab.target.clone()] {
            sh(&["ip", "netns", "add", &ns]);
            lab.created.push(ns.clone());
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            for (k, v) in [
                ("net.ipv4.icmp_ratelimit", "0"),
                ("net.ipv6.icmp.ratelimit", "0"),
                // No duplicate address detection (also for the link-local addresses the
                // veths get): a tentative address delays neighbour discovery by ~1 s.
                ("net.ipv6.conf.all.accept_dad", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
            ] {
                sh(&[
                    "ip",
                    "netns",
                    "exec",
                    &ns,
                    "sysctl",
                    "-qw",
                    &format!("{k}={v}"),
                ]);
            }
        }
        // Interface names are at most 15 characters: keep them short and unique.
        let tag = format!("{}{}", pid % 100_000, n);
        let (c0, r0, r1, t0) = (
            format!("pc{tag}"),
            format!("pr{tag}"),
            format!("ps{tag}"),
            format!("pt{tag}"),
        );
        sh(&[
            "ip",
            "link",
            "add",
            &c0,
            "netns",
            &lab.client,
            "type",
            "veth",
            "peer",
            "name",
            &r0,
            "netns",
            &lab.router,
        ]);
        sh(&[
            "ip",
            "link",
            "add",
            &r1,
            "netns",
            &lab.router,
            "type",
            "veth",
            "peer",
            "name",
            &t0,
            "netns",
            &lab.target,
        ]);
        let addr = |ns: &str, dev: &str, v4: &str, v6: &str| {
            sh(&["ip", "-n", ns, "addr", "add", v4, "dev", dev]);
            sh(&["ip", "-n", ns, "-6", "addr", "add", v6, "dev", dev, "nodad"]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        };
        addr(&lab.client, &c0, "10.231.1.2/24", "fd31:1::2/64");
        addr(&lab.router, &r0, "10.231.1.1/24", "fd31:1::1/64");
        addr(&lab.router, &r1, "10.231.2.1/24", "fd31:2::1/64");
        addr(&lab.target, &t0, "10.231.2.2/24", "fd31:2::2/64");
        sh(&[
            "ip",
            "-n",
            &lab.client,
            "route",
            "add",
            "default",
            "via",
            ROUTER_NEAR_V4,
        ]);
        sh(&[
            "ip",
            "-n",
            &lab.client,
            "-6",
            "route",
            "add",
            "default",
            "via",
            ROUTER_NEAR_V6,
        ]);
        sh(&[
            "ip",
            "-n",
            &lab.target,
            "route",
            "add",
            "default",
            "via",
            ROUTER_FAR_V4,
        ]);
        sh(&[
            "ip",
            "-n",
            &lab.target,
            "-6",
            "route",
            "add",
            "default",
            "via",
            ROUTER_FAR_V6,
        ]);
        for ns in [&lab.router, &lab.target] {
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ]);
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.forwarding=1",
            ]);
        }
        // Silent targets: routed by the router to the target namespace, dropped there.
        sh(&[
            "ip",
            "-n",
            &lab.router,
            "route",
            "add",
            "10.231.9.0/24",
            "via",
            TARGET_V4,
        ]);
        sh(&[
            "ip",
            "-n",
            &lab.router,
            "-6",
            "route",
            "add",
            "fd31:9::/64",
            "via",
            TARGET_V6,
        ]);
        sh(&[
            "ip",
            "-n",
            &lab.target,
            "route",
            "add",
            "blackhole",
            "10.231.9.0/24",
        ]);
        sh(&[
            "ip",
            "-n",
            &lab.target,
            "-6",
            "route",
            "add",
            "blackhole",
            "fd31:9::/64",
        ]);
        // The first IPv6 packets after setup wait about 1 s for neighbour discovery on
        // these fresh veths; warm the neighbour caches so measured RTTs are the path's.
        let _ = lab.agent_in(
            &lab.client,
            &[
                "measure",
                "--allow-private",
                "--ping",
                "--target",
                TARGET_V6,
                "--ping-count",
                "2",
                "--ping-interval-ms",
                "1100",
                "--ping-timeout-ms",
                "1500",
            ],
            Duration::from_secs(10),
        );
        lab
    }

    /// Runs the agent binary inside `ns` with `args`, bounded in time.
    pub fn agent_in(&self, ns: &str, args: &[&str], limit: Duration) -> Output {
        run_bounded(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    ns,
                    env!("CARGO_BIN_EXE_geoloc-probe-agent"),
                ])
                .args(args)
                .env("RUST_LOG", "warn"),
            limit,
        )
    }

    /// `measure` from the client namespace; returns the parsed JSON.
    pub fn measure(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["measure", "--allow-private"];
        full.extend_from_slice(args);
        let out = self.agent_in(&self.client, &full, Duration::from_secs(60));
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "measure {args:?}: bad JSON ({e}): stdout {stdout:?} stderr {:?}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Runs `f` on a thread that has entered namespace `ns`: sockets created there live
    /// in that namespace for good.
    pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        })
        .join()
        .expect("netns thread")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in &self.created {
            // Deleting a namespace also deletes the veth ends inside it.
            let _ = run_bounded(
                Command::new("ip").args(["netns", "del", ns]),
                Duration::from_secs(10),
            );
        }
    }
}
