//! Delay → distance: how far a target can be from a landmark given a round-trip time.
//!
//! Two models:
//! - the **sound bound**: nothing travels faster than light in fibre (about 2/3 c), so a
//!   round trip of `t` ms puts the target at most `t ×` [`FIBRE_KM_PER_MS_RTT`] km away;
//! - the per-landmark **bestline** of Constraint-Based Geolocation (Gueye et al., IEEE/ACM
//!   ToN 2006): a line `rtt = m·d + b` fitted under all of a landmark's RTTs to other
//!   landmarks and above the sound baseline, read backwards: `d ≤ (rtt − b) / m`. It is
//!   tighter than the sound bound but not guaranteed.
//!
//! # Units
//! RTTs in milliseconds, distances in kilometres.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::sphere::{distance_km, LatLon};

/// Speed of light in vacuum, km per ms.
pub const C_KM_PER_MS: f64 = 299.792_458;

/// Distance a signal covers in fibre (2/3 c) per millisecond of **round trip**: half of
/// 2/3 c × 1 ms, about 99.93 km.
pub const FIBRE_KM_PER_MS_RTT: f64 = C_KM_PER_MS * 2.0 / 3.0 / 2.0;

/// The sound upper bound on distance for a round-trip time, km.
pub fn sound_distance_km(rtt_ms: f64) -> f64 {
    rtt_ms.max(0.0) * FIBRE_KM_PER_MS_RTT
}

/// Slack allowed for declared positions (city-level), km, when judging speed-of-light
/// violations between two landmarks.
pub const DECLARED_POSITION_SLACK_KM: f64 = 10.0;

/// True when `rtt_ms` between two hosts is faster than light in fibre for their declared
/// positions (beyond [`DECLARED_POSITION_SLACK_KM`] for each of them): one position is wrong.
pub fn violates_speed_of_light(a: LatLon, b: LatLon, rtt_ms: f64) -> bool {
    distance_km(a, b) > sound_distance_km(rtt_ms) + 2.0 * DECLARED_POSITION_SLACK_KM
}

/// A landmark's bestline `rtt_ms = slope_ms_per_km × d_km + intercept_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bestline {
    /// ms of RTT per km of distance; at least `1 / FIBRE_KM_PER_MS_RTT`.
    pub slope_ms_per_km: f64,
    /// ms of RTT at zero distance (access delays); at least 0.
    pub intercept_ms: f64,
}

impl Bestline {
    /// The distance bound for an RTT under this line, km (never above the sound bound).
    pub fn distance_km(&self, rtt_ms: f64) -> f64 {
        ((rtt_ms - self.intercept_ms) / self.slope_ms_per_km).clamp(0.0, sound_distance_km(rtt_ms))
    }

    /// Fits the bestline under `points` = (distance km, RTT ms) to other landmarks.
    ///
    /// Minimises the total vertical gap between the line and the points, subject to every
    /// point lying on or above the line, slope ≥ the sound baseline's, intercept ≥ 0.
    /// Points faster than light (a misdeclared position) are ignored. `None` with fewer than
    /// [`MIN_CALIBRATION_POINTS`] usable points.
    ///
    /// # References
    /// Gueye, Ziviani, Crovella, Fdida, "Constraint-Based Geolocation of Internet Hosts",
    /// IEEE/ACM Transactions on Networking 14(6), 2006, §III-B.
    pub fn fit(points: &[(f64, f64)]) -> Option<Bestline> {
        let m0 = 1.0 / FIBRE_KM_PER_MS_RTT;
        let mut pts: Vec<(f64, f64)> = points
            .iter()
            .copied()
            .filter(|&(d, r)| d.is_finite() && r.is_finite() && d >= 0.0 && r >= m0 * d - 1e-9)
            .collect();
        if pts.len() < MIN_CALIBRATION_POINTS {
            return None;
        }
        pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let n = pts.len() as f64;
        let sum_x: f64 = pts.iter().map(|p| p.0).sum();
        // Lower convex hull (monotone chain).
        let mut hull: Vec<(f64, f64)> = Vec::with_capacity(pts.len());
        for &p in &pts {
            while hull.len() >= 2 {
                let (a, b) = (hull[hull.len() - 2], hull[hull.len() - 1]);
                if (b.0 - a.0) * (p.1 - a.1) - (b.1 - a.1) * (p.0 - a.0) <= 0.0 {
                    hull.pop();
                } else {
                    break;
                }
            }
            hull.push(p);
        }
        let feasible = |m: f64, b: f64| {
            m >= m0 - 1e-12 && b >= -1e-9 && pts.iter().all(|&(x, y)| y >= m * x + b - 1e-6)
        };
        let mut candidates: Vec<(f64, f64)> = vec![(m0, 0.0)];
        for w in hull.windows(2) {
            let ((x1, y1), (x2, y2)) = (w[0], w[1]);
            if x2 - x1 > 1e-9 {
                let m = (y2 - y1) / (x2 - x1);
                candidates.push((m, y1 - m * x1));
            }
        }
        // Slope m0 through the point that allows the highest intercept.
        let b0 = pts
            .iter()
            .map(|&(x, y)| y - m0 * x)
            .fold(f64::INFINITY, f64::min);
        candidates.push((m0, b0));
        // Zero intercept through the point that allows the steepest slope.
        if let Some(m) = pts
            .iter()
            .filter(|p| p.0 > 1e-9)
            .map(|&(x, y)| y / x)
            .min_by(f64::total_cmp)
        {
            candidates.push((m, 0.0));
        }
        candidates
            .into_iter()
            .filter(|&(m, b)| feasible(m, b))
            .map(|(m, b)| (m, b.max(0.0)))
            .max_by(|a, b| (a.0 * sum_x + n * a.1).total_cmp(&(b.0 * sum_x + n * b.1)))
            .map(|(m, b)| Bestline {
                slope_ms_per_km: m.max(m0),
                intercept_ms: b,
            })
    }
}

/// Fewest landmark-to-landmark RTTs a bestline is fitted on.
pub const MIN_CALIBRATION_POINTS: usize = 5;

/// One RTT measured between two landmarks, used for calibration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LandmarkRtt {
    pub from: String,
    pub from_pos: LatLon,
    pub to: String,
    pub to_pos: LatLon,
    pub rtt_ms: f64,
}

/// Per-landmark delay models fitted on landmark-to-landmark RTTs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    lines: HashMap<String, Bestline>,
}

impl Calibration {
    /// Fits a bestline for every landmark with enough RTTs to others. An RTT between A and B
    /// calibrates both A and B (round trips are symmetric).
    pub fn fit(pairs: &[LandmarkRtt]) -> Calibration {
        Self::fit_with_min(pairs, MIN_CALIBRATION_POINTS)
    }

    /// Like [`Calibration::fit`], calibrating only landmarks with at least `min_points`
    /// RTTs to others (a bestline under few points is too tight for many targets: the
    /// coordinator asks for more than the engine's minimum, see its README).
    pub fn fit_with_min(pairs: &[LandmarkRtt], min_points: usize) -> Calibration {
        let mut points: HashMap<&str, Vec<(f64, f64)>> = HashMap::new();
        for p in pairs {
            let d = distance_km(p.from_pos, p.to_pos);
            points.entry(&p.from).or_default().push((d, p.rtt_ms));
            points.entry(&p.to).or_default().push((d, p.rtt_ms));
        }
        let lines = points
            .into_iter()
            .filter(|(_, pts)| pts.len() >= min_points)
            .filter_map(|(k, pts)| Bestline::fit(&pts).map(|l| (k.to_string(), l)))
            .collect();
        Calibration { lines }
    }

    /// A calibration from already fitted lines.
    pub fn from_lines(lines: HashMap<String, Bestline>) -> Calibration {
        Calibration { lines }
    }

    /// The bestline of a landmark, if it had enough calibration RTTs.
    pub fn line(&self, landmark: &str) -> Option<&Bestline> {
        self.lines.get(landmark)
    }

    /// Number of calibrated landmarks.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// True when no landmark is calibrated.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hundred_km_per_ms() {
        assert!((FIBRE_KM_PER_MS_RTT - 99.93).abs() < 0.01);
        assert!((sound_distance_km(10.0) - 999.3).abs() < 0.1);
        assert_eq!(sound_distance_km(-1.0), 0.0);
    }

    #[test]
    fn bestline_lies_under_every_point_and_above_baseline() {
        let pts: Vec<(f64, f64)> = (1..40)
            .map(|i| {
                (
                    i as f64 * 200.0,
                    5.0 + i as f64 * 200.0 / 60.0 + (i % 7) as f64,
                )
            })
            .collect();
        let l = Bestline::fit(&pts).unwrap();
        assert!(l.slope_ms_per_km >= 1.0 / FIBRE_KM_PER_MS_RTT);
        for &(d, r) in &pts {
            assert!(r >= l.slope_ms_per_km * d + l.intercept_ms - 1e-6);
        }
        // The noise-free line of this data is 5 ms + d/60: the fit must be near it.
        assert!((l.slope_ms_per_km - 1.0 / 60.0).abs() < 0.002, "{l:?}");
        assert!(l.intercept_ms <= 5.0 + 1e-9);
        // Distances read back are tighter than the sound bound but hold the data.
        assert!(l.distance_km(100.0) < sound_distance_km(100.0));
    }

    #[test]
    fn bestline_ignores_faster_than_light_points_and_needs_enough_data() {
        assert!(Bestline::fit(&[(100.0, 2.0), (200.0, 3.0)]).is_none());
        // Noise-free points on rtt = 4 ms + d / 80 km (slower than light in fibre).
        let clean: Vec<(f64, f64)> = (1..10)
            .map(|i| (i as f64 * 500.0, 4.0 + i as f64 * 500.0 / 80.0))
            .collect();
        let without = Bestline::fit(&clean).unwrap();
        assert!(
            (without.slope_ms_per_km - 1.0 / 80.0).abs() < 1e-9,
            "{without:?}"
        );
        assert!((without.intercept_ms - 4.0).abs() < 1e-9, "{without:?}");
        // One impossible point (5000 km in 1 ms, a misdeclared position): no line with a
        // slope at or above the sound baseline and a non-negative intercept can pass under
        // it, so keeping it would leave no line at all or drag the fit down; left out, the
        // fit is exactly the one without it.
        let mut pts = clean.clone();
        pts.insert(3, (5000.0, 1.0));
        let with = Bestline::fit(&pts)
            .expect("the faster-than-light point is left out, not a reason to give up");
        assert_eq!(with, without);
        // Only 4 usable points once it is left out: fewer than MIN_CALIBRATION_POINTS.
        let mut few = clean[..4].to_vec();
        few.push((5000.0, 1.0));
        assert_eq!(few.len(), MIN_CALIBRATION_POINTS);
        assert!(Bestline::fit(&few).is_none());
        // Exactly on the sound baseline is possible, hence kept: it pulls the line down.
        let mut edge = clean.clone();
        edge.push((5000.0, 5000.0 / FIBRE_KM_PER_MS_RTT));
        let l = Bestline::fit(&edge).unwrap();
        assert_ne!(l, without);
        assert!(l.slope_ms_per_km * 5000.0 + l.intercept_ms <= 5000.0 / FIBRE_KM_PER_MS_RTT + 1e-6);
    }

    #[test]
    fn a_faster_than_light_pair_does_not_change_either_landmarks_line() {
        // "a" and "b" each have 6 honest RTTs to spokes; their mutual RTT is impossible.
        let at = |lon: f64| LatLon { lat: 0.0, lon };
        let mut pairs: Vec<LandmarkRtt> = Vec::new();
        for (name, lon0) in [("a", 0.0), ("b", 60.0)] {
            for i in 1..=6 {
                let to_pos = at(lon0 + i as f64 * 3.0);
                let d = distance_km(at(lon0), to_pos);
                pairs.push(LandmarkRtt {
                    from: name.into(),
                    from_pos: at(lon0),
                    to: format!("{name}{i}"),
                    to_pos,
                    rtt_ms: 2.0 + d / 70.0 + (i % 3) as f64,
                });
            }
        }
        let honest = Calibration::fit(&pairs);
        pairs.push(LandmarkRtt {
            from: "a".into(),
            from_pos: at(0.0),
            to: "b".into(),
            to_pos: at(60.0),
            rtt_ms: 3.0, // 6,700 km in 3 ms
        });
        let with = Calibration::fit(&pairs);
        assert_eq!(with.line("a"), honest.line("a"));
        assert_eq!(with.line("b"), honest.line("b"));
        assert!(with.line("a").is_some() && with.line("b").is_some());
    }

    #[test]
    fn speed_of_light_violation() {
        let paris = LatLon::new(48.86, 2.35);
        let tokyo = LatLon::new(35.68, 139.69);
        assert!(violates_speed_of_light(paris, tokyo, 20.0));
        assert!(!violates_speed_of_light(paris, tokyo, 230.0));
    }

    #[test]
    fn landmarks_with_too_few_rtts_are_not_calibrated() {
        // "hub" has an RTT to each of 8 spokes; every spoke has one RTT (to the hub).
        let hub = LatLon { lat: 0.0, lon: 0.0 };
        let pairs: Vec<LandmarkRtt> = (1..=8)
            .map(|i| LandmarkRtt {
                from: "hub".into(),
                from_pos: hub,
                to: format!("s{i}"),
                to_pos: LatLon {
                    lat: 0.0,
                    lon: i as f64 * 5.0,
                },
                rtt_ms: 3.0 + i as f64 * 10.0,
            })
            .collect();
        let all = Calibration::fit(&pairs);
        assert_eq!(all.len(), 1, "only the hub has 5 or more RTTs");
        assert!(all.line("hub").is_some());
        assert!(Calibration::fit_with_min(&pairs, 8).line("hub").is_some());
        assert!(Calibration::fit_with_min(&pairs, 9).is_empty());
    }
}
