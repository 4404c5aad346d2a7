//! Real measurements inside network namespaces this test creates (and always deletes):
//! the agent binary runs under `ip netns exec` in the client namespace and traces
//! through a forwarding router namespace to the target namespace. Needs root (and
//! `setpriv` for the exit-77 test): without them each test prints SKIPPED, or fails under
//! `GEOLOC_REQUIRE_ENV=1`.

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn hops(trace: &Value) -> Vec<(u64, Option<String>, Option<f64>)> {
    trace["hops"]
        .as_array()
        .expect("hops array")
        .iter()
        .map(|h| {
            (
                h["ttl"].as_u64().unwrap(),
                h["address"].as_str().map(str::to_string),
                h["rtt_ms"].as_f64(),
            )
        })
        .collect()
}

fn check_reached_two_hops(v: &Value, target: &str, routers: &[&str], proto: &str) {
    let t = &v["traceroute"];
    assert_eq!(t["error"], Value::Null, "{proto}: {v}");
    assert_eq!(t["protocol"], proto);
    assert_eq!(t["reached"], true, "{proto}: {v}");
    let h = hops(t);
    assert_eq!(h.len(), 2, "{proto}: two hops expected: {v}");
    assert_eq!(h[0].0, 1);
    let r = h[0].1.as_deref().expect("router answered");
    assert!(
        routers.contains(&r),
        "{proto}: hop 1 is {r}, expected one of {routers:?}"
    );
    assert!(h[0].2.is_some());
    assert_eq!(h[1].1.as_deref(), Some(target), "{proto}: {v}");
    assert!(t["destination_rtt_ms"].as_f64().is_some());
    assert_eq!(t["last_hop"]["ttl"], 1, "{proto}: {v}");
    assert_eq!(t["last_hop"]["address"], r);
}

#[test]
fn traceroute_icmp_udp_tcp_ipv4_and_ipv6_through_a_router() {
    if !root_or_skip("traceroute_icmp_udp_tcp_ipv4_and_ipv6_through_a_router") {
        return;
    }
    let lab = Lab::new();
    for proto in ["icmp", "udp", "tcp"] {
        let v = lab.measure(&[
            "--target",
            TARGET_V4,
            "--traceroute",
            "--traceroute-protocol",
            proto,
        ]);
        check_reached_two_hops(&v, TARGET_V4, &[ROUTER_NEAR_V4, ROUTER_FAR_V4], proto);
        let v = lab.measure(&[
            "--target",
            TARGET_V6,
            "--traceroute",
            "--traceroute-protocol",
            proto,
        ]);
        check_reached_two_hops(&v, TARGET_V6, &[ROUTER_NEAR_V6, ROUTER_FAR_V6], proto);
    }
}

#[test]
fn silent_target_reports_the_last_responsive_hop() {
    if !root_or_skip("silent_target_reports_the_last_responsive_hop") {
        return;
    }
    let lab = Lab::new();
    for (silent, routers) in [
        (SILENT_V4, [ROUTER_NEAR_V4, ROUTER_FAR_V4]),
        (SILENT_V6, [ROUTER_NEAR_V6, ROUTER_FAR_V6]),
    ] {
        let v = lab.measure(&[
            "--target",
            silent,
            "--traceroute",
            "--ping",
            "--tcp",
            "--max-ttl",
            "5",
            "--traceroute-timeout-ms",
            "300",
            "--ping-count",
            "2",
            "--ping-timeout-ms",
            "300",
            "--tcp-ports",
            "443",
            "--tcp-timeout-ms",
            "300",
        ]);
        let t = &v["traceroute"];
        assert_eq!(t["reached"], false, "{v}");
        let h = hops(t);
        assert_eq!(h.len(), 5, "every TTL up to max-ttl is reported: {v}");
        assert!(
            h[1..].iter().all(|(_, a, r)| a.is_none() && r.is_none()),
            "{v}"
        );
        assert_eq!(t["last_hop"]["ttl"], 1, "{v}");
        let last = t["last_hop"]["address"].as_str().unwrap();
        assert!(routers.contains(&last), "{last}");
        assert!(t["last_hop"]["rtt_ms"].as_f64().is_some());
        assert_eq!(v["ping"]["received"], 0, "{v}");
        assert_eq!(v["ping"]["min_rtt_ms"], Value::Null);
        assert_eq!(v["tcp"]["ports"][0]["outcome"], "timeout", "{v}");
    }
    // The wait for an echo reply (default ping-timeout-ms: 2000) ends at the request's
    // deadline (--timeout-ms 500) when that comes first.
    let v = lab.measure(&[
        "--target",
        SILENT_V4,
        "--ping",
        "--ping-count",
        "1",
        "--timeout-ms",
        "500",
    ]);
    assert_eq!(
        (&v["ping"]["sent"], &v["ping"]["received"]),
        (&1.into(), &0.into()),
        "{v}"
    );
    let took_ms = v["finished_unix_ms"].as_u64().unwrap() - v["started_unix_ms"].as_u64().unwrap();
    assert!((400..1500).contains(&took_ms), "took {took_ms} ms: {v}");
}

#[test]
fn ping_and_tcp_rtt_across_the_router() {
    if !root_or_skip("ping_and_tcp_rtt_across_the_router") {
        return;
    }
    let lab = Lab::new();
    // An open port in the target namespace (SYN/ACK); 8444 stays closed (RST).
    // A dual-stack listener (net.ipv6.bindv6only is 0 in a new namespace).
    let listener: TcpListener = Lab::in_netns(&lab.target, || {
        TcpListener::bind("[::]:8443").expect("bind [::]:8443")
    });
    for target in [TARGET_V4, TARGET_V6] {
        let v = lab.measure(&[
            "--target",
            target,
            "--ping",
            "--tcp",
            "--ping-count",
            "4",
            "--ping-interval-ms",
            "50",
            "--tcp-ports",
            "8443,8444",
        ]);
        assert_eq!(v["error"], Value::Null, "{v}");
        assert_eq!(v["ping"]["sent"], 4, "{v}");
        assert_eq!(v["ping"]["received"], 4, "{v}");
        let min = v["ping"]["min_rtt_ms"].as_f64().expect("min rtt");
        assert!((0.0..50.0).contains(&min), "{min}");
        let ports = v["tcp"]["ports"].as_array().unwrap();
        assert_eq!(ports[0]["port"], 8443);
        assert_eq!(ports[0]["outcome"], "syn-ack", "{v}");
        assert!(ports[0]["rtt_ms"].as_f64().is_some());
        assert_eq!(ports[1]["port"], 8444);
        assert_eq!(ports[1]["outcome"], "rst", "{v}");
        assert!(ports[1]["rtt_ms"].as_f64().is_some());
    }
    drop(listener);
}

#[test]
fn private_targets_are_refused_without_allow_private() {
    if !root_or_skip("private_targets_are_refused_without_allow_private") {
        return;
    }
    let lab = Lab::new();
    let out = lab.agent_in(
        &lab.client,
        &["measure", "--target", TARGET_V4, "--ping"],
        Duration::from_secs(20),
    );
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let err = v["error"].as_str().unwrap();
    assert!(
        err.contains("private") && err.contains("allow-private"),
        "{err}"
    );
    assert_eq!(v["ping"], Value::Null);
}

#[test]
fn without_cap_net_raw_nor_ping_group_it_explains_and_exits() {
    if !root_or_skip("without_cap_net_raw_nor_ping_group_it_explains_and_exits") {
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        geoloc_testenv::skip(
            "without_cap_net_raw_nor_ping_group_it_explains_and_exits",
            "setpriv (util-linux) is not installed",
        );
        return;
    }
    let lab = Lab::new();
    let as_nobody = |extra_sysctl: Option<&str>| {
        if let Some(s) = extra_sysctl {
            let out = common::run_bounded(
                Command::new("ip").args(["netns", "exec", &lab.client, "sysctl", "-qw", s]),
                Duration::from_secs(10),
            );
            assert!(out.status.success());
        }
        common::run_bounded(
            Command::new("ip")
                .args(["netns", "exec", &lab.client])
                .args([
                    "setpriv",
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "--inh-caps=-all",
                    "--bounding-set=-all",
                ])
                .arg(env!("CARGO_BIN_EXE_geoloc-probe-agent"))
                .args([
                    "measure",
                    "--allow-private",
                    "--ping",
                    "--ping-count",
                    "2",
                    "--target",
                    TARGET_V4,
                ])
                .env("RUST_LOG", "warn"),
            Duration::from_secs(20),
        )
    };
    // New namespaces start with ping_group_range "1 0" (closed).
    let out = as_nobody(None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "stderr: {stderr}");
    for needle in [
        "neither CAP_NET_RAW",
        "ping_group_range",
        "setcap cap_net_raw+ep",
        "AmbientCapabilities=CAP_NET_RAW",
        "sysctl -w net.ipv4.ping_group_range",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?}: {stderr}");
    }
    // Opening the range is enough for ping (datagram ICMP sockets, no privilege).
    let out = as_nobody(Some("net.ipv4.ping_group_range=0 2147483647"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout {stdout} stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["ping"]["received"], 2, "{v}");
}
