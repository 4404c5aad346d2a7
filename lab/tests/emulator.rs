//! Real packets through the emulator: `ping`, `traceroute`, `tracepath` inside namespaces.
//!
//! Needs root, /dev/net/tun and iputils `ping` / `tracepath` plus `traceroute`; when one is
//! missing each test prints why it skips, or fails under `GEOLOC_REQUIRE_ENV=1` (CI).
use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use geoloc_lab::topology::{host_v4, host_v6};
use geoloc_lab::{Behaviour, HostSpec, Lab, Topology};

fn skip_reason(tools: &[&str]) -> Option<String> {
    if let Err(e) = geoloc_lab::netns::check_privileges() {
        return Some(e.to_string());
    }
    for t in tools {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()))
            .unwrap_or(false);
        if !found {
            return Some(format!("`{t}` is not installed (apt-get install iputils-ping iputils-tracepath traceroute)"));
        }
    }
    None
}

/// One lab at a time: namespace creation and teardown in a parallel test would compete
/// with the emulator for the 2 CPUs and the kernel's network locks.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Returns from test `$test` when root, `/dev/net/tun` or a tool is missing (a SKIPPED
/// line, or a failure under `GEOLOC_REQUIRE_ENV=1`); then takes the one-lab-at-a-time lock.
macro_rules! require {
    ($test:expr $(, $tool:expr)*) => {
        if let Some(why) = skip_reason(&[$($tool),*]) {
            geoloc_testenv::skip($test, &why);
            return;
        }
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    };
}

fn host(i: usize, name: &str, behaviour: Behaviour) -> HostSpec {
    HostSpec {
        name: name.into(),
        v4: host_v4(i),
        v6: host_v6(i),
        behaviour,
        access_ms: 0.5,
    }
}

/// a, b, c with one-way delays a-b 10 ms, a-c 25 ms, b-c 5 ms, plus extra hosts.
fn triangle(extra: Vec<(HostSpec, [f64; 3])>) -> Topology {
    let mut hosts = vec![
        host(0, "a", Behaviour::Normal),
        host(1, "b", Behaviour::Normal),
        host(2, "c", Behaviour::Normal),
    ];
    let base = [[0.0, 10.0, 25.0], [10.0, 0.0, 5.0], [25.0, 5.0, 0.0]];
    let n = 3 + extra.len();
    let mut d = vec![0.0; n * n];
    for i in 0..3 {
        for j in 0..3 {
            d[i * n + j] = base[i][j];
        }
    }
    for (k, (h, to_abc)) in extra.into_iter().enumerate() {
        hosts.push(h);
        for j in 0..3 {
            d[(3 + k) * n + j] = to_abc[j];
            d[j * n + 3 + k] = to_abc[j];
        }
        for other in 0..k {
            d[(3 + k) * n + 3 + other] = 30.0;
            d[(3 + other) * n + 3 + k] = 30.0;
        }
    }
    Topology::new(hosts, d, 0.0).unwrap()
}

/// Runs a command with a hard timeout; returns (success, stdout).
fn run(mut cmd: Command, timeout: Duration) -> (bool, String) {
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (
                status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            );
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            return (false, String::from_utf8_lossy(&out.stdout).into_owned());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// RTTs (ms) printed by iputils ping.
fn ping(lab: &Lab, from: &str, to: IpAddr, count: usize) -> Vec<f64> {
    let cmd = lab
        .command(
            from,
            "ping",
            [
                "-n",
                "-c",
                &count.to_string(),
                "-i",
                "0.05",
                "-W",
                "1",
                &to.to_string(),
            ],
        )
        .unwrap();
    let (_, out) = run(cmd, Duration::from_secs(20));
    out.lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Whether a median RTT `m` matches the configured `want`, both ms. The emulator forwards
/// in user space: its own work (and the scheduler of a loaded 2-core machine) adds to the
/// configured delay, never takes from it. Medians seen: +0.2 to +0.5 ms; up to 1 ms of
/// excess still tells a delay applied once per direction from a missing or doubled one.
fn near(m: f64, want: f64) -> bool {
    m > want - 0.2 && m < want + 1.0
}

fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty(), "no RTT measured");
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn ping_rtts_match_configured_delays_v4_and_v6() {
    require!("ping_rtts_match_configured_delays_v4_and_v6", "ping");
    let lab = Lab::up(triangle(vec![]), 1).unwrap();
    for (from, to, want) in [
        ("a", "b", 20.0),
        ("a", "c", 50.0),
        ("b", "c", 10.0),
        ("c", "a", 50.0),
    ] {
        let h = lab.host(to).unwrap().clone();
        for addr in [IpAddr::V4(h.v4), IpAddr::V6(h.v6)] {
            let rtts = ping(&lab, from, addr, 20);
            assert!(
                rtts.len() >= 18,
                "{from} -> {addr}: {} replies of 20",
                rtts.len()
            );
            let m = median(rtts);
            eprintln!(
                "{from} -> {to} ({addr}): median {m:.3} ms, configured {want} ms; {:?}",
                lab.stats()
            );
            assert!(
                near(m, want),
                "{from} -> {addr}: median {m} ms, configured {want} ms"
            );
        }
    }
    let s = lab.stats();
    assert!(s.delivered > 0 && s.dropped_malformed == 0, "{s:?}");
    lab.down().unwrap();
}

#[test]
fn traceroute_sees_the_virtual_routers() {
    require!(
        "traceroute_sees_the_virtual_routers",
        "traceroute",
        "tracepath"
    );
    let lab = Lab::up(triangle(vec![]), 2).unwrap();
    let c = lab.host("c").unwrap().clone();
    let path = lab.topology().path(0, 2);
    for v6 in [false, true] {
        let target = if v6 {
            IpAddr::V6(c.v6)
        } else {
            IpAddr::V4(c.v4)
        };
        let mut args = vec!["-n", "-q", "1", "-w", "1", "-m", "8"];
        if v6 {
            args.insert(0, "-6");
        }
        let t = target.to_string();
        args.push(&t);
        let (ok, out) = run(
            lab.command("a", "traceroute", &args).unwrap(),
            Duration::from_secs(30),
        );
        eprintln!("{out}");
        assert!(ok, "traceroute failed:\n{out}");
        let lines: Vec<&str> = out.lines().skip(1).collect();
        assert_eq!(lines.len(), 5, "4 routers then the target:\n{out}");
        for (k, hop) in path.hops.iter().enumerate() {
            let addr = hop.addr(v6).to_string();
            assert!(
                lines[k].contains(&format!(" {addr} ")),
                "hop {} should be {addr}: {}",
                k + 1,
                lines[k]
            );
            let rtt: f64 = lines[k].split_whitespace().nth(2).unwrap().parse().unwrap();
            // One probe per hop: never early, and late by at most a scheduling hiccup
            // (the accuracy itself is checked on ping medians).
            let want = 2.0 * hop.one_way_ms;
            assert!(
                rtt > want - 0.3 && rtt < want + 5.0,
                "hop {} rtt {rtt} vs {want}",
                k + 1
            );
        }
        assert!(lines[4].contains(&format!(" {t} ")), "{}", lines[4]);
        // tracepath (UDP, unprivileged style) reaches the target too.
        let mut tp = vec!["-n", "-m", "8"];
        if v6 {
            tp.insert(0, "-6");
        }
        tp.push(&t);
        let (_, out) = run(
            lab.command("a", "tracepath", &tp).unwrap(),
            Duration::from_secs(30),
        );
        eprintln!("{out}");
        assert!(
            out.contains(&path.hops[0].addr(v6).to_string()),
            "tracepath misses the first router:\n{out}"
        );
        assert!(
            out.contains("reached"),
            "tracepath did not reach the target:\n{out}"
        );
    }
}

#[test]
fn behaviours_drop_icmp_drop_tcp_silent_and_anycast() {
    require!(
        "behaviours_drop_icmp_drop_tcp_silent_and_anycast",
        "ping",
        "traceroute"
    );
    // d: drops ICMP, e: silent, f and g: one anycast address (f near b, g near a).
    let mut f = host(5, "f", Behaviour::Normal);
    let mut g = host(6, "g", Behaviour::Normal);
    g.v4 = host_v4(5);
    g.v6 = host_v6(5);
    f.access_ms = 0.5;
    let lab = Lab::up(
        triangle(vec![
            (host(3, "d", Behaviour::DropIcmp), [8.0, 8.0, 8.0]),
            (host(4, "e", Behaviour::Silent), [12.0, 12.0, 12.0]),
            (f, [40.0, 2.0, 40.0]),
            (g, [3.0, 40.0, 40.0]),
        ]),
        3,
    )
    .unwrap();
    let d = lab.host("d").unwrap().clone();
    assert!(
        ping(&lab, "a", IpAddr::V4(d.v4), 3).is_empty(),
        "drop-icmp target answered ping"
    );
    assert!(
        ping(&lab, "a", IpAddr::V6(d.v6), 3).is_empty(),
        "drop-icmp target answered ping6"
    );
    // TCP still reaches it: a SYN to a closed port comes back as a RST ("-T" traceroute).
    let t = d.v4.to_string();
    let (_, out) = run(
        lab.command(
            "a",
            "traceroute",
            ["-n", "-T", "-p", "80", "-q", "1", "-w", "1", "-m", "8", &t],
        )
        .unwrap(),
        Duration::from_secs(30),
    );
    assert!(
        out.lines().last().unwrap_or("").contains(&format!(" {t} ")),
        "TCP traceroute did not reach the drop-icmp target:\n{out}"
    );

    let e = lab.host("e").unwrap().clone();
    assert!(
        ping(&lab, "a", IpAddr::V4(e.v4), 3).is_empty(),
        "silent target answered"
    );
    let te = e.v4.to_string();
    let (_, out) = run(
        lab.command(
            "a",
            "traceroute",
            ["-n", "-q", "1", "-w", "1", "-m", "6", &te],
        )
        .unwrap(),
        Duration::from_secs(30),
    );
    let last_router = lab.topology().path(0, 4).hops[3];
    assert!(
        out.contains(&format!(" {} ", last_router.v4)),
        "silent target's last router missing:\n{out}"
    );
    assert!(
        !out.lines().skip(1).any(|l| l.contains(&format!(" {te} "))),
        "silent target answered traceroute:\n{out}"
    );

    // Anycast: b reaches instance f (2 ms away), a reaches instance g (3 ms away).
    let any = IpAddr::V4(host_v4(5));
    let from_b = median(ping(&lab, "b", any, 10));
    let from_a = median(ping(&lab, "a", any, 10));
    assert!(
        near(from_b, 4.0),
        "b -> anycast: {from_b} ms, nearest instance is 4 ms RTT away"
    );
    assert!(
        near(from_a, 6.0),
        "a -> anycast: {from_a} ms, nearest instance is 6 ms RTT away"
    );

    // Cutting a host off makes it unreachable; reconnecting restores it.
    lab.set_cut("b", true).unwrap();
    assert!(ping(&lab, "a", IpAddr::V4(host_v4(1)), 2).is_empty());
    lab.set_cut("b", false).unwrap();
    assert_eq!(ping(&lab, "a", IpAddr::V4(host_v4(1)), 2).len(), 2);
}

#[test]
fn namespaces_are_removed_on_down_and_drop() {
    require!("namespaces_are_removed_on_down_and_drop");
    let lab = Lab::up(triangle(vec![]), 4).unwrap();
    let names: Vec<String> = lab.hosts().iter().map(|h| h.ns.clone()).collect();
    let listed = geoloc_lab::netns::list_lab_namespaces().unwrap();
    assert!(names.iter().all(|n| listed.contains(n)));
    drop(lab);
    let listed = geoloc_lab::netns::list_lab_namespaces().unwrap();
    assert!(
        names.iter().all(|n| !listed.contains(n)),
        "left behind: {listed:?}"
    );
}

#[test]
fn cleanup_removes_namespaces_of_dead_processes_only() {
    require!("cleanup_removes_namespaces_of_dead_processes_only");
    // A pid that cannot be running (above the kernel's pid_max limit of 2^22).
    let stale = format!("{}9999999-0-0", geoloc_lab::netns::NS_PREFIX);
    geoloc_lab::netns::create(&stale).unwrap();
    let live = Lab::up(triangle(vec![]), 5).unwrap();
    let report = geoloc_lab::netns::cleanup_stale(false, false).unwrap();
    assert!(report.removed.contains(&stale), "{report:?}");
    let listed = geoloc_lab::netns::list_lab_namespaces().unwrap();
    assert!(!listed.contains(&stale));
    for h in live.hosts() {
        assert!(
            listed.contains(&h.ns),
            "a live lab's namespace was removed: {}",
            h.ns
        );
        assert!(report.kept_live.contains(&h.ns));
    }
}
