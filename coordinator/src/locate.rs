//! Locating one address: choose probes ("all" or "two-stage"), ask them with a per-probe
//! budget, store every raw answer, solve with what arrived, store the result.
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use geoloc_engine::LatLon;
use geoloc_proto::v1 as pb;

use crate::config::Mode;
use crate::raw::RawResult;
use crate::registry::{Outcome, ProbeSnapshot};
use crate::solve::{inputs_from_rows, GeoIpLookup};
use crate::storage::{MeasurementRow, ResultRow, ResultStatus};
use crate::{new_id, schedule, target, unix_ms, Coordinator, CoordinatorError};

/// Largest per-probe budget a client may ask for, ms.
pub const MAX_TIMEOUT_MS: u32 = 120_000;
/// Largest number of echo requests per probe a client may ask for.
pub const MAX_PING_COUNT: u32 = 20;
/// Time left below which no traceroute fallback is tried, ms.
const MIN_TRACEROUTE_BUDGET_MS: u64 = 300;

/// What a client asks.
#[derive(Debug, Clone, Default)]
pub struct LocateParams {
    pub ip: String,
    /// None = the coordinator's default mode.
    pub mode: Option<Mode>,
    /// 0 = default.
    pub timeout_ms: u32,
    /// 0 = default.
    pub k: u32,
    pub reuse_stored: bool,
    /// 0 = default.
    pub ping_count: u32,
}

impl LocateParams {
    pub fn from_request(r: &pb::LocateRequest) -> LocateParams {
        LocateParams {
            ip: r.ip.clone(),
            mode: mode_from_pb(r.mode),
            timeout_ms: r.timeout_ms,
            k: r.k,
            reuse_stored: r.reuse_stored,
            ping_count: r.ping_count,
        }
    }
}

pub fn mode_from_pb(m: i32) -> Option<Mode> {
    match pb::LocateMode::try_from(m) {
        Ok(pb::LocateMode::All) => Some(Mode::All),
        Ok(pb::LocateMode::TwoStage) => Some(Mode::TwoStage),
        _ => None,
    }
}

/// Why an address got no answer. `code` is one of the codes documented in `locate.proto`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocateFailure {
    pub code: String,
    pub message: String,
}

impl LocateFailure {
    fn new(code: &str, message: impl Into<String>) -> Self {
        LocateFailure {
            code: code.to_string(),
            message: message.into(),
        }
    }
    /// The coordinator stopped during the run: the client should retry later.
    pub fn is_interrupted(&self) -> bool {
        self.code == "interrupted"
    }
    /// The request itself is wrong (bad address, bogon, bad parameter).
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self.code.as_str(),
            "invalid-address" | "bogon" | "invalid-argument"
        )
    }
}

impl From<CoordinatorError> for LocateFailure {
    fn from(e: CoordinatorError) -> Self {
        LocateFailure::new("internal", e.to_string())
    }
}

/// A stored result in its wire form: the solution typed (converted by `geoloc_proto::convert`)
/// and the per-probe RTTs that entered it, read back from the raw rows.
pub async fn result_to_pb(
    storage: &crate::storage::Storage,
    r: &ResultRow,
    cached: bool,
) -> crate::Result<pb::LocateResult> {
    let corrupt = |what: &'static str, detail: String| CoordinatorError::Corrupt { what, detail };
    let solution = match &r.solution_json {
        None => None,
        Some(text) => {
            let sol: geoloc_engine::Solution = serde_json::from_str(text)
                .map_err(|e| corrupt("results.solution_json", e.to_string()))?;
            Some(
                pb::Solution::try_from(&sol)
                    .map_err(|e| corrupt("results.solution_json", e.to_string()))?,
            )
        }
    };
    let rows = storage.measurements_for_result(&r.result_id).await?;
    let inputs = inputs_from_rows(&rows).map_err(|e| corrupt("measurements.raw_json", e))?;
    Ok(pb::LocateResult {
        result_id: r.result_id.clone(),
        ip: r.ip.clone(),
        solution,
        probes_used: r.probes_used.max(0) as u32,
        created_at_unix_ms: r.created_at_unix_ms,
        cached,
        locate_mode: pb::LocateMode::from_name(&r.mode).unwrap_or_default() as i32,
        packets_sent: r.packets_sent.max(0) as u64,
        min_rtt_ms: r.min_rtt_ms,
        nearest_probe: r.nearest_probe.clone(),
        probes_asked: r.probes_asked.max(0) as u32,
        probe_rtts: inputs.measurements.iter().map(pb::ProbeRtt::from).collect(),
    })
}

struct Run<'a> {
    result_id: String,
    ip: IpAddr,
    budget: Duration,
    ping_count: u32,
    rows: Vec<MeasurementRow>,
    done: u32,
    total: u32,
    progress: &'a (dyn Fn(pb::Progress) + Send + Sync),
}

impl Coordinator {
    /// Locates one address. `progress` is called once per probe that finished.
    pub async fn locate(
        self: &Arc<Self>,
        p: LocateParams,
        progress: &(dyn Fn(pb::Progress) + Send + Sync),
    ) -> Result<pb::LocateResult, LocateFailure> {
        let ip = target::check(&p.ip, self.config.allow_private)
            .map_err(|r| LocateFailure::new(r.code, r.message))?;
        if p.timeout_ms > MAX_TIMEOUT_MS {
            return Err(LocateFailure::new(
                "invalid-argument",
                format!("timeout_ms {} above {MAX_TIMEOUT_MS}", p.timeout_ms),
            ));
        }
        if p.ping_count > MAX_PING_COUNT {
            return Err(LocateFailure::new(
                "invalid-argument",
                format!("ping_count {} above {MAX_PING_COUNT}", p.ping_count),
            ));
        }
        let ip_s = target::canonical(ip);
        let _in_flight = self.locate_guard();
        let started = std::time::Instant::now();
        if self.is_shutting_down() {
            return Err(LocateFailure::new(
                "interrupted",
                "the coordinator is shutting down",
            ));
        }
        if p.reuse_stored {
            if let Some(r) = self.storage.latest_done_result(&ip_s).await? {
                return Ok(result_to_pb(&self.storage, &r, true).await?);
            }
        }
        let probes = self.probes_for_locate().await;
        if probes.is_empty() {
            let known = self.registry.snapshot().len();
            return Err(LocateFailure::new(
                "no-probes",
                format!("no healthy probe to measure from ({known} known, none connected, heartbeating and unflagged)"),
            ));
        }
        let mode = p.mode.unwrap_or(self.config.mode);
        let timeout_ms = if p.timeout_ms == 0 {
            self.config.probe_timeout_ms
        } else {
            p.timeout_ms
        };
        let ping_count = if p.ping_count == 0 {
            self.config.ping_count
        } else {
            p.ping_count
        };
        let k = if p.k == 0 {
            self.config.two_stage_k
        } else {
            p.k
        } as usize;

        let created = unix_ms();
        let geoip: GeoIpLookup = self.geoip.as_ref().map(|g| g.lookup(ip));
        let calibration = self.calibration().await?;
        let mut row = ResultRow {
            result_id: new_id(),
            ip: ip_s.clone(),
            mode: mode.as_str().to_string(),
            status: ResultStatus::Running,
            solution_json: None,
            error_code: String::new(),
            error: String::new(),
            geoip_json: geoip
                .as_ref()
                .map(|g| serde_json::to_string(g).unwrap_or_else(|_| "null".into())),
            calibration_json: calibration
                .as_ref()
                .and_then(|c| serde_json::to_string(c).ok()),
            probes_asked: 0,
            probes_used: 0,
            packets_sent: 0,
            min_rtt_ms: None,
            nearest_probe: String::new(),
            created_at_unix_ms: created,
            finished_unix_ms: None,
        };
        self.storage.insert_result(&row).await?;
        tracing::info!(ip = %ip_s, result_id = %row.result_id, mode = mode.as_str(), probes = probes.len(), setup_ms = started.elapsed().as_millis() as u64, "locating");

        let mut run = Run {
            result_id: row.result_id.clone(),
            ip,
            budget: Duration::from_millis(u64::from(timeout_ms)),
            ping_count,
            rows: Vec::new(),
            done: 0,
            total: 0,
            progress,
        };
        match mode {
            Mode::All => {
                let all: Vec<usize> = (0..probes.len()).collect();
                let pings = run.ping_count;
                self.run_stage(&mut run, &probes, &all, 1, pings).await;
            }
            Mode::TwoStage => {
                let first = schedule::spread(&probes, self.config.two_stage_first as usize);
                // The world-spread first stage only has to point at the region: one echo
                // request per probe; the packets go to the second stage.
                self.run_stage(&mut run, &probes, &first, 1, 1).await;
                let seen = stage_one_rtts(&run.rows);
                let second = if seen.is_empty() {
                    let more = schedule::spread(&probes, first.len() + k);
                    more.into_iter()
                        .filter(|i| !first.contains(i))
                        .take(k)
                        .collect()
                } else {
                    schedule::nearest_by_rtt_fit(&probes, &seen, k, &first)
                };
                let pings = run.ping_count;
                self.run_stage(&mut run, &probes, &second, 2, pings).await;
            }
        }

        if self.is_shutting_down() {
            // Answers were cut short by the shutdown: do not store a misleading failure.
            row.status = ResultStatus::Interrupted;
            row.error_code = "interrupted".into();
            row.error = "coordinator stopped during the measurement".into();
            row.finished_unix_ms = Some(unix_ms());
            self.storage.update_result(&row).await?;
            return Err(LocateFailure::new(
                "interrupted",
                "the coordinator is shutting down",
            ));
        }
        let outcome = self.finish(&mut row, &run.rows, &geoip, calibration).await;
        self.storage.update_result(&row).await?;
        match outcome {
            Ok(()) => {
                tracing::info!(ip = %ip_s, result_id = %row.result_id, used = row.probes_used, elapsed_ms = started.elapsed().as_millis() as u64, "located");
                Ok(result_to_pb(&self.storage, &row, false).await?)
            }
            Err(f) => {
                tracing::info!(ip = %ip_s, result_id = %row.result_id, code = %f.code, reason = %f.message, "not located");
                Err(f)
            }
        }
    }

    /// Solves from the rows and fills `row` (status, solution, counters).
    async fn finish(
        &self,
        row: &mut ResultRow,
        rows: &[MeasurementRow],
        geoip: &GeoIpLookup,
        calibration: Option<geoloc_engine::Calibration>,
    ) -> Result<(), LocateFailure> {
        row.finished_unix_ms = Some(unix_ms());
        let inputs = match inputs_from_rows(rows) {
            Ok(i) => i,
            Err(e) => {
                row.status = ResultStatus::Failed;
                row.error_code = "internal".into();
                row.error = e.clone();
                return Err(LocateFailure::new("internal", e));
            }
        };
        row.probes_asked = inputs.probes_asked as i64;
        row.packets_sent = inputs.packets_sent as i64;
        if let Some((probe, rtt)) = inputs.nearest() {
            row.min_rtt_ms = Some(rtt);
            row.nearest_probe = probe.to_string();
        }
        if inputs.measurements.is_empty() {
            let mut counts: std::collections::BTreeMap<&str, usize> =
                std::collections::BTreeMap::new();
            for r in rows {
                *counts.entry(r.outcome.as_str()).or_default() += 1;
            }
            let detail: Vec<String> = counts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            let msg = format!(
                "none of the {} probes asked got an RTT to {} ({})",
                inputs.probes_asked,
                row.ip,
                detail.join(", ")
            );
            row.status = ResultStatus::Failed;
            row.error_code = "no-answer".into();
            row.error = msg.clone();
            return Err(LocateFailure::new("no-answer", msg));
        }
        match crate::solve::solve(&inputs, geoip, row.created_at_unix_ms / 1000, calibration) {
            Ok(sol) => {
                row.status = ResultStatus::Done;
                row.probes_used = sol.used as i64;
                row.solution_json = Some(
                    serde_json::to_string(&sol)
                        .map_err(|e| LocateFailure::new("internal", e.to_string()))?,
                );
                Ok(())
            }
            Err(e) => {
                row.status = ResultStatus::Failed;
                row.error_code = "solve-failed".into();
                row.error = e.clone();
                Err(LocateFailure::new("solve-failed", e))
            }
        }
    }

    async fn run_stage(
        self: &Arc<Self>,
        run: &mut Run<'_>,
        probes: &[ProbeSnapshot],
        chosen: &[usize],
        stage: u32,
        pings: u32,
    ) {
        run.total += chosen.len() as u32;
        let mut tasks: FuturesUnordered<_> = chosen
            .iter()
            .map(|&i| {
                let probe = probes[i].clone();
                let this = Arc::clone(self);
                let (result_id, ip, budget) = (run.result_id.clone(), run.ip, run.budget);
                async move {
                    let rows = this
                        .measure_target(&probe, ip, &result_id, stage, budget, pings)
                        .await;
                    (probe, rows)
                }
            })
            .collect();
        let stage_start = std::time::Instant::now();
        while let Some((probe, rows)) = tasks.next().await {
            run.done += 1;
            tracing::debug!(probe = %probe.probe_id, stage, done = run.done, elapsed_ms = stage_start.elapsed().as_millis() as u64, "probe answered");
            let mut best: Option<f64> = None;
            let mut error = String::new();
            let mut outcome = pb::ProbeOutcome::Unspecified;
            for r in &rows {
                let raw: RawResult = serde_json::from_str(&r.raw_json).unwrap_or_default();
                if let Some((rtt, _)) = raw.best_rtt() {
                    best = Some(best.map_or(rtt, |b: f64| b.min(rtt)));
                }
                if outcome == pb::ProbeOutcome::Unspecified && r.outcome != "answered" {
                    outcome = pb::ProbeOutcome::from_name(&r.outcome).unwrap_or_default();
                }
                if error.is_empty() && r.outcome != "answered" {
                    error = if r.error.is_empty() {
                        r.outcome.clone()
                    } else {
                        format!("{}: {}", r.outcome, r.error)
                    };
                }
            }
            if best.is_some() {
                error.clear();
                outcome = pb::ProbeOutcome::Answered;
            }
            (run.progress)(pb::Progress {
                probe_id: probe.probe_id.clone(),
                done: run.done,
                total: run.total,
                min_rtt_ms: best,
                error,
                stage,
                outcome: outcome as i32,
            });
            run.rows.extend(rows);
        }
    }

    /// One probe, one target: a ping; if the target stays silent and time remains, a TCP
    /// handshake (targets that drop ICMP often answer SYNs, with SYN/ACK or RST) and a
    /// traceroute (its last hop, for a target that answers nothing) at the same time. Every
    /// answer is stored as it arrives.
    async fn measure_target(
        &self,
        probe: &ProbeSnapshot,
        ip: IpAddr,
        result_id: &str,
        stage: u32,
        budget: Duration,
        ping_count: u32,
    ) -> Vec<MeasurementRow> {
        let start = tokio::time::Instant::now();
        let deadline = start + budget;
        let mut rows = Vec::new();
        let ping = pb::MeasurementRequest {
            request_id: new_id(),
            target: ip.to_string(),
            kinds: vec![pb::MeasurementKind::Ping as i32],
            ping_count,
            interval_ms: self.config.ping_interval_ms,
            timeout_ms: budget.as_millis() as u32,
            tcp_ports: Vec::new(),
            max_ttl: 0,
            allow_private: self.config.allow_private,
            purpose: pb::MeasurementPurpose::Locate as i32,
        };
        let first = self
            .ask(probe, ping, budget, Some(result_id), stage, None)
            .await;
        let target_silent = first.outcome == "no-reply";
        rows.push(first);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if target_silent && left.as_millis() as u64 >= MIN_TRACEROUTE_BUDGET_MS {
            let trace = pb::MeasurementRequest {
                request_id: new_id(),
                target: ip.to_string(),
                kinds: vec![
                    pb::MeasurementKind::Tcp as i32,
                    pb::MeasurementKind::Traceroute as i32,
                ],
                ping_count: 0,
                interval_ms: 0,
                timeout_ms: left.as_millis() as u32,
                tcp_ports: Vec::new(),
                max_ttl: 30,
                allow_private: self.config.allow_private,
                purpose: pb::MeasurementPurpose::Locate as i32,
            };
            rows.push(
                self.ask(probe, trace, left, Some(result_id), stage, None)
                    .await,
            );
        }
        rows
    }

    /// Sends one request, waits (budget + a small grace for transit), stores the raw row.
    pub(crate) async fn ask(
        &self,
        probe: &ProbeSnapshot,
        req: pb::MeasurementRequest,
        budget: Duration,
        result_id: Option<&str>,
        stage: u32,
        landmark: Option<(&str, LatLon)>,
    ) -> MeasurementRow {
        let grace = (budget / 5).min(Duration::from_millis(1000));
        let request_id = req.request_id.clone();
        let target = req.target.clone();
        let outcome = self
            .registry
            .measure(&probe.probe_id, req, budget + grace)
            .await;
        let (outcome_s, error, raw) = match outcome {
            Outcome::Answer(r) => {
                let raw = RawResult::from(r.as_ref());
                let o = if r.request_id != request_id {
                    "probe-error"
                } else if raw.best_rtt().is_some() {
                    "answered"
                } else {
                    "no-reply"
                };
                (o, raw.error.clone(), raw)
            }
            Outcome::Rejected(m) => (
                "rejected",
                m.clone(),
                RawResult {
                    error: m,
                    ..Default::default()
                },
            ),
            Outcome::ProbeError(m) => (
                "probe-error",
                m.clone(),
                RawResult {
                    error: m,
                    ..Default::default()
                },
            ),
            Outcome::Timeout => (
                "timeout",
                format!("no answer within {} ms", budget.as_millis()),
                RawResult::default(),
            ),
            Outcome::Disconnected => (
                "disconnected",
                "probe session ended".to_string(),
                RawResult::default(),
            ),
            Outcome::NotConnected => (
                "disconnected",
                "probe not connected".to_string(),
                RawResult::default(),
            ),
        };
        let mut raw = raw;
        if raw.request_id.is_empty() {
            raw.request_id = request_id.clone();
        }
        if raw.target.is_empty() {
            raw.target = target.clone();
        }
        let row = MeasurementRow {
            measurement_id: new_id(),
            result_id: result_id.map(str::to_string),
            purpose: if landmark.is_some() {
                "landmark"
            } else {
                "locate"
            }
            .to_string(),
            stage: i64::from(stage),
            request_id,
            probe_id: probe.probe_id.clone(),
            probe_lat: probe.lat,
            probe_lon: probe.lon,
            target,
            target_landmark: landmark.map(|(id, _)| id.to_string()),
            target_lat: landmark.map(|(_, p)| p.lat),
            target_lon: landmark.map(|(_, p)| p.lon),
            outcome: outcome_s.to_string(),
            error,
            excluded: String::new(),
            packets_sent: raw.packets_sent() as i64,
            raw_json: serde_json::to_string(&raw).unwrap_or_default(),
            created_unix_ms: unix_ms(),
        };
        if let Err(e) = self.storage.insert_measurement(&row).await {
            tracing::error!(error = %e, probe = %row.probe_id, "could not store a measurement");
        }
        row
    }

    /// Recomputes a stored result from its raw measurement rows (same derivation, same GeoIP
    /// record, same instant for UTC offsets).
    pub async fn recompute(&self, result_id: &str) -> crate::Result<geoloc_engine::Solution> {
        recompute(&self.storage, result_id).await
    }
}

/// See [`Coordinator::recompute`]; needs only the store.
pub async fn recompute(
    storage: &crate::storage::Storage,
    result_id: &str,
) -> crate::Result<geoloc_engine::Solution> {
    let r = storage
        .get_result(result_id)
        .await?
        .ok_or_else(|| CoordinatorError::NotFound(result_id.to_string()))?;
    let rows = storage.measurements_for_result(result_id).await?;
    let inputs = inputs_from_rows(&rows).map_err(|detail| CoordinatorError::Corrupt {
        what: "measurements.raw_json",
        detail,
    })?;
    let geoip: GeoIpLookup = match &r.geoip_json {
        None => None,
        Some(s) => Some(
            serde_json::from_str(s).map_err(|e| CoordinatorError::Corrupt {
                what: "results.geoip_json",
                detail: e.to_string(),
            })?,
        ),
    };
    let calibration: Option<geoloc_engine::Calibration> = match &r.calibration_json {
        None => None,
        Some(s) => Some(
            serde_json::from_str(s).map_err(|e| CoordinatorError::Corrupt {
                what: "results.calibration_json",
                detail: e.to_string(),
            })?,
        ),
    };
    crate::solve::solve(&inputs, &geoip, r.created_at_unix_ms / 1000, calibration)
        .map_err(CoordinatorError::Engine)
}

/// First-stage (probe position, best RTT) pairs.
fn stage_one_rtts(rows: &[MeasurementRow]) -> Vec<(LatLon, f64)> {
    match inputs_from_rows(rows) {
        Ok(i) => i.per_probe.iter().map(|p| (p.pos, p.rtt_ms)).collect(),
        Err(_) => Vec::new(),
    }
}
