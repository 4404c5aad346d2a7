//! ICMP echo (ping) with `surge-ping`: several paced echo requests, minimum RTT counts.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use surge_ping::{Client, Config, PingIdentifier, PingSequence, ICMP};

use crate::error::{Error, Result};
use crate::safety::PacketBudget;

/// One surge-ping client per address family, shared by every measurement.
#[derive(Clone)]
pub struct IcmpClients {
    v4: Option<Client>,
    v6: Option<Client>,
    v4_error: Option<String>,
    v6_error: Option<String>,
}

impl IcmpClients {
    /// Opens the sockets (needs a tokio runtime). A family that cannot be opened reports
    /// its error on use.
    pub fn new() -> Self {
        let open = |kind| Client::new(&Config::builder().kind(kind).build());
        let (v4, v4_error) = match open(ICMP::V4) {
            Ok(c) => (Some(c), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let (v6, v6_error) = match open(ICMP::V6) {
            Ok(c) => (Some(c), None),
            Err(e) => (None, Some(e.to_string())),
        };
        IcmpClients {
            v4,
            v6,
            v4_error,
            v6_error,
        }
    }

    fn client(&self, target: IpAddr) -> Result<&Client> {
        let (client, err) = match target {
            IpAddr::V4(_) => (&self.v4, &self.v4_error),
            IpAddr::V6(_) => (&self.v6, &self.v6_error),
        };
        client.as_ref().ok_or_else(|| Error::Ping {
            target,
            message: format!(
                "no ICMP socket: {}",
                err.as_deref().unwrap_or("not opened")
            ),
        })
    }
}

impl Default for IcmpClients {
    fn default() -> Self {
        Self::new()
    }
}

/// Parameters of one ping measurement.
#[derive(Debug, Clone, Copy)]
pub struct PingParams {
    /// Echo requests to send.
    pub count: u32,
    /// Spacing between requests.
    pub interval: Duration,
    /// Wait for each reply.
    pub timeout: Duration,
}

/// Result of a ping measurement (JSON schema: see the crate README).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PingOutcome {
    /// Echo requests sent.
    pub sent: u32,
    /// Replies received.
    pub received: u32,
    /// RTT of each reply, ms, in sequence order.
    pub rtts_ms: Vec<f64>,
    /// Minimum RTT, ms; null when nothing came back.
    pub min_rtt_ms: Option<f64>,
    /// Why requests failed (other than plain timeouts); null when none did.
    pub error: Option<String>,
}

/// Pings `target` `count` times, one request every `interval` (each taking a packet token),
/// replies awaited concurrently, everything finished by `deadline`.
pub async fn ping(
    clients: &IcmpClients,
    budget: &Arc<PacketBudget>,
    target: IpAddr,
    params: PingParams,
    deadline: Instant,
) -> PingOutcome {
    let mut out = PingOutcome {
        sent: 0,
        received: 0,
        rtts_ms: Vec::new(),
        min_rtt_ms: None,
        error: None,
    };
    let client = match clients.client(target) {
        Ok(c) => c.clone(),
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    };
    let identifier = PingIdentifier(rand::random());
    let seq_base: u16 = rand::random();
    let payload = [0x67u8; 24];
    let mut tasks = Vec::new();
    for i in 0..params.count {
        if i > 0 {
            let next = Instant::now() + params.interval;
            if next >= deadline {
                break;
            }
            tokio::time::sleep_until(next.into()).await;
        }
        if !budget.take(target, deadline).await {
            out.error = Some("packet rate cap: no budget left before the deadline".into());
            break;
        }
        // Each reply is awaited up to the ping timeout, and never past the deadline.
        let wait = params
            .timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        let mut pinger = client.pinger(target, identifier).await;
        pinger.timeout(wait);
        let seq = PingSequence(seq_base.wrapping_add(i as u16));
        out.sent += 1;
        tasks.push(tokio::spawn(async move {
            // surge-ping stamps the send *after* `send_to` returns, so a task descheduled
            // in between reports an RTT below the physical one (seen: 67 ms on a 70 ms
            // path under load). A too-low RTT would make a sound bound unsound, so the
            // RTT is taken from before the send: never below the truth, at worst the
            // wake-up latency above it. surge-ping's own figure is only a lower limit.
            let started = Instant::now();
            pinger
                .ping(seq, &payload)
                .await
                .map(|(_, rtt)| started.elapsed().max(rtt))
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(rtt)) => {
                out.received += 1;
                out.rtts_ms.push(rtt.as_secs_f64() * 1000.0);
            }
            Ok(Err(surge_ping::SurgeError::Timeout { .. })) => {}
            Ok(Err(e)) => errors.push(e.to_string()),
            Err(e) => errors.push(format!("ping task: {e}")),
        }
    }
    out.min_rtt_ms = out.rtts_ms.iter().copied().reduce(f64::min);
    if !errors.is_empty() && out.error.is_none() {
        errors.dedup();
        out.error = Some(errors.join("; "));
    }
    out
}
