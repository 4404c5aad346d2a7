//! Where measurements come from: the seam between the locate flow and whoever measures.
//!
//! The locate flow asks a [`MeasurementSource`] which vantage points it has (with their
//! positions), picks some, and asks the source to measure a target from them; results come
//! back one vantage point at a time, as they arrive, each with what it cost. Implementations:
//! - the own probe fleet ([`crate::core::fleet::Fleet`]): one request per probe over its
//!   session, a ping and, for a silent target, a TCP handshake and a traceroute;
//! - recorded RTTs replayed ([`crate::core::replay::Replay`]), for tests and evaluations;
//! - RIPE Atlas ([`crate::core::atlas_source::AtlasRun`]), where one API call measures from
//!   many probes at once, costs credits, and results arrive after tens of seconds: it yields
//!   every vantage point of one call together, late, and refuses a locate whose credits
//!   would exceed its limit ([`MeasurementSource::check_credits`]);
//! - both merged ([`crate::core::sources::Both`]).
use std::net::IpAddr;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use geoloc_engine::LatLon;

use crate::core::measurement::{MeasurementOutcome, MeasurementResult, Purpose};
use crate::core::rows::MeasurementRow;
use crate::unix_ms;

/// A place a target can be measured from, at a known position.
#[derive(Debug, Clone, PartialEq)]
pub struct VantagePoint {
    /// Unique within its source (a probe id, an Atlas probe id, a landmark name).
    pub id: String,
    /// Declared (or recorded) position.
    pub pos: LatLon,
}

/// What to measure in one stage of a locate run.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasureSpec {
    pub target: IpAddr,
    /// Echo requests per vantage point.
    pub ping_count: u32,
    /// How long each vantage point may take (a source that cannot keep it, such as a
    /// batch API, still ends its stream within it plus a small grace).
    pub budget: Duration,
    /// A keyed run's result id: the fleet derives each request id from it
    /// (`{result_id}.{probe}.{n}`, n = 0 for the ping, 1 for the fallback), so the same run
    /// taken over by another replica asks each probe with the same ids, whichever stage or
    /// round it now falls in (a run asks a vantage point in one stage at most), and a probe
    /// that measured already answers from its cache. None = fresh random ids.
    pub job: Option<String>,
}

/// What measuring cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Packets the vantage points sent.
    pub packets: u64,
    /// Credits spent at a paid platform (RIPE Atlas); 0 for the own fleet and replays.
    pub credits: u64,
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        self.packets += o.packets;
        self.credits += o.credits;
    }
}

/// How one request to one vantage point ended, with what came back.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub request_id: String,
    pub vantage_point: VantagePoint,
    pub target: IpAddr,
    pub outcome: MeasurementOutcome,
    /// Why it did not answer (empty when it did).
    pub error: String,
    pub result: MeasurementResult,
    pub at_unix_ms: i64,
}

impl Observation {
    /// The row the store keeps for it: part of `result_id` (None for a landmark check),
    /// in `stage`; `landmark` is the measured landmark (id, declared position), if any.
    pub fn to_row(
        &self,
        result_id: Option<&str>,
        purpose: Purpose,
        stage: u32,
        landmark: Option<(&str, LatLon)>,
    ) -> MeasurementRow {
        MeasurementRow {
            measurement_id: crate::new_time_ordered_id(),
            result_id: result_id.map(str::to_string),
            purpose: purpose.as_str().to_string(),
            stage: i64::from(stage),
            request_id: self.request_id.clone(),
            probe_id: self.vantage_point.id.clone(),
            probe_lat: self.vantage_point.pos.lat,
            probe_lon: self.vantage_point.pos.lon,
            target: self.target.to_string(),
            target_landmark: landmark.map(|(id, _)| id.to_string()),
            target_lat: landmark.map(|(_, p)| p.lat),
            target_lon: landmark.map(|(_, p)| p.lon),
            outcome: self.outcome.as_str().to_string(),
            error: self.error.clone(),
            excluded: String::new(),
            packets_sent: self.result.packets_sent() as i64,
            raw_json: serde_json::to_string(&self.result).unwrap_or_default(),
            created_unix_ms: self.at_unix_ms,
        }
    }

    /// A measurement that ended without an answer.
    pub fn failed(
        vantage_point: VantagePoint,
        target: IpAddr,
        request_id: String,
        outcome: MeasurementOutcome,
        error: String,
    ) -> Observation {
        Observation {
            result: MeasurementResult {
                request_id: request_id.clone(),
                target: target.to_string(),
                error: if outcome == MeasurementOutcome::Rejected
                    || outcome == MeasurementOutcome::ProbeError
                {
                    error.clone()
                } else {
                    String::new()
                },
                ..MeasurementResult::default()
            },
            request_id,
            vantage_point,
            target,
            outcome,
            error,
            at_unix_ms: unix_ms(),
        }
    }
}

/// Everything one vantage point gave for one stage.
#[derive(Debug, Clone, PartialEq)]
pub struct VantageResult {
    pub vantage_point: VantagePoint,
    /// One per request sent (a ping, maybe a fallback), in the order they ended.
    pub observations: Vec<Observation>,
    pub cost: Cost,
}

/// Where the locate flow gets its measurements. Object safe: the flow holds a
/// `&dyn MeasurementSource`.
pub trait MeasurementSource: Send + Sync {
    /// Short name for logs (`fleet`, `replay`, `atlas`).
    fn name(&self) -> &'static str;

    /// The vantage points that can measure now. May wait briefly (the fleet waits for its
    /// probes to reconnect after a restart; a platform may call its API).
    fn vantage_points(&self) -> BoxFuture<'_, Vec<VantagePoint>>;

    /// Whether some vantage points are probes of this coordinator's own fleet (vetted with
    /// known-answer checks before they may measure: `crate::core::vetting`). Ids of other
    /// sources' vantage points never name a fleet probe.
    fn has_fleet_probes(&self) -> bool {
        false
    }

    /// Why [`MeasurementSource::vantage_points`] came back empty, for the client.
    fn none_available(&self) -> String {
        format!("no vantage point available from {}", self.name())
    }

    /// Measures `spec.target` from each of `from`; yields one [`VantageResult`] per vantage
    /// point as it arrives, and ends when every one has answered or given up.
    fn measure(&self, spec: MeasureSpec, from: Vec<VantagePoint>) -> BoxStream<'_, VantageResult>;

    /// Before anything is spent: what measuring from at most `vantage_points` with
    /// `ping_count` echo requests each may cost, in credits (an upper bound), or why it is
    /// refused (over a configured limit). Free sources (the fleet, replays): `Ok(0)`.
    fn check_credits(&self, vantage_points: usize, ping_count: u32) -> Result<u64, String> {
        let _ = (vantage_points, ping_count);
        Ok(0)
    }
}
