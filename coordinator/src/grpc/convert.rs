//! The one conversion between the wire (`geoloc.v1`) and the core's types, both ways. The
//! solution and per-probe RTTs go through `geoloc_proto::convert`.
use geoloc_proto::v1 as pb;

use crate::config::Mode;
use crate::core::locate::{
    FailureCode, LocateEvent, LocateFailure, LocateParams, Located, ProbeProgress,
};
use crate::core::measurement::{
    MeasurementOutcome, MeasurementRequest, MeasurementResult, RawHop, RawPing, RawTcp,
    RawTraceroute, TcpOutcome, TracerouteProtocol,
};
use crate::core::registry::{ProbeSnapshot, SessionCommand};
use crate::core::trace::{ProbeChoice, TraceParams, Traced};
use crate::CoordinatorError;

pub fn mode_from_pb(m: i32) -> Option<Mode> {
    match pb::LocateMode::try_from(m) {
        Ok(pb::LocateMode::All) => Some(Mode::All),
        Ok(pb::LocateMode::TwoStage) => Some(Mode::TwoStage),
        Ok(pb::LocateMode::Phased) => Some(Mode::Phased),
        _ => None,
    }
}

fn mode_to_pb(m: Option<Mode>) -> pb::LocateMode {
    match m {
        Some(Mode::All) => pb::LocateMode::All,
        Some(Mode::TwoStage) => pb::LocateMode::TwoStage,
        Some(Mode::Phased) => pb::LocateMode::Phased,
        None => pb::LocateMode::Unspecified,
    }
}

/// A client's request. The address is checked by the core (target policy).
pub fn params(r: &pb::LocateRequest) -> LocateParams {
    LocateParams {
        ip: r.ip.clone(),
        mode: mode_from_pb(r.mode),
        timeout_ms: r.timeout_ms,
        k: r.k,
        reuse_stored: r.reuse_stored,
        ping_count: r.ping_count,
        job_key: (!r.job_key.is_empty()).then(|| r.job_key.clone()),
        ..LocateParams::default()
    }
}

/// A client's trace request (checked by the core: address, probe id, bounds).
pub fn trace_params(r: &pb::TraceRequest) -> TraceParams {
    TraceParams {
        ip: r.ip.clone(),
        probe_id: r.probe_id.clone(),
        max_ttl: r.max_ttl,
        timeout_ms: r.timeout_ms,
        ..TraceParams::default()
    }
}

/// A finished trace on the wire.
pub fn traced(t: &Traced) -> pb::TraceReply {
    pb::TraceReply {
        ip: t.ip.clone(),
        probe_id: t.probe.id.clone(),
        probe_position: Some(pb::LatLon {
            lat: t.probe.pos.lat,
            lon: t.probe.pos.lon,
        }),
        probe_choice: match t.choice {
            ProbeChoice::Requested => pb::TraceProbeChoice::Requested,
            ProbeChoice::NearestStored => pb::TraceProbeChoice::NearestStored,
            ProbeChoice::NearestGeoIp => pb::TraceProbeChoice::NearestGeoip,
            ProbeChoice::First => pb::TraceProbeChoice::First,
        } as i32,
        hops: t
            .hops
            .iter()
            .map(|h| pb::TraceHop {
                ttl: h.ttl,
                address: h.address.map(|a| a.to_string()).unwrap_or_default(),
                rtt_ms: h.rtt_ms.clone(),
            })
            .collect(),
        reached: t.reached,
        packets_sent: t.packets_sent,
        max_ttl: t.max_ttl,
        error: t.error.clone(),
        finished_unix_ms: t.finished_unix_ms,
    }
}

/// A batch's parameters for one of its addresses.
pub fn batch_params(r: &pb::LocateBatchRequest, ip: String) -> LocateParams {
    LocateParams {
        ip,
        mode: mode_from_pb(r.mode),
        timeout_ms: r.timeout_ms,
        k: r.k,
        reuse_stored: r.reuse_stored,
        ping_count: r.ping_count,
        ..LocateParams::default()
    }
}

pub fn error_code(c: FailureCode) -> pb::ErrorCode {
    pb::ErrorCode::from_code(c.as_str()).unwrap_or(pb::ErrorCode::Internal)
}

pub fn locate_error(f: LocateFailure) -> pb::LocateError {
    pb::LocateError {
        error_code: error_code(f.code) as i32,
        message: f.message,
    }
}

/// How a probe's request ended, as `Progress.outcome` says it (`rejected` has no value of
/// its own on the wire: unspecified).
pub fn probe_outcome(o: Option<MeasurementOutcome>) -> pb::ProbeOutcome {
    match o {
        Some(MeasurementOutcome::Answered) => pb::ProbeOutcome::Answered,
        Some(MeasurementOutcome::NoReply) => pb::ProbeOutcome::NoReply,
        Some(MeasurementOutcome::Timeout) => pb::ProbeOutcome::Timeout,
        Some(MeasurementOutcome::Disconnected) => pb::ProbeOutcome::Disconnected,
        Some(MeasurementOutcome::ProbeError) => pb::ProbeOutcome::ProbeError,
        Some(MeasurementOutcome::Rejected) | None => pb::ProbeOutcome::Unspecified,
    }
}

pub fn progress(p: ProbeProgress) -> pb::Progress {
    pb::Progress {
        probe_id: p.probe_id,
        done: p.done,
        total: p.total,
        min_rtt_ms: p.min_rtt_ms,
        error: p.error,
        stage: p.stage,
        outcome: probe_outcome(p.outcome) as i32,
    }
}

/// The progress events the wire carries (a stage start has no message of its own).
pub fn event(e: LocateEvent) -> Option<pb::Progress> {
    match e {
        LocateEvent::Measured(p) => Some(progress(p)),
        LocateEvent::StageStarted { .. } => None,
    }
}

/// A located address in its wire form.
pub fn located(l: &Located) -> Result<pb::LocateResult, CoordinatorError> {
    let solution = pb::Solution::try_from(&l.solution).map_err(|e| CoordinatorError::Corrupt {
        what: "results.solution_json",
        detail: e.to_string(),
    })?;
    Ok(pb::LocateResult {
        result_id: l.result_id.clone(),
        ip: l.ip.clone(),
        solution: Some(solution),
        probes_used: l.probes_used,
        created_at_unix_ms: l.created_at_unix_ms,
        cached: l.cached,
        locate_mode: mode_to_pb(l.mode) as i32,
        packets_sent: l.packets_sent,
        min_rtt_ms: l.min_rtt_ms,
        nearest_probe: l.nearest_probe.clone(),
        probes_asked: l.probes_asked,
        probe_rtts: l.probe_rtts.iter().map(pb::ProbeRtt::from).collect(),
        requested_by: l.requested_by.clone(),
        atlas_credits: l.spent.atlas_credits,
        fleet_probes_asked: l.spent.fleet_probes_asked,
        atlas_probes_asked: l.spent.atlas_probes_asked,
    })
}

pub fn probe_info(p: ProbeSnapshot) -> pb::ProbeInfo {
    let ProbeSnapshot {
        row,
        connected,
        healthy,
    } = p;
    pb::ProbeInfo {
        probe_id: row.probe_id,
        lat: row.lat,
        lon: row.lon,
        healthy,
        flagged: row.flagged,
        flag_reason: row.flag_reason,
        last_seen_unix_ms: row.last_seen_unix_ms,
        connected,
        agent_version: row.agent_version,
        ipv4: row.ipv4,
        ipv6: row.ipv6,
    }
}

// ---- probe sessions -------------------------------------------------------------------------

pub fn request(r: &MeasurementRequest) -> pb::MeasurementRequest {
    let mut kinds = Vec::new();
    if r.kinds.ping {
        kinds.push(pb::MeasurementKind::Ping as i32);
    }
    if r.kinds.tcp {
        kinds.push(pb::MeasurementKind::Tcp as i32);
    }
    if r.kinds.traceroute {
        kinds.push(pb::MeasurementKind::Traceroute as i32);
    }
    pb::MeasurementRequest {
        request_id: r.request_id.clone(),
        target: r.target.to_string(),
        kinds,
        ping_count: r.ping_count,
        interval_ms: r.interval_ms,
        timeout_ms: u32::try_from(r.timeout.as_millis()).unwrap_or(u32::MAX),
        tcp_ports: r.tcp_ports.clone(),
        max_ttl: r.max_ttl,
        allow_private: r.allow_private,
    }
}

/// A command of the core for a probe session, as a wire message.
pub fn command(c: SessionCommand) -> pb::CoordinatorMessage {
    let kind = match c {
        SessionCommand::Measure(r) => {
            pb::coordinator_message::Kind::MeasurementRequest(request(&r))
        }
        SessionCommand::Cancel { request_id, reason } => {
            pb::coordinator_message::Kind::Cancel(pb::Cancel { request_id, reason })
        }
    };
    pb::CoordinatorMessage { kind: Some(kind) }
}

fn tcp_outcome(o: i32) -> TcpOutcome {
    match pb::TcpOutcome::try_from(o) {
        Ok(pb::TcpOutcome::SynAck) => TcpOutcome::SynAck,
        Ok(pb::TcpOutcome::Rst) => TcpOutcome::Rst,
        Ok(pb::TcpOutcome::Timeout) => TcpOutcome::Timeout,
        Ok(pb::TcpOutcome::Error) => TcpOutcome::Error,
        _ => TcpOutcome::Unspecified,
    }
}

fn trace_protocol(p: i32) -> TracerouteProtocol {
    match pb::TracerouteProtocol::try_from(p) {
        Ok(pb::TracerouteProtocol::Icmp) => TracerouteProtocol::Icmp,
        Ok(pb::TracerouteProtocol::Udp) => TracerouteProtocol::Udp,
        Ok(pb::TracerouteProtocol::Tcp) => TracerouteProtocol::Tcp,
        _ => TracerouteProtocol::Unspecified,
    }
}

/// A probe's answer (already checked by `validate::answer`) in the core's words.
pub fn result(r: &pb::MeasurementResult) -> MeasurementResult {
    MeasurementResult {
        request_id: r.request_id.clone(),
        target: r.target.clone(),
        ping: r.ping.as_ref().map(|p| RawPing {
            rtts_ms: p.rtts_ms.clone(),
            sent: p.sent,
            received: p.received,
            min_rtt_ms: p.min_rtt_ms,
            error: p.error.clone(),
        }),
        tcp: r
            .tcp
            .iter()
            .map(|t| RawTcp {
                port: t.port,
                rtt_ms: t.rtt_ms,
                outcome: tcp_outcome(t.outcome),
                error: t.error.clone(),
            })
            .collect(),
        traceroute: r.traceroute.as_ref().map(|t| RawTraceroute {
            protocol: trace_protocol(t.protocol),
            hops: t
                .hops
                .iter()
                .map(|h| RawHop {
                    ttl: h.ttl,
                    address: h.address.clone(),
                    rtt_ms: h.rtt_ms,
                })
                .collect(),
            reached: t.reached,
            last_hop_address: t.last_hop.as_ref().map(|l| l.address.clone()),
            last_hop_rtt_ms: t.last_hop.as_ref().map(|l| l.rtt_ms),
            error: t.error.clone(),
        }),
        error: r.error.clone(),
        started_unix_ms: r.started_unix_ms,
        finished_unix_ms: r.finished_unix_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::measurement::RequestDefaults;
    use std::time::Duration;

    #[test]
    fn requests_cross_the_wire_as_built() {
        let d = RequestDefaults {
            ping_interval_ms: 100,
            allow_private: true,
        };
        let r = d.tcp_and_traceroute("2001:db8::1".parse().unwrap(), Duration::from_millis(1500));
        let p = request(&r);
        assert_eq!(
            p.kinds,
            [
                pb::MeasurementKind::Tcp as i32,
                pb::MeasurementKind::Traceroute as i32
            ]
        );
        assert_eq!((p.timeout_ms, p.max_ttl, p.ping_count), (1500, 30, 0));
        assert_eq!(p.target, "2001:db8::1");
        assert!(p.allow_private);
    }

    #[test]
    fn every_failure_code_has_its_wire_code() {
        for c in FailureCode::ALL {
            assert_eq!(error_code(c).code(), c.as_str());
        }
    }
}
