//! One measurement in the domain's words: what is asked of a vantage point
//! ([`MeasurementRequest`], built in one place: [`RequestDefaults`]), what came back
//! ([`MeasurementResult`], stored as JSON in `measurements.raw_json`), how it ended
//! ([`MeasurementOutcome`]), and how an RTT for the engine is derived from it. The live path
//! and [`crate::Coordinator::recompute`] use the same derivation, so a result recomputed from
//! its rows is the stored one. The gRPC adapter converts the wire messages to and from
//! these types (`crate::grpc::convert`).
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a measurement is for: stored with its row (`measurements.purpose`), never sent to
/// the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Locating a client's target.
    Locate,
    /// A speed-of-light check between landmarks.
    Landmark,
}

impl Purpose {
    /// The name stored in `measurements.purpose`.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Locate => "locate",
            Purpose::Landmark => "landmark",
        }
    }
}

/// The kinds of measurement one request asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kinds {
    /// ICMP echo requests.
    pub ping: bool,
    /// TCP handshakes (SYN; a SYN-ACK or RST is an echo).
    pub tcp: bool,
    /// A Paris traceroute (its last hop bounds a silent target).
    pub traceroute: bool,
}

/// One request to one vantage point. Built by [`RequestDefaults`] only. It carries no
/// purpose: a known-answer check and a locate are the same request on the wire (same
/// builder, kinds, counts and budgets, a random request id), so a probe cannot answer the
/// checks honestly and lie on real work.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasurementRequest {
    pub request_id: String,
    pub target: IpAddr,
    pub kinds: Kinds,
    /// Echo requests (0 when no ping is asked).
    pub ping_count: u32,
    /// Between echo requests, ms.
    pub interval_ms: u32,
    /// The vantage point's budget for the whole request.
    pub timeout: Duration,
    /// Empty: the agent's default ports.
    pub tcp_ports: Vec<u32>,
    /// Largest TTL of a traceroute (0 when none is asked).
    pub max_ttl: u32,
    /// May the vantage point measure private and special-purpose ranges (tests, labs).
    pub allow_private: bool,
}

/// Largest TTL of the fallback traceroute.
pub const FALLBACK_MAX_TTL: u32 = 30;
/// Largest TTL a client may ask of a traceroute of its own ([`RequestDefaults::traceroute`]).
pub const MAX_TRACE_TTL: u32 = 64;

/// The coordinator's settings every request carries: the one place a
/// [`MeasurementRequest`] is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestDefaults {
    /// Between echo requests, ms.
    pub ping_interval_ms: u32,
    pub allow_private: bool,
}

impl RequestDefaults {
    /// `count` echo requests to `target` within `budget`.
    pub fn ping(&self, target: IpAddr, count: u32, budget: Duration) -> MeasurementRequest {
        self.build(
            target,
            Kinds {
                ping: true,
                ..Kinds::default()
            },
            count,
            budget,
        )
    }

    /// For a target silent to ping: a TCP handshake (targets that drop ICMP often answer
    /// SYNs) and a traceroute (its last hop) at the same time, within `budget`.
    pub fn tcp_and_traceroute(&self, target: IpAddr, budget: Duration) -> MeasurementRequest {
        self.build(
            target,
            Kinds {
                tcp: true,
                traceroute: true,
                ..Kinds::default()
            },
            0,
            budget,
        )
    }

    /// A traceroute alone toward `target` up to `max_ttl` (clamped to
    /// 1..=[`MAX_TRACE_TTL`]), within `budget`: a client's `Trace`.
    pub fn traceroute(&self, target: IpAddr, max_ttl: u32, budget: Duration) -> MeasurementRequest {
        let mut r = self.build(
            target,
            Kinds {
                traceroute: true,
                ..Kinds::default()
            },
            0,
            budget,
        );
        r.max_ttl = max_ttl.clamp(1, MAX_TRACE_TTL);
        r
    }

    fn build(
        &self,
        target: IpAddr,
        kinds: Kinds,
        ping_count: u32,
        budget: Duration,
    ) -> MeasurementRequest {
        MeasurementRequest {
            request_id: crate::new_id(),
            target,
            kinds,
            ping_count: if kinds.ping { ping_count } else { 0 },
            interval_ms: if kinds.ping { self.ping_interval_ms } else { 0 },
            timeout: budget,
            tcp_ports: Vec::new(),
            max_ttl: if kinds.traceroute {
                FALLBACK_MAX_TTL
            } else {
                0
            },
            allow_private: self.allow_private,
        }
    }
}

/// How one request ended (stored in `measurements.outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeasurementOutcome {
    /// An RTT to the target (echo or last hop).
    Answered,
    /// An answer without any RTT (the target stayed silent).
    NoReply,
    /// No answer within the budget.
    Timeout,
    /// The vantage point went away (or was not connected).
    Disconnected,
    /// The vantage point reported an error, or answered another request.
    ProbeError,
    /// The answer failed the checks at the edge: nothing of it is used.
    Rejected,
}

impl MeasurementOutcome {
    pub const ALL: [MeasurementOutcome; 6] = [
        MeasurementOutcome::Answered,
        MeasurementOutcome::NoReply,
        MeasurementOutcome::Timeout,
        MeasurementOutcome::Disconnected,
        MeasurementOutcome::ProbeError,
        MeasurementOutcome::Rejected,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            MeasurementOutcome::Answered => "answered",
            MeasurementOutcome::NoReply => "no-reply",
            MeasurementOutcome::Timeout => "timeout",
            MeasurementOutcome::Disconnected => "disconnected",
            MeasurementOutcome::ProbeError => "probe-error",
            MeasurementOutcome::Rejected => "rejected",
        }
    }

    /// The outcome of a stored name; None for an unknown one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == name)
    }
}

/// What a vantage point answered to one request (the JSON of `measurements.raw_json`; the
/// field names are the stored schema).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasurementResult {
    pub request_id: String,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping: Option<RawPing>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<RawTcp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceroute: Option<RawTraceroute>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    #[serde(default)]
    pub started_unix_ms: u64,
    #[serde(default)]
    pub finished_unix_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPing {
    pub rtts_ms: Vec<f64>,
    pub sent: u32,
    pub received: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rtt_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTcp {
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    pub outcome: TcpOutcome,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHop {
    pub ttl: u32,
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTraceroute {
    pub protocol: TracerouteProtocol,
    pub hops: Vec<RawHop>,
    pub reached: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_hop_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_hop_rtt_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// How a TCP handshake ended (stored as `syn-ack`, `rst`, `timeout`, `error`, `unspecified`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TcpOutcome {
    /// The target accepted: an echo.
    SynAck,
    /// The target refused: an echo too.
    Rst,
    Timeout,
    Error,
    #[default]
    Unspecified,
}

/// Probe packets of a traceroute (stored as `icmp`, `udp`, `tcp`, `unspecified`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TracerouteProtocol {
    Icmp,
    Udp,
    Tcp,
    #[default]
    Unspecified,
}

/// Which engine measurement kind an RTT stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RttKind {
    /// The target itself answered (ICMP echo, TCP handshake, traceroute reaching it).
    Echo,
    /// Only a router before the target answered (traceroute last hop): a lower bound on the
    /// distance to the target's network, weaker than an echo.
    LastHop,
}

/// A usable RTT is finite and non-negative (loopback can legitimately give 0).
fn usable(rtt_ms: f64) -> bool {
    (0.0..60_000.0).contains(&rtt_ms)
}

fn min_of(it: impl Iterator<Item = f64>) -> Option<f64> {
    it.filter(|r| usable(*r))
        .fold(None, |acc, r| Some(acc.map_or(r, |a: f64| a.min(r))))
}

impl MeasurementResult {
    /// Best RTT to the target in this answer: the minimum echo RTT (ping replies, TCP
    /// SYN-ACK/RST, traceroute hop that is the target), else the traceroute's last hop.
    pub fn best_rtt(&self) -> Option<(f64, RttKind)> {
        let ping = self
            .ping
            .as_ref()
            .and_then(|p| min_of(p.rtts_ms.iter().copied().chain(p.min_rtt_ms)));
        let tcp = min_of(
            self.tcp
                .iter()
                .filter(|t| matches!(t.outcome, TcpOutcome::SynAck | TcpOutcome::Rst))
                .filter_map(|t| t.rtt_ms),
        );
        let trace_echo = self.traceroute.as_ref().and_then(|t| {
            if !t.reached {
                return None;
            }
            min_of(
                t.hops
                    .iter()
                    .filter(|h| h.address == self.target)
                    .filter_map(|h| h.rtt_ms),
            )
        });
        if let Some(echo) = min_of([ping, tcp, trace_echo].into_iter().flatten()) {
            return Some((echo, RttKind::Echo));
        }
        let last = self
            .traceroute
            .as_ref()
            .and_then(|t| t.last_hop_rtt_ms)
            .filter(|r| usable(*r));
        last.map(|r| (r, RttKind::LastHop))
    }

    /// Probe packets spent on this answer.
    pub fn packets_sent(&self) -> u64 {
        let ping = self.ping.as_ref().map_or(0, |p| u64::from(p.sent));
        let tcp = self.tcp.len() as u64;
        let trace = self.traceroute.as_ref().map_or(0, |t| t.hops.len() as u64);
        ping + tcp + trace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ping(rtts: &[f64]) -> MeasurementResult {
        MeasurementResult {
            target: "192.0.2.1".into(),
            ping: Some(RawPing {
                rtts_ms: rtts.to_vec(),
                sent: 3,
                received: rtts.len() as u32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn echo_is_minimum_of_replies_and_zero_is_allowed() {
        assert_eq!(
            ping(&[12.0, 10.5, 11.0]).best_rtt(),
            Some((10.5, RttKind::Echo))
        );
        assert_eq!(ping(&[0.0]).best_rtt(), Some((0.0, RttKind::Echo)));
        assert_eq!(ping(&[f64::NAN, -1.0]).best_rtt(), None);
    }

    #[test]
    fn last_hop_only_when_no_echo() {
        let mut r = ping(&[]);
        r.traceroute = Some(RawTraceroute {
            protocol: TracerouteProtocol::Icmp,
            hops: vec![RawHop {
                ttl: 1,
                address: "10.0.0.1".into(),
                rtt_ms: Some(4.0),
            }],
            reached: false,
            last_hop_address: Some("10.0.0.1".into()),
            last_hop_rtt_ms: Some(4.0),
            error: String::new(),
        });
        assert_eq!(r.best_rtt(), Some((4.0, RttKind::LastHop)));
        r.tcp.push(RawTcp {
            port: 443,
            rtt_ms: Some(9.0),
            outcome: TcpOutcome::Rst,
            error: String::new(),
        });
        assert_eq!(r.best_rtt(), Some((9.0, RttKind::Echo)));
        assert_eq!(r.packets_sent(), 3 + 1 + 1);
    }

    #[test]
    fn json_round_trip() {
        let r = ping(&[1.0, 2.0]);
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<MeasurementResult>(&s).unwrap(), r);
        // The stored names of the enums are the schema of rows written before.
        let old = r#"{"request_id":"a","target":"192.0.2.1","tcp":[{"port":443,"rtt_ms":3.0,"outcome":"syn-ack"}],"traceroute":{"protocol":"icmp","hops":[],"reached":false},"started_unix_ms":0,"finished_unix_ms":0}"#;
        let back: MeasurementResult = serde_json::from_str(old).unwrap();
        assert_eq!(back.tcp[0].outcome, TcpOutcome::SynAck);
        assert_eq!(serde_json::to_string(&back).unwrap(), old);
    }

    #[test]
    fn one_builder_for_requests() {
        let d = RequestDefaults {
            ping_interval_ms: 200,
            allow_private: false,
        };
        let t: IpAddr = "192.0.2.1".parse().unwrap();
        let p = d.ping(t, 3, Duration::from_secs(2));
        assert!(p.kinds.ping && !p.kinds.tcp && !p.kinds.traceroute);
        assert_eq!((p.ping_count, p.interval_ms, p.max_ttl), (3, 200, 0));
        let f = d.tcp_and_traceroute(t, Duration::from_secs(1));
        assert!(!f.kinds.ping && f.kinds.tcp && f.kinds.traceroute);
        assert_eq!(
            (f.ping_count, f.interval_ms, f.max_ttl),
            (0, 0, FALLBACK_MAX_TTL)
        );
        assert_ne!(p.request_id, f.request_id);
        let t = d.traceroute(t, 12, Duration::from_secs(4));
        assert!(!t.kinds.ping && !t.kinds.tcp && t.kinds.traceroute);
        assert_eq!((t.ping_count, t.interval_ms, t.max_ttl), (0, 0, 12));
        assert_eq!(t.timeout, Duration::from_secs(4));
        assert_eq!(d.traceroute(t.target, 0, t.timeout).max_ttl, 1);
        assert_eq!(
            d.traceroute(t.target, 999, t.timeout).max_ttl,
            MAX_TRACE_TTL
        );
        assert_ne!(t.request_id, f.request_id);
        for o in MeasurementOutcome::ALL {
            assert_eq!(MeasurementOutcome::parse(o.as_str()), Some(o));
        }
    }
}
