//! One measurement request → one result. Shared by the agent loop (requests from the
//! coordinator) and the `measure` debugging subcommand (JSON on stdout).
//!
//! The JSON schema of [`MeasureResult`] is documented in the crate README and pinned by a
//! snapshot test below.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{AgentConfig, TracerouteProtocol};
use crate::ping::{self, IcmpClients, PingOutcome, PingParams};
use crate::safety::{self, PacketBudget};
use crate::tcp::{self, TcpProbe};
use crate::traceroute::{self, TraceOutcome, TraceParams};

/// What to measure. `None` fields take the agent's configured value.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasureRequest {
    /// Echoed in the result.
    pub request_id: String,
    /// Target address.
    pub target: IpAddr,
    /// Run ICMP echo.
    pub ping: bool,
    /// Run TCP handshake RTT.
    pub tcp: bool,
    /// Run a traceroute.
    pub traceroute: bool,
    /// Echo requests.
    pub ping_count: Option<u32>,
    /// Spacing between echo requests.
    pub interval: Option<Duration>,
    /// Whole-request budget.
    pub timeout: Option<Duration>,
    /// TCP ports.
    pub tcp_ports: Option<Vec<u16>>,
    /// Max TTL (clamped to the agent's max-ttl).
    pub max_ttl: Option<u8>,
    /// Traceroute protocol.
    pub traceroute_protocol: Option<TracerouteProtocol>,
    /// The requester's half of the private-target permission.
    pub allow_private: bool,
}

impl MeasureRequest {
    /// A request for `target` with nothing selected and every option defaulted.
    pub fn new(request_id: impl Into<String>, target: IpAddr) -> Self {
        MeasureRequest {
            request_id: request_id.into(),
            target,
            ping: false,
            tcp: false,
            traceroute: false,
            ping_count: None,
            interval: None,
            timeout: None,
            tcp_ports: None,
            max_ttl: None,
            traceroute_protocol: None,
            allow_private: false,
        }
    }
}

/// TCP results with their minimum.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TcpSummary {
    /// Minimum RTT over answering ports, ms.
    pub min_rtt_ms: Option<f64>,
    /// One entry per port, in request order.
    pub ports: Vec<TcpProbe>,
}

/// The result of a request (script-facing JSON: see the crate README).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeasureResult {
    /// Schema version of this JSON document.
    pub schema: u32,
    /// Echo of the request id.
    pub request_id: String,
    /// Target address.
    pub target: IpAddr,
    /// Whole-request failure (target refused, …); null on success.
    pub error: Option<String>,
    /// Ping results when asked.
    pub ping: Option<PingOutcome>,
    /// TCP results when asked.
    pub tcp: Option<TcpSummary>,
    /// Traceroute results when asked.
    pub traceroute: Option<TraceOutcome>,
    /// Start, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// End, ms since the Unix epoch.
    pub finished_unix_ms: u64,
}

/// [`geoloc_rt::unix_ms`] as the u64 of the result schema and the wire.
pub(crate) fn unix_ms_u64() -> u64 {
    u64::try_from(geoloc_rt::unix_ms()).unwrap_or(0)
}

/// Executes measurements with the agent's configuration, sockets and packet budget.
#[derive(Clone)]
pub struct Measurer {
    config: Arc<AgentConfig>,
    budget: Arc<PacketBudget>,
    icmp: IcmpClients,
}

impl Measurer {
    /// Opens the ICMP sockets (needs a tokio runtime) and builds the packet budget.
    pub fn new(config: Arc<AgentConfig>) -> Self {
        let budget = Arc::new(PacketBudget::new(
            config.max_packets_per_second,
            config.packet_burst,
            config.target_packets_per_second,
            config.target_packet_burst,
        ));
        // Replies of the first trace then get kernel receive stamps too.
        traceroute::keep_rx_timestamps_enabled();
        Measurer {
            config,
            budget,
            icmp: IcmpClients::new(),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// Runs every selected measurement concurrently, within the request's budget.
    pub async fn run(&self, req: &MeasureRequest) -> MeasureResult {
        let started_unix_ms = unix_ms_u64();
        let cfg = &self.config;
        let mut result = MeasureResult {
            schema: 1,
            request_id: req.request_id.clone(),
            target: req.target,
            error: None,
            ping: None,
            tcp: None,
            traceroute: None,
            started_unix_ms,
            finished_unix_ms: started_unix_ms,
        };
        if let Err(e) = safety::check_target(req.target, cfg.allow_private, req.allow_private) {
            result.error = Some(e.to_string());
            result.finished_unix_ms = unix_ms_u64();
            return result;
        }
        if !(req.ping || req.tcp || req.traceroute) {
            result.error = Some("nothing to measure: ask for ping, tcp and/or traceroute".into());
            result.finished_unix_ms = unix_ms_u64();
            return result;
        }
        let budget_time = req.timeout.unwrap_or(cfg.request_timeout);
        let deadline = Instant::now() + budget_time;
        let target = req.target;

        let ping_fut = async {
            if !req.ping {
                return None;
            }
            let params = PingParams {
                count: req.ping_count.unwrap_or(cfg.ping_count).clamp(1, 1000),
                interval: req.interval.unwrap_or(cfg.ping_interval),
                timeout: cfg.ping_timeout,
            };
            Some(ping::ping(&self.icmp, &self.budget, target, params, deadline).await)
        };
        let tcp_fut = async {
            if !req.tcp {
                return None;
            }
            let ports = req
                .tcp_ports
                .clone()
                .unwrap_or_else(|| cfg.tcp_ports.clone());
            let probes =
                tcp::tcp_rtt(&self.budget, target, &ports, cfg.tcp_timeout, deadline).await;
            Some(TcpSummary {
                min_rtt_ms: tcp::min_rtt_ms(&probes),
                ports: probes,
            })
        };
        let trace_fut = async {
            if !req.traceroute {
                return None;
            }
            let protocol = req.traceroute_protocol.unwrap_or(cfg.traceroute_protocol);
            let params = TraceParams {
                protocol,
                max_ttl: req.max_ttl.unwrap_or(cfg.max_ttl).clamp(1, cfg.max_ttl),
                probes_per_hop: cfg.traceroute_probes_per_hop,
                wait: cfg.traceroute_timeout,
                udp_port: cfg.traceroute_udp_port,
                tcp_port: cfg.traceroute_tcp_port,
            };
            Some(
                match traceroute::traceroute(target, params, &self.budget, deadline).await {
                    Ok(t) => t,
                    Err(e) => TraceOutcome {
                        protocol,
                        reached: false,
                        destination_rtt_ms: None,
                        hops: Vec::new(),
                        last_hop: None,
                        error: Some(e.to_string()),
                    },
                },
            )
        };
        let (p, t, tr) = tokio::join!(ping_fut, tcp_fut, trace_fut);
        result.ping = p;
        result.tcp = t;
        result.traceroute = tr;
        result.finished_unix_ms = unix_ms_u64();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::TcpOutcomeKind;
    use crate::traceroute::{Hop, LastHop};

    /// Pins the script-facing JSON schema (documented in README.md).
    #[test]
    fn json_schema_snapshot() {
        let r = MeasureResult {
            schema: 1,
            request_id: "r1".into(),
            target: "192.0.2.7".parse().unwrap(),
            error: None,
            ping: Some(PingOutcome {
                sent: 3,
                received: 2,
                rtts_ms: vec![1.5, 1.25],
                min_rtt_ms: Some(1.25),
                error: None,
            }),
            tcp: Some(TcpSummary {
                min_rtt_ms: Some(2.0),
                ports: vec![
                    TcpProbe {
                        port: 443,
                        outcome: TcpOutcomeKind::SynAck,
                        rtt_ms: Some(2.0),
                        error: None,
                    },
                    TcpProbe {
                        port: 22,
                        outcome: TcpOutcomeKind::Timeout,
                        rtt_ms: None,
                        error: None,
                    },
                ],
            }),
            traceroute: Some(TraceOutcome {
                protocol: TracerouteProtocol::Udp,
                reached: false,
                destination_rtt_ms: None,
                hops: vec![
                    Hop {
                        ttl: 1,
                        address: Some("10.0.0.1".parse().unwrap()),
                        rtt_ms: Some(0.5),
                    },
                    Hop {
                        ttl: 2,
                        address: None,
                        rtt_ms: None,
                    },
                ],
                last_hop: Some(LastHop {
                    ttl: 1,
                    address: "10.0.0.1".parse().unwrap(),
                    rtt_ms: 0.5,
                }),
                error: None,
            }),
            started_unix_ms: 1000,
            finished_unix_ms: 2000,
        };
        let expected = r#"{"schema":1,"request_id":"r1","target":"192.0.2.7","error":null,"ping":{"sent":3,"received":2,"rtts_ms":[1.5,1.25],"min_rtt_ms":1.25,"error":null},"tcp":{"min_rtt_ms":2.0,"ports":[{"port":443,"outcome":"syn-ack","rtt_ms":2.0,"error":null},{"port":22,"outcome":"timeout","rtt_ms":null,"error":null}]},"traceroute":{"protocol":"udp","reached":false,"destination_rtt_ms":null,"hops":[{"ttl":1,"address":"10.0.0.1","rtt_ms":0.5},{"ttl":2,"address":null,"rtt_ms":null}],"last_hop":{"ttl":1,"address":"10.0.0.1","rtt_ms":0.5},"error":null},"started_unix_ms":1000,"finished_unix_ms":2000}"#;
        assert_eq!(serde_json::to_string(&r).unwrap(), expected);
    }

    #[tokio::test]
    async fn refused_target_is_reported_not_measured() {
        let cfg = AgentConfig::resolve(
            &Default::default(),
            &Default::default(),
            &std::collections::HashMap::new(),
        )
        .unwrap();
        let m = Measurer::new(Arc::new(cfg));
        let mut req = MeasureRequest::new("x", "127.0.0.1".parse().unwrap());
        req.ping = true;
        req.allow_private = true; // the agent's half is missing
        let r = m.run(&req).await;
        let err = r.error.unwrap();
        assert!(
            err.contains("loopback") && err.contains("allow-private"),
            "{err}"
        );
        assert!(r.ping.is_none());
    }
}
