//! Raw measurement answers as stored in the database (`measurements.raw_json`), and how an
//! RTT for the engine is derived from them. The live path and [`crate::Coordinator::recompute`]
//! use the same derivation, so a result recomputed from its rows is the stored one.
use geoloc_proto::v1 as pb;
use serde::{Deserialize, Serialize};

/// JSON mirror of `geoloc.v1.MeasurementResult`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResult {
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
    /// "syn-ack" | "rst" | "timeout" | "error" | "unspecified"
    pub outcome: String,
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
    /// "icmp" | "udp" | "tcp" | "unspecified"
    pub protocol: String,
    pub hops: Vec<RawHop>,
    pub reached: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_hop_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_hop_rtt_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
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

impl RawResult {
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
                .filter(|t| t.outcome == "syn-ack" || t.outcome == "rst")
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

fn tcp_outcome(o: i32) -> &'static str {
    match pb::TcpOutcome::try_from(o) {
        Ok(pb::TcpOutcome::SynAck) => "syn-ack",
        Ok(pb::TcpOutcome::Rst) => "rst",
        Ok(pb::TcpOutcome::Timeout) => "timeout",
        Ok(pb::TcpOutcome::Error) => "error",
        _ => "unspecified",
    }
}

fn trace_protocol(p: i32) -> &'static str {
    match pb::TracerouteProtocol::try_from(p) {
        Ok(pb::TracerouteProtocol::Icmp) => "icmp",
        Ok(pb::TracerouteProtocol::Udp) => "udp",
        Ok(pb::TracerouteProtocol::Tcp) => "tcp",
        _ => "unspecified",
    }
}

impl From<&pb::MeasurementResult> for RawResult {
    fn from(r: &pb::MeasurementResult) -> Self {
        RawResult {
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
                    outcome: tcp_outcome(t.outcome).to_string(),
                    error: t.error.clone(),
                })
                .collect(),
            traceroute: r.traceroute.as_ref().map(|t| RawTraceroute {
                protocol: trace_protocol(t.protocol).to_string(),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ping(rtts: &[f64]) -> RawResult {
        RawResult {
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
            protocol: "icmp".into(),
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
            outcome: "rst".into(),
            error: String::new(),
        });
        assert_eq!(r.best_rtt(), Some((9.0, RttKind::Echo)));
        assert_eq!(r.packets_sent(), 3 + 1 + 1);
    }

    #[test]
    fn json_round_trip() {
        let r = ping(&[1.0, 2.0]);
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<RawResult>(&s).unwrap(), r);
    }
}
