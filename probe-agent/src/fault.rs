//! TEST ONLY (cargo feature `fault-injection`, off by default, never in a release package):
//! a dishonest probe for the vetting tests. It answers honestly for the targets it believes
//! are checks (`GEOLOC_FAULT_HONEST_TARGETS`: comma-separated addresses, e.g. the other
//! probes'), and shifts every RTT to any other target by `GEOLOC_FAULT_DELAY_MS` (negative:
//! subtracted, never below [`MIN_LIE_MS`], which the coordinator accepts). For its first
//! `GEOLOC_FAULT_HONEST_FOR_MS` after start it answers everything honestly (it passes the
//! checks a coordinator runs when a probe connects, and lies only afterwards). Without
//! `GEOLOC_FAULT_DELAY_MS` it changes nothing.
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::measure::MeasureResult;

/// Environment variable: the addresses answered honestly.
pub const ENV_HONEST: &str = "GEOLOC_FAULT_HONEST_TARGETS";
/// Environment variable: the shift of every other RTT, ms (may be negative).
pub const ENV_DELAY: &str = "GEOLOC_FAULT_DELAY_MS";
/// Environment variable: how long after start every answer is honest, ms.
pub const ENV_HONEST_FOR: &str = "GEOLOC_FAULT_HONEST_FOR_MS";
/// Smallest RTT a lie reports, ms (a plausible value: 0 would be rejected as impossible).
pub const MIN_LIE_MS: f64 = 0.1;

/// What the fault does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fault {
    pub honest: Vec<IpAddr>,
    pub delay_ms: f64,
    pub honest_for: Duration,
}

impl Fault {
    /// From the environment; a malformed value is an error naming the variable.
    pub fn from_env() -> Result<Fault, String> {
        let honest = match std::env::var(ENV_HONEST) {
            Ok(v) => v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<IpAddr>()
                        .map_err(|_| format!("{ENV_HONEST}: {s:?} is not an IP address"))
                })
                .collect::<Result<Vec<_>, _>>()?,
            Err(_) => Vec::new(),
        };
        let delay_ms = match std::env::var(ENV_DELAY) {
            Ok(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|d| d.is_finite())
                .ok_or_else(|| format!("{ENV_DELAY}: {v:?} is not a number of ms"))?,
            Err(_) => 0.0,
        };
        let honest_for = match std::env::var(ENV_HONEST_FOR) {
            Ok(v) => v
                .trim()
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| format!("{ENV_HONEST_FOR}: {v:?} is not a number of ms"))?,
            Err(_) => Duration::ZERO,
        };
        Ok(Fault {
            honest,
            delay_ms,
            honest_for,
        })
    }

    /// The result as this dishonest probe reports it, `since_start` after it started.
    pub fn apply(&self, mut r: MeasureResult, since_start: Duration) -> MeasureResult {
        if self.delay_ms == 0.0 || since_start < self.honest_for || self.honest.contains(&r.target)
        {
            return r;
        }
        let d = self.delay_ms;
        let shift = |x: &mut f64| *x = (*x + d).max(MIN_LIE_MS);
        let shift_opt = |x: &mut Option<f64>| {
            if let Some(v) = x {
                *v = (*v + d).max(MIN_LIE_MS);
            }
        };
        if let Some(p) = &mut r.ping {
            p.rtts_ms.iter_mut().for_each(shift);
            shift_opt(&mut p.min_rtt_ms);
        }
        if let Some(t) = &mut r.tcp {
            shift_opt(&mut t.min_rtt_ms);
            for p in &mut t.ports {
                shift_opt(&mut p.rtt_ms);
            }
        }
        if let Some(t) = &mut r.traceroute {
            shift_opt(&mut t.destination_rtt_ms);
            for h in &mut t.hops {
                shift_opt(&mut h.rtt_ms);
            }
            if let Some(l) = &mut t.last_hop {
                shift(&mut l.rtt_ms);
            }
        }
        r
    }
}

static FAULT: OnceLock<(Fault, Instant)> = OnceLock::new();

/// Reads the fault once at start (main); a malformed value stops the agent.
pub fn init() -> Result<(), String> {
    let f = Fault::from_env()?;
    tracing::warn!(
        honest = f.honest.len(),
        delay_ms = f.delay_ms,
        honest_for_ms = f.honest_for.as_millis() as u64,
        "FAULT INJECTION BUILD: this agent lies about RTTs (test only)"
    );
    let _ = FAULT.set((f, Instant::now()));
    Ok(())
}

/// Applies the fault read by [`init`] (none when not initialised).
pub fn apply(r: MeasureResult) -> MeasureResult {
    match FAULT.get() {
        Some((f, start)) => f.apply(r, start.elapsed()),
        None => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ping::PingOutcome;

    fn result(target: &str, rtts: &[f64]) -> MeasureResult {
        MeasureResult {
            schema: 1,
            request_id: "r".into(),
            target: target.parse().unwrap(),
            error: None,
            ping: Some(PingOutcome {
                sent: rtts.len() as u32,
                received: rtts.len() as u32,
                rtts_ms: rtts.to_vec(),
                min_rtt_ms: rtts.iter().copied().reduce(f64::min),
                error: None,
            }),
            tcp: None,
            traceroute: None,
            started_unix_ms: 0,
            finished_unix_ms: 0,
        }
    }

    #[test]
    fn honest_on_believed_checks_shifted_elsewhere() {
        let f = Fault {
            honest: vec!["10.0.0.1".parse().unwrap()],
            delay_ms: -30.0,
            honest_for: Duration::from_secs(10),
        };
        let late = Duration::from_secs(11);
        let same = f.apply(result("10.0.0.1", &[40.0, 50.0]), late);
        assert_eq!(same.ping.unwrap().rtts_ms, [40.0, 50.0]);
        let early = f.apply(result("10.0.0.2", &[40.0, 20.0]), Duration::from_secs(9));
        assert_eq!(early.ping.unwrap().rtts_ms, [40.0, 20.0]);
        let lied = f
            .apply(result("10.0.0.2", &[40.0, 20.0]), late)
            .ping
            .unwrap();
        assert_eq!(lied.rtts_ms, [10.0, MIN_LIE_MS]);
        assert_eq!(lied.min_rtt_ms, Some(MIN_LIE_MS));
    }
}
