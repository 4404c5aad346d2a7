//! Points on the sphere: latitude/longitude, unit vectors, great-circle distance.
//!
//! # Units
//! Latitudes and longitudes are decimal degrees (WGS84, treated as a sphere); distances are
//! kilometres on a sphere of radius [`EARTH_RADIUS_KM`]; angles are radians.

use serde::{Deserialize, Serialize};

/// Mean Earth radius (IUGG), kilometres.
pub const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Half the Earth's circumference: no two points are further apart, kilometres.
pub const MAX_DISTANCE_KM: f64 = std::f64::consts::PI * EARTH_RADIUS_KM;

/// A position in decimal degrees (WGS84).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatLon {
    /// Latitude, degrees north, in [-90, 90].
    pub lat: f64,
    /// Longitude, degrees east, in [-180, 180].
    pub lon: f64,
}

impl LatLon {
    /// A position; use [`LatLon::checked`] for untrusted input.
    pub const fn new(lat: f64, lon: f64) -> Self {
        Self { lat, lon }
    }

    /// A position validated for range and finiteness.
    pub fn checked(lat: f64, lon: f64) -> Result<Self, String> {
        if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
            return Err(format!("latitude {} is outside [-90, 90]", short(lat)));
        }
        if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
            return Err(format!("longitude {} is outside [-180, 180]", short(lon)));
        }
        Ok(Self { lat, lon })
    }

    /// The unit vector of this position (x towards 0°N 0°E, z towards the north pole).
    pub fn to_vec(self) -> V3 {
        let (la, lo) = (self.lat.to_radians(), self.lon.to_radians());
        V3([la.cos() * lo.cos(), la.cos() * lo.sin(), la.sin()])
    }
}

/// A 3-D vector; positions are unit vectors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct V3(pub [f64; 3]);

impl V3 {
    /// Dot product.
    #[inline]
    pub fn dot(self, o: V3) -> f64 {
        self.0[0] * o.0[0] + self.0[1] * o.0[1] + self.0[2] * o.0[2]
    }
    /// `self + o * k`.
    #[inline]
    pub fn add_scaled(self, o: V3, k: f64) -> V3 {
        V3([
            self.0[0] + o.0[0] * k,
            self.0[1] + o.0[1] * k,
            self.0[2] + o.0[2] * k,
        ])
    }
    /// Euclidean norm.
    pub fn norm(self) -> f64 {
        self.dot(self).sqrt()
    }
    /// Angle between two unit vectors, radians, numerically safe near 0 and π.
    pub fn angle(self, o: V3) -> f64 {
        let c = cross(self, o).norm();
        c.atan2(self.dot(o))
    }
    /// The position of this (non-zero) vector; `None` for a vector too short to have a direction.
    pub fn to_latlon(self) -> Option<LatLon> {
        let n = self.norm();
        // Also true for NaN: `n <= 1e-12` would let a NaN through.
        if n.is_nan() || n <= 1e-12 {
            return None;
        }
        let [x, y, z] = self.0;
        Some(LatLon {
            lat: (z / n).clamp(-1.0, 1.0).asin().to_degrees(),
            lon: y.atan2(x).to_degrees(),
        })
    }
}

fn cross(a: V3, b: V3) -> V3 {
    let ([a0, a1, a2], [b0, b1, b2]) = (a.0, b.0);
    V3([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0])
}

/// Great-circle distance between two positions, kilometres.
///
/// # Examples
/// ```
/// use geoloc_engine::{distance_km, LatLon};
/// let paris = LatLon::new(48.8566, 2.3522);
/// let london = LatLon::new(51.5074, -0.1278);
/// assert!((distance_km(paris, london) - 343.5).abs() < 2.0);
/// ```
pub fn distance_km(a: LatLon, b: LatLon) -> f64 {
    a.to_vec().angle(b.to_vec()) * EARTH_RADIUS_KM
}

/// Kilometres to an angle on the sphere, radians, clamped to [0, π].
pub fn km_to_rad(km: f64) -> f64 {
    (km / EARTH_RADIUS_KM).clamp(0.0, std::f64::consts::PI)
}

/// Position `distance_km` from `from` along the initial `bearing_deg` (clockwise from north).
pub fn destination(from: LatLon, bearing_deg: f64, distance_km: f64) -> LatLon {
    let d = distance_km / EARTH_RADIUS_KM;
    let (la1, lo1, b) = (
        from.lat.to_radians(),
        from.lon.to_radians(),
        bearing_deg.to_radians(),
    );
    let la2 = (la1.sin() * d.cos() + la1.cos() * d.sin() * b.cos())
        .clamp(-1.0, 1.0)
        .asin();
    let lo2 = lo1 + (b.sin() * d.sin() * la1.cos()).atan2(d.cos() - la1.sin() * la2.sin());
    LatLon {
        lat: la2.to_degrees(),
        lon: wrap_lon(lo2.to_degrees()),
    }
}

/// Longitude wrapped into [-180, 180).
pub fn wrap_lon(lon: f64) -> f64 {
    (lon + 180.0).rem_euclid(360.0) - 180.0
}

/// A degree value for an error message: an absurd one (1e308) in scientific notation rather
/// than as hundreds of digits.
fn short(x: f64) -> String {
    if x.is_finite() && x.abs() < 1e6 {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_across_antimeridian_is_short() {
        let suva = LatLon::new(-18.14, 178.44);
        let apia = LatLon::new(-13.83, -171.76);
        let d = distance_km(suva, apia);
        assert!((d - 1150.0).abs() < 30.0, "{d}");
    }

    #[test]
    fn antipodes_are_half_the_circumference_apart() {
        let d = distance_km(LatLon::new(0.0, 0.0), LatLon::new(0.0, 180.0));
        assert!((d - MAX_DISTANCE_KM).abs() < 1e-6);
        let d = distance_km(LatLon::new(90.0, 0.0), LatLon::new(-90.0, 33.0));
        assert!((d - MAX_DISTANCE_KM).abs() < 1e-6);
    }

    #[test]
    fn tiny_distances_are_precise() {
        let a = LatLon::new(10.0, 10.0);
        let b = destination(a, 45.0, 0.001);
        assert!((distance_km(a, b) - 0.001).abs() < 1e-9);
    }

    #[test]
    fn destination_round_trips() {
        let a = LatLon::new(-33.9, 151.2);
        for bearing in [0.0, 90.0, 135.0, 270.0] {
            let b = destination(a, bearing, 5000.0);
            assert!((distance_km(a, b) - 5000.0).abs() < 1e-6);
        }
    }

    #[test]
    fn vector_round_trip() {
        for p in [
            LatLon::new(12.5, -170.0),
            LatLon::new(-89.9, 10.0),
            LatLon::new(0.0, 179.99),
        ] {
            let q = p.to_vec().to_latlon().unwrap();
            assert!((p.lat - q.lat).abs() < 1e-9 && (p.lon - q.lon).abs() < 1e-9);
        }
    }

    #[test]
    fn checked_rejects_bad_coordinates() {
        assert!(LatLon::checked(95.0, 0.0)
            .unwrap_err()
            .contains("latitude 95"));
        assert!(LatLon::checked(0.0, f64::NAN).is_err());
        assert!(LatLon::checked(-90.0, 180.0).is_ok());
        // An absurd value is not echoed as a 309-digit number.
        let e = LatLon::checked(1e308, 0.0).unwrap_err();
        assert!(e.contains("latitude 1e308") && e.len() < 60, "{e}");
    }
}
