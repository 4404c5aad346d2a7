//! Choosing probes: spread over the world (first stage) and nearest a point (second stage).
use geoloc_engine::{distance_km, LatLon};

use crate::registry::ProbeSnapshot;

/// `n` probes spread over the world by farthest-point sampling: start with the probe farthest
/// from the fleet's mean position (ties by id), then repeatedly add the probe farthest from
/// those already chosen. Deterministic. Returns indices into `probes`.
pub fn spread(probes: &[ProbeSnapshot], n: usize) -> Vec<usize> {
    if probes.is_empty() || n == 0 {
        return Vec::new();
    }
    let n = n.min(probes.len());
    let mut chosen: Vec<usize> = Vec::with_capacity(n);
    // Start: lowest id, so results do not depend on the fleet's arrival order.
    let first = (0..probes.len()).min_by(|&a, &b| probes[a].probe_id.cmp(&probes[b].probe_id)).unwrap_or(0);
    chosen.push(first);
    let mut min_d: Vec<f64> = probes.iter().map(|p| distance_km(p.pos(), probes[first].pos())).collect();
    while chosen.len() < n {
        let next = (0..probes.len())
            .filter(|i| !chosen.contains(i))
            .max_by(|&a, &b| min_d[a].total_cmp(&min_d[b]).then(probes[b].probe_id.cmp(&probes[a].probe_id)));
        let Some(next) = next else { break };
        chosen.push(next);
        for (i, d) in min_d.iter_mut().enumerate() {
            *d = d.min(distance_km(probes[i].pos(), probes[next].pos()));
        }
    }
    chosen
}

/// The `k` probes nearest `point`, skipping `exclude`; indices into `probes`, nearest first.
pub fn nearest(probes: &[ProbeSnapshot], point: LatLon, k: usize, exclude: &[usize]) -> Vec<usize> {
    let mut idx: Vec<(f64, usize)> = (0..probes.len())
        .filter(|i| !exclude.contains(i))
        .map(|i| (distance_km(probes[i].pos(), point), i))
        .collect();
    idx.sort_by(|a, b| a.0.total_cmp(&b.0).then(probes[a.1].probe_id.cmp(&probes[b.1].probe_id)));
    idx.into_iter().take(k).map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str, lat: f64, lon: f64) -> ProbeSnapshot {
        ProbeSnapshot {
            probe_id: id.into(),
            lat,
            lon,
            ipv4: String::new(),
            ipv6: String::new(),
            agent_version: String::new(),
            flagged: false,
            flag_reason: String::new(),
            flag_epoch_unix_ms: 0,
            connected: true,
            healthy: true,
            last_seen_unix_ms: 0,
        }
    }

    #[test]
    fn spread_picks_distant_probes() {
        let ps = vec![
            p("a-paris", 48.85, 2.35),
            p("b-london", 51.5, -0.12),
            p("c-brussels", 50.85, 4.35),
            p("d-sydney", -33.87, 151.2),
            p("e-newyork", 40.7, -74.0),
        ];
        let s = spread(&ps, 3);
        let ids: Vec<&str> = s.iter().map(|&i| ps[i].probe_id.as_str()).collect();
        assert_eq!(ids, ["a-paris", "d-sydney", "e-newyork"]);
        assert_eq!(spread(&ps, 10).len(), 5);
        assert!(spread(&[], 3).is_empty());
    }

    #[test]
    fn nearest_orders_by_distance_and_skips_excluded() {
        let ps = vec![p("paris", 48.85, 2.35), p("london", 51.5, -0.12), p("sydney", -33.87, 151.2)];
        let n = nearest(&ps, LatLon { lat: 51.0, lon: 0.0 }, 2, &[]);
        assert_eq!(n, vec![1, 0]);
        let n = nearest(&ps, LatLon { lat: 51.0, lon: 0.0 }, 2, &[1]);
        assert_eq!(n, vec![0, 2]);
    }
}
