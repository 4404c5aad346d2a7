//! Safety: which targets may be probed, and how many packets may be sent.
//!
//! * [`classify`] (the workspace's one table, `geoloc-policy`) sorts an address into
//!   global / private / loopback / link-local / multicast / reserved. Only global unicast
//!   addresses are probed by default; the others need `allow-private` in the agent's own
//!   configuration **and** in the coordinator's request ([`check_target`]). Unspecified,
//!   broadcast and multicast addresses are never probed.
//! * [`PacketBudget`]: a per-agent rate limit and one per target ([`governor`]); every
//!   packet the agent itself sends takes one from both.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

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

/// Longest replenish period (slowest rate) a cap is given: one packet per hour. Keeps
/// governor's nanosecond arithmetic (period x burst) far from overflow.
const SLOWEST_PERIOD: Duration = Duration::from_secs(3600);
/// Largest burst a cap is given, packets.
const LARGEST_BURST: u32 = 1_000_000;

/// A [`governor`] quota of `rate_per_s` packets per second with bursts of `burst` packets
/// (at least 1; a fractional burst is rounded down; rates slower than one packet per hour
/// are one per hour).
pub fn quota(rate_per_s: f64, burst: f64) -> Quota {
    let period = if rate_per_s.is_finite() && rate_per_s > 0.0 {
        Duration::try_from_secs_f64(1.0 / rate_per_s).unwrap_or(SLOWEST_PERIOD)
    } else {
        SLOWEST_PERIOD
    };
    let period = period.clamp(Duration::from_nanos(1), SLOWEST_PERIOD);
    let burst = if burst.is_finite() {
        burst.clamp(1.0, f64::from(LARGEST_BURST)) as u32
    } else {
        1
    };
    Quota::with_period(period)
        .expect("period is at least 1 ns")
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;
type Keyed<C> =
    RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Packet rate caps shared by every measurement of one agent: one [`governor`] rate limiter
/// for the whole agent and a keyed one per destination address (GCRA, equivalent to token
/// buckets).
pub struct PacketBudget<C: Clock = MonotonicClock> {
    global: Direct<C>,
    per_target: Keyed<C>,
    clock: C,
}

impl<C: Clock> std::fmt::Debug for PacketBudget<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketBudget")
            .field("targets", &self.per_target.len())
            .finish_non_exhaustive()
    }
}

/// Forget idle per-target state once this many targets are tracked.
const PER_TARGET_GC_THRESHOLD: usize = 1024;

impl PacketBudget {
    /// Builds the caps: `global_pps`/`global_burst` for the whole agent, `target_pps`/
    /// `target_burst` for each destination address.
    pub fn new(global_pps: f64, global_burst: f64, target_pps: f64, target_burst: f64) -> Self {
        PacketBudget::with_clock(
            global_pps,
            global_burst,
            target_pps,
            target_burst,
            MonotonicClock,
        )
    }
}

impl<C: Clock + Clone> PacketBudget<C> {
    /// [`PacketBudget::new`] on another clock (tests use governor's `FakeRelativeClock`).
    pub fn with_clock(
        global_pps: f64,
        global_burst: f64,
        target_pps: f64,
        target_burst: f64,
        clock: C,
    ) -> Self {
        PacketBudget {
            global: RateLimiter::direct_with_clock(quota(global_pps, global_burst), clock.clone()),
            per_target: RateLimiter::dashmap_with_clock(
                quota(target_pps, target_burst),
                clock.clone(),
            ),
            clock,
        }
    }

    /// Takes one packet from the target's cap, then from the agent's; otherwise how long
    /// to wait. A refusal by the target's cap takes nothing from the agent's; a refusal by
    /// the agent's cap has used up one of the target's packets (never more than the caps
    /// are sent, at worst fewer).
    pub fn try_take(&self, target: IpAddr) -> std::result::Result<(), Duration> {
        if self.per_target.len() >= PER_TARGET_GC_THRESHOLD {
            self.per_target.retain_recent();
            self.per_target.shrink_to_fit();
        }
        let now = self.clock.now();
        self.per_target
            .check_key(&target)
            .map_err(|not_until| not_until.wait_time_from(now))?;
        self.global
            .check()
            .map_err(|not_until| not_until.wait_time_from(now))
    }

    /// Waits (async) for a token; false if none could be had before `deadline`.
    pub async fn take(&self, target: IpAddr, deadline: Instant) -> bool {
        loop {
            let now = Instant::now();
            match self.try_take(target) {
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
            match self.try_take(target) {
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
    use governor::clock::FakeRelativeClock;

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

    fn fake_budget(
        gp: f64,
        gb: f64,
        tp: f64,
        tb: f64,
    ) -> (PacketBudget<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (
            PacketBudget::with_clock(gp, gb, tp, tb, clock.clone()),
            clock,
        )
    }

    #[test]
    fn cap_allows_burst_then_paces() {
        // 10 packets/s, burst 3 (the agent-wide cap: every target is fresh).
        let (b, clock) = fake_budget(10.0, 3.0, 1000.0, 1000.0);
        for i in 0..3 {
            assert!(b.try_take(ip(&format!("192.0.2.{i}"))).is_ok());
        }
        let wait = b.try_take(ip("192.0.2.9")).unwrap_err();
        assert!(
            wait > Duration::from_millis(90) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        clock.advance(Duration::from_millis(100));
        assert!(b.try_take(ip("192.0.2.9")).is_ok());
        // Never more than the burst, however long we wait.
        clock.advance(Duration::from_secs(3600));
        let sent = (0..10)
            .filter(|i| b.try_take(ip(&format!("198.51.100.{i}"))).is_ok())
            .count();
        assert_eq!(sent, 3);
    }

    #[test]
    fn quotas_from_the_configuration() {
        let q = quota(200.0, 50.0);
        assert_eq!(q.replenish_interval(), Duration::from_millis(5));
        assert_eq!(q.burst_size().get(), 50);
        // A fractional burst is rounded down, never below 1; absurd values are bounded.
        assert_eq!(quota(0.5, 1.9).burst_size().get(), 1);
        assert_eq!(quota(0.5, 1.9).replenish_interval(), Duration::from_secs(2));
        assert_eq!(
            quota(1e-12, f64::INFINITY).replenish_interval(),
            SLOWEST_PERIOD
        );
        assert_eq!(quota(f64::NAN, 1e300).burst_size().get(), LARGEST_BURST);
    }

    #[test]
    fn budget_caps_per_target_and_globally() {
        let (budget, clock) = fake_budget(100.0, 5.0, 10.0, 2.0);
        let a = ip("192.0.2.1");
        let b = ip("192.0.2.2");
        assert!(budget.try_take(a).is_ok());
        assert!(budget.try_take(a).is_ok());
        // Per-target cap reached for a, not for b; the refusal took nothing globally.
        assert!(budget.try_take(a).is_err());
        assert!(budget.try_take(b).is_ok());
        assert!(budget.try_take(b).is_ok());
        let c = ip("192.0.2.3");
        assert!(budget.try_take(c).is_ok());
        // Global burst of 5 used up: even a fresh target waits.
        let d = ip("192.0.2.4");
        let wait = budget.try_take(d).unwrap_err();
        assert!(wait <= Duration::from_millis(10), "{wait:?}");
        // 20 ms later (2 global packets back) d goes through.
        clock.advance(Duration::from_millis(20));
        assert!(budget.try_take(d).is_ok());
    }

    #[test]
    fn idle_targets_are_forgotten() {
        let (budget, clock) = fake_budget(1e6, 1e6, 10.0, 1.0);
        for i in 0..PER_TARGET_GC_THRESHOLD as u32 {
            assert!(budget.try_take(IpAddr::from(i.to_be_bytes())).is_ok());
        }
        assert_eq!(budget.per_target.len(), PER_TARGET_GC_THRESHOLD);
        clock.advance(Duration::from_secs(1));
        assert!(budget.try_take(ip("192.0.2.1")).is_ok());
        assert!(budget.per_target.len() < 10, "{}", budget.per_target.len());
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
