//! I/O-free geolocation engine: round-trip times → constraints → a region on the sphere →
//! an estimate → enrichment (time zone, place) → comparison with a GeoIP database.
pub mod delay;
pub mod region;
pub mod sphere;

pub use delay::{violates_speed_of_light, Bestline, Calibration, LandmarkRtt, FIBRE_KM_PER_MS_RTT};
pub use sphere::{distance_km, LatLon};
