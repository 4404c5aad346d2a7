//! Safety: which targets may be probed, and how many packets may be sent.
//!
//! * [`classify`] (the workspace's one table, `geoloc-policy`) sorts an address into
//!   global / private / loopback / link-local / multicast / reserved. Only global unicast
//!   addresses are probed by default; the others need `allow-private` in the agent's own
//!   configuration **and** in the coordinator's request ([`check_target`]). Unspecified,
//!   broadcast and multicast addresses are never probed.
//! * [`PacketBudget`]: a per-agent token bucket and one per target; every packet the agent
//!   itself sends takes one token from both.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

use geoloc_policy::Probeable;
pub use geoloc_policy::{classify, AddressClass};

/// Decides whether `target` may be probed.
///
/// Global unicast targets are always allowed. Private, loopback, link-local, multicast and
/// reserved targets need both `agent_allows_private` (the agent's own configuration) and
/// `request_allows_private` (the coordinator's request). Unspecified/broadcast: never.
pub fn check_target(
    target: IpAddr,
    agent_allows_private: bool,
    request_allows_private: bool,
) -> Result<()> {
    let class = classify(target);
    let refuse = |reason: String| Err(Error::TargetRefused { target, reason });
    match class.probeable() {
        Probeable::Always => Ok(()),
        Probeable::Never => refuse(format!("{} address: never probed", class.describe())),
        Probeable::IfPrivateAllowed => {
            let missing = match (agent_allows_private, request_allows_private) {
                (true, true) => return Ok(()),
                (false, false) => "neither the agent's allow-private nor the request allows it",
                (false, true) => "the agent's configuration does not set allow-private",
                (true, false) => "the request does not allow private targets",
            };
            refuse(format!("{} address: {missing}", class.describe()))
        }
    }
}

/// A classic token bucket: `rate_per_s` tokens per second, at most `burst` stored.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_per_s: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_s: f64, burst: f64, now: Instant) -> Self {
        let burst = burst.max(1.0);
        TokenBucket {
            rate_per_s: rate_per_s.max(f64::MIN_POSITIVE),
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed_s = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed_s * self.rate_per_s).min(self.burst);
        self.last = now.max(self.last);
    }

    /// How long until one token is available (zero when one is available now).
    pub fn wait_for_one(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate_per_s)
        }
    }

    /// Takes one token; the caller checked [`Self::wait_for_one`] returned zero.
    fn take_one(&mut self) {
        self.tokens -= 1.0;
    }

    /// True when the bucket is full (it can be forgotten without changing behaviour).
    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// Packet rate caps shared by every measurement of one agent.
#[derive(Debug)]
pub struct PacketBudget {
    global: Mutex<TokenBucket>,
    per_target: Mutex<HashMap<IpAddr, TokenBucket>>,
    per_target_rate_per_s: f64,
    per_target_burst: f64,
}

/// Forget full per-target buckets once the map holds this many.
const PER_TARGET_GC_THRESHOLD: usize = 1024;

impl PacketBudget {
    /// Builds the caps: `global_pps`/`global_burst` for the whole agent, `target_pps`/
    /// `target_burst` for each destination address.
    pub fn new(global_pps: f64, global_burst: f64, target_pps: f64, target_burst: f64) -> Self {
        PacketBudget {
            global: Mutex::new(TokenBucket::new(global_pps, global_burst, Instant::now())),
            per_target: Mutex::new(HashMap::new()),
            per_target_rate_per_s: target_pps,
            per_target_burst: target_burst,
        }
    }

    /// Takes one token from both buckets if both have one; otherwise how long to wait.
    pub fn try_take(&self, target: IpAddr, now: Instant) -> std::result::Result<(), Duration> {
        // Lock order: global, then per-target (everywhere).
        let mut global = self.global.lock().unwrap_or_else(|e| e.into_inner());
        let mut map = self.per_target.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= PER_TARGET_GC_THRESHOLD {
            map.retain(|_, b| !b.is_full(now));
        }
        let bucket = map.entry(target).or_insert_with(|| {
            TokenBucket::new(self.per_target_rate_per_s, self.per_target_burst, now)
        });
        let wait = global.wait_for_one(now).max(bucket.wait_for_one(now));
        if wait.is_zero() {
            global.take_one();
            bucket.take_one();
            Ok(())
        } else {
            Err(wait)
        }
    }

    /// Waits (async) for a token; false if none could be had before `deadline`.
    pub async fn take(&self, target: IpAddr, deadline: Instant) -> bool {
        loop {
            let now = Instant::now();
            match self.try_take(target, now) {
                Ok(()) => return true,
                Err(wait) => {
                    if now + wait > deadline {
                        return false;
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Waits (blocking the thread) for a token; false if none before `deadline`.
    pub fn take_blocking(&self, target: IpAddr, deadline: Instant) -> bool {
        loop {
            let now = Instant::now();
            match self.try_take(target, now) {
                Ok(()) => return true,
                Err(wait) => {
                    if now + wait > deadline {
                        return false;
                    }
                    std::thread::sleep(wait);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_targets_need_both_permissions() {
        let lo = ip("127.0.0.1");
        assert!(check_target(lo, true, true).is_ok());
        for (agent, request) in [(false, false), (true, false), (false, true)] {
            let err = check_target(lo, agent, request).unwrap_err().to_string();
            assert!(err.contains("loopback"), "{err}");
        }
        assert!(check_target(ip("8.8.8.8"), false, false).is_ok());
        assert!(check_target(ip("0.0.0.0"), true, true).is_err());
        assert!(check_target(ip("::"), true, true).is_err());
        // Multicast has no single host to locate: refused even where private is allowed.
        assert!(check_target(ip("224.0.0.1"), true, true).is_err());
        assert!(check_target(ip("ff02::1"), true, true).is_err());
        let err = check_target(ip("10.0.0.1"), false, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("allow-private"), "{err}");
    }

    #[test]
    fn bucket_allows_burst_then_paces() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3.0, t0);
        for _ in 0..3 {
            assert_eq!(b.wait_for_one(t0), Duration::ZERO);
            b.take_one();
        }
        let wait = b.wait_for_one(t0);
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100));
        assert_eq!(
            b.wait_for_one(t0 + Duration::from_millis(100)),
            Duration::ZERO
        );
        // Never more than the burst, however long we wait.
        let later = t0 + Duration::from_secs(3600);
        b.refill(later);
        assert!(b.tokens <= 3.0);
    }

    #[test]
    fn budget_caps_per_target_and_globally() {
        let t0 = Instant::now();
        let budget = PacketBudget::new(100.0, 5.0, 10.0, 2.0);
        let a = ip("192.0.2.1");
        let b = ip("192.0.2.2");
        assert!(budget.try_take(a, t0).is_ok());
        assert!(budget.try_take(a, t0).is_ok());
        // Per-target cap reached for a, not for b.
        assert!(budget.try_take(a, t0).is_err());
        assert!(budget.try_take(b, t0).is_ok());
        assert!(budget.try_take(b, t0).is_ok());
        let c = ip("192.0.2.3");
        assert!(budget.try_take(c, t0).is_ok());
        // Global burst of 5 used up: even a fresh target waits.
        let d = ip("192.0.2.4");
        assert!(budget.try_take(d, t0).is_err());
        // A refused take consumed nothing: 20 ms later (>= 1 global token, the bucket was
        // created a hair after t0) d goes through.
        assert!(budget.try_take(d, t0 + Duration::from_millis(20)).is_ok());
    }

    #[test]
    fn blocking_take_respects_rate_and_deadline() {
        let budget = PacketBudget::new(1000.0, 1.0, 50.0, 1.0);
        let t = ip("192.0.2.1");
        let start = Instant::now();
        for _ in 0..5 {
            assert!(budget.take_blocking(t, start + Duration::from_secs(5)));
        }
        // 4 waits of 20 ms each at 50 packets/s.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(75), "{elapsed:?}");
    }

    #[test]
    fn blocking_take_fails_fast_when_the_deadline_cannot_be_met() {
        // One packet per 2 s: the second token is 2 s away, the deadline 1 ms. Failing
        // fast returns at once; sleeping for the token would take 2 s (the bound leaves a
        // loaded machine a whole second).
        let budget = PacketBudget::new(1000.0, 1.0, 0.5, 1.0);
        let t = ip("192.0.2.1");
        assert!(budget.take_blocking(t, Instant::now() + Duration::from_secs(5)));
        let before = Instant::now();
        assert!(!budget.take_blocking(t, Instant::now() + Duration::from_millis(1)));
        assert!(
            before.elapsed() < Duration::from_secs(1),
            "{:?}",
            before.elapsed()
        );
    }
}
