//! Choosing vantage points: spread over the world (first stage) and nearest a point (second
//! stage). Works on any source's vantage points.
use geoloc_engine::{distance_km, LatLon};

use crate::core::source::VantagePoint;

/// `n` probes spread over the world by farthest-point sampling: start with the probe farthest
/// from the fleet's mean position (ties by id), then repeatedly add the probe farthest from
/// those already chosen. Deterministic. Returns indices into `probes`.
pub fn spread(probes: &[VantagePoint], n: usize) -> Vec<usize> {
    if probes.is_empty() || n == 0 {
        return Vec::new();
    }
    let n = n.min(probes.len());
    let mut chosen: Vec<usize> = Vec::with_capacity(n);
    // Start: lowest id, so results do not depend on the fleet's arrival order.
    let first = (0..probes.len())
        .min_by(|&a, &b| probes[a].id.cmp(&probes[b].id))
        .unwrap_or(0);
    chosen.push(first);
    let mut min_d: Vec<f64> = probes
        .iter()
        .map(|p| distance_km(p.pos, probes[first].pos))
        .collect();
    while chosen.len() < n {
        let next = (0..probes.len())
            .filter(|i| !chosen.contains(i))
            .max_by(|&a, &b| {
                min_d[a]
                    .total_cmp(&min_d[b])
                    .then(probes[b].id.cmp(&probes[a].id))
            });
        let Some(next) = next else { break };
        chosen.push(next);
        for (i, d) in min_d.iter_mut().enumerate() {
            *d = d.min(distance_km(probes[i].pos, probes[next].pos));
        }
    }
    chosen
}

/// The `k` probes nearest `point`, skipping `exclude`; indices into `probes`, nearest first.
pub fn nearest(probes: &[VantagePoint], point: LatLon, k: usize, exclude: &[usize]) -> Vec<usize> {
    let mut idx: Vec<(f64, usize)> = (0..probes.len())
        .filter(|i| !exclude.contains(i))
        .map(|i| (distance_km(probes[i].pos, point), i))
        .collect();
    idx.sort_by(|a, b| {
        a.0.total_cmp(&b.0)
            .then(probes[a.1].id.cmp(&probes[b.1].id))
    });
    idx.into_iter().take(k).map(|(_, i)| i).collect()
}

/// Kilometres of distance per ms of RTT typically seen on long Internet paths (about 60% of
/// the 2/3 c fibre bound: routes are not great circles and add queueing).
pub const TYPICAL_KM_PER_MS_RTT: f64 = 60.0;

/// The `k` probes most likely to be near the target given first-stage RTTs `seen`
/// (position, RTT ms): a probe scores well when its distances to the first-stage probes
/// match the distances their RTTs suggest for the target (RTT x [`TYPICAL_KM_PER_MS_RTT`],
/// relative error, closer probes weigh more); probes outside a first-stage sound-bound disc
/// are ranked last. Skips `exclude`; indices into `probes`, best first.
pub fn nearest_by_rtt_fit(
    probes: &[VantagePoint],
    seen: &[(LatLon, f64)],
    k: usize,
    exclude: &[usize],
) -> Vec<usize> {
    let score = |p: LatLon| -> (bool, f64) {
        let mut outside = false;
        let mut s = 0.0;
        for &(q, rtt) in seen {
            let d = distance_km(p, q);
            if d > rtt * geoloc_engine::FIBRE_KM_PER_MS_RTT + 50.0 {
                outside = true;
            }
            let expect = rtt * TYPICAL_KM_PER_MS_RTT;
            let rel = (d - expect) / (expect + 200.0);
            s += rel * rel;
        }
        (outside, s)
    };
    let mut idx: Vec<((bool, f64), usize)> = (0..probes.len())
        .filter(|i| !exclude.contains(i))
        .map(|i| (score(probes[i].pos), i))
        .collect();
    idx.sort_by(|a, b| {
        a.0 .0
            .cmp(&b.0 .0)
            .then(a.0 .1.total_cmp(&b.0 .1))
            .then(probes[a.1].id.cmp(&probes[b.1].id))
    });
    idx.into_iter().take(k).map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str, lat: f64, lon: f64) -> VantagePoint {
        VantagePoint {
            id: id.into(),
            pos: LatLon { lat, lon },
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
        let ids: Vec<&str> = s.iter().map(|&i| ps[i].id.as_str()).collect();
        assert_eq!(ids, ["a-paris", "d-sydney", "e-newyork"]);
        assert_eq!(spread(&ps, 10).len(), 5);
        assert!(spread(&[], 3).is_empty());
    }

    #[test]
    fn nearest_orders_by_distance_and_skips_excluded() {
        let ps = vec![
            p("paris", 48.85, 2.35),
            p("london", 51.5, -0.12),
            p("sydney", -33.87, 151.2),
        ];
        let n = nearest(
            &ps,
            LatLon {
                lat: 51.0,
                lon: 0.0,
            },
            2,
            &[],
        );
        assert_eq!(n, vec![1, 0]);
        let n = nearest(
            &ps,
            LatLon {
                lat: 51.0,
                lon: 0.0,
            },
            2,
            &[1],
        );
        assert_eq!(n, vec![0, 2]);
    }

    #[test]
    fn rtt_fit_prefers_probes_where_the_rtts_point() {
        // Target near Lyon; first stage saw New York at 80 ms, Sydney at 280 ms, Tokyo at 230 ms.
        let ps = vec![
            p("paris", 48.85, 2.35),
            p("newyork", 40.7, -74.0),
            p("sydney", -33.87, 151.2),
            p("tokyo", 35.68, 139.65),
            p("chicago", 41.88, -87.63),
            p("saopaulo", -23.55, -46.63),
            p("frankfurt", 50.11, 8.68),
        ];
        let seen = [(ps[1].pos, 80.0), (ps[2].pos, 280.0), (ps[3].pos, 230.0)];
        let n = nearest_by_rtt_fit(&ps, &seen, 2, &[1, 2, 3]);
        let mut ids: Vec<&str> = n.iter().map(|&i| ps[i].id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["frankfurt", "paris"]);
    }
}
