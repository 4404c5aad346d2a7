//! Enumerating and placing the instances of an anycast address: iGreedy.
//!
//! 1. **Enumerate**: take discs by increasing radius; keep a disc when it is disjoint from
//!    every disc kept so far (a greedy maximum independent set). Each kept disc must hold a
//!    different instance, since one host cannot be in two disjoint discs.
//! 2. **Geolocate**: place each instance at the city inside its disc that scores best on
//!    population and closeness to the landmark (α = 0.5).
//! 3. **Iterate**: collapse each kept disc to its city; discs that hold none of those cities
//!    and are disjoint from each other reveal further instances. Repeat until none appear.
//!
//! # References
//! Cicalese, Augé, Joumblatt, Friedman, Rossi, "Characterizing IPv4 Anycast Adoption and
//! Deployment", ACM CoNEXT 2015; the same, IEEE JSAC 34(6), 2016 (iGreedy).

use serde::{Deserialize, Serialize};

use crate::enrich::{enricher, round1};
use crate::region::Constraint;
use crate::sphere::{distance_km, LatLon};

/// One instance of an anycast address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub lat: f64,
    pub lon: f64,
    /// City the instance was placed in.
    pub city: String,
    /// ISO country code of that city.
    pub country: String,
    /// Landmark whose disc revealed the instance.
    pub landmark: String,
    /// Radius of that disc, km: the instance is within it of the landmark.
    pub radius_km: f64,
}

/// Weight of population against closeness to the landmark when choosing a city.
pub const ALPHA: f64 = 0.5;

/// Instances revealed by `discs` (sound bounds); `names[i]` names disc `i`'s landmark.
pub fn enumerate(discs: &[Constraint], names: &[&str]) -> Vec<Instance> {
    let mut order: Vec<usize> = (0..discs.len()).collect();
    order.sort_by(|&a, &b| discs[a].max_km.total_cmp(&discs[b].max_km));
    let disjoint =
        |a: &Constraint, b: &Constraint| distance_km(a.center, b.center) > a.max_km + b.max_km;
    let mut kept: Vec<usize> = Vec::new();
    for &i in &order {
        if kept.iter().all(|&k| disjoint(&discs[i], &discs[k])) {
            kept.push(i);
        }
    }
    let mut instances: Vec<Instance> = kept.iter().map(|&i| place(&discs[i], names[i])).collect();
    loop {
        let points: Vec<LatLon> = instances
            .iter()
            .map(|x| LatLon::new(x.lat, x.lon))
            .collect();
        let used: Vec<usize> = instances
            .iter()
            .filter_map(|x| names.iter().position(|n| *n == x.landmark))
            .collect();
        let mut fresh: Vec<usize> = Vec::new();
        for &i in &order {
            if used.contains(&i) || points.iter().any(|&p| discs[i].contains(p)) {
                continue;
            }
            if fresh.iter().all(|&k| disjoint(&discs[i], &discs[k])) {
                fresh.push(i);
            }
        }
        if fresh.is_empty() {
            break;
        }
        instances.extend(fresh.iter().map(|&i| place(&discs[i], names[i])));
    }
    instances
}

/// The city inside `disc` that best combines population and closeness to the landmark.
fn place(disc: &Constraint, landmark: &str) -> Instance {
    let e = enricher();
    let candidates: Vec<_> = e.cities_within(disc.center, disc.max_km).collect();
    let max_pop = candidates
        .iter()
        .map(|c| c.population)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let best = candidates.into_iter().max_by(|a, b| {
        let score = |c: &crate::enrich::City| {
            ALPHA * c.population as f64 / max_pop
                + (1.0 - ALPHA) * (1.0 - distance_km(disc.center, c.pos) / disc.max_km.max(1e-9))
        };
        score(a).total_cmp(&score(b))
    });
    let city = best.unwrap_or_else(|| e.nearest_city(disc.center));
    let pos = if best.is_some() {
        city.pos
    } else {
        disc.center
    };
    Instance {
        lat: pos.lat,
        lon: pos.lon,
        city: city.name.clone(),
        country: city.country.clone(),
        landmark: landmark.to_string(),
        radius_km: round1(disc.max_km),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_sites_three_instances_in_the_right_cities() {
        let vp = |lat, lon, r| Constraint::disc(LatLon::new(lat, lon), r);
        let discs = [
            vp(50.11, 8.68, 150.0),   // near Frankfurt
            vp(35.69, 139.69, 120.0), // near Tokyo
            vp(40.71, -74.0, 100.0),  // near New York
            vp(48.86, 2.35, 700.0),   // Paris, overlaps Frankfurt's disc
            vp(0.0, 0.0, 15000.0),    // far away: overlaps everything
        ];
        let names = ["fra", "tyo", "nyc", "par", "far"];
        let inst = enumerate(&discs, &names);
        assert_eq!(inst.len(), 3, "{inst:?}");
        let cities: Vec<&str> = inst.iter().map(|i| i.city.as_str()).collect();
        assert!(
            cities.contains(&"Frankfurt am Main")
                && cities.contains(&"Tokyo")
                && cities.contains(&"New York City"),
            "{cities:?}"
        );
    }
}
