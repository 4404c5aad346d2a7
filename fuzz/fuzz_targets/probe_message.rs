//! A probe's message as the coordinator receives it: protobuf `ProbeMessage` bytes, then,
//! for a measurement result, the edge check (`grpc::validate::answer`) against a request
//! the first input byte describes, the conversion into the core's words
//! (`grpc::convert::result`), the core's reading of it (best RTT, packets sent) and the
//! JSON round trip of the stored row. Nothing of it may panic.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use geoloc_coordinator::core::measurement::{MeasurementResult, Purpose, RequestDefaults};
use geoloc_coordinator::grpc::{convert, validate};
use geoloc_proto::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&shape, bytes)) = data.split_first() else {
        return;
    };
    let Ok(msg) = pb::ProbeMessage::decode(bytes) else {
        return;
    };
    let r = match msg.kind {
        Some(pb::probe_message::Kind::MeasurementResult(r)) => r,
        Some(pb::probe_message::Kind::Error(e)) => {
            let _ = validate::bounded_text(&e.message, validate::MAX_ERROR_LEN);
            let _ = validate::printable(&e.request_id);
            return;
        }
        _ => return,
    };
    // The request this answer claims to answer: same id, and (mostly) the same target, so
    // that the checks past the first ones are reached.
    let target = if shape & 0x80 == 0 {
        r.target
            .parse::<IpAddr>()
            .unwrap_or(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)))
    } else {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
    };
    let defaults = RequestDefaults {
        ping_interval_ms: 50,
        allow_private: shape & 0x40 != 0,
    };
    let budget = Duration::from_millis(5000);
    let mut req = if shape & 1 == 0 {
        defaults.ping(target, u32::from((shape >> 1) & 7), budget, Purpose::Locate)
    } else {
        defaults.tcp_and_traceroute(target, budget, Purpose::Landmark)
    };
    req.request_id = r.request_id.clone();
    if shape & 0x10 != 0 {
        req.tcp_ports = vec![443, 80];
    }
    if validate::answer(&req, &r).is_err() {
        return;
    }
    let m = convert::result(&r);
    let _ = m.best_rtt();
    let _ = m.packets_sent();
    let row = serde_json::to_string(&m).expect("a checked answer serializes");
    let back: MeasurementResult = serde_json::from_str(&row).expect("a stored row reads back");
    let _ = back.best_rtt();
});
