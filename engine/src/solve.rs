//! The whole pipeline for one target: measurements → constraints → consistency → region →
//! estimate → enrichment → GeoIP comparison.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::anycast::{self, Instance};
use crate::confidence::ConfidenceModel;
use crate::consistency;
use crate::delay::{sound_distance_km, Calibration};
use crate::enrich::{enricher, round1, Place, Timezone, TzShare};
use crate::error::{EngineError, Result};
use crate::maxmind::{self, Cast, GeoIpRecord, MaxmindComparison};
use crate::region::{self, resolution_for_radius, Constraint, Prepared, Region};
use crate::sphere::{distance_km, LatLon};

/// What an RTT was measured to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// ICMP echo or TCP handshake with the target itself.
    #[default]
    Echo,
    /// The last router that answered a traceroute toward a silent target; the target is
    /// assumed within [`SolveOptions::last_hop_slack_km`] of it.
    LastHop,
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "" | "echo" => Ok(Kind::Echo),
            "last-hop" => Ok(Kind::LastHop),
            other => Err(format!(
                "unknown kind {other:?} (expected echo or last-hop)"
            )),
        }
    }
}

/// One RTT from a landmark at a known position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub landmark: String,
    pub pos: LatLon,
    /// Minimum round-trip time observed, ms.
    pub rtt_ms: f64,
    pub kind: Kind,
}

/// How constraints are derived and the estimate chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// The position of the landmark with the lowest RTT.
    ShortestPing,
    /// Constraint-Based Geolocation with the sound bound (2/3 c): centroid of the discs'
    /// intersection.
    Cbg,
    /// CBG with each landmark's calibrated bestline, within the sound bound; bestline discs
    /// that contradict the rest fall back to their sound bound.
    #[default]
    Bestline,
}

impl Method {
    /// Accepted names.
    pub const NAMES: &'static [&'static str] = &["bestline", "cbg", "shortest-ping"];
    /// The name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Method::ShortestPing => "shortest-ping",
            Method::Cbg => "cbg",
            Method::Bestline => "bestline",
        }
    }
}

impl FromStr for Method {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "shortest-ping" => Ok(Method::ShortestPing),
            "cbg" => Ok(Method::Cbg),
            "bestline" | "default" => Ok(Method::Bestline),
            other => Err(EngineError::UnknownMethod(other.to_string())),
        }
    }
}

/// Default share of bestline discs allowed to miss the region. Measured on the WonderNetwork
/// mesh (leave-one-out, `geoloc eval --bestline-tolerance T`, 148 targets): T = 0 → truth
/// inside the region for 50.7% of targets, median 291.9 km; 0.05 → 93.2%, 289.7 km;
/// 0.1 → 96.6%, 301.4 km; 0.2 → 96.6%, 313.5 km. README's table holds the default's
/// figures; `engine/tests/figures.rs` guards them.
pub const DEFAULT_BESTLINE_TOLERANCE: f64 = 0.1;

/// Options of [`solve`].
#[derive(Debug, Clone)]
pub struct SolveOptions {
    pub method: Method,
    /// Per-landmark delay models; landmarks without one use the sound bound.
    pub calibration: Option<Calibration>,
    /// The target's GeoIP record, when a database was consulted and had one.
    pub geoip: Option<GeoIpRecord>,
    /// A GeoIP database was consulted: with `geoip: None` the verdict is `no-data`.
    pub geoip_checked: bool,
    /// How far a silent target may be from its last responsive router, km.
    pub last_hop_slack_km: f64,
    /// Added to every radius for the imprecision of declared landmark positions, km.
    pub position_slack_km: f64,
    /// Share of bestline discs that may miss the region (0–1): each is a fit under the
    /// landmark's calibration RTTs, not a bound, and a few are too tight for any target.
    pub bestline_tolerance: f64,
    /// Include the region's outline (GeoJSON) in the answer.
    pub region_geometry: bool,
    /// Compute every time zone's share of the region (`timezones`); off, it is empty.
    pub timezone_shares: bool,
    /// Instant for UTC offsets, seconds since 1970 UTC (default: now).
    pub at_unix_s: Option<i64>,
    /// Turns the region's size into radii that hold the truth with a stated probability
    /// (`radius_50_km`, `radius_90_km`); default: fitted on the WonderNetwork mesh.
    pub confidence: ConfidenceModel,
}

impl SolveOptions {
    /// Checks every option's range; the error names the option.
    pub fn validate(&self) -> Result<()> {
        check_bestline_tolerance(self.bestline_tolerance)?;
        for (name, km) in [
            ("last_hop_slack_km", self.last_hop_slack_km),
            ("position_slack_km", self.position_slack_km),
        ] {
            if !(km.is_finite() && km >= 0.0) {
                return Err(EngineError::InvalidOption {
                    name,
                    reason: format!("{km} km is not a finite distance >= 0"),
                });
            }
        }
        Ok(())
    }
}

/// `tolerance` if it is a share of the calibrated landmarks (0 to 1), else the error.
pub fn check_bestline_tolerance(tolerance: f64) -> Result<f64> {
    if (0.0..=1.0).contains(&tolerance) {
        Ok(tolerance)
    } else {
        Err(EngineError::InvalidOption {
            name: "bestline_tolerance",
            reason: format!("{tolerance} is not a share between 0 and 1"),
        })
    }
}

impl Default for SolveOptions {
    fn default() -> Self {
        Self {
            method: Method::default(),
            calibration: None,
            geoip: None,
            geoip_checked: false,
            last_hop_slack_km: 50.0,
            position_slack_km: 5.0,
            bestline_tolerance: DEFAULT_BESTLINE_TOLERANCE,
            region_geometry: true,
            timezone_shares: true,
            at_unix_s: None,
            confidence: ConfidenceModel::default(),
        }
    }
}

/// Landmarks whose agreement alone makes an address look anycast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Collusion {
    /// The small group, by landmark name.
    pub landmarks: Vec<String>,
    /// "anycast or colluding probes: A, B, C. ..." in words.
    pub reason: String,
}

/// A landmark left out, or loosened, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dropped {
    pub landmark: String,
    pub reason: String,
}

/// The engine's answer for one target. Its JSON form is the output of `geoloc solve`
/// (schema: `engine/SCHEMA.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Solution {
    pub method: Method,
    /// Best single position: the region's centroid on the sphere.
    pub estimate: LatLon,
    /// A circle of this radius around `estimate` holds the whole region, km.
    pub radius_km: f64,
    /// Area of the region, km².
    pub region_km2: f64,
    /// A circle of this radius around `estimate` holds the truth with probability 50%,
    /// km (calibrated by leave-one-out on measured data, see [`crate::confidence`]);
    /// `None` only in answers from a server that predates it.
    #[serde(default)]
    pub radius_50_km: Option<f64>,
    /// The same with probability 90%, km.
    #[serde(default)]
    pub radius_90_km: Option<f64>,
    pub timezone: Timezone,
    /// Every time zone overlapping the region with its share of the area.
    pub timezones: Vec<TzShare>,
    pub place: Place,
    pub anycast: bool,
    /// Instances of an anycast address (empty for unicast).
    pub instances: Vec<Instance>,
    /// A split into disjoint groups that rests on a few landmarks (leaving out
    /// [`consistency::MAX_COLLUDERS`] or fewer of them removes it): either the address is
    /// anycast or those probes collude. Then `anycast` is false and they are in `dropped`.
    /// Absent (omitted from JSON) otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collusion: Option<Collusion>,
    /// Landmarks left out of the region, and why.
    pub dropped: Vec<Dropped>,
    /// Landmarks whose calibrated bound contradicted the others and was replaced by the
    /// sound bound.
    pub loosened: Vec<Dropped>,
    pub maxmind: Option<MaxmindComparison>,
    /// Landmarks given (after merging repeats of the same landmark).
    pub landmarks: usize,
    /// Landmarks whose constraints shaped the region.
    pub used: usize,
    /// Lowest RTT measured, ms, and the landmark that measured it.
    pub min_rtt_ms: f64,
    pub nearest_landmark: String,
    /// The region's outline (GeoJSON MultiPolygon geometry), or null.
    pub region: serde_json::Value,
    /// The constraints whose intersection is the region (exact containment test).
    #[serde(skip)]
    pub region_constraints: Vec<Constraint>,
    /// Total weight of `region_constraints` a point of the region may violate.
    #[serde(skip)]
    pub region_tolerance: u64,
}

impl Solution {
    /// True when `p` satisfies every constraint of the region (exact, not discretised).
    /// Stops at the first constraint that puts the missed weight over the tolerance (the
    /// phased selection asks this of every candidate probe, every round).
    pub fn region_contains(&self, p: LatLon) -> bool {
        let pv = p.to_vec();
        let mut missed = 0u64;
        for c in &self.region_constraints {
            if !c.contains_vec(pv) {
                missed += c.weight as u64;
                if missed > self.region_tolerance {
                    return false;
                }
            }
        }
        true
    }
}

fn validate(ms: &[Measurement]) -> Result<()> {
    if ms.is_empty() {
        return Err(EngineError::NoMeasurements);
    }
    for (index, m) in ms.iter().enumerate() {
        let bad = |reason: String| EngineError::InvalidMeasurement {
            index,
            landmark: m.landmark.clone(),
            reason,
        };
        if !m.rtt_ms.is_finite() || m.rtt_ms < 0.0 {
            return Err(bad(format!(
                "RTT {} ms is not a finite non-negative number",
                m.rtt_ms
            )));
        }
        LatLon::checked(m.pos.lat, m.pos.lon).map_err(bad)?;
    }
    Ok(())
}

/// The lowest RTT per (landmark, kind).
fn merge(ms: &[Measurement]) -> Vec<Measurement> {
    let mut out: Vec<Measurement> = Vec::with_capacity(ms.len());
    let mut index: std::collections::HashMap<(&str, Kind), usize> =
        std::collections::HashMap::new();
    for m in ms {
        match index.get(&(m.landmark.as_str(), m.kind)) {
            Some(&i) => {
                if m.rtt_ms < out[i].rtt_ms {
                    out[i] = m.clone();
                }
            }
            None => {
                index.insert((m.landmark.as_str(), m.kind), out.len());
                out.push(m.clone());
            }
        }
    }
    out
}

fn slack(m: &Measurement, opts: &SolveOptions) -> f64 {
    opts.position_slack_km
        + if m.kind == Kind::LastHop {
            opts.last_hop_slack_km
        } else {
            0.0
        }
}

/// Locates one target from its measurements.
///
/// # Errors
/// [`EngineError::NoMeasurements`] for an empty slice; [`EngineError::InvalidMeasurement`]
/// naming the first measurement with a negative or non-finite RTT or an impossible position.
pub fn solve(measurements: &[Measurement], opts: &SolveOptions) -> Result<Solution> {
    opts.validate()?;
    validate(measurements)?;
    let ms = merge(measurements);
    let n = ms.len();
    let sound: Vec<Constraint> = ms
        .iter()
        .map(|m| Constraint::disc(m.pos, sound_distance_km(m.rtt_ms) + slack(m, opts)))
        .collect();
    let min_sound = sound.iter().map(|c| c.max_km).fold(f64::INFINITY, f64::min);
    let consistency_res = resolution_for_radius(min_sound).min(h3o::Resolution::Five);
    let mut analysis = consistency::analyze(&sound, consistency_res);
    // A split that a few probes could fake is not called anycast on that evidence alone.
    let suspects: Vec<usize> = match consistency::small_split(&sound, consistency_res, &analysis) {
        Some(g) => {
            if g == 0 {
                analysis.groups.swap(0, 1);
            }
            analysis.groups[1].members.clone()
        }
        None => vec![],
    };
    let anycast = analysis.anycast && suspects.is_empty();
    let keep = &analysis.groups[0].members;

    let mut dropped: Vec<Dropped> = analysis
        .outliers
        .iter()
        .map(|&(i, gap)| match analysis.ties.iter().find(|t| t.0 == i) {
            Some((_, against)) => Dropped {
                landmark: ms[i].landmark.clone(),
                reason: tie_reason(&ms, &sound, i, against),
            },
            None => Dropped {
            landmark: ms[i].landmark.clone(),
            reason: format!(
                "its {:.1} ms RTT puts the target within {:.0} km of its declared position ({:.4}, {:.4}), \
                 which misses by {:.0} km the region agreed on by {} other landmarks: its declared position is probably wrong",
                ms[i].rtt_ms,
                sound[i].max_km,
                ms[i].pos.lat,
                ms[i].pos.lon,
                gap,
                keep.len()
            ),
        }})
        .collect();
    let collusion = (!suspects.is_empty()).then(|| {
        let names: Vec<&str> = suspects.iter().map(|&i| ms[i].landmark.as_str()).collect();
        Collusion {
            landmarks: names.iter().map(|s| s.to_string()).collect(),
            reason: format!(
                "anycast or colluding probes: {}. Their RTTs agree with each other but not with \
                 the {} other landmarks, and leaving {} or fewer of them out removes the split, \
                 so this is not enough to call the address anycast; they were left out of the region",
                names.join(", "),
                keep.len(),
                consistency::MAX_COLLUDERS
            ),
        }
    });
    if let Some(c) = &collusion {
        let p = analysis.groups[0].point;
        for i in (0..n).filter(|i| !keep.contains(i)) {
            let reason = if suspects.contains(&i) {
                c.reason.clone()
            } else {
                format!(
                    "its {:.1} ms RTT puts the target within {:.0} km of its declared position, \
                     which misses by {:.0} km the region agreed on by {} other landmarks",
                    ms[i].rtt_ms,
                    sound[i].max_km,
                    (distance_km(sound[i].center, p) - sound[i].max_km).max(0.0),
                    keep.len()
                )
            };
            dropped.push(Dropped {
                landmark: ms[i].landmark.clone(),
                reason,
            });
        }
    }
    dropped.sort_by(|a, b| a.landmark.cmp(&b.landmark));

    // Constraints of the method, for the kept landmarks.
    let sound_keep: Vec<Constraint> = keep.iter().map(|&i| sound[i]).collect();
    let mut loosened = Vec::new();
    let mut tolerant_region: Option<(Region, u64)> = None;
    let region_constraints: Vec<Constraint> = match opts.method {
        Method::ShortestPing | Method::Cbg => sound_keep.clone(),
        Method::Bestline => {
            let cal: Vec<Constraint> = keep
                .iter()
                .map(|&i| {
                    let m = &ms[i];
                    let r = opts
                        .calibration
                        .as_ref()
                        .and_then(|c| c.line(&m.landmark))
                        .map_or(sound[i].max_km, |l| {
                            l.distance_km(m.rtt_ms) + slack(m, opts)
                        });
                    Constraint::disc(m.pos, r.min(sound[i].max_km))
                })
                .collect();
            let res =
                resolution_for_radius(cal.iter().map(|c| c.max_km).fold(f64::INFINITY, f64::min));
            // Up to `tolerance` bestline discs may miss the region (each is a fit, not a
            // bound); the sound discs stay hard.
            let tolerance = (opts.bestline_tolerance * cal.len() as f64).floor() as u32;
            // The bestline discs (weight 1) followed by the sound discs weighing `hard`.
            let with_sound = |hard: u32| -> Vec<Constraint> {
                cal.iter()
                    .copied()
                    .chain(sound_keep.iter().map(|c| Constraint { weight: hard, ..*c }))
                    .collect()
            };
            let all = with_sound(tolerance + 1);
            let prepared = Prepared::new(&all, res);
            let idx: Vec<usize> = (0..all.len()).collect();
            let tolerant = region::intersect_tolerant(&prepared, &idx, tolerance as u64);
            if !tolerant.is_empty() {
                tolerant_region = Some((tolerant, tolerance as u64));
                all
            } else {
                // Heaviest consistent set of bestline discs, the sound discs being hard.
                let all = with_sound(cal.len() as u32 + 1);
                let best = region::heaviest_point(&Prepared::new(&all, res), &idx);
                let ok: Vec<bool> = (0..cal.len())
                    .map(|j| best.as_ref().is_some_and(|b| b.satisfied.contains(&j)))
                    .collect();
                let mut out = Vec::with_capacity(cal.len());
                for (j, c) in cal.iter().enumerate() {
                    if ok[j] {
                        out.push(*c);
                    } else {
                        let i = keep[j];
                        loosened.push(Dropped {
                            landmark: ms[i].landmark.clone(),
                            reason: format!(
                                "its calibrated bound ({:.0} km for {:.1} ms) contradicts the other landmarks; its sound bound ({:.0} km) is used",
                                c.max_km, ms[i].rtt_ms, sound[i].max_km
                            ),
                        });
                        out.push(sound[i]);
                    }
                }
                out
            }
        }
    };
    let res = resolution_for_radius(
        region_constraints
            .iter()
            .map(|c| c.max_km)
            .fold(f64::INFINITY, f64::min),
    );
    let (mut region, region_tolerance) = match tolerant_region {
        Some(r) => r,
        None => (region::intersect(&region_constraints, res), 0),
    };
    let fallback_point = analysis.groups[0].point;
    if region.is_empty() {
        // Thinner than a cell: keep the cell of the consistent point found.
        let ll = h3o::LatLng::new(fallback_point.lat, fallback_point.lon).expect("valid point");
        region = Region::new(vec![ll.to_cell(res)], Some(res));
    }

    let nearest = (0..n)
        .filter(|i| keep.contains(i))
        .min_by(|&a, &b| ms[a].rtt_ms.total_cmp(&ms[b].rtt_ms))
        .unwrap_or(0);
    let (area_km2, centroid) = region.area_and_centroid();
    let estimate = match opts.method {
        Method::ShortestPing => ms[nearest].pos,
        _ => centroid.unwrap_or(fallback_point),
    };
    let radius_km = round1(region.radius_from_km(estimate));
    let region_km2 = area_km2.round();
    let radii = opts.confidence.radii(region_km2);

    let e = enricher();
    let at = opts.at_unix_s.unwrap_or_else(now_unix_s);
    let timezone = e.timezone(estimate, at);
    let timezones = if opts.timezone_shares {
        e.timezone_shares(&region.samples(96.0))
    } else {
        vec![]
    };
    let place = e.place(estimate);

    let instances = if anycast {
        let names: Vec<&str> = ms.iter().map(|m| m.landmark.as_str()).collect();
        let outlier: Vec<usize> = analysis.outliers.iter().map(|o| o.0).collect();
        let (discs, names): (Vec<Constraint>, Vec<&str>) = (0..n)
            .filter(|i| !outlier.contains(i))
            .map(|i| (sound[i], names[i]))
            .unzip();
        anycast::enumerate(&discs, &names)
    } else {
        vec![]
    };

    let maxmind = if let Some(rec) = &opts.geoip {
        let names: Vec<&str> = keep.iter().map(|&i| ms[i].landmark.as_str()).collect();
        let suspect_discs: Vec<Constraint> = suspects.iter().map(|&i| sound[i]).collect();
        let cast = if anycast {
            Cast::Anycast(&instances)
        } else if !suspects.is_empty() {
            Cast::Suspect(&suspect_discs)
        } else {
            Cast::Unicast
        };
        Some(maxmind::compare(rec, estimate, &sound_keep, &names, cast))
    } else if opts.geoip_checked {
        Some(MaxmindComparison::no_data())
    } else {
        None
    };

    let region_json = if opts.region_geometry {
        region.geojson(3000.0)
    } else {
        serde_json::Value::Null
    };
    Ok(Solution {
        method: opts.method,
        estimate: LatLon::new(round5(estimate.lat), round5(estimate.lon)),
        radius_km,
        region_km2,
        radius_50_km: Some(radii.radius_50_km),
        radius_90_km: Some(radii.radius_90_km),
        timezone,
        timezones,
        place,
        anycast,
        instances,
        collusion,
        dropped,
        loosened,
        maxmind,
        landmarks: n,
        used: keep.len(),
        min_rtt_ms: ms[nearest].rtt_ms,
        nearest_landmark: ms[nearest].landmark.clone(),
        region: region_json,
        region_constraints,
        region_tolerance,
    })
}

/// Why landmark `i` was left out when nothing breaks its tie with `against`.
fn tie_reason(ms: &[Measurement], sound: &[Constraint], i: usize, against: &[usize]) -> String {
    let names: Vec<String> = against
        .iter()
        .map(|&j| {
            format!(
                "{} ({:.1} ms, within {:.0} km)",
                ms[j].landmark, ms[j].rtt_ms, sound[j].max_km
            )
        })
        .collect();
    format!(
        "its {:.1} ms RTT puts the target within {:.0} km of its declared position ({:.4}, {:.4}), \
         which contradicts {} and no other landmark breaks the tie: either one of these \
         landmarks' declared position is wrong, or the address answers from several places \
         (anycast); this one was left out only to draw a region, it is not known to be wrong",
        ms[i].rtt_ms,
        sound[i].max_km,
        ms[i].pos.lat,
        ms[i].pos.lon,
        if names.is_empty() {
            "the other landmarks".to_string()
        } else {
            names.join(", ")
        }
    )
}

fn round5(x: f64) -> f64 {
    (x * 1e5).round() / 1e5
}

fn now_unix_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_out_of_range_are_named() {
        let m = [Measurement {
            landmark: "a".into(),
            pos: LatLon { lat: 1.0, lon: 2.0 },
            rtt_ms: 3.0,
            kind: Kind::Echo,
        }];
        let bad = SolveOptions {
            bestline_tolerance: -0.1,
            ..SolveOptions::default()
        };
        let e = solve(&m, &bad).unwrap_err().to_string();
        assert!(
            e.contains("bestline_tolerance") && e.contains("-0.1"),
            "{e}"
        );
        let bad = SolveOptions {
            last_hop_slack_km: f64::NAN,
            ..SolveOptions::default()
        };
        let e = solve(&m, &bad).unwrap_err().to_string();
        assert!(e.contains("last_hop_slack_km"), "{e}");
        assert!(solve(&m, &SolveOptions::default()).is_ok());
    }

    use crate::delay::{Bestline, FIBRE_KM_PER_MS_RTT};
    use crate::sphere::{destination, distance_km};
    use std::collections::HashMap;

    const TRUTH: LatLon = LatLon::new(47.0, 8.0);

    /// `n` landmarks around [`TRUTH`] with calibrated bestlines: each RTT's sound bound is
    /// 1.6 x the true distance, its bestline 1.1 x (the truth is inside both). The `bad`
    /// ones (spread around the circle) get a bestline too tight: half the true distance, so
    /// their bestline disc misses the truth and every other disc's region by hundreds of km.
    fn calibrated(n: usize, bad: &[usize]) -> (Vec<Measurement>, Calibration) {
        calibrated_with(n, bad, 1.1)
    }

    /// Like [`calibrated`] with the good bestlines at `good` x the true distance.
    fn calibrated_with(n: usize, bad: &[usize], good: f64) -> (Vec<Measurement>, Calibration) {
        let mut ms = Vec::new();
        let mut lines = HashMap::new();
        for i in 0..n {
            let d = 400.0 + 60.0 * (i % 7) as f64;
            let pos = destination(TRUTH, 360.0 * i as f64 / n as f64, d);
            let d = distance_km(TRUTH, pos);
            let rtt_ms = 1.6 * d / FIBRE_KM_PER_MS_RTT;
            let bound = if bad.contains(&i) { 0.5 * d } else { good * d };
            let name = format!("l{i:02}");
            lines.insert(
                name.clone(),
                Bestline {
                    slope_ms_per_km: rtt_ms / bound,
                    intercept_ms: 0.0,
                },
            );
            ms.push(Measurement {
                landmark: name,
                pos,
                rtt_ms,
                kind: Kind::Echo,
            });
        }
        (ms, Calibration::from_lines(lines))
    }

    fn solve_bestline(ms: &[Measurement], cal: Calibration, tolerance: f64) -> Solution {
        solve(
            ms,
            &SolveOptions {
                calibration: Some(cal),
                bestline_tolerance: tolerance,
                region_geometry: false,
                timezone_shares: false,
                at_unix_s: Some(0),
                ..SolveOptions::default()
            },
        )
        .unwrap()
    }

    fn names(d: &[Dropped]) -> Vec<&str> {
        d.iter().map(|d| d.landmark.as_str()).collect()
    }

    #[test]
    fn a_tie_between_two_landmarks_is_reported_not_blamed() {
        let m = |name: &str, lat: f64, lon: f64| Measurement {
            landmark: name.into(),
            pos: LatLon::new(lat, lon),
            rtt_ms: 3.0,
            kind: Kind::Echo,
        };
        let s = solve(
            &[m("paris", 48.86, 2.35), m("madrid", 40.42, -3.70)],
            &SolveOptions {
                region_geometry: false,
                timezone_shares: false,
                at_unix_s: Some(0),
                ..SolveOptions::default()
            },
        )
        .unwrap();
        assert_eq!(s.dropped.len(), 1);
        let r = &s.dropped[0].reason;
        assert!(r.contains("no other landmark breaks the tie"), "{r}");
        assert!(
            r.contains("anycast") && r.contains("not known to be wrong"),
            "{r}"
        );
        let other = if s.dropped[0].landmark == "paris" {
            "madrid"
        } else {
            "paris"
        };
        assert!(r.contains(other), "{r}");
        assert!(!r.contains("probably wrong"), "{r}");
    }

    #[test]
    fn the_default_tolerance_lets_one_landmark_in_ten_miss() {
        assert_eq!(DEFAULT_BESTLINE_TOLERANCE, 0.1);
        // 20 landmarks, 2 of them with a bestline disc that misses: 10%, tolerated.
        let (ms, cal) = calibrated(20, &[3, 13]);
        let s = solve_bestline(&ms, cal.clone(), DEFAULT_BESTLINE_TOLERANCE);
        assert!(s.loosened.is_empty(), "{:?}", names(&s.loosened));
        assert_eq!(s.region_tolerance, 2);
        assert!(s.region_contains(TRUTH));
        assert!(
            distance_km(s.estimate, TRUTH) < 100.0,
            "estimate {:?}",
            s.estimate
        );
        // The tolerance is what kept them: without it both are loosened.
        let s0 = solve_bestline(&ms, cal, 0.0);
        assert_eq!(names(&s0.loosened), ["l03", "l13"]);
        assert_eq!(s0.region_tolerance, 0);
        assert!(s0.region_contains(TRUTH));
    }

    #[test]
    fn region_membership_is_the_missed_weight_within_the_tolerance() {
        // The early exit of region_contains must agree with its definition: the weight of
        // the constraints a point misses, at most the tolerance (here 2, so a point missing
        // one weight-2 constraint is in, and one missing it and a weight-1 one is out).
        let (ms, cal) = calibrated(20, &[]);
        let mut s = solve_bestline(&ms, cal, DEFAULT_BESTLINE_TOLERANCE);
        assert_eq!(s.region_tolerance, 2);
        s.region_constraints[5].weight = 2;
        let (mut inside, mut outside, mut partly) = (0, 0, 0);
        // Rings around the truth, out to where every disc is missed.
        for i in 0..80 {
            for j in 0..36 {
                let p = destination(TRUTH, 10.0 * j as f64, 25.0 * i as f64);
                let missed: u64 = s
                    .region_constraints
                    .iter()
                    .filter(|c| !c.contains(p))
                    .map(|c| c.weight as u64)
                    .sum();
                assert_eq!(s.region_contains(p), missed <= 2, "{p:?} misses {missed}");
                match missed {
                    0 => inside += 1,
                    1 | 2 => partly += 1,
                    _ => outside += 1,
                }
            }
        }
        // Every case was met, the tolerated misses included.
        assert!(
            inside > 0 && partly > 0 && outside > 0,
            "{inside} {partly} {outside}"
        );
    }

    #[test]
    fn sound_discs_stay_hard_under_the_tolerance() {
        // 20 loose bestlines (1.5 x the distance) and one uncalibrated landmark at the
        // truth answering in 1 ms: its sound disc (105 km) must bound the region, although
        // a point outside it misses only 2 discs (its bestline stand-in and its sound disc),
        // as many as the tolerance allows bestline discs to miss.
        let (mut ms, cal) = calibrated_with(20, &[], 1.5);
        ms.push(Measurement {
            landmark: "near".into(),
            pos: TRUTH,
            rtt_ms: 1.0,
            kind: Kind::Echo,
        });
        let s = solve_bestline(&ms, cal, DEFAULT_BESTLINE_TOLERANCE);
        assert!(s.loosened.is_empty());
        assert!(s.region_contains(TRUTH));
        let outside = destination(TRUTH, 45.0, 150.0);
        assert!(ms[..20].iter().all(|m| {
            let line = s
                .region_constraints
                .iter()
                .find(|c| c.center == m.pos)
                .unwrap();
            line.contains(outside)
        }));
        assert!(!s.region_contains(outside), "150 km from a 1 ms landmark");
        assert!(s.radius_km < 140.0, "radius {} km", s.radius_km);
    }

    #[test]
    fn more_misses_than_tolerated_are_loosened_to_their_sound_bound() {
        // 3 of 20 (15%) miss: more than 10%; the region falls back to the heaviest
        // consistent set of bestline discs and the 3 use their sound bound, named.
        let (ms, cal) = calibrated(20, &[0, 7, 14]);
        let s = solve_bestline(&ms, cal.clone(), DEFAULT_BESTLINE_TOLERANCE);
        assert_eq!(names(&s.loosened), ["l00", "l07", "l14"]);
        for d in &s.loosened {
            assert!(d.reason.contains("sound bound"), "{}", d.reason);
        }
        assert_eq!(s.region_tolerance, 0);
        assert!(
            s.region_contains(TRUTH),
            "the loosened discs hold the truth"
        );
        assert!(
            distance_km(s.estimate, TRUTH) < 100.0,
            "estimate {:?}",
            s.estimate
        );
        // Each loosened landmark contributes its sound disc, the others their bestline.
        for (j, c) in s.region_constraints.iter().enumerate() {
            let m = &ms[j];
            let sound = sound_distance_km(m.rtt_ms) + 5.0;
            let line = cal.line(&m.landmark).unwrap().distance_km(m.rtt_ms) + 5.0;
            let want = if [0, 7, 14].contains(&j) { sound } else { line };
            assert!(
                (c.max_km - want).abs() < 1e-6,
                "{j}: {} vs {want}",
                c.max_km
            );
        }
        // With a tolerance of 15% nothing is loosened.
        let s = solve_bestline(&ms, cal, 0.15);
        assert!(s.loosened.is_empty(), "{:?}", names(&s.loosened));
        assert_eq!(s.region_tolerance, 3);
    }
}
