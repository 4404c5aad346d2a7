//! ICMP echo (ping) with `surge-ping`: several paced echo requests, minimum RTT counts.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
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
            message: format!("no ICMP socket: {}", err.as_deref().unwrap_or("not opened")),
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

/// When to stop waiting for the replies still outstanding: only the minimum RTT counts, so a
/// request sent at `t` cannot matter after `t + best` once a reply of RTT `best` came back
/// (plus [`ABANDON_SLACK`], so replies merely as fast as the best are still counted).
/// None = nothing outstanding or no reply yet (wait for the timeouts).
pub fn give_up_at(
    outstanding_sent: impl Iterator<Item = Instant>,
    best: Option<Duration>,
) -> Option<Instant> {
    let best = best?;
    outstanding_sent
        .max()
        .map(|sent| sent + best + ABANDON_SLACK)
}

/// Extra wait past the point where a reply could lower the minimum RTT.
pub const ABANDON_SLACK: Duration = Duration::from_millis(10);

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Pings `target` `count` times, one request every `interval` (each taking a packet token),
/// replies awaited concurrently, everything finished by `deadline`. Once a reply came back,
/// a request still unanswered after its send time plus that RTT (plus 10 ms) is abandoned (its
/// reply could not lower the minimum): a lost packet does not hold the result for the whole
/// timeout.
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
    // (sent at, task) per echo request.
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
        let sent_at = Instant::now();
        tasks.push((
            sent_at,
            tokio::spawn(async move {
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
            }),
        ));
    }
    let mut errors = Vec::new();
    let mut outstanding: Vec<Option<Instant>> = tasks.iter().map(|(at, _)| Some(*at)).collect();
    let aborts: Vec<_> = tasks.iter().map(|(_, t)| t.abort_handle()).collect();
    let mut replies: FuturesUnordered<_> = tasks
        .into_iter()
        .enumerate()
        .map(|(i, (_, t))| async move { (i, t.await) })
        .collect();
    let mut best: Option<Duration> = None;
    loop {
        let stop = give_up_at(outstanding.iter().flatten().copied(), best);
        let next = tokio::select! {
            r = replies.next() => r,
            _ = sleep_until_opt(stop) => None,
        };
        let Some((i, r)) = next else { break };
        outstanding[i] = None;
        match r {
            Ok(Ok(rtt)) => {
                out.received += 1;
                out.rtts_ms.push(rtt.as_secs_f64() * 1000.0);
                best = Some(best.map_or(rtt, |b| b.min(rtt)));
            }
            Ok(Err(surge_ping::SurgeError::Timeout { .. })) => {}
            Ok(Err(e)) => errors.push(e.to_string()),
            Err(e) => errors.push(format!("ping task: {e}")),
        }
    }
    // Requests abandoned because their reply could no longer lower the minimum.
    for a in aborts {
        a.abort();
    }
    out.min_rtt_ms = out.rtts_ms.iter().copied().reduce(f64::min);
    if !errors.is_empty() && out.error.is_none() {
        errors.dedup();
        out.error = Some(errors.join("; "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outstanding_requests_are_abandoned_once_they_cannot_lower_the_minimum() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // No reply yet: wait for the timeouts.
        assert_eq!(give_up_at([t0, t0 + ms(50)].into_iter(), None), None);
        // Nothing outstanding.
        assert_eq!(give_up_at(std::iter::empty(), Some(ms(80))), None);
        // The last request sent decides: sent at +100 ms, best RTT 80 ms -> +180 ms (+ slack).
        assert_eq!(
            give_up_at([t0 + ms(100), t0 + ms(50)].into_iter(), Some(ms(80))),
            Some(t0 + ms(180) + ABANDON_SLACK)
        );
    }
}
