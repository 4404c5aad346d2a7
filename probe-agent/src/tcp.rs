//! TCP handshake RTT: time from SYN to SYN/ACK (connect succeeds) or RST (connection
//! refused). Both mean the host answered; a timeout means no answer.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::safety::PacketBudget;

/// How a TCP probe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TcpOutcomeKind {
    /// SYN/ACK: the port is open.
    SynAck,
    /// RST: the port is closed, the host answered.
    Rst,
    /// Nothing came back in time.
    Timeout,
    /// A local or ICMP-reported error (unreachable network, …).
    Error,
}

/// One port's result (JSON schema: see the crate README).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TcpProbe {
    /// Destination port.
    pub port: u16,
    /// Outcome.
    pub outcome: TcpOutcomeKind,
    /// SYN to SYN/ACK or RST, ms; null on timeout/error.
    pub rtt_ms: Option<f64>,
    /// Error text for `error` outcomes.
    pub error: Option<String>,
}

async fn probe_port(target: IpAddr, port: u16, timeout: Duration) -> TcpProbe {
    let addr = SocketAddr::new(target, port);
    let socket = match target {
        IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    };
    let socket = match socket {
        Ok(s) => s,
        Err(e) => {
            return TcpProbe {
                port,
                outcome: TcpOutcomeKind::Error,
                rtt_ms: None,
                error: Some(format!("socket: {e}")),
            }
        }
    };
    let start = Instant::now();
    let result = tokio::time::timeout(timeout, socket.connect(addr)).await;
    let rtt_ms = start.elapsed().as_secs_f64() * 1000.0;
    let (outcome, rtt_ms, error) = match result {
        Ok(Ok(_stream)) => (TcpOutcomeKind::SynAck, Some(rtt_ms), None),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            (TcpOutcomeKind::Rst, Some(rtt_ms), None)
        }
        Ok(Err(e)) => (TcpOutcomeKind::Error, None, Some(e.to_string())),
        Err(_) => (TcpOutcomeKind::Timeout, None, None),
    };
    TcpProbe {
        port,
        outcome,
        rtt_ms,
        error,
    }
}

/// Measures the handshake RTT to each port concurrently (each SYN takes a packet token);
/// every probe ends by `deadline`.
pub async fn tcp_rtt(
    budget: &Arc<PacketBudget>,
    target: IpAddr,
    ports: &[u16],
    timeout: Duration,
    deadline: Instant,
) -> Vec<TcpProbe> {
    let mut tasks = Vec::new();
    for &port in ports {
        if !budget.take(target, deadline).await {
            tasks.push(tokio::spawn(async move {
                TcpProbe {
                    port,
                    outcome: TcpOutcomeKind::Error,
                    rtt_ms: None,
                    error: Some("packet rate cap: no budget left before the deadline".into()),
                }
            }));
            continue;
        }
        let wait = timeout.min(deadline.saturating_duration_since(Instant::now()));
        tasks.push(tokio::spawn(probe_port(target, port, wait)));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for (t, &port) in tasks.into_iter().zip(ports) {
        out.push(t.await.unwrap_or_else(|e| TcpProbe {
            port,
            outcome: TcpOutcomeKind::Error,
            rtt_ms: None,
            error: Some(format!("task: {e}")),
        }));
    }
    out
}

/// Minimum RTT over the ports that answered.
pub fn min_rtt_ms(probes: &[TcpProbe]) -> Option<f64> {
    probes.iter().filter_map(|p| p.rtt_ms).reduce(f64::min)
}
