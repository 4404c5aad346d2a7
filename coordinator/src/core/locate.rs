//! Locating one address: ask a [`MeasurementSource`] for vantage points, choose some ("all"
//! or "two-stage"), have them measure with a per-vantage-point budget, store every answer as
//! a row, solve with what arrived, store the result. No wire type here: the gRPC adapter
//! converts [`LocateParams`] in and [`Located`] / [`LocateEvent`] / [`LocateFailure`] out.
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use geoloc_engine::{LatLon, Measurement, Solution};

use crate::config::Mode;
use crate::core::access::{packet_estimate, Caller, Charge};
use crate::core::jobs;
use crate::core::measurement::{MeasurementOutcome, MeasurementResult, Purpose};
use crate::core::rows::{MeasurementRow, ResultRow, ResultStatus};
use crate::core::schedule;
use crate::core::solve::{inputs_from_parsed, inputs_from_rows, GeoIpLookup, Inputs};
use crate::core::source::{MeasureSpec, MeasurementSource, VantagePoint};
use crate::core::sources::{SourceChoice, Spent};
use crate::core::target;
use crate::storage::{Storage, MEAS_BATCH};
use crate::{new_id, unix_ms, Coordinator, CoordinatorError};

/// Largest per-probe budget a client may ask for, ms.
pub const MAX_TIMEOUT_MS: u32 = 120_000;
/// Largest number of echo requests per probe a client may ask for.
pub const MAX_PING_COUNT: u32 = 20;

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
    /// Who asks (an API key's name and quotas); the default is the coordinator itself.
    pub caller: Caller,
    /// Where the vantage points come from (the fleet by default).
    pub source: SourceChoice,
    /// Most vantage points asked, 0 = no limit (with [`Mode::Phased`]).
    pub budget: u32,
    /// Idempotency key (see [`crate::core::jobs`]); checked by [`crate::core::jobs::check_key`].
    pub job_key: Option<String>,
    /// Runs again the stored keyed run (taken over by this process: no admission, same
    /// result id). Only [`crate::core::jobs::resume`] can make one.
    pub resume: Option<Resume>,
}

/// A stored keyed run to run again (see [`LocateParams::resume`]).
#[derive(Debug, Clone)]
pub struct Resume(pub(crate) ResultRow);

impl std::ops::Deref for Resume {
    type Target = ResultRow;
    fn deref(&self) -> &ResultRow {
        &self.0
    }
}

/// Why an address got no answer (the codes clients print and scripts read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCode {
    InvalidAddress,
    Bogon,
    InvalidArgument,
    NoProbes,
    NoAnswer,
    SolveFailed,
    Internal,
    /// The coordinator stopped during the run: retry later.
    Interrupted,
    /// An abuse limit (key quota, per-target packet budget) refused the address.
    QuotaExceeded,
}

impl FailureCode {
    pub const ALL: [FailureCode; 9] = [
        FailureCode::InvalidAddress,
        FailureCode::Bogon,
        FailureCode::InvalidArgument,
        FailureCode::NoProbes,
        FailureCode::NoAnswer,
        FailureCode::SolveFailed,
        FailureCode::Internal,
        FailureCode::Interrupted,
        FailureCode::QuotaExceeded,
    ];

    /// The short code (`invalid-address`, `no-probes`, ...), as stored with failed results.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCode::InvalidAddress => "invalid-address",
            FailureCode::Bogon => "bogon",
            FailureCode::InvalidArgument => "invalid-argument",
            FailureCode::NoProbes => "no-probes",
            FailureCode::NoAnswer => "no-answer",
            FailureCode::SolveFailed => "solve-failed",
            FailureCode::Internal => "internal",
            FailureCode::Interrupted => "interrupted",
            FailureCode::QuotaExceeded => "quota-exceeded",
        }
    }

    /// The code of a short name; None for an unknown one.
    pub fn parse(code: &str) -> Option<FailureCode> {
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }
}

/// Why an address got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocateFailure {
    pub code: FailureCode,
    pub message: String,
}

impl LocateFailure {
    pub fn new(code: FailureCode, message: impl Into<String>) -> Self {
        LocateFailure {
            code,
            message: message.into(),
        }
    }
    /// The target policy refused the address.
    pub fn refused(r: target::Refused) -> Self {
        let code = FailureCode::parse(r.code).unwrap_or(FailureCode::InvalidAddress);
        LocateFailure::new(code, r.message)
    }
    /// The coordinator stopped during the run: the client should retry later.
    pub fn is_interrupted(&self) -> bool {
        self.code == FailureCode::Interrupted
    }
    /// The request itself is wrong (bad address, bogon, bad parameter).
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self.code,
            FailureCode::InvalidAddress | FailureCode::Bogon | FailureCode::InvalidArgument
        )
    }
}

impl From<CoordinatorError> for LocateFailure {
    fn from(e: CoordinatorError) -> Self {
        LocateFailure::new(FailureCode::Internal, e.to_string())
    }
}

/// One vantage point finished.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeProgress {
    pub probe_id: String,
    /// Vantage points finished / asked so far in this run (both stages).
    pub done: u32,
    pub total: u32,
    /// Its best RTT to the target, if any.
    pub min_rtt_ms: Option<f64>,
    /// Why it gave no RTT (empty when it did).
    pub error: String,
    /// 1 or 2.
    pub stage: u32,
    /// How its first unanswered request ended; `Answered` when it has an RTT.
    pub outcome: Option<MeasurementOutcome>,
}

/// What happens during a locate run, for the caller's progress display.
#[derive(Debug, Clone, PartialEq)]
pub enum LocateEvent {
    /// A stage starts with this many vantage points.
    StageStarted { stage: u32, vantage_points: u32 },
    /// One vantage point finished.
    Measured(ProbeProgress),
}

/// A located address: the engine's solution and how it was obtained.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    pub result_id: String,
    pub ip: String,
    pub solution: Solution,
    pub probes_used: u32,
    pub created_at_unix_ms: i64,
    /// Read back from the store instead of measured.
    pub cached: bool,
    /// None for a mode name this version does not know.
    pub mode: Option<Mode>,
    pub packets_sent: u64,
    pub min_rtt_ms: Option<f64>,
    pub nearest_probe: String,
    pub probes_asked: u32,
    /// Per vantage point, the RTT that entered the solution.
    pub probe_rtts: Vec<Measurement>,
    /// Name of the API key that asked for the run ('' without a key).
    pub requested_by: String,
    /// Vantage points asked by source, and RIPE Atlas credits spent.
    pub spent: Spent,
}

/// Reads a finished result back (solution and the per-probe RTTs of its rows).
pub async fn located(storage: &Storage, r: &ResultRow, cached: bool) -> crate::Result<Located> {
    let corrupt = |what: &'static str, detail: String| CoordinatorError::Corrupt { what, detail };
    let text = r.solution_json.as_deref().ok_or_else(|| {
        corrupt(
            "results.solution_json",
            format!("result {} has no solution", r.result_id),
        )
    })?;
    let solution: Solution =
        serde_json::from_str(text).map_err(|e| corrupt("results.solution_json", e.to_string()))?;
    let rows = storage.measurements_for_result(&r.result_id).await?;
    let inputs = inputs_from_rows(&rows)?;
    Ok(located_from(r, solution, inputs, &rows, cached))
}

/// A finished result from its row, its solution and the rows' inputs.
fn located_from(
    r: &ResultRow,
    solution: Solution,
    inputs: Inputs,
    rows: &[MeasurementRow],
    cached: bool,
) -> Located {
    Located {
        result_id: r.result_id.clone(),
        ip: r.ip.clone(),
        solution,
        probes_used: r.probes_used.max(0) as u32,
        created_at_unix_ms: r.created_at_unix_ms,
        cached,
        mode: mode_from_name(&r.mode),
        packets_sent: r.packets_sent.max(0) as u64,
        min_rtt_ms: r.min_rtt_ms,
        nearest_probe: r.nearest_probe.clone(),
        probes_asked: r.probes_asked.max(0) as u32,
        probe_rtts: inputs.measurements,
        requested_by: r.requested_by.clone(),
        spent: Spent::of_rows(rows),
    }
}

pub(crate) fn mode_from_name(s: &str) -> Option<Mode> {
    [Mode::All, Mode::TwoStage, Mode::Phased]
        .into_iter()
        .find(|m| m.as_str() == s)
}

/// The callback a locate run reports to.
pub type Progress<'a> = &'a (dyn Fn(LocateEvent) + Send + Sync);

pub(crate) struct Run<'a> {
    result_id: String,
    ip: IpAddr,
    budget: Duration,
    pub(crate) ping_count: u32,
    pub(crate) rows: Vec<MeasurementRow>,
    /// The answer of each of `rows`, as received (not parsed back from `raw_json`).
    pub(crate) results: Vec<MeasurementResult>,
    done: u32,
    total: u32,
    progress: Progress<'a>,
    /// Mix known-answer checks into the stages (the own fleet).
    known_answers: bool,
    /// A keyed run: its requests get ids derived from the run (see [`MeasureSpec::job`]).
    keyed: bool,
}

impl Run<'_> {
    /// What the rows so far give the engine (from the answers as received).
    pub(crate) fn inputs(&self) -> Inputs {
        inputs_from_parsed(&self.rows, &self.results)
    }
}

/// Locates one address with measurements from `source` (see [`Coordinator::locate`]).
pub(crate) async fn run(
    coord: &Coordinator,
    source: &dyn MeasurementSource,
    p: LocateParams,
    progress: Progress<'_>,
) -> Result<Located, LocateFailure> {
    let ip = target::check(&p.ip, coord.config.allow_private).map_err(LocateFailure::refused)?;
    if p.timeout_ms > MAX_TIMEOUT_MS {
        return Err(LocateFailure::new(
            FailureCode::InvalidArgument,
            format!("timeout_ms {} above {MAX_TIMEOUT_MS}", p.timeout_ms),
        ));
    }
    if p.ping_count > MAX_PING_COUNT {
        return Err(LocateFailure::new(
            FailureCode::InvalidArgument,
            format!("ping_count {} above {MAX_PING_COUNT}", p.ping_count),
        ));
    }
    let ip_s = target::canonical(ip);
    let job_key = match &p.job_key {
        Some(k) => {
            jobs::check_key(k).map_err(|m| LocateFailure::new(FailureCode::InvalidArgument, m))?;
            Some(jobs::scoped(&p.caller.name, k))
        }
        None => None,
    };
    let _in_flight = coord.locate_guard();
    let started = std::time::Instant::now();
    if coord.is_shutting_down() {
        return Err(interrupted());
    }
    if let (Some(key), None) = (&job_key, &p.resume) {
        if let Some(job) = coord.storage.job(key).await? {
            return jobs::follow(coord, job, &ip_s, progress).await;
        }
    }
    if p.reuse_stored && p.resume.is_none() {
        if let Some(r) = coord.storage.latest_done_result(&ip_s).await? {
            return Ok(located(&coord.storage, &r, true).await?);
        }
    }
    let mut vps = source.vantage_points().await;
    if vps.is_empty() {
        return Err(LocateFailure::new(
            FailureCode::NoProbes,
            source.none_available(),
        ));
    }
    // The own fleet's probes (alone or beside RIPE Atlas): only vetted ones measure; the
    // others are listed in the answer's dropped landmarks with the reason. Atlas vantage
    // points were vetted by their source.
    let fleet = source.has_fleet_probes();
    let left_out = if fleet {
        coord
            .vetting
            .keep_vetted(coord, &mut vps)
            .await
            .map_err(|m| LocateFailure::new(FailureCode::NoProbes, m))?
    } else {
        Vec::new()
    };
    let cfg = &coord.config;
    let mode = p.mode.unwrap_or(cfg.mode);
    let or = |v: u32, d: u32| if v == 0 { d } else { v };
    let timeout_ms = or(p.timeout_ms, cfg.probe_timeout_ms);
    let ping_count = or(p.ping_count, cfg.ping_count);
    let k = or(p.k, cfg.two_stage_k) as usize;
    // Vantage points asked at most, and what they may cost at a paid platform: refused
    // here, before any quota is charged or anything spent.
    let most = match mode {
        Mode::All => vps.len(),
        Mode::TwoStage => (cfg.two_stage_first as usize + k).min(vps.len()),
        Mode::Phased => crate::core::phased::most_asked(p.budget, vps.len()),
    };
    source
        .check_credits(most, ping_count)
        .map_err(|m| LocateFailure::new(FailureCode::QuotaExceeded, m))?;

    // Abuse limits, before any packet: a concurrent slot of the key, one address of its
    // hourly quota and the packets of the target's hourly budget (all or nothing). A run
    // taken over was admitted when it was first asked.
    let _slot = match p.resume {
        None => Some(coord.access.hold_slot(&p.caller)?),
        Some(_) => None,
    };
    let estimate = packet_estimate(
        (mode == Mode::TwoStage).then_some((cfg.two_stage_first as usize, k)),
        most,
        ping_count,
    );
    let charge = match p.resume {
        None => {
            coord
                .access
                .admit(&coord.storage, &p.caller, &ip_s, estimate, unix_ms())
                .await?
        }
        Some(ref r) => Charge::taken_over(&ip_s, estimate as i64, r.created_at_unix_ms),
    };

    let created = p
        .resume
        .as_ref()
        .map_or_else(unix_ms, |r| r.created_at_unix_ms);
    let geoip: GeoIpLookup = coord.geoip.as_ref().map(|g| g.lookup(ip));
    let calibration = coord.calibration().await?;
    let mut row = ResultRow {
        result_id: p
            .resume
            .as_ref()
            .map_or_else(new_id, |r| r.result_id.clone()),
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
        requested_by: p.caller.name.clone(),
    };
    let stored = match (&p.resume, &job_key) {
        // Taken over: the row exists; the rows of the first attempt go (its probes answer
        // the same request ids again from their cache).
        (Some(_), _) => coord
            .storage
            .delete_result_measurements(&row.result_id)
            .await
            .map(|_| true),
        (None, Some(key)) => {
            let spec =
                serde_json::to_string(&jobs::JobSpec::of(&p)).unwrap_or_else(|_| "{}".into());
            coord.storage.insert_keyed_result(&row, key, &spec).await
        }
        (None, None) => coord.storage.insert_result(&row).await.map(|()| true),
    };
    match stored {
        Ok(true) => {}
        Ok(false) => {
            // Another request with the same key got there first: follow its run.
            coord.access.settle(&coord.storage, &charge, Some(0)).await;
            let key = job_key.as_deref().unwrap_or_default();
            let job = coord.storage.job(key).await?.ok_or_else(|| {
                LocateFailure::new(FailureCode::Internal, "the keyed run disappeared")
            })?;
            return jobs::follow(coord, job, &ip_s, progress).await;
        }
        Err(e) => {
            coord.access.settle(&coord.storage, &charge, Some(0)).await;
            return Err(e.into());
        }
    }
    tracing::info!(ip = %ip_s, result_id = %row.result_id, mode = mode.as_str(), source = source.name(), vantage_points = vps.len(), setup_ms = started.elapsed().as_millis() as u64, "locating");

    let mut run = Run {
        result_id: row.result_id.clone(),
        ip,
        budget: Duration::from_millis(u64::from(timeout_ms)),
        ping_count,
        rows: Vec::new(),
        results: Vec::new(),
        done: 0,
        total: 0,
        progress,
        known_answers: fleet,
        keyed: job_key.is_some(),
    };
    match mode {
        Mode::All => {
            let pings = run.ping_count;
            run_stage(coord, source, &mut run, vps.clone(), 1, pings).await;
        }
        Mode::TwoStage => {
            let first = schedule::spread(&vps, cfg.two_stage_first as usize);
            // The world-spread first stage only has to point at the region: one echo
            // request per vantage point; the packets go to the second stage.
            run_stage(coord, source, &mut run, pick(&vps, &first), 1, 1).await;
            let seen = stage_one_rtts(&run);
            let second = if seen.is_empty() {
                let more = schedule::spread(&vps, first.len() + k);
                more.into_iter()
                    .filter(|i| !first.contains(i))
                    .take(k)
                    .collect()
            } else {
                schedule::nearest_by_rtt_fit(&vps, &seen, k, &first)
            };
            let pings = run.ping_count;
            run_stage(coord, source, &mut run, pick(&vps, &second), 2, pings).await;
        }
        Mode::Phased => {
            let cal = calibration.clone();
            crate::core::phased::run_rounds(coord, source, &mut run, &vps, most, cal).await;
        }
    }

    if coord.is_shutting_down() {
        // Answers were cut short by the shutdown: do not store a misleading failure.
        row.status = ResultStatus::Interrupted;
        row.error_code = FailureCode::Interrupted.as_str().into();
        row.error = "coordinator stopped during the measurement".into();
        row.finished_unix_ms = Some(unix_ms());
        coord.storage.update_result(&row).await?;
        let sent: i64 = run.rows.iter().map(|r| r.packets_sent.max(0)).sum();
        coord
            .access
            .settle(&coord.storage, &charge, Some(sent))
            .await;
        return Err(interrupted());
    }
    let outcome = finish(&mut row, &run, &geoip, calibration, left_out);
    let sent: i64 = run.rows.iter().map(|r| r.packets_sent.max(0)).sum();
    coord
        .access
        .settle(&coord.storage, &charge, Some(sent))
        .await;
    coord.storage.update_result(&row).await?;
    match outcome {
        Ok((solution, inputs)) => {
            tracing::info!(ip = %ip_s, result_id = %row.result_id, used = row.probes_used, elapsed_ms = started.elapsed().as_millis() as u64, "located");
            // Answered from what the run holds: the rows just stored are not read back.
            Ok(located_from(&row, solution, inputs, &run.rows, false))
        }
        Err(f) => {
            tracing::info!(ip = %ip_s, result_id = %row.result_id, code = f.code.as_str(), reason = %f.message, "not located");
            Err(f)
        }
    }
}

fn interrupted() -> LocateFailure {
    LocateFailure::new(FailureCode::Interrupted, "the coordinator is shutting down")
}

pub(crate) fn pick(vps: &[VantagePoint], idx: &[usize]) -> Vec<VantagePoint> {
    idx.iter().map(|&i| vps[i].clone()).collect()
}

/// Solves from the rows and fills `row` (status, solution, counters).
fn finish(
    row: &mut ResultRow,
    run: &Run<'_>,
    geoip: &GeoIpLookup,
    calibration: Option<geoloc_engine::Calibration>,
    left_out: Vec<geoloc_engine::Dropped>,
) -> Result<(Solution, Inputs), LocateFailure> {
    row.finished_unix_ms = Some(unix_ms());
    fn failed<T>(row: &mut ResultRow, code: FailureCode, msg: String) -> Result<T, LocateFailure> {
        row.status = ResultStatus::Failed;
        row.error_code = code.as_str().into();
        row.error = msg.clone();
        Err(LocateFailure::new(code, msg))
    }
    let rows = &run.rows;
    let inputs = run.inputs();
    if inputs.measurements.is_empty() {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
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
        row.probes_asked = inputs.probes_asked as i64;
        row.packets_sent = inputs.packets_sent as i64;
        return failed(row, FailureCode::NoAnswer, msg);
    }
    row.probes_asked = inputs.probes_asked as i64;
    row.packets_sent = inputs.packets_sent as i64;
    if let Some((probe, rtt)) = inputs.nearest() {
        row.min_rtt_ms = Some(rtt);
        row.nearest_probe = probe.to_string();
    }
    let solved =
        crate::core::solve::solve(&inputs, geoip, row.created_at_unix_ms / 1000, calibration).map(
            |mut sol| {
                add_left_out(&mut sol, left_out);
                sol
            },
        );
    match solved {
        Ok(sol) => match serde_json::to_string(&sol) {
            Ok(text) => {
                row.status = ResultStatus::Done;
                row.probes_used = sol.used as i64;
                row.solution_json = Some(text);
                Ok((sol, inputs))
            }
            Err(e) => failed(row, FailureCode::Internal, e.to_string()),
        },
        Err(e) => failed(row, FailureCode::SolveFailed, e),
    }
}

/// Measures from `chosen`, storing each answer as its vantage point finishes.
pub(crate) async fn run_stage(
    coord: &Coordinator,
    source: &dyn MeasurementSource,
    run: &mut Run<'_>,
    chosen: Vec<VantagePoint>,
    stage: u32,
    pings: u32,
) {
    run.total += chosen.len() as u32;
    (run.progress)(LocateEvent::StageStarted {
        stage,
        vantage_points: chosen.len() as u32,
    });
    if run.known_answers {
        coord.mix_known_answers(
            &chosen,
            pings,
            run.budget,
            coord.config.known_answer_percent,
        );
    }
    let spec = MeasureSpec {
        target: run.ip,
        ping_count: pings,
        budget: run.budget,
        job: run.keyed.then(|| run.result_id.clone()),
    };
    let stage_start = std::time::Instant::now();
    let mut results = source.measure(spec, chosen);
    // Rows from here on are stored in batches (`Storage::insert_measurements`): when
    // `MEAS_BATCH` are waiting, and at the end of the stage.
    let mut saved = run.rows.len();
    while let Some(v) = results.next().await {
        run.done += 1;
        tracing::debug!(probe = %v.vantage_point.id, stage, done = run.done, packets = v.cost.packets, credits = v.cost.credits, elapsed_ms = stage_start.elapsed().as_millis() as u64, "vantage point answered");
        let mut best: Option<f64> = None;
        let mut error = String::new();
        let mut outcome: Option<MeasurementOutcome> = None;
        for m in v.observations {
            if let Some((rtt, _)) = m.result.best_rtt() {
                best = Some(best.map_or(rtt, |b: f64| b.min(rtt)));
            }
            if m.outcome != MeasurementOutcome::Answered {
                outcome.get_or_insert(m.outcome);
                if error.is_empty() {
                    error = if m.error.is_empty() {
                        m.outcome.as_str().to_string()
                    } else {
                        format!("{}: {}", m.outcome.as_str(), m.error)
                    };
                }
            }
            run.rows
                .push(m.to_row(Some(&run.result_id), Purpose::Locate, stage, None));
            run.results.push(m.result);
        }
        if run.rows.len() - saved >= MEAS_BATCH {
            store_rows(coord, &run.rows[saved..]).await;
            saved = run.rows.len();
        }
        if best.is_some() {
            error.clear();
            outcome = Some(MeasurementOutcome::Answered);
        }
        (run.progress)(LocateEvent::Measured(ProbeProgress {
            probe_id: v.vantage_point.id.clone(),
            done: run.done,
            total: run.total,
            min_rtt_ms: best,
            error,
            stage,
            outcome,
        }));
    }
    store_rows(coord, &run.rows[saved..]).await;
}

/// Stores a locate's measurement rows in one batch; a failure is logged (the answer is
/// still given, as when a single row failed before).
async fn store_rows(coord: &Coordinator, rows: &[MeasurementRow]) {
    if rows.is_empty() {
        return;
    }
    if let Err(e) = coord.storage.insert_measurements(rows).await {
        tracing::error!(error = %e, rows = rows.len(), "could not store measurements");
    }
}

/// Recomputes a stored result from its measurement rows (same derivation, same GeoIP
/// record, same instant for UTC offsets). Needs only the store.
pub async fn recompute(storage: &Storage, result_id: &str) -> crate::Result<Solution> {
    let r = storage
        .get_result(result_id)
        .await?
        .ok_or_else(|| CoordinatorError::NotFound(result_id.to_string()))?;
    let rows = storage.measurements_for_result(result_id).await?;
    let inputs = inputs_from_rows(&rows)?;
    let corrupt = |what: &'static str| {
        move |e: serde_json::Error| CoordinatorError::Corrupt {
            what,
            detail: e.to_string(),
        }
    };
    let geoip: GeoIpLookup = match &r.geoip_json {
        None => None,
        Some(s) => Some(serde_json::from_str(s).map_err(corrupt("results.geoip_json"))?),
    };
    let calibration: Option<geoloc_engine::Calibration> = match &r.calibration_json {
        None => None,
        Some(s) => Some(serde_json::from_str(s).map_err(corrupt("results.calibration_json"))?),
    };
    let mut sol =
        crate::core::solve::solve(&inputs, &geoip, r.created_at_unix_ms / 1000, calibration)
            .map_err(CoordinatorError::Engine)?;
    // Probes left out before measuring have no rows: carry them over from the stored answer.
    if let Some(text) = &r.solution_json {
        let stored: Solution =
            serde_json::from_str(text).map_err(corrupt("results.solution_json"))?;
        let left_out = stored
            .dropped
            .into_iter()
            .filter(|d| d.reason.starts_with(crate::core::vetting::LEFT_OUT))
            .collect();
        add_left_out(&mut sol, left_out);
    }
    Ok(sol)
}

/// Adds the probes left out before measuring to the answer's dropped landmarks (sorted by
/// landmark, as the engine sorts them).
fn add_left_out(sol: &mut Solution, left_out: Vec<geoloc_engine::Dropped>) {
    if left_out.is_empty() {
        return;
    }
    sol.dropped.extend(left_out);
    sol.dropped.sort_by(|a, b| a.landmark.cmp(&b.landmark));
}

/// First-stage (vantage point position, best RTT) pairs.
fn stage_one_rtts(run: &Run<'_>) -> Vec<(LatLon, f64)> {
    run.inputs()
        .per_probe
        .iter()
        .map(|p| (p.pos, p.rtt_ms))
        .collect()
}
