//! The records the store keeps, in the domain's words: a probe, a locate run (result), one
//! measurement. `crate::storage` reads and writes them (SQLite or PostgreSQL); nothing here
//! knows SQL or the wire.
use crate::core::measurement::{MeasurementOutcome, MeasurementResult};
use crate::error::{CoordinatorError, Result};

/// A probe as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeRow {
    pub probe_id: String,
    pub lat: f64,
    pub lon: f64,
    pub ipv4: String,
    pub ipv6: String,
    pub agent_version: String,
    pub flagged: bool,
    pub flag_reason: String,
    pub flag_epoch_unix_ms: i64,
    pub first_seen_unix_ms: i64,
    pub last_seen_unix_ms: i64,
}

impl ProbeRow {
    /// The declared position.
    pub fn pos(&self) -> geoloc_engine::LatLon {
        geoloc_engine::LatLon {
            lat: self.lat,
            lon: self.lon,
        }
    }
    /// Address at which this probe can be measured (IPv4 preferred).
    pub fn address(&self) -> Option<std::net::IpAddr> {
        self.ipv4.parse().ok().or_else(|| self.ipv6.parse().ok())
    }
    /// Every address this probe declared (IPv4, then IPv6; unparsable ones skipped).
    pub fn addresses(&self) -> impl Iterator<Item = std::net::IpAddr> + '_ {
        [self.ipv4.parse().ok(), self.ipv6.parse().ok()]
            .into_iter()
            .flatten()
    }
}

/// Status of a result row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultStatus {
    Running,
    Done,
    Failed,
    Interrupted,
}

impl ResultStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultStatus::Running => "running",
            ResultStatus::Done => "done",
            ResultStatus::Failed => "failed",
            ResultStatus::Interrupted => "interrupted",
        }
    }
    pub(crate) fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "running" => ResultStatus::Running,
            "done" => ResultStatus::Done,
            "failed" => ResultStatus::Failed,
            "interrupted" => ResultStatus::Interrupted,
            other => {
                return Err(CoordinatorError::Corrupt {
                    what: "results.status",
                    detail: other.to_string(),
                })
            }
        })
    }
}

/// A located address (one locate run) as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    pub result_id: String,
    pub ip: String,
    pub mode: String,
    pub status: ResultStatus,
    pub solution_json: Option<String>,
    pub error_code: String,
    pub error: String,
    pub geoip_json: Option<String>,
    /// Engine `Calibration` used (JSON), if any.
    pub calibration_json: Option<String>,
    pub probes_asked: i64,
    pub probes_used: i64,
    pub packets_sent: i64,
    pub min_rtt_ms: Option<f64>,
    pub nearest_probe: String,
    pub created_at_unix_ms: i64,
    pub finished_unix_ms: Option<i64>,
    /// Name of the API key that asked for this run ('' without a key).
    pub requested_by: String,
}

/// One raw probe answer as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasurementRow {
    pub measurement_id: String,
    pub result_id: Option<String>,
    /// "locate" or "landmark".
    pub purpose: String,
    pub stage: i64,
    pub request_id: String,
    pub probe_id: String,
    pub probe_lat: f64,
    pub probe_lon: f64,
    pub target: String,
    pub target_landmark: Option<String>,
    pub target_lat: Option<f64>,
    pub target_lon: Option<f64>,
    /// "answered" | "no-reply" | "timeout" | "disconnected" | "probe-error" | "rejected"
    /// (the answer failed the checks of `crate::grpc::validate`; `error` says why).
    pub outcome: String,
    pub error: String,
    pub excluded: String,
    pub packets_sent: i64,
    pub raw_json: String,
    pub created_unix_ms: i64,
}

impl MeasurementRow {
    /// The answer stored with this row (an empty `raw_json` is an empty answer).
    pub fn result(&self) -> Result<MeasurementResult> {
        if self.raw_json.is_empty() {
            return Ok(MeasurementResult::default());
        }
        serde_json::from_str(&self.raw_json).map_err(|e| CoordinatorError::Corrupt {
            what: "measurements.raw_json",
            detail: format!("measurement {}: {e}", self.measurement_id),
        })
    }

    /// How the request ended; None for a name this version does not know.
    pub fn outcome(&self) -> Option<MeasurementOutcome> {
        MeasurementOutcome::parse(&self.outcome)
    }
}

/// One landmark measurement as the speed-of-light checks and the calibration read it
/// (table `landmark_rtts`, written with the raw row): who measured which landmark, both
/// declared positions at the time, and the echo RTT.
#[derive(Debug, Clone, PartialEq)]
pub struct LandmarkRttRow {
    pub measurement_id: String,
    pub probe_id: String,
    pub landmark: String,
    pub from_lat: f64,
    pub from_lon: f64,
    pub to_lat: f64,
    pub to_lon: f64,
    /// Echo RTT (ping or TCP handshake, or a traceroute reaching the landmark), ms; None
    /// when the answer had none or could not be read.
    pub rtt_ms: Option<f64>,
    pub created_unix_ms: i64,
}

impl MeasurementRow {
    /// The landmark-check reading of this row; None unless it is a landmark measurement
    /// (`purpose = 'landmark'`) that names the landmark and its position.
    pub fn landmark_rtt(&self) -> Option<LandmarkRttRow> {
        if self.purpose != crate::core::measurement::Purpose::Landmark.as_str() {
            return None;
        }
        let landmark = self.target_landmark.clone()?;
        let (to_lat, to_lon) = (self.target_lat?, self.target_lon?);
        let rtt_ms = match self.result().ok().and_then(|r| r.best_rtt()) {
            Some((rtt, crate::core::measurement::RttKind::Echo)) => Some(rtt),
            _ => None,
        };
        Some(LandmarkRttRow {
            measurement_id: self.measurement_id.clone(),
            probe_id: self.probe_id.clone(),
            landmark,
            from_lat: self.probe_lat,
            from_lon: self.probe_lon,
            to_lat,
            to_lon,
            rtt_ms,
            created_unix_ms: self.created_unix_ms,
        })
    }
}
