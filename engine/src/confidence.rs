//! Calibrated confidence: radii around the estimate that hold the truth with a stated
//! probability (50% and 90%), next to the hard region (which holds the truth whenever the
//! landmarks' positions are right, but is often much larger than the error).
//!
//! The model is a ratio per probability: `radius_q = max(floor_km, ratio_q × scale_km)`,
//! where `scale_km` is the radius of a circle with the region's area (see [`scale_km`]). The
//! ratios are the (conformal) quantiles of `error / scale` over targets whose truth is known
//! ([`ConfidenceModel::fit`]): split conformal prediction, which holds the stated coverage
//! on average when the targets calibrated on and the target answered are alike.
//!
//! [`ConfidenceModel::default`] was fitted on the WonderNetwork mesh
//! (`../shared/data/wondernetwork-train`, leave-one-out, default method, every target):
//! see README's "Calibrated confidence" for the command and the held-out coverage.
//!
//! # Units
//! Kilometres.
//!
//! # References
//! Vovk, Gammerman, Shafer, "Algorithmic Learning in a Random World" (2005), split
//! conformal prediction; Angelopoulos and Bates, "A Gentle Introduction to Conformal
//! Prediction" (2021), §1.

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// Probabilities the radii are stated for.
pub const PROBABILITIES: [f64; 2] = [0.5, 0.9];

/// Radii around an estimate, km, that hold the truth with probability 50% and 90%.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Radii {
    pub radius_50_km: f64,
    pub radius_90_km: f64,
}

/// The fitted ratios (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ConfidenceModel {
    /// `radius_50_km / scale_km`.
    pub ratio_50: f64,
    /// `radius_90_km / scale_km`.
    pub ratio_90: f64,
    /// Smallest radius stated, km (declared landmark positions are city-level).
    pub floor_km: f64,
    /// Targets the ratios were fitted on.
    pub targets: usize,
}

impl Default for ConfidenceModel {
    /// Fitted on every WonderNetwork target (148, leave-one-out, default method, all
    /// landmarks): `geoloc eval-budget` prints this full-data fit (ratio_50 0.410,
    /// ratio_90 0.576) and the held-out coverage of per-fold fits.
    fn default() -> Self {
        Self {
            ratio_50: DEFAULT_RATIO_50,
            ratio_90: DEFAULT_RATIO_90,
            floor_km: DEFAULT_FLOOR_KM,
            targets: 148,
        }
    }
}

/// [`ConfidenceModel::default`]'s 50% ratio.
pub const DEFAULT_RATIO_50: f64 = 0.41;
/// [`ConfidenceModel::default`]'s 90% ratio.
pub const DEFAULT_RATIO_90: f64 = 0.58;
/// Smallest radius stated, km.
pub const DEFAULT_FLOOR_KM: f64 = 10.0;

/// Fewest targets a model is fitted on.
pub const MIN_FIT_TARGETS: usize = 10;

/// The scale of a region: the radius of a spherical cap with its area, km (its hard
/// circumradius `radius_km` depends on the region's shape and on where the estimate sits).
pub fn scale_km(region_km2: f64) -> f64 {
    (region_km2.max(0.0) / std::f64::consts::PI).sqrt()
}

impl ConfidenceModel {
    /// The radii for a solution with a region of `region_km2`.
    pub fn radii(&self, region_km2: f64) -> Radii {
        let s = scale_km(region_km2);
        let r = |ratio: f64| round1((ratio * s).max(self.floor_km));
        Radii {
            radius_50_km: r(self.ratio_50),
            radius_90_km: r(self.ratio_90),
        }
    }

    /// Fits the ratios on `(error_km, region_km2)` of targets whose truth is known: the
    /// conformal quantile of `error / scale` (the ⌈(n+1)q⌉-th smallest of n).
    ///
    /// # Errors
    /// [`EngineError::InvalidOption`] with fewer than [`MIN_FIT_TARGETS`] usable targets
    /// (finite, non-negative error and area).
    pub fn fit(samples: &[(f64, f64)], floor_km: f64) -> Result<ConfidenceModel> {
        let mut ratios: Vec<f64> = samples
            .iter()
            .filter(|(e, a)| e.is_finite() && a.is_finite() && *e >= 0.0 && *a >= 0.0)
            .map(|&(e, a)| (e.max(0.0)) / scale_km(a).max(floor_km.max(1.0)))
            .collect();
        if ratios.len() < MIN_FIT_TARGETS {
            return Err(EngineError::InvalidOption {
                name: "confidence",
                reason: format!(
                    "{} usable targets to calibrate on, at least {MIN_FIT_TARGETS} needed",
                    ratios.len()
                ),
            });
        }
        ratios.sort_by(f64::total_cmp);
        let n = ratios.len();
        let q = |p: f64| {
            let k = ((n as f64 + 1.0) * p).ceil() as usize;
            ratios[k.clamp(1, n) - 1]
        };
        Ok(ConfidenceModel {
            ratio_50: q(PROBABILITIES[0]),
            ratio_90: q(PROBABILITIES[1]),
            floor_km,
            targets: n,
        })
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fitted_ratios_cover_the_stated_shares() {
        // Errors uniformly 0..1 x the scale: the 50% ratio near 0.5, the 90% near 0.9.
        let area = std::f64::consts::PI * 100.0 * 100.0; // scale 100 km
        let samples: Vec<(f64, f64)> = (0..200).map(|i| (i as f64 / 2.0, area)).collect();
        let m = ConfidenceModel::fit(&samples, 1.0).unwrap();
        assert!((m.ratio_50 - 0.5).abs() < 0.02, "{m:?}");
        assert!((m.ratio_90 - 0.9).abs() < 0.02, "{m:?}");
        let r = m.radii(area);
        let covered = |radius: f64| samples.iter().filter(|s| s.0 <= radius).count();
        assert!((99..=103).contains(&covered(r.radius_50_km)), "{r:?}");
        assert!((180..=184).contains(&covered(r.radius_90_km)), "{r:?}");
        assert_eq!(m.targets, 200);
    }

    #[test]
    fn the_floor_and_too_few_targets() {
        let m = ConfidenceModel::default();
        assert_eq!(m.radii(0.0).radius_50_km, DEFAULT_FLOOR_KM);
        assert!(m.radii(1e6).radius_90_km > m.radii(1e6).radius_50_km);
        let e = ConfidenceModel::fit(&[(1.0, 1.0); 9], 1.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("9 usable targets"), "{e}");
        // Non-finite samples are not counted.
        let mut s = vec![(1.0, 100.0); 9];
        s.push((f64::NAN, 100.0));
        assert!(ConfidenceModel::fit(&s, 1.0).is_err());
    }
}
