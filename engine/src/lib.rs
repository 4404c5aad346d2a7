//! I/O-free geolocation engine: round-trip times → constraints → a region on the sphere →
//! an estimate → enrichment (time zone, place) → comparison with a GeoIP database.
//!
//! Start at [`solve`]. Each step is its own module: [`delay`] (RTT → distance),
//! [`region`] (intersections on the sphere), [`consistency`] (contradictions: misplaced
//! landmarks vs anycast), [`anycast`] (iGreedy), [`enrich`] (time zone, place),
//! [`maxmind`] (verdicts), [`dataset`] and [`eval`] (leave-one-out evaluation),
//! [`anycast_eval`] (anycast evaluation on iGreedy's ground truth), [`select`] (budgeted,
//! phased choice of probes), [`confidence`] (calibrated 50% and 90% radii), [`budget_eval`]
//! (selection and calibration figures), [`verdict_eval`] (false MaxMind proofs on a mesh).
pub mod anycast;
pub mod anycast_eval;
pub mod budget_eval;
pub mod confidence;
pub mod consistency;
pub mod dataset;
pub mod delay;
pub mod enrich;
pub mod error;
pub mod eval;
pub mod maxmind;
pub mod region;
pub mod select;
pub mod solve;
pub mod sphere;
pub mod verdict_eval;

pub use anycast::Instance;
pub use confidence::{ConfidenceModel, Radii};
pub use delay::{
    sound_distance_km, violates_speed_of_light, Bestline, Calibration, LandmarkRtt,
    FIBRE_KM_PER_MS_RTT,
};
pub use enrich::{Place, Timezone, TzShare};
pub use error::{EngineError, Result};
pub use maxmind::{GeoIpRecord, MaxmindComparison, Ruling, Verdict};
pub use select::{Phased, PhasedOptions, Spent, Stop};
pub use solve::{solve, Collusion, Dropped, Kind, Measurement, Method, Solution, SolveOptions};
pub use sphere::{distance_km, LatLon};
