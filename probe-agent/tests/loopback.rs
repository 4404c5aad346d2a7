//! Measurements against loopback, through the library (ping needs root here because
//! ping_group_range is closed; TCP needs nothing).

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use geoloc_probe_agent::config::{AgentConfig, ConfigFlags, FileConfig, TracerouteProtocol};
use geoloc_probe_agent::measure::{MeasureRequest, Measurer};
use geoloc_probe_agent::tcp::TcpOutcomeKind;

fn measurer() -> Measurer {
    let flags = ConfigFlags {
        allow_private: Some(true),
        ping_count: Some(4),
        ping_interval_ms: Some(20),
        ..Default::default()
    };
    let cfg = AgentConfig::resolve(&flags, &FileConfig::default(), &HashMap::new()).unwrap();
    Measurer::new(Arc::new(cfg))
}

#[tokio::test]
async fn ping_loopback_v4_and_v6() {
    if !common::root_or_skip("ping_loopback_v4_and_v6") {
        return;
    }
    let m = measurer();
    for target in ["127.0.0.1", "::1"] {
        let mut req = MeasureRequest::new("t", target.parse().unwrap());
        req.ping = true;
        req.allow_private = true;
        req.timeout = Some(Duration::from_secs(10));
        let r = m.run(&req).await;
        assert_eq!(r.error, None);
        let p = r.ping.unwrap();
        assert_eq!(p.error, None, "{target}");
        assert_eq!((p.sent, p.received), (4, 4), "{target}");
        // surge-ping can report 0 on loopback: never assert > 0 here.
        let min = p.min_rtt_ms.unwrap();
        assert!((0.0..20.0).contains(&min), "{target}: {min}");
        assert_eq!(p.rtts_ms.iter().copied().reduce(f64::min), Some(min));
    }
}

#[tokio::test]
async fn tcp_rtt_to_listener_and_closed_port() {
    // No privilege needed: plain connect().
    let m = measurer();
    for bind in ["127.0.0.1:0", "[::1]:0"] {
        let listener = match TcpListener::bind(bind) {
            Ok(l) => l,
            Err(e) => {
                // Only the IPv6 loopback can be missing (IPv6 disabled on `lo`).
                geoloc_testenv::skip(
                    "tcp_rtt_to_listener_and_closed_port",
                    &format!("cannot bind {bind} (IPv6 disabled on lo?): {e}"),
                );
                continue;
            }
        };
        let open = listener.local_addr().unwrap();
        // A port that was free a moment ago: bind, note, close.
        let closed = TcpListener::bind(bind)
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let target: IpAddr = open.ip();
        let mut req = MeasureRequest::new("t", target);
        req.tcp = true;
        req.allow_private = true;
        req.tcp_ports = Some(vec![open.port(), closed]);
        let r = m.run(&req).await;
        let tcp = r.tcp.unwrap();
        assert_eq!(tcp.ports[0].outcome, TcpOutcomeKind::SynAck, "{tcp:?}");
        assert_eq!(tcp.ports[1].outcome, TcpOutcomeKind::Rst, "{tcp:?}");
        assert!(tcp
            .ports
            .iter()
            .all(|p| p.rtt_ms.is_some_and(|ms| ms < 100.0)));
        assert_eq!(
            tcp.min_rtt_ms,
            tcp.ports.iter().filter_map(|p| p.rtt_ms).reduce(f64::min)
        );
        drop(listener);
    }
}

#[tokio::test]
async fn traceroute_loopback_reaches_at_ttl_1() {
    if !common::root_or_skip("traceroute_loopback_reaches_at_ttl_1") {
        return;
    }
    let m = measurer();
    for target in ["127.0.0.1", "::1"] {
        let mut req = MeasureRequest::new("t", target.parse().unwrap());
        req.traceroute = true;
        req.allow_private = true;
        let r = m.run(&req).await;
        let t = r.traceroute.unwrap();
        assert_eq!(t.error, None, "{target}");
        assert!(t.reached, "{target}: {t:?}");
        assert_eq!(t.hops.len(), 1);
        assert_eq!(t.hops[0].address, Some(target.parse().unwrap()));
        // The target itself is never the "last hop".
        assert_eq!(t.last_hop, None);
    }
}

#[tokio::test]
async fn traceroute_loopback_rtts_are_small_and_not_negative() {
    if !common::root_or_skip("traceroute_loopback_rtts_are_small_and_not_negative") {
        return;
    }
    // Replies are stamped by the kernel (SO_TIMESTAMPNS), probes before the send: on
    // loopback the RTT is microseconds. The bound is generous (a loaded 2-core machine can
    // preempt the task between the stamp and the send); it catches a wrong unit or clock.
    // That the stamp is the kernel's, not the read time, is pinned by the unit test
    // `traceroute::tests::recv_reports_the_kernel_arrival_time_not_the_read_time`.
    let m = measurer();
    for protocol in [
        TracerouteProtocol::Icmp,
        TracerouteProtocol::Udp,
        TracerouteProtocol::Tcp,
    ] {
        for target in ["127.0.0.1", "::1"] {
            let mut req = MeasureRequest::new("t", target.parse().unwrap());
            req.traceroute = true;
            req.traceroute_protocol = Some(protocol);
            req.allow_private = true;
            req.timeout = Some(Duration::from_secs(10));
            let r = m.run(&req).await;
            let t = r.traceroute.unwrap();
            let what = format!("{protocol:?} {target}: {t:?}");
            assert_eq!(t.error, None, "{what}");
            assert!(t.reached, "{what}");
            let dest = t.destination_rtt_ms.expect("destination RTT");
            assert!((0.0..50.0).contains(&dest), "{what}");
            let hop = t.hops[0].rtt_ms.expect("hop RTT");
            assert!((0.0..50.0).contains(&hop), "{what}");
        }
    }
}

#[tokio::test]
async fn rate_cap_paces_pings() {
    if !common::root_or_skip("rate_cap_paces_pings") {
        return;
    }
    // 10 pings, 0 ms interval, but 20 packets/s per target with a burst of 1:
    // at least 9 × 50 ms = 450 ms.
    let flags = ConfigFlags {
        allow_private: Some(true),
        ping_count: Some(10),
        ping_interval_ms: Some(1),
        target_packets_per_second: Some(20.0),
        target_packet_burst: Some(1.0),
        ..Default::default()
    };
    let cfg = AgentConfig::resolve(&flags, &FileConfig::default(), &HashMap::new()).unwrap();
    let m = Measurer::new(Arc::new(cfg));
    let mut req = MeasureRequest::new("t", "127.0.0.1".parse().unwrap());
    req.ping = true;
    req.allow_private = true;
    let start = std::time::Instant::now();
    let r = m.run(&req).await;
    let elapsed = start.elapsed();
    assert_eq!(r.ping.unwrap().received, 10);
    assert!(elapsed >= Duration::from_millis(440), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_wide_cap_paces_measurements_of_different_targets_together() {
    // No privilege needed: TCP SYNs to closed ports of four loopback addresses, measured
    // at the same time. Each target's own cap would let all 12 SYNs go at once; the
    // agent-wide cap (20 packets/s, burst 1) spaces them 50 ms apart: at least 550 ms.
    // Load only makes it slower; without the agent-wide bucket it takes a few ms.
    let flags = ConfigFlags {
        allow_private: Some(true),
        max_packets_per_second: Some(20.0),
        packet_burst: Some(1.0),
        target_packets_per_second: Some(1000.0),
        target_packet_burst: Some(100.0),
        ..Default::default()
    };
    let cfg = AgentConfig::resolve(&flags, &FileConfig::default(), &HashMap::new()).unwrap();
    let m = Measurer::new(Arc::new(cfg));
    let ports: Vec<u16> = (0..3)
        .map(|_| {
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let reqs: Vec<MeasureRequest> = (1..=4)
        .map(|i| {
            let mut req =
                MeasureRequest::new(format!("t{i}"), format!("127.0.0.{i}").parse().unwrap());
            req.tcp = true;
            req.allow_private = true;
            req.tcp_ports = Some(ports.clone());
            req.timeout = Some(Duration::from_secs(30));
            req
        })
        .collect();
    let start = std::time::Instant::now();
    let results = futures::future::join_all(reqs.iter().map(|r| m.run(r))).await;
    let elapsed = start.elapsed();
    for r in &results {
        let tcp = r.tcp.as_ref().unwrap();
        assert!(
            tcp.ports.iter().all(|p| p.outcome == TcpOutcomeKind::Rst),
            "every SYN sent and answered: {r:?}"
        );
    }
    assert!(elapsed >= Duration::from_millis(540), "{elapsed:?}");
}
