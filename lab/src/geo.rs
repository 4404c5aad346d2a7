//! Geography: places at real coordinates and a delay model fitted to real Internet RTTs.
//!
//! One-way delay between two hosts (ms):
//! `access(a) + access(b) + distance_km / FIBRE_KM_PER_MS * inflation(a, b)`, where the
//! per-path inflation is `1 + exp(N(INFLATION_LN_MU, INFLATION_LN_SIGMA))`, drawn once per
//! unordered pair (paths are symmetric), and each host's access delay is uniform in
//! `ACCESS_MS`. Per-packet jitter is added by the emulator (exponential, mean `jitter_ms`).
//! Or [`replay`] a measured `nodes.csv`/`rtts.csv` matrix.
use std::collections::HashMap;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{LabError, Result};

/// Speed of light in fibre (2/3 c), km per ms of one-way delay.
pub const FIBRE_KM_PER_MS: f64 = 299_792.458 * 2.0 / 3.0 / 1000.0;
/// Mean Earth radius (IUGG), km.
pub const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Path inflation `r = RTT / (2 * distance / FIBRE_KM_PER_MS)` is modelled as
/// `r = 1 + exp(mu + u_a + u_b + e_ab)`: `u` a per-host effect (some places are worse
/// connected to everyone), `e` a per-pair one; marginally `ln(r - 1) ~ N(mu, sigma)`.
/// Fitted by [`fit_inflation`] on `shared/data/wondernetwork-train` (148 servers; 10,519
/// pairs at least 500 km apart with r > 1, min RTT of both directions; the 38 faster than
/// light come from mislabelled servers). Data quantiles of r: p10 1.52, p50 2.00,
/// p90 3.48; model: 1.47, 2.07, 3.45. The per-host standard deviation is the square root of
/// the covariance of two pairs sharing a host (method of moments).
/// Refit with `geoloc lab fit --data ../shared/data/wondernetwork-train`.
pub const INFLATION_LN_MU: f64 = 0.0681;
pub const INFLATION_LN_SIGMA: f64 = 0.6445;
pub const INFLATION_LN_SIGMA_HOST: f64 = 0.2616;
/// Range of a host's one-way access delay, ms (WonderNetwork pairs 20-50 km apart show
/// 1.4-3.5 ms RTT, i.e. about 0.3-1.5 ms of access each way).
pub const ACCESS_MS: (f64, f64) = (0.25, 1.5);
/// Pairs closer than this are left out of the inflation fit (access delay dominates).
pub const FIT_MIN_KM: f64 = 500.0;

/// A position, degrees WGS84.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatLon {
    pub lat: f64,
    pub lon: f64,
}

/// Great-circle (haversine) distance, km.
pub fn distance_km(a: LatLon, b: LatLon) -> f64 {
    let (la1, la2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = la2 - la1;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// A city: where a lab host is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct City {
    pub name: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    pub pos: LatLon,
    /// IANA time zone.
    pub tz: String,
    /// Population when known (GeoNames), else 0.
    pub population: u64,
}

const BUILTIN_CITIES: &str = include_str!("../data/cities.csv");
/// Where the GeoNames file is looked for by default (relative to the project root).
pub const GEONAMES_DEFAULT: &str = "../shared/data/geonames/cities15000.zip";

/// The committed list of 68 world cities (name, country, lat, lon, tz).
pub fn builtin_cities() -> Vec<City> {
    let mut rdr = csv::Reader::from_reader(BUILTIN_CITIES.as_bytes());
    rdr.records()
        .filter_map(|r| r.ok())
        .filter_map(|r| {
            Some(City {
                name: r.get(0)?.to_string(),
                country: r.get(1)?.to_string(),
                pos: LatLon {
                    lat: r.get(2)?.parse().ok()?,
                    lon: r.get(3)?.parse().ok()?,
                },
                tz: r.get(4)?.to_string(),
                population: 0,
            })
        })
        .collect()
}

/// Cities with at least `min_population` from a GeoNames `cities15000.zip` (or the
/// extracted `.txt`), read with `unzip -p`. 19 tab-separated columns: name is 2, lat 5,
/// lon 6, country 9, population 15, time zone 18.
pub fn geonames_cities(path: &Path, min_population: u64) -> Result<Vec<City>> {
    let text = if path.extension().is_some_and(|e| e == "zip") {
        let out = std::process::Command::new("unzip")
            .arg("-p")
            .arg(path)
            .output()
            .map_err(|source| LabError::Read {
                path: path.display().to_string(),
                source,
            })?;
        if !out.status.success() {
            return Err(LabError::Data {
                path: path.display().to_string(),
                detail: format!(
                    "unzip failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        std::fs::read_to_string(path).map_err(|source| LabError::Read {
            path: path.display().to_string(),
            source,
        })?
    };
    let mut cities = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 18 {
            continue;
        }
        let (Ok(lat), Ok(lon)) = (f[4].parse::<f64>(), f[5].parse::<f64>()) else {
            continue;
        };
        let population = f[14].parse().unwrap_or(0);
        if population < min_population || f[17].is_empty() {
            continue;
        }
        cities.push(City {
            name: f[1].to_string(),
            country: f[8].to_string(),
            pos: LatLon { lat, lon },
            tz: f[17].to_string(),
            population,
        });
    }
    if cities.is_empty() {
        return Err(LabError::Data {
            path: path.display().to_string(),
            detail: "no city rows found".into(),
        });
    }
    Ok(cities)
}

/// The delay model's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DelayModel {
    pub ln_mu: f64,
    /// Standard deviation of `ln(r - 1)` over all pairs.
    pub ln_sigma: f64,
    /// Standard deviation of the per-host part (at most `ln_sigma / sqrt(2)`).
    pub ln_sigma_host: f64,
    pub access_ms: (f64, f64),
}

impl Default for DelayModel {
    fn default() -> Self {
        Self {
            ln_mu: INFLATION_LN_MU,
            ln_sigma: INFLATION_LN_SIGMA,
            ln_sigma_host: INFLATION_LN_SIGMA_HOST,
            access_ms: ACCESS_MS,
        }
    }
}

fn std_normal(rng: &mut StdRng) -> f64 {
    // Box-Muller.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl DelayModel {
    /// One inflation from the marginal distribution (no host structure).
    pub fn draw_inflation(&self, rng: &mut StdRng) -> f64 {
        1.0 + (self.ln_mu + self.ln_sigma * std_normal(rng)).exp()
    }

    /// Standard deviation of the per-pair part.
    fn ln_sigma_pair(&self) -> f64 {
        (self.ln_sigma.powi(2) - 2.0 * self.ln_sigma_host.powi(2))
            .max(0.0)
            .sqrt()
    }

    pub fn draw_access_ms(&self, rng: &mut StdRng) -> f64 {
        let (lo, hi) = self.access_ms;
        lo + (hi - lo) * rng.random::<f64>()
    }

    /// Access delays (one per position) and the symmetric one-way delay matrix
    /// (row-major, ms) for hosts at `positions`, seeded.
    pub fn matrix(&self, positions: &[LatLon], seed: u64) -> (Vec<f64>, Vec<f64>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = positions.len();
        let access: Vec<f64> = (0..n).map(|_| self.draw_access_ms(&mut rng)).collect();
        let host: Vec<f64> = (0..n)
            .map(|_| self.ln_sigma_host * std_normal(&mut rng))
            .collect();
        let pair_sigma = self.ln_sigma_pair();
        let mut d = vec![0.0; n * n];
        for i in 0..n {
            for j in (i + 1)..n {
                let ln = self.ln_mu + host[i] + host[j] + pair_sigma * std_normal(&mut rng);
                let prop =
                    distance_km(positions[i], positions[j]) / FIBRE_KM_PER_MS * (1.0 + ln.exp());
                let v = access[i] + access[j] + prop;
                d[i * n + j] = v;
                d[j * n + i] = v;
            }
        }
        (access, d)
    }
}

/// A `nodes.csv`/`rtts.csv` data set.
#[derive(Debug, Clone)]
pub struct RttSet {
    pub nodes: Vec<(String, LatLon, String)>,
    /// Minimum RTT per unordered pair of node indices (i < j), ms.
    pub rtt_ms: HashMap<(usize, usize), f64>,
}

/// Reads `dir/nodes.csv` (`id,lat,lon,label,ip`) and `dir/rtts.csv` (`src,dst,rtt_ms`).
pub fn read_rtt_set(dir: &Path) -> Result<RttSet> {
    let np = dir.join("nodes.csv");
    let rp = dir.join("rtts.csv");
    let bad = |p: &Path, d: String| LabError::Data {
        path: p.display().to_string(),
        detail: d,
    };
    let mut rdr = csv::Reader::from_path(&np).map_err(|e| bad(&np, e.to_string()))?;
    let mut nodes = Vec::new();
    let mut index = HashMap::new();
    for (line, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| bad(&np, e.to_string()))?;
        let field = |k: usize| rec.get(k).unwrap_or("").trim().to_string();
        let lat: f64 = field(1)
            .parse()
            .map_err(|_| bad(&np, format!("row {}: bad lat {:?}", line + 2, field(1))))?;
        let lon: f64 = field(2)
            .parse()
            .map_err(|_| bad(&np, format!("row {}: bad lon {:?}", line + 2, field(2))))?;
        if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
            return Err(bad(
                &np,
                format!("row {}: position {lat},{lon} out of range", line + 2),
            ));
        }
        index.insert(field(0), nodes.len());
        nodes.push((field(0), LatLon { lat, lon }, field(3)));
    }
    let mut rdr = csv::Reader::from_path(&rp).map_err(|e| bad(&rp, e.to_string()))?;
    let mut rtt_ms: HashMap<(usize, usize), f64> = HashMap::new();
    for (line, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| bad(&rp, e.to_string()))?;
        let (Some(&a), Some(&b)) = (
            index.get(rec.get(0).unwrap_or("").trim()),
            index.get(rec.get(1).unwrap_or("").trim()),
        ) else {
            return Err(bad(&rp, format!("row {}: unknown node id", line + 2)));
        };
        let v: f64 = rec
            .get(2)
            .unwrap_or("")
            .trim()
            .parse()
            .map_err(|_| bad(&rp, format!("row {}: bad rtt_ms", line + 2)))?;
        if !(v.is_finite() && v >= 0.0) || a == b {
            return Err(bad(
                &rp,
                format!("row {}: rtt_ms {v} (or a node measuring itself)", line + 2),
            ));
        }
        let key = (a.min(b), a.max(b));
        let e = rtt_ms.entry(key).or_insert(v);
        *e = e.min(v);
    }
    Ok(RttSet { nodes, rtt_ms })
}

/// Result of [`fit_inflation`].
#[derive(Debug, Clone, Serialize)]
pub struct Fit {
    pub pairs_used: usize,
    pub pairs_faster_than_light: usize,
    pub ln_mu: f64,
    pub ln_sigma: f64,
    /// Standard deviation of the per-host part of `ln(r - 1)` (method of moments: the
    /// covariance of two pairs that share a host).
    pub ln_sigma_host: f64,
    /// Quantiles p10, p50, p90 of the inflation in the data and in the fitted model.
    pub data_p10_p50_p90: [f64; 3],
    pub model_p10_p50_p90: [f64; 3],
}

/// Fits `ln(r - 1) ~ N(mu, sigma)` to the path inflation `r` of every pair at least
/// [`FIT_MIN_KM`] apart (maximum likelihood: mean and standard deviation of `ln(r - 1)`;
/// pairs with `r <= 1`, faster than light, are counted and left out).
pub fn fit_inflation(set: &RttSet) -> Result<Fit> {
    let mut r = Vec::new();
    let mut pairs = Vec::new();
    let mut ftl = 0;
    for (&(a, b), &rtt) in &set.rtt_ms {
        let d = distance_km(set.nodes[a].1, set.nodes[b].1);
        if d < FIT_MIN_KM {
            continue;
        }
        let ratio = rtt * FIBRE_KM_PER_MS / (2.0 * d);
        if ratio <= 1.0 {
            ftl += 1;
        } else {
            r.push(ratio);
            pairs.push((a, b, (ratio - 1.0).ln()));
        }
    }
    if r.len() < 10 {
        return Err(LabError::Data {
            path: "rtts.csv".into(),
            detail: format!("only {} usable pairs", r.len()),
        });
    }
    r.sort_by(f64::total_cmp);
    let logs: Vec<f64> = r.iter().map(|x| (x - 1.0).ln()).collect();
    let mu = logs.iter().sum::<f64>() / logs.len() as f64;
    let sigma = (logs.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / logs.len() as f64).sqrt();
    // Per-host variance: for every host, the products of the residuals of its pairs taken
    // two at a time, averaged over all hosts (sum^2 - sum of squares = 2 x sum of products).
    let mut by_host: HashMap<usize, (f64, f64, f64)> = HashMap::new();
    for &(a, b, v) in &pairs {
        for h in [a, b] {
            let e = by_host.entry(h).or_insert((0.0, 0.0, 0.0));
            e.0 += v - mu;
            e.1 += (v - mu).powi(2);
            e.2 += 1.0;
        }
    }
    let (num, cnt) = by_host.values().fold((0.0, 0.0), |(n, c), (s, ss, m)| {
        (n + s * s - ss, c + m * (m - 1.0))
    });
    let var_host = if cnt > 0.0 { (num / cnt).max(0.0) } else { 0.0 };
    let q = |p: f64| r[((r.len() - 1) as f64 * p).round() as usize];
    // Standard normal quantiles for 0.1 and 0.9.
    let z = 1.281_551_565_5;
    Ok(Fit {
        pairs_used: r.len(),
        pairs_faster_than_light: ftl,
        ln_mu: mu,
        ln_sigma: sigma,
        ln_sigma_host: var_host.sqrt(),
        data_p10_p50_p90: [q(0.1), q(0.5), q(0.9)],
        model_p10_p50_p90: [
            1.0 + (mu - z * sigma).exp(),
            1.0 + mu.exp(),
            1.0 + (mu + z * sigma).exp(),
        ],
    })
}

/// The nodes of an RTT set as cities: named by their label (or id; made unique), with the
/// country and time zone of the nearest city of `reference`.
pub fn rtt_set_cities(set: &RttSet, reference: &[City]) -> Vec<City> {
    let mut seen = std::collections::HashSet::new();
    set.nodes
        .iter()
        .map(|(id, pos, label)| {
            let base = if label.is_empty() {
                id.clone()
            } else {
                label.clone()
            };
            let name = if seen.insert(base.clone()) {
                base
            } else {
                format!("{base} #{id}")
            };
            seen.insert(name.clone());
            let near = reference
                .iter()
                .min_by(|a, b| distance_km(a.pos, *pos).total_cmp(&distance_km(b.pos, *pos)));
            City {
                name,
                country: near.map_or_else(String::new, |c| c.country.clone()),
                pos: *pos,
                tz: near.map_or_else(|| "Etc/UTC".into(), |c| c.tz.clone()),
                population: 0,
            }
        })
        .collect()
}

/// One-way delay matrix replaying a measured RTT set for the nodes `chosen` (indices into
/// `set.nodes`): `min RTT / 2` where the pair was measured, else the model (seeded).
pub fn replay(set: &RttSet, chosen: &[usize], model: &DelayModel, seed: u64) -> Vec<f64> {
    let positions: Vec<LatLon> = chosen.iter().map(|&i| set.nodes[i].1).collect();
    let (_, mut d) = model.matrix(&positions, seed);
    let n = chosen.len();
    for i in 0..n {
        for j in 0..n {
            let (a, b) = (chosen[i].min(chosen[j]), chosen[i].max(chosen[j]));
            if let Some(rtt) = set.rtt_ms.get(&(a, b)) {
                d[i * n + j] = rtt / 2.0;
            }
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_london_paris() {
        let london = LatLon {
            lat: 51.5074,
            lon: -0.1278,
        };
        let paris = LatLon {
            lat: 48.8566,
            lon: 2.3522,
        };
        let d = distance_km(london, paris);
        assert!((d - 343.5).abs() < 2.0, "{d}");
        assert_eq!(distance_km(london, london), 0.0);
        // Across the antimeridian: Suva to Honolulu is about 5,070 km, not the long way.
        let suva = LatLon {
            lat: -18.1248,
            lon: 178.4501,
        };
        let hnl = LatLon {
            lat: 21.3069,
            lon: -157.8583,
        };
        assert!((distance_km(suva, hnl) - 5070.0).abs() < 100.0);
    }

    #[test]
    fn builtin_cities_are_valid() {
        let c = builtin_cities();
        assert!(c.len() >= 60, "{}", c.len());
        for city in &c {
            assert!(
                (-90.0..=90.0).contains(&city.pos.lat) && (-180.0..=180.0).contains(&city.pos.lon),
                "{city:?}"
            );
            assert!(city.tz.contains('/'), "{city:?}");
            assert_eq!(city.country.len(), 2, "{city:?}");
        }
    }

    #[test]
    fn model_is_seeded_symmetric_and_never_faster_than_light() {
        let cities = builtin_cities();
        let pos: Vec<LatLon> = cities.iter().map(|c| c.pos).collect();
        let m = DelayModel::default();
        let (acc, d) = m.matrix(&pos, 7);
        assert_eq!(m.matrix(&pos, 7).1, d, "same seed, same matrix");
        assert_ne!(m.matrix(&pos, 8).1, d);
        let n = pos.len();
        for i in 0..n {
            assert!(acc[i] >= ACCESS_MS.0 && acc[i] <= ACCESS_MS.1);
            for j in 0..n {
                assert_eq!(d[i * n + j], d[j * n + i]);
                if i != j {
                    assert!(d[i * n + j] > distance_km(pos[i], pos[j]) / FIBRE_KM_PER_MS);
                }
            }
        }
    }

    #[test]
    fn drawn_inflation_matches_the_fitted_quantiles() {
        let m = DelayModel::default();
        let mut rng = StdRng::seed_from_u64(1);
        let mut v: Vec<f64> = (0..20_000).map(|_| m.draw_inflation(&mut rng)).collect();
        v.sort_by(f64::total_cmp);
        let med = v[v.len() / 2];
        assert!((med - 2.07).abs() < 0.05, "median inflation {med}");
        assert!(v[0] > 1.0);
    }

    #[test]
    fn matrix_reproduces_the_fitted_spread_and_host_structure() {
        // 150 hosts on a ring of random positions; refit the model on its own matrix.
        let mut rng = StdRng::seed_from_u64(5);
        let nodes: Vec<(String, LatLon, String)> = (0..150)
            .map(|i| {
                let pos = LatLon {
                    lat: rng.random_range(-60.0..60.0),
                    lon: rng.random_range(-180.0..180.0),
                };
                (i.to_string(), pos, String::new())
            })
            .collect();
        let positions: Vec<LatLon> = nodes.iter().map(|n| n.1).collect();
        let m = DelayModel {
            access_ms: (0.0, 0.0),
            ..DelayModel::default()
        };
        let (_, d) = m.matrix(&positions, 3);
        let mut rtt_ms = HashMap::new();
        for i in 0..150 {
            for j in (i + 1)..150 {
                rtt_ms.insert((i, j), 2.0 * d[i * 150 + j]);
            }
        }
        let fit = fit_inflation(&RttSet { nodes, rtt_ms }).unwrap();
        assert!((fit.ln_mu - INFLATION_LN_MU).abs() < 0.1, "{fit:?}");
        assert!((fit.ln_sigma - INFLATION_LN_SIGMA).abs() < 0.05, "{fit:?}");
        assert!(
            (fit.ln_sigma_host - INFLATION_LN_SIGMA_HOST).abs() < 0.07,
            "{fit:?}"
        );
    }

    /// Refits on the real data when `../shared` is there, and checks the constants above.
    #[test]
    fn constants_match_a_refit_on_wondernetwork() {
        let Some(dir) = geoloc_testenv::shared_data("wondernetwork-train") else {
            geoloc_testenv::skip(
                "constants_match_a_refit_on_wondernetwork",
                "../shared/data/wondernetwork-train not found",
            );
            return;
        };
        let fit = fit_inflation(&read_rtt_set(&dir).unwrap()).unwrap();
        assert!((fit.ln_mu - INFLATION_LN_MU).abs() < 0.005, "{fit:?}");
        assert!((fit.ln_sigma - INFLATION_LN_SIGMA).abs() < 0.005, "{fit:?}");
        assert!(
            (fit.ln_sigma_host - INFLATION_LN_SIGMA_HOST).abs() < 0.005,
            "{fit:?}"
        );
    }

    #[test]
    fn replay_uses_measured_pairs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("nodes.csv"),
            "id,lat,lon,label,ip\n1,51.5,-0.12,London,\n2,48.85,2.35,Paris,\n3,40.7,-74.0,NYC,\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("rtts.csv"),
            "src,dst,rtt_ms\n1,2,9.0\n2,1,8.0\n",
        )
        .unwrap();
        let set = read_rtt_set(dir.path()).unwrap();
        let d = replay(&set, &[0, 1, 2], &DelayModel::default(), 1);
        assert_eq!(d[1], 4.0, "min of both directions, halved");
        assert_eq!(d[3], 4.0);
        assert!(
            d[2] > 5570.0 / FIBRE_KM_PER_MS,
            "modelled pair London-NYC {}",
            d[2]
        );
        std::fs::write(dir.path().join("rtts.csv"), "src,dst,rtt_ms\n1,9,9.0\n").unwrap();
        assert!(read_rtt_set(dir.path()).is_err());
    }
}
