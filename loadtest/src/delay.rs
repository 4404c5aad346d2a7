//! Where the simulated probes and targets are, and the RTT between them: the lab's delay
//! model (`geoloc_lab::geo`, lab/README.md "Geography") drawn per host and per pair from a
//! seeded hash instead of a full matrix, so 10,000 probes times any number of targets cost
//! nothing to hold.
//!
//! One-way delay `access(a) + access(b) + km / (2/3 c) * (1 + exp(mu + u_a + u_b + e_ab))`,
//! the RTT twice that, plus a small per-packet exponential jitter (mean [`JITTER_MS`]).
use geoloc_lab::geo::{self, City, DelayModel, LatLon, FIBRE_KM_PER_MS};

/// Mean of the per-packet exponential jitter, ms.
pub const JITTER_MS: f64 = 0.2;
/// Largest offset of a host from its city, km.
const CITY_SPREAD_KM: f64 = 50.0;

/// Kinds of host, so a probe and a target with the same index draw different values.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    Probe,
    Target,
}

/// A simulated host: its position and its own part of the delay model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Host {
    pub pos: LatLon,
    /// Access delay, ms (uniform in the model's range).
    pub access_ms: f64,
    /// The host's part of `ln(inflation - 1)`.
    pub u: f64,
}

/// The seeded world: cities, the model's parameters and the seed.
#[derive(Debug, Clone)]
pub struct World {
    cities: Vec<City>,
    model: DelayModel,
    seed: u64,
}

/// SplitMix64: a well-mixed 64-bit hash of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A uniform draw in (0, 1] from a key.
fn unit(key: u64) -> f64 {
    ((mix(key) >> 11) as f64 + 1.0) / (1u64 << 53) as f64
}

/// A standard normal draw from a key (Box-Muller).
fn normal(key: u64) -> f64 {
    let u1 = unit(key);
    let u2 = unit(key ^ 0x5555_5555_5555_5555);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn key(seed: u64, parts: &[u64]) -> u64 {
    parts.iter().fold(mix(seed), |h, &p| mix(h ^ p))
}

impl World {
    /// The lab's 68 built-in cities and its fitted delay model.
    pub fn new(seed: u64) -> World {
        World {
            cities: geo::builtin_cities(),
            model: DelayModel::default(),
            seed,
        }
    }

    /// Host `index` of `role`: a city (probes go round the list so any fleet covers the
    /// world; targets are drawn) moved up to 50 km in a seeded direction.
    pub fn host(&self, role: Role, index: u64) -> Host {
        let r = role as u64 + 1;
        let n = self.cities.len().max(1) as u64;
        let city = match role {
            Role::Probe => index % n,
            Role::Target => mix(key(self.seed, &[r, index, 1])) % n,
        };
        let base = self
            .cities
            .get(city as usize)
            .map_or(LatLon { lat: 0.0, lon: 0.0 }, |c| c.pos);
        let bearing = std::f64::consts::TAU * unit(key(self.seed, &[r, index, 2]));
        let dist = CITY_SPREAD_KM * unit(key(self.seed, &[r, index, 3])).sqrt();
        let pos = offset(base, bearing, dist);
        let (lo, hi) = self.model.access_ms;
        Host {
            pos,
            access_ms: lo + (hi - lo) * unit(key(self.seed, &[r, index, 4])),
            u: self.model.ln_sigma_host * normal(key(self.seed, &[r, index, 5])),
        }
    }

    /// Standard deviation of the per-pair part (as the lab's model).
    fn pair_sigma(&self) -> f64 {
        (self.model.ln_sigma.powi(2) - 2.0 * self.model.ln_sigma_host.powi(2))
            .max(0.0)
            .sqrt()
    }

    /// Base RTT between probe `p` and target `t` (no jitter), ms.
    pub fn rtt_ms(&self, p_index: u64, p: &Host, t_index: u64, t: &Host) -> f64 {
        let e = self.pair_sigma() * normal(key(self.seed, &[7, p_index, t_index]));
        let ln = self.model.ln_mu + p.u + t.u + e;
        let km = geo::distance_km(p.pos, t.pos);
        2.0 * (p.access_ms + t.access_ms + km / FIBRE_KM_PER_MS * (1.0 + ln.exp()))
    }

    /// The RTT of echo `k` (base plus exponential jitter), ms.
    pub fn echo_ms(&self, base: f64, p_index: u64, t_index: u64, k: u32) -> f64 {
        let u = unit(key(self.seed, &[8, p_index, t_index, u64::from(k)]));
        base - JITTER_MS * u.ln()
    }
}

/// The point `km` from `from` on the initial `bearing` (radians), on a sphere.
fn offset(from: LatLon, bearing: f64, km: f64) -> LatLon {
    let d = km / geo::EARTH_RADIUS_KM;
    let (la1, lo1) = (from.lat.to_radians(), from.lon.to_radians());
    let la2 = (la1.sin() * d.cos() + la1.cos() * d.sin() * bearing.cos())
        .clamp(-1.0, 1.0)
        .asin();
    let lo2 = lo1 + (bearing.sin() * d.sin() * la1.cos()).atan2(d.cos() - la1.sin() * la2.sin());
    let mut lon = lo2.to_degrees();
    if lon > 180.0 {
        lon -= 360.0;
    } else if lon < -180.0 {
        lon += 360.0;
    }
    LatLon {
        lat: la2.to_degrees().clamp(-90.0, 90.0),
        lon,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_seeded_and_on_earth() {
        let w = World::new(1);
        for i in 0..1000 {
            let h = w.host(Role::Probe, i);
            assert_eq!(h, World::new(1).host(Role::Probe, i));
            assert!(h.pos.lat.abs() <= 90.0 && h.pos.lon.abs() <= 180.0);
            assert!((0.25..=1.5).contains(&h.access_ms), "{h:?}");
        }
        assert_ne!(w.host(Role::Probe, 3), World::new(2).host(Role::Probe, 3));
    }

    #[test]
    fn rtt_follows_distance_and_never_beats_light() {
        let w = World::new(7);
        let mut ratios = Vec::new();
        for p in 0..200 {
            let hp = w.host(Role::Probe, p);
            for t in 0..20 {
                let ht = w.host(Role::Target, t);
                let rtt = w.rtt_ms(p, &hp, t, &ht);
                let km = geo::distance_km(hp.pos, ht.pos);
                // Faster than light in fibre is impossible in the model.
                assert!(rtt >= 2.0 * km / FIBRE_KM_PER_MS, "{rtt} ms for {km} km");
                assert!(rtt.is_finite() && rtt > 0.0);
                if km >= geo::FIT_MIN_KM {
                    ratios.push(rtt / (2.0 * km / FIBRE_KM_PER_MS));
                }
                assert!(w.echo_ms(rtt, p, t, 0) >= rtt);
            }
        }
        ratios.sort_by(f64::total_cmp);
        // The lab's fitted median inflation is about 2 (lab/README.md).
        let median = ratios[ratios.len() / 2];
        assert!((1.7..2.6).contains(&median), "median inflation {median}");
    }
}
