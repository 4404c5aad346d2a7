//! Builds a [`Topology`] of hosts placed in real cities.
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{LabError, Result};
use crate::geo::{distance_km, City, DelayModel, LatLon};
use crate::topology::{host_v4, host_v6, Behaviour, HostSpec, Topology};

/// One host to place.
#[derive(Debug, Clone)]
pub struct Placement {
    pub name: String,
    pub city: City,
    pub behaviour: Behaviour,
    /// Hosts with the same group share one anycast address.
    pub anycast_group: Option<String>,
}

/// The hosts, where they are, and the topology built from them.
#[derive(Debug, Clone)]
pub struct World {
    pub placements: Vec<Placement>,
    pub topology: Topology,
}

/// `n` cities spread over the world: the first drawn at random (seeded), each next one the
/// city farthest from all already chosen (farthest-point sampling).
pub fn spread(cities: &[City], n: usize, seed: u64) -> Result<Vec<City>> {
    if n > cities.len() {
        return Err(LabError::Topology(format!(
            "{n} places asked, only {} cities known",
            cities.len()
        )));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut chosen: Vec<usize> = Vec::with_capacity(n);
    let mut nearest = vec![f64::INFINITY; cities.len()];
    for k in 0..n {
        let next = if k == 0 {
            rng.random_range(0..cities.len())
        } else {
            (0..cities.len())
                .filter(|i| !chosen.contains(i))
                .max_by(|&a, &b| nearest[a].total_cmp(&nearest[b]))
                .ok_or_else(|| LabError::Topology("ran out of cities".into()))?
        };
        chosen.push(next);
        for (i, c) in cities.iter().enumerate() {
            nearest[i] = nearest[i].min(distance_km(c.pos, cities[next].pos));
        }
    }
    Ok(chosen.into_iter().map(|i| cities[i].clone()).collect())
}

impl World {
    /// Places the hosts, draws access delays and path inflations with `model` (seeded)
    /// and builds the topology. Hosts of one anycast group share the address of the
    /// group's first host.
    pub fn build(
        placements: Vec<Placement>,
        model: &DelayModel,
        seed: u64,
        jitter_ms: f64,
    ) -> Result<Self> {
        let positions: Vec<LatLon> = placements.iter().map(|p| p.city.pos).collect();
        let (access, delays) = model.matrix(&positions, seed);
        Self::with_delays(placements, access, delays, jitter_ms)
    }

    /// Like [`World::build`], but pairs of hosts placed at nodes of a measured RTT set
    /// (`node_of[i]`: index into `set.nodes`) get the measured `min RTT / 2` as one-way
    /// delay; every other pair comes from `model`.
    pub fn replayed(
        placements: Vec<Placement>,
        set: &crate::geo::RttSet,
        node_of: &[Option<usize>],
        model: &DelayModel,
        seed: u64,
        jitter_ms: f64,
    ) -> Result<Self> {
        let positions: Vec<LatLon> = placements.iter().map(|p| p.city.pos).collect();
        let (access, mut delays) = model.matrix(&positions, seed);
        let n = placements.len();
        for i in 0..n {
            for j in 0..n {
                if let (Some(Some(x)), Some(Some(y))) = (node_of.get(i), node_of.get(j)) {
                    if let Some(rtt) = set.rtt_ms.get(&((*x).min(*y), (*x).max(*y))) {
                        delays[i * n + j] = rtt / 2.0;
                    }
                }
            }
        }
        Self::with_delays(placements, access, delays, jitter_ms)
    }

    /// Like [`World::build`] with given access delays and one-way matrix (e.g. a replay).
    pub fn with_delays(
        placements: Vec<Placement>,
        access: Vec<f64>,
        delays: Vec<f64>,
        jitter_ms: f64,
    ) -> Result<Self> {
        let mut groups: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        let hosts = placements
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let addr_of = match &p.anycast_group {
                    Some(g) => *groups.entry(g.clone()).or_insert(i),
                    None => i,
                };
                HostSpec {
                    name: p.name.clone(),
                    v4: host_v4(addr_of),
                    v6: host_v6(addr_of),
                    behaviour: p.behaviour,
                    access_ms: access.get(i).copied().unwrap_or(0.5),
                }
            })
            .collect();
        let topology = Topology::new(hosts, delays, jitter_ms)?;
        Ok(Self {
            placements,
            topology,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::builtin_cities;

    #[test]
    fn spread_covers_continents() {
        let cities = builtin_cities();
        let s = spread(&cities, 8, 3).unwrap();
        assert_eq!(s.len(), 8);
        let south = s.iter().filter(|c| c.pos.lat < 0.0).count();
        assert!(south >= 2, "{s:?}");
        let mut min_km = f64::INFINITY;
        for a in &s {
            for b in &s {
                if a.name != b.name {
                    min_km = min_km.min(distance_km(a.pos, b.pos));
                }
            }
        }
        assert!(
            min_km > 2000.0,
            "spread cities closer than 2000 km: {min_km}"
        );
        assert!(spread(&cities, 1000, 1).is_err());
    }

    #[test]
    fn replayed_worlds_use_measured_delays() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("nodes.csv"),
            "id,lat,lon,label,ip\n1,51.5,-0.12,London,\n2,48.85,2.35,,\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("rtts.csv"), "src,dst,rtt_ms\n1,2,9.0\n").unwrap();
        let set = crate::geo::read_rtt_set(dir.path()).unwrap();
        let cities = crate::geo::rtt_set_cities(&set, &builtin_cities());
        assert_eq!(
            (cities[0].name.as_str(), cities[1].name.as_str()),
            ("London", "2")
        );
        assert_eq!(
            (cities[0].tz.as_str(), cities[1].tz.as_str()),
            ("Europe/London", "Europe/Paris")
        );
        let p = |name: &str, city: &City| Placement {
            name: name.into(),
            city: city.clone(),
            behaviour: Behaviour::Normal,
            anycast_group: None,
        };
        let tokyo = builtin_cities()
            .into_iter()
            .find(|c| c.name == "Tokyo")
            .unwrap();
        let w = World::replayed(
            vec![p("a", &cities[0]), p("b", &cities[1]), p("c", &tokyo)],
            &set,
            &[Some(0), Some(1), None],
            &DelayModel::default(),
            1,
            0.0,
        )
        .unwrap();
        assert_eq!(w.topology.one_way_ms(0, 1), 4.5);
        assert_eq!(w.topology.one_way_ms(1, 0), 4.5);
        assert!(
            w.topology.one_way_ms(0, 2) > 9500.0 / crate::geo::FIBRE_KM_PER_MS,
            "modelled"
        );
    }

    #[test]
    fn anycast_groups_share_addresses() {
        let cities = builtin_cities();
        let p = |name: &str, c: usize, g: Option<&str>| Placement {
            name: name.into(),
            city: cities[c].clone(),
            behaviour: Behaviour::Normal,
            anycast_group: g.map(String::from),
        };
        let w = World::build(
            vec![
                p("a", 0, None),
                p("x1", 1, Some("x")),
                p("x2", 20, Some("x")),
            ],
            &DelayModel::default(),
            1,
            0.0,
        )
        .unwrap();
        let h = w.topology.hosts();
        assert_eq!(h[1].v4, h[2].v4);
        assert_ne!(h[0].v4, h[1].v4);
    }
}
