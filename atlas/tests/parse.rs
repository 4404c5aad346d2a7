//! The parsers against small Atlas result files written to the documented formats
//! (`data/README.md`), and against malformed input.
use std::collections::BTreeSet;
use std::net::IpAddr;

use geoloc_atlas::probes::parse_probe_file;
use geoloc_atlas::results::{parse_results, Expect, RttKind};
use geoloc_atlas::vet::{mesh_pairs, vet};

fn data(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn t4() -> IpAddr {
    "192.0.2.77".parse().unwrap()
}

#[test]
fn ping_v4_minimum_per_probe() {
    let p = parse_results(
        &data("ping-v4.json"),
        "ping-v4.json",
        &Expect {
            target: Some(t4()),
            msm_ids: vec![61000001],
        },
    )
    .unwrap();
    assert_eq!(p.report.results, 11);
    assert_eq!(p.report.malformed, vec![]);
    // 6043 has a result without reply and one with; the one with reply counts.
    assert_eq!(p.report.no_reply.len(), 1);
    assert_eq!(p.report.no_reply[0].probe_id, Some(6043));
    assert_eq!(p.report.probes, 9);
    let get = |id: u32| p.rtts.iter().find(|r| r.probe_id == id).unwrap().rtt_ms;
    assert_eq!(get(6025), 3.9);
    assert_eq!(get(6043), 10.4);
    // 6094's second result (an error entry, one reply of 11.9 ms) does not beat 11.2 ms.
    assert_eq!(get(6094), 11.2);
    assert!(p.rtts.iter().all(|r| r.kind == RttKind::Echo && r.af == 4));
}

#[test]
fn ping_v6_as_json_lines() {
    let p = parse_results(&data("ping-v6.ndjson"), "ping-v6", &Expect::default()).unwrap();
    assert_eq!(p.report.probes, 4);
    assert!(p.rtts.iter().all(|r| r.af == 6));
    let r = p.rtts.iter().find(|r| r.probe_id == 6025).unwrap();
    assert!((r.rtt_ms - 4.7).abs() < 1e-9, "{r:?}");
}

#[test]
fn traceroute_v4_and_v6_destination_or_last_hop() {
    let p = parse_results(&data("traceroute-v4.json"), "tr4", &Expect::default()).unwrap();
    assert_eq!(p.report.probes, 3);
    let by = |id: u32| p.rtts.iter().find(|r| r.probe_id == id).unwrap();
    assert_eq!((by(6025).kind, by(6025).rtt_ms), (RttKind::Echo, 4.1));
    assert_eq!((by(6031).kind, by(6031).rtt_ms), (RttKind::Echo, 7.9));
    // 6039 never reached the target: its last answering hop (4, 10.4.0.1) counts.
    let l = by(6039);
    assert_eq!(l.kind, RttKind::LastHop);
    assert_eq!(l.hop_addr, Some("10.4.0.1".parse().unwrap()));
    assert!((l.rtt_ms - 18.0 * 4.0 / 5.0).abs() < 1e-9, "{l:?}");
    let p6 = parse_results(&data("traceroute-v6.json"), "tr6", &Expect::default()).unwrap();
    assert_eq!(p6.rtts.len(), 1);
    assert_eq!(
        (p6.rtts[0].kind, p6.rtts[0].rtt_ms, p6.rtts[0].af),
        (RttKind::Echo, 10.5, 6)
    );
}

#[test]
fn malformed_results_are_reported_and_skipped() {
    let p = parse_results(
        &data("malformed.ndjson"),
        "malformed.ndjson",
        &Expect {
            target: Some(t4()),
            msm_ids: vec![61000001],
        },
    )
    .unwrap();
    assert_eq!(p.rtts.len(), 1, "only the first line is valid");
    insta::assert_json_snapshot!("malformed_report", p.report);
    // Text out of the file reaches the report without control characters.
    assert!(!p.report.to_string().contains('\u{1b}'));
    // Whole-file failures are errors, not panics.
    assert!(parse_results(b"<html>", "x", &Expect::default()).is_err());
    assert!(parse_results(b"[1, 2", "x", &Expect::default()).is_err());
    assert!(parse_results(b"", "x", &Expect::default())
        .unwrap()
        .rtts
        .is_empty());
}

#[test]
fn mesh_vetting_drops_the_probe_whose_position_is_wrong() {
    let probes = parse_probe_file(&data("probes.json"), "probes.json")
        .unwrap()
        .probes;
    assert_eq!(probes.len(), 9);
    let mesh = parse_results(&data("mesh-v4.json"), "mesh", &Expect::default()).unwrap();
    let pairs = mesh_pairs(&probes, &[mesh]);
    assert_eq!(pairs.len(), 6);
    let p = parse_results(&data("ping-v4.json"), "ping", &Expect::default()).unwrap();
    let v = vet(&probes, &p.rtts, &pairs, &BTreeSet::from([6039]));
    let dropped: Vec<&str> = v.dropped.iter().map(|d| d.landmark.as_str()).collect();
    assert_eq!(dropped, ["atlas:6039", "atlas:6087"]);
    assert!(
        v.dropped[1].reason.contains("faster than light"),
        "{:?}",
        v.dropped
    );
    assert_eq!(v.measurements.len(), 7);
}
