//! Atlas probes' self-reported positions are not trusted blindly.
//!
//! Before solving, a probe's RTT to the target is left out when:
//! - the probe is on the exclusion list (ids given by the user);
//! - its metadata is unknown or it reports no position;
//! - RTTs among probes (the anchors' mesh, or any ping between probes whose `dst_addr` is
//!   another probe's address) are faster than light in fibre for the two declared
//!   positions: the engine's check ([`geoloc_engine::violates_speed_of_light`] and its
//!   greedy blame, [`geoloc_engine::eval::faster_than_light`]) names the probe in the most
//!   impossible pairs first, so one misplaced probe does not take its honest peers with it.
//!
//! The engine's consistency analysis ([`geoloc_engine::consistency`], run inside
//! [`geoloc_engine::solve`]) then drops probes whose disc around the target contradicts the
//! others'. The same mesh RTTs calibrate per-probe bestlines when there are enough.
use std::collections::{BTreeMap, BTreeSet};

use geoloc_engine::dataset::Node;
use geoloc_engine::solve::{Dropped, Kind, Measurement};
use geoloc_engine::{distance_km, violates_speed_of_light, Calibration, LandmarkRtt, LatLon};

use crate::error::{AtlasError, Result};
use crate::probes::{landmark, ProbeSet};
use crate::results::{Parsed, ProbeRtt, RttKind};

/// Most ids on an exclusion list.
pub const MAX_EXCLUSIONS: usize = 100_000;
/// Fewest mesh RTTs a probe needs before it gets a bestline (the coordinator asks for more
/// than the engine's minimum of 5 for the same reason: a line under few points is too tight).
pub const MIN_MESH_POINTS: usize = 10;

/// The RTT measured between two probes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeshPair {
    pub a: u32,
    pub b: u32,
    pub rtt_ms: f64,
}

/// Reads an exclusion list: probe ids separated by commas, spaces or new lines; `#` starts
/// a comment.
pub fn parse_exclusions(text: &str, what: &str) -> Result<BTreeSet<u32>> {
    let mut out = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("");
        for tok in line.split([',', ' ', '\t']).filter(|t| !t.is_empty()) {
            let id: u32 =
                tok.parse()
                    .ok()
                    .filter(|&i| i > 0)
                    .ok_or_else(|| AtlasError::Malformed {
                        what: format!("{what} line {}", n + 1),
                        reason: format!(
                            "{:?} is not a probe id",
                            crate::probes::printable(tok, 30)
                        ),
                    })?;
            out.insert(id);
            if out.len() > MAX_EXCLUSIONS {
                return Err(AtlasError::Malformed {
                    what: what.to_string(),
                    reason: format!("more than {MAX_EXCLUSIONS} ids"),
                });
            }
        }
    }
    Ok(out)
}

/// Probe-to-probe RTTs in parsed ping results: every echo whose `dst_addr` is the address
/// of a known probe (other than the one that measured it). The minimum per pair is kept.
pub fn mesh_pairs(probes: &ProbeSet, parsed: &[Parsed]) -> Vec<MeshPair> {
    let mut by_addr = BTreeMap::new();
    for p in probes.probes.values() {
        if let Some(a) = p.address_v4 {
            by_addr.insert(std::net::IpAddr::V4(a), p.id);
        }
        if let Some(a) = p.address_v6 {
            by_addr.insert(std::net::IpAddr::V6(a), p.id);
        }
    }
    let mut best: BTreeMap<(u32, u32), f64> = BTreeMap::new();
    for r in parsed.iter().flat_map(|p| &p.rtts) {
        if r.kind != RttKind::Echo {
            continue;
        }
        let Some(&to) = by_addr.get(&r.dst_addr) else {
            continue;
        };
        if to == r.probe_id {
            continue;
        }
        let key = (r.probe_id.min(to), r.probe_id.max(to));
        let e = best.entry(key).or_insert(f64::INFINITY);
        *e = e.min(r.rtt_ms);
    }
    best.into_iter()
        .map(|((a, b), rtt_ms)| MeshPair { a, b, rtt_ms })
        .collect()
}

/// The measurements the engine gets, the probes left out (with why), and a calibration.
#[derive(Debug, Clone, Default)]
pub struct Vetted {
    pub measurements: Vec<Measurement>,
    pub dropped: Vec<Dropped>,
    /// Bestlines fitted on the mesh RTTs of probes with at least [`MIN_MESH_POINTS`].
    pub calibration: Option<Calibration>,
}

/// What vetting decided for each probe asked about: kept (with its declared position) or
/// dropped (with why), and the bestlines fitted on the mesh.
#[derive(Debug, Clone, Default)]
pub struct ProbeFates {
    pub kept: BTreeMap<u32, LatLon>,
    pub dropped: Vec<Dropped>,
    pub calibration: Option<Calibration>,
}

/// Vets `rtts` (see the module docs).
pub fn vet(
    probes: &ProbeSet,
    rtts: &[ProbeRtt],
    mesh: &[MeshPair],
    exclude: &BTreeSet<u32>,
) -> Vetted {
    let ids: BTreeSet<u32> = rtts.iter().map(|r| r.probe_id).collect();
    let fates = vet_probes(probes, &ids, mesh, exclude);
    let measurements = rtts
        .iter()
        .filter_map(|r| {
            let pos = *fates.kept.get(&r.probe_id)?;
            Some(Measurement {
                landmark: landmark(r.probe_id),
                pos,
                rtt_ms: r.rtt_ms,
                kind: match r.kind {
                    RttKind::Echo => Kind::Echo,
                    RttKind::LastHop => Kind::LastHop,
                },
            })
        })
        .collect();
    Vetted {
        measurements,
        dropped: fates.dropped,
        calibration: fates.calibration,
    }
}

/// Vets the probes `ids` (exclusion list, metadata, position, speed of light on the mesh)
/// before anything is measured: a source picks its vantage points with this.
pub fn vet_probes(
    probes: &ProbeSet,
    ids: &BTreeSet<u32>,
    mesh: &[MeshPair],
    exclude: &BTreeSet<u32>,
) -> ProbeFates {
    let mut out = ProbeFates::default();
    // Speed-of-light among probes with a position.
    let mut index: BTreeMap<u32, usize> = BTreeMap::new();
    let mut nodes: Vec<Node> = Vec::new();
    let mut by_node: Vec<Vec<(usize, f64, f64)>> = Vec::new();
    let mut partners: BTreeMap<u32, Vec<(u32, f64, f64)>> = BTreeMap::new();
    let mut calib: Vec<LandmarkRtt> = Vec::new();
    for m in mesh {
        let (Some(pa), Some(pb)) = (
            probes.get(m.a).and_then(|p| p.pos),
            probes.get(m.b).and_then(|p| p.pos),
        ) else {
            continue;
        };
        if !(m.rtt_ms.is_finite() && m.rtt_ms >= 0.0) {
            continue;
        }
        let mut ix = |id: u32, pos| {
            *index.entry(id).or_insert_with(|| {
                nodes.push(Node {
                    id: landmark(id),
                    pos,
                    label: String::new(),
                    ip: String::new(),
                });
                by_node.push(Vec::new());
                nodes.len() - 1
            })
        };
        let (ia, ib) = (ix(m.a, pa), ix(m.b, pb));
        let d = distance_km(pa, pb);
        by_node[ia].push((ib, d, m.rtt_ms));
        by_node[ib].push((ia, d, m.rtt_ms));
        if violates_speed_of_light(pa, pb, m.rtt_ms) {
            partners.entry(m.a).or_default().push((m.b, m.rtt_ms, d));
            partners.entry(m.b).or_default().push((m.a, m.rtt_ms, d));
        }
        calib.push(LandmarkRtt {
            from: landmark(m.a),
            from_pos: pa,
            to: landmark(m.b),
            to_pos: pb,
            rtt_ms: m.rtt_ms,
        });
    }
    let flagged: BTreeSet<u32> =
        geoloc_engine::eval::faster_than_light(&by_node, &nodes, usize::MAX)
            .into_iter()
            .filter_map(|i| index.iter().find(|(_, &v)| v == i).map(|(&k, _)| k))
            .collect();
    if !calib.is_empty() {
        let c = Calibration::fit_with_min(
            &calib
                .into_iter()
                .filter(|p| {
                    !flagged.iter().any(|&f| {
                        let l = landmark(f);
                        p.from == l || p.to == l
                    })
                })
                .collect::<Vec<_>>(),
            MIN_MESH_POINTS,
        );
        if !c.is_empty() {
            out.calibration = Some(c);
        }
    }
    for &id in ids {
        let name = landmark(id);
        let drop = |reason: String| Dropped {
            landmark: name.clone(),
            reason,
        };
        if exclude.contains(&id) {
            out.dropped.push(drop("on the exclusion list".into()));
            continue;
        }
        let Some(p) = probes.get(id) else {
            out.dropped
                .push(drop("no metadata for this probe in the probe list".into()));
            continue;
        };
        let Some(pos) = p.pos else {
            out.dropped
                .push(drop("the probe reports no position".into()));
            continue;
        };
        if flagged.contains(&id) {
            let ps = partners.get(&id).cloned().unwrap_or_default();
            let detail: Vec<String> = ps
                .iter()
                .take(3)
                .map(|(o, rtt, d)| format!("{rtt:.2} ms to atlas:{o} {d:.0} km away"))
                .collect();
            out.dropped.push(drop(format!(
                "RTTs to {} other probes are faster than light in fibre for its declared position ({:.4}, {:.4}): {}",
                ps.len(),
                pos.lat,
                pos.lon,
                detail.join("; ")
            )));
            continue;
        }
        out.kept.insert(id, pos);
    }
    out.dropped.sort_by(|a, b| a.landmark.cmp(&b.landmark));
    out.dropped.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::{Probe, ProbeStatus};

    fn probe(id: u32, lat: f64, lon: f64) -> Probe {
        Probe {
            id,
            pos: Some(LatLon::new(lat, lon)),
            status: ProbeStatus::Connected,
            asn_v4: None,
            asn_v6: None,
            country: None,
            is_anchor: true,
            address_v4: Some(std::net::Ipv4Addr::new(10, 0, 0, id as u8)),
            address_v6: None,
        }
    }

    fn rtt(id: u32, ms: f64) -> ProbeRtt {
        ProbeRtt {
            probe_id: id,
            msm_id: 1,
            af: 4,
            dst_addr: "192.0.2.1".parse().unwrap(),
            rtt_ms: ms,
            kind: RttKind::Echo,
            hop_addr: None,
        }
    }

    #[test]
    fn a_probe_faster_than_light_with_two_others_is_dropped_alone() {
        let mut set = ProbeSet::default();
        // 1-3 in Europe; 4 claims Sydney but answers Europe in a few ms.
        for p in [
            probe(1, 48.85, 2.35),
            probe(2, 52.52, 13.40),
            probe(3, 41.90, 12.50),
            probe(4, -33.87, 151.21),
        ] {
            set.probes.insert(p.id, p);
        }
        let mesh = vec![
            MeshPair {
                a: 1,
                b: 2,
                rtt_ms: 12.0,
            },
            MeshPair {
                a: 1,
                b: 3,
                rtt_ms: 15.0,
            },
            MeshPair {
                a: 2,
                b: 3,
                rtt_ms: 16.0,
            },
            MeshPair {
                a: 1,
                b: 4,
                rtt_ms: 5.0,
            },
            MeshPair {
                a: 2,
                b: 4,
                rtt_ms: 9.0,
            },
        ];
        let rtts: Vec<ProbeRtt> = (1..=4).map(|i| rtt(i, 20.0)).chain([rtt(9, 3.0)]).collect();
        let v = vet(&set, &rtts, &mesh, &BTreeSet::from([3]));
        let names: Vec<&str> = v.measurements.iter().map(|m| m.landmark.as_str()).collect();
        assert_eq!(names, ["atlas:1", "atlas:2"]);
        let dropped: Vec<(&str, &str)> = v
            .dropped
            .iter()
            .map(|d| (d.landmark.as_str(), d.reason.as_str()))
            .collect();
        assert_eq!(dropped.len(), 3, "{dropped:?}");
        assert_eq!(dropped[0], ("atlas:3", "on the exclusion list"));
        assert!(dropped[1].0 == "atlas:4" && dropped[1].1.contains("faster than light"));
        assert!(dropped[2].0 == "atlas:9" && dropped[2].1.contains("no metadata"));
    }

    #[test]
    fn exclusion_lists() {
        let e = parse_exclusions("1, 2\n# comment\n30 40 # trailing\n", "x").unwrap();
        assert_eq!(e, BTreeSet::from([1, 2, 30, 40]));
        assert!(parse_exclusions("1,abc", "x").is_err());
        assert!(parse_exclusions("0", "x").is_err());
    }
}
