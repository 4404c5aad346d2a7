//! Checks on values arriving from probes and clients, applied once at the gRPC edge before
//! anything is stored or solved. Every value from the wire is hostile until it passes here:
//! an answer must be about what was asked (target, kinds, counts), carry only finite RTTs in
//! a physical range, and stay within fixed size caps, so a stored row is bounded and can
//! always be rebuilt.
use std::net::IpAddr;

use geoloc_proto::v1 as pb;

use crate::core::measurement::MeasurementRequest;

pub use crate::core::text::{bounded_text, printable};

/// Smallest RTT accepted, ms (1 µs: a real echo, even on loopback, takes longer).
pub const MIN_RTT_MS: f64 = 0.001;
/// Largest RTT accepted, ms (no path on Earth is slower; a locate budget is shorter).
pub const MAX_RTT_MS: f64 = 60_000.0;
/// Most echo requests an answer may report when the request left the count to the agent.
pub const MAX_PINGS: u32 = 1000;
/// Most TCP port results in one answer when the request left the ports to the agent.
pub const MAX_TCP_RESULTS: usize = 64;
/// Most traceroute hops in one answer (a TTL is one byte).
pub const MAX_HOPS: usize = 255;
/// Longest error text kept from a probe, bytes (longer ones are cut).
pub const MAX_ERROR_LEN: usize = 512;
/// Longest address text in an answer, bytes (an IPv6 literal with a zone is shorter).
const MAX_ADDRESS_LEN: usize = 64;
/// The message size limits, in one place (`geoloc_proto::limits`, `docs/limits.md`).
pub use geoloc_proto::limits::{MAX_CLIENT_MESSAGE, MAX_PROBE_MESSAGE, MAX_REPLY_MESSAGE};

/// Why an answer was rejected (one line, safe to log: no control characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected(pub String);

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn reject(msg: impl Into<String>) -> Result<(), Rejected> {
    Err(Rejected(printable(&msg.into()).into_owned()))
}

/// A usable RTT: finite and within [`MIN_RTT_MS`, `MAX_RTT_MS`].
pub fn rtt_ok(rtt_ms: f64) -> bool {
    rtt_ms.is_finite() && (MIN_RTT_MS..=MAX_RTT_MS).contains(&rtt_ms)
}

fn check_rtt(what: &str, rtt_ms: f64) -> Result<(), Rejected> {
    if rtt_ok(rtt_ms) {
        Ok(())
    } else {
        reject(format!(
            "{what} {} ms outside [{MIN_RTT_MS}, {MAX_RTT_MS}]",
            compact(rtt_ms)
        ))
    }
}

fn check_text(what: &str, s: &str, max: usize) -> Result<(), Rejected> {
    if s.len() > max {
        return reject(format!("{what} is {} bytes (at most {max})", s.len()));
    }
    Ok(())
}

/// A number for a message: short even for 1e308 or NaN.
pub fn compact(x: f64) -> String {
    if x.is_finite() && (x == 0.0 || (1e-4..1e7).contains(&x.abs())) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

/// Checks an answer against the request it claims to answer. Accepts exactly what an honest
/// agent can send: the same target, only the kinds asked, counts within what was asked,
/// finite RTTs in range, bounded lists and texts.
pub fn answer(req: &MeasurementRequest, r: &pb::MeasurementResult) -> Result<(), Rejected> {
    if r.request_id != req.request_id {
        return reject("answer for another request");
    }
    check_text("target", &r.target, MAX_ADDRESS_LEN)?;
    let same_target = r.target.parse::<IpAddr>() == Ok(req.target);
    if !same_target {
        return reject(format!(
            "answer names target {:?}, the request was for {}",
            r.target, req.target
        ));
    }
    check_text("error", &r.error, MAX_ERROR_LEN)?;
    if let Some(p) = &r.ping {
        if !req.kinds.ping {
            return reject("ping result for a request without ping");
        }
        let max_sent = if req.ping_count == 0 {
            MAX_PINGS
        } else {
            req.ping_count
        };
        if p.sent > max_sent {
            return reject(format!("ping sent {} but {max_sent} were asked", p.sent));
        }
        if p.received > p.sent {
            return reject(format!("ping received {} of {} sent", p.received, p.sent));
        }
        if p.rtts_ms.len() > p.received as usize {
            return reject(format!(
                "{} ping RTTs for {} replies received",
                p.rtts_ms.len(),
                p.received
            ));
        }
        for &x in &p.rtts_ms {
            check_rtt("ping RTT", x)?;
        }
        if let Some(m) = p.min_rtt_ms {
            check_rtt("ping min_rtt", m)?;
            let least = p.rtts_ms.iter().copied().reduce(f64::min);
            match least {
                None => return reject("ping min_rtt without any RTT"),
                Some(l) if m < l - 1e-9 => {
                    return reject(format!(
                        "ping min_rtt {} below the smallest RTT {}",
                        compact(m),
                        compact(l)
                    ))
                }
                Some(_) => {}
            }
        }
        check_text("ping error", &p.error, MAX_ERROR_LEN)?;
    }
    if !r.tcp.is_empty() {
        if !req.kinds.tcp {
            return reject("TCP results for a request without TCP");
        }
        let max = if req.tcp_ports.is_empty() {
            MAX_TCP_RESULTS
        } else {
            req.tcp_ports.len()
        };
        if r.tcp.len() > max {
            return reject(format!("{} TCP results (at most {max})", r.tcp.len()));
        }
        for t in &r.tcp {
            if !req.tcp_ports.is_empty() && !req.tcp_ports.contains(&t.port) {
                return reject(format!("TCP result for port {} not asked", t.port));
            }
            if !(1..=65535).contains(&t.port) {
                return reject(format!("TCP port {}", t.port));
            }
            if let Some(x) = t.rtt_ms {
                check_rtt("TCP RTT", x)?;
            }
            check_text("TCP error", &t.error, MAX_ERROR_LEN)?;
        }
    }
    if let Some(t) = &r.traceroute {
        if !req.kinds.traceroute {
            return reject("traceroute for a request without traceroute");
        }
        let max_ttl = if req.max_ttl == 0 {
            MAX_HOPS
        } else {
            (req.max_ttl as usize).min(MAX_HOPS)
        };
        if t.hops.len() > max_ttl {
            return reject(format!(
                "{} traceroute hops (at most {max_ttl})",
                t.hops.len()
            ));
        }
        for h in &t.hops {
            if h.ttl == 0 || h.ttl as usize > max_ttl {
                return reject(format!("hop TTL {} outside 1..={max_ttl}", h.ttl));
            }
            check_address("hop address", &h.address, true)?;
            if let Some(x) = h.rtt_ms {
                check_rtt("hop RTT", x)?;
            }
        }
        if let Some(l) = &t.last_hop {
            check_address("last hop address", &l.address, false)?;
            check_rtt("last hop RTT", l.rtt_ms)?;
        }
        check_text("traceroute error", &t.error, MAX_ERROR_LEN)?;
    }
    Ok(())
}

fn check_address(what: &str, a: &str, may_be_empty: bool) -> Result<(), Rejected> {
    check_text(what, a, MAX_ADDRESS_LEN)?;
    if (a.is_empty() && may_be_empty) || a.parse::<IpAddr>().is_ok() {
        Ok(())
    } else {
        reject(format!("{what} {a:?} is not an IP address"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> MeasurementRequest {
        let d = crate::core::measurement::RequestDefaults {
            ping_interval_ms: 0,
            allow_private: false,
        };
        let mut r = d.ping(
            "192.0.2.1".parse().unwrap(),
            3,
            std::time::Duration::from_secs(1),
        );
        r.request_id = "r1".into();
        r
    }

    fn ping(rtts: &[f64]) -> pb::MeasurementResult {
        pb::MeasurementResult {
            request_id: "r1".into(),
            target: "192.0.2.1".into(),
            ping: Some(pb::PingResult {
                rtts_ms: rtts.to_vec(),
                sent: 3,
                received: rtts.len() as u32,
                min_rtt_ms: rtts.iter().copied().reduce(f64::min),
                error: String::new(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn honest_answer_passes() {
        assert_eq!(answer(&req(), &ping(&[10.0, 11.0, 12.0])), Ok(()));
        assert_eq!(answer(&req(), &ping(&[])), Ok(()));
    }

    #[test]
    fn non_finite_and_out_of_range_rtts_are_rejected() {
        for x in [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            1e-300,
            -1.0,
            60_001.0,
        ] {
            let mut a = ping(&[10.0]);
            a.ping.as_mut().unwrap().rtts_ms.push(x);
            a.ping.as_mut().unwrap().received = 2;
            a.ping.as_mut().unwrap().min_rtt_ms = Some(10.0);
            assert!(answer(&req(), &a).is_err(), "{x} accepted");
        }
    }

    #[test]
    fn counts_and_kinds_must_match_the_request() {
        let mut a = ping(&[10.0]);
        a.ping.as_mut().unwrap().sent = u32::MAX;
        assert!(answer(&req(), &a).is_err());
        let mut a = ping(&[10.0]);
        a.target = "192.0.2.2".into();
        assert!(answer(&req(), &a).is_err());
        let mut a = ping(&[10.0]);
        a.traceroute = Some(pb::TracerouteResult::default());
        assert!(answer(&req(), &a).is_err());
        let mut a = ping(&[10.0]);
        a.ping.as_mut().unwrap().min_rtt_ms = Some(5.0);
        assert!(answer(&req(), &a).is_err());
    }

    #[test]
    fn control_characters_are_escaped_and_long_text_cut() {
        assert_eq!(printable("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        assert!(matches!(
            printable("plain é"),
            std::borrow::Cow::Borrowed(_)
        ));
        let s = bounded_text(&"x".repeat(1000), 10);
        assert!(
            s.starts_with("xxxxxxxxxx…") && s.contains("1000 bytes"),
            "{s}"
        );
        assert_eq!(compact(1e308), "1e308");
        assert_eq!(compact(45.5), "45.5");
    }
}
