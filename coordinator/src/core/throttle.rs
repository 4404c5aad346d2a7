//! Rate limits on registrations (`governor`): attempts per source address (this also
//! throttles credential guessing), new probes per second and in total per credential, and
//! failed-authentication log lines (a flood becomes one summary line).
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Registration attempts per second from one address, and the burst allowed.
const ATTEMPTS_PER_S: u32 = 20;
const ATTEMPTS_BURST: u32 = 200;
/// New probe ids per second (all addresses together) and most probes registered: the
/// configuration's `new-probes-per-s` (burst ten times it) and `max-probes`.
/// Failed-authentication log lines: one per this many seconds after a short burst.
const AUTH_LOG_PER_MIN: u32 = 6;
const AUTH_LOG_BURST: u32 = 5;

fn quota(per_s: u32, burst: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(per_s).unwrap_or(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

/// The coordinator's registration limits.
pub struct Throttle {
    attempts: DefaultKeyedRateLimiter<IpAddr>,
    new_probes: DefaultDirectRateLimiter,
    auth_log: DefaultDirectRateLimiter,
    auth_failures_unlogged: AtomicU64,
    /// Most probes registered (`max-probes`).
    pub max_probes: usize,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(
            crate::config::defaults::NEW_PROBES_PER_S,
            crate::config::defaults::MAX_PROBES,
        )
    }
}

impl Throttle {
    /// Limits of `new_probes_per_s` new probe ids a second (burst ten times it) and
    /// `max_probes` probes registered.
    pub fn new(new_probes_per_s: u32, max_probes: u32) -> Self {
        Throttle {
            attempts: RateLimiter::keyed(quota(ATTEMPTS_PER_S, ATTEMPTS_BURST)),
            new_probes: RateLimiter::direct(quota(
                new_probes_per_s,
                new_probes_per_s.saturating_mul(10),
            )),
            auth_log: RateLimiter::direct(
                Quota::per_minute(NonZeroU32::new(AUTH_LOG_PER_MIN).unwrap_or(NonZeroU32::MIN))
                    .allow_burst(NonZeroU32::new(AUTH_LOG_BURST).unwrap_or(NonZeroU32::MIN)),
            ),
            auth_failures_unlogged: AtomicU64::new(0),
            max_probes: max_probes as usize,
        }
    }

    /// One registration attempt from `peer` (None: unknown, e.g. an in-process call).
    /// False when that address is over its rate.
    pub fn attempt(&self, peer: Option<IpAddr>) -> bool {
        let ok = peer.is_none_or(|ip| self.attempts.check_key(&ip).is_ok());
        if self.attempts.len() > 10_000 {
            self.attempts.retain_recent();
        }
        ok
    }

    /// A registration that creates a new probe id. False when over the rate.
    pub fn new_probe(&self) -> bool {
        self.new_probes.check().is_ok()
    }

    /// Logs a failed authentication, or counts it for the next summary line.
    pub fn auth_failed(&self, peer: Option<IpAddr>, probe_id: &str) {
        if self.auth_log.check().is_ok() {
            let suppressed = self.auth_failures_unlogged.swap(0, Ordering::Relaxed);
            tracing::warn!(
                probe = %crate::core::text::bounded_text(probe_id, 80),
                peer = ?peer,
                suppressed,
                "registration with a wrong credential"
            );
        } else {
            self.auth_failures_unlogged.fetch_add(1, Ordering::Relaxed);
        }
    }
}
