//! Target planning: which targets the demo locates, where they really are, and what the
//! lab's MaxMind database claims about them.
use anyhow::bail;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::geo::{self, distance_km, City};
use crate::world;

/// How a demo target behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    Normal,
    DropIcmp,
    Silent,
    Anycast,
    Ipv6,
}

/// One target as planned: the truth the answers are checked against.
#[derive(Debug, Clone, Serialize)]
pub struct TargetPlan {
    pub name: String,
    pub kind: TargetKind,
    /// Where it is (for anycast: every instance).
    pub cities: Vec<City>,
    /// The position the lab's `.mmdb` gives it.
    pub maxmind: City,
    /// True when that position was chosen deliberately wrong (>= 5,000 km away).
    pub maxmind_wrong: bool,
}

/// Plans the targets: kinds in the order ICMP-silent, silent, anycast,
/// IPv6, then normal; cities drawn (seeded) from `pool`; every third MaxMind entry
/// (index 1, 4, 7, ...) deliberately put at a city at least 5,000 km away.
pub fn plan_targets(
    pool: &[City],
    m: usize,
    anycast_instances: usize,
    seed: u64,
) -> anyhow::Result<Vec<TargetPlan>> {
    if pool.len() < 10 {
        bail!("need at least 10 candidate cities, have {}", pool.len());
    }
    let mut rng = StdRng::seed_from_u64(seed ^ 0x07a2_6e75);
    let pick = |rng: &mut StdRng| pool[rng.random_range(0..pool.len())].clone();
    let kinds = [
        TargetKind::DropIcmp,
        TargetKind::Silent,
        TargetKind::Anycast,
        TargetKind::Ipv6,
    ];
    let mut out = Vec::with_capacity(m);
    for i in 0..m {
        let kind = kinds.get(i).copied().unwrap_or(TargetKind::Normal);
        let cities = if kind == TargetKind::Anycast {
            world::spread(
                &anycast_hubs(),
                anycast_instances.clamp(2, ANYCAST_HUBS.len()),
                rng.random(),
            )?
        } else {
            vec![pick(&mut rng)]
        };
        let wrong = i % 3 == 1;
        let maxmind = if wrong {
            let mut c = pick(&mut rng);
            let mut tries = 0;
            while cities.iter().any(|t| distance_km(t.pos, c.pos) < 5000.0) && tries < 1000 {
                c = pick(&mut rng);
                tries += 1;
            }
            c
        } else {
            cities[0].clone()
        };
        out.push(TargetPlan {
            name: format!("t{i}"),
            kind,
            cities,
            maxmind,
            maxmind_wrong: wrong,
        });
    }
    Ok(out)
}

/// Where anycast instances go: big interconnection hubs (built-in city names), spread
/// over the world by farthest-point sampling. Real anycast networks sit where many networks
/// meet, which is also where probes are dense enough to tell the instances apart.
pub const ANYCAST_HUBS: &[&str] = &["Frankfurt", "Washington", "Singapore", "London", "Tokyo"];

fn anycast_hubs() -> Vec<City> {
    geo::builtin_cities()
        .into_iter()
        .filter(|c| ANYCAST_HUBS.contains(&c.name.as_str()))
        .collect()
}

/// The lab host name carrying a target's address (the first instance for anycast).
pub fn host_of(t: &TargetPlan) -> String {
    if t.cities.len() > 1 {
        format!("{}-0", t.name)
    } else {
        t.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_cover_every_kind_and_wrong_entries_are_far() {
        let pool = geo::builtin_cities();
        let plans = plan_targets(&pool, 8, 3, 1).unwrap();
        assert_eq!(plans.len(), 8);
        let kinds: Vec<TargetKind> = plans.iter().map(|p| p.kind).collect();
        assert_eq!(
            &kinds[..5],
            &[
                TargetKind::DropIcmp,
                TargetKind::Silent,
                TargetKind::Anycast,
                TargetKind::Ipv6,
                TargetKind::Normal
            ]
        );
        assert_eq!(plans[2].cities.len(), 3);
        for p in &plans {
            if p.maxmind_wrong {
                assert!(
                    p.cities
                        .iter()
                        .all(|c| distance_km(c.pos, p.maxmind.pos) >= 5000.0),
                    "{p:?}"
                );
            } else {
                assert_eq!(p.maxmind, p.cities[0]);
            }
        }
        assert_eq!(plans.iter().filter(|p| p.maxmind_wrong).count(), 3);
    }
}
