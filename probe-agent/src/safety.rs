//! Safety: which targets may be probed, and how many packets may be sent.
//!
//! * [`classify`] sorts an address into global / private / loopback / link-local /
//!   multicast / reserved. Only global unicast addresses are probed by default; the others
//!   need `allow-private` in the agent's own configuration **and** in the coordinator's
//!   request ([`check_target`]). The unspecified address and the IPv4 limited broadcast
//!   address are never probed.
//! * [`PacketBudget`]: a per-agent token bucket and one per target; every packet the agent
//!   itself sends takes one token from both.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// What kind of address a target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Globally routable unicast.
    Global,
    /// RFC 1918, CGNAT (100.64/10), IPv6 unique local (fc00::/7).
    Private,
    /// 127/8, ::1.
    Loopback,
    /// 169.254/16, fe80::/10.
    LinkLocal,
    /// 224/4, ff00::/8.
    Multicast,
    /// Documentation, benchmarking, 0/8, 240/4, IETF special purpose, non-2000::/3 IPv6…
    Reserved(&'static str),
    /// 0.0.0.0, ::, 255.255.255.255: not a host, never probed.
    NotAHost,
}

impl AddressClass {
    /// Human-readable name used in refusal messages.
    pub fn describe(&self) -> &'static str {
        match self {
            AddressClass::Global => "global unicast",
            AddressClass::Private => "private",
            AddressClass::Loopback => "loopback",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Multicast => "multicast",
            AddressClass::Reserved(what) => what,
            AddressClass::NotAHost => "unspecified/broadcast",
        }
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    (u128::from(ip) & mask) == (u128::from(net) & mask)
}

/// Classifies an IPv4 address.
pub fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    use AddressClass::*;
    if ip.is_unspecified() || ip.is_broadcast() {
        return NotAHost;
    }
    let table: &[([u8; 4], u32, AddressClass)] = &[
        ([0, 0, 0, 0], 8, Reserved("\"this network\" (0.0.0.0/8)")),
        ([10, 0, 0, 0], 8, Private),
        ([100, 64, 0, 0], 10, Private),
        ([127, 0, 0, 0], 8, Loopback),
        ([169, 254, 0, 0], 16, LinkLocal),
        ([172, 16, 0, 0], 12, Private),
        (
            [192, 0, 0, 0],
            24,
            Reserved("IETF protocol assignments (192.0.0.0/24)"),
        ),
        ([192, 0, 2, 0], 24, Reserved("documentation (TEST-NET-1)")),
        (
            [192, 88, 99, 0],
            24,
            Reserved("6to4 relay anycast (192.88.99.0/24)"),
        ),
        ([192, 168, 0, 0], 16, Private),
        (
            [198, 18, 0, 0],
            15,
            Reserved("benchmarking (198.18.0.0/15)"),
        ),
        (
            [198, 51, 100, 0],
            24,
            Reserved("documentation (TEST-NET-2)"),
        ),
        ([203, 0, 113, 0], 24, Reserved("documentation (TEST-NET-3)")),
        ([224, 0, 0, 0], 4, Multicast),
        ([240, 0, 0, 0], 4, Reserved("reserved (240.0.0.0/4)")),
    ];
    table
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, class)| *class)
        .unwrap_or(Global)
}

/// Classifies an IPv6 address (IPv4-mapped addresses are classified as IPv4).
pub fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    use AddressClass::*;
    if ip.is_unspecified() {
        return NotAHost;
    }
    if ip.is_loopback() {
        return Loopback;
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap_or(Ipv6Addr::UNSPECIFIED);
    let table: &[(&str, u32, AddressClass)] = &[
        ("fc00::", 7, Private),
        ("fe80::", 10, LinkLocal),
        ("fec0::", 10, Reserved("deprecated site-local (fec0::/10)")),
        ("ff00::", 8, Multicast),
        ("2001:db8::", 32, Reserved("documentation (2001:db8::/32)")),
        ("3fff::", 20, Reserved("documentation (3fff::/20)")),
        (
            "2001::",
            23,
            Reserved("IETF protocol assignments (2001::/23)"),
        ),
        ("2002::", 16, Reserved("6to4 (2002::/16)")),
        ("64:ff9b::", 96, Reserved("NAT64 (64:ff9b::/96)")),
        ("100::", 64, Reserved("discard-only (100::/64)")),
    ];
    if let Some((_, _, class)) = table
        .iter()
        .find(|(net, prefix, _)| in_v6(ip, v6(net), *prefix))
    {
        return *class;
    }
    if !in_v6(ip, v6("2000::"), 3) {
        return Reserved("outside global unicast 2000::/3");
    }
    Global
}

/// Classifies any address.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

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
    match class {
        AddressClass::Global => Ok(()),
        AddressClass::NotAHost => refuse(format!("{} is not a host", class.describe())),
        _ => {
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
    fn classification() {
        for (s, c) in [
            ("8.8.8.8", AddressClass::Global),
            ("1.1.1.1", AddressClass::Global),
            ("10.1.2.3", AddressClass::Private),
            ("172.31.255.255", AddressClass::Private),
            ("172.32.0.1", AddressClass::Global),
            ("192.168.1.1", AddressClass::Private),
            ("100.64.0.1", AddressClass::Private),
            ("127.0.0.1", AddressClass::Loopback),
            ("169.254.1.1", AddressClass::LinkLocal),
            ("224.0.0.1", AddressClass::Multicast),
            ("0.0.0.0", AddressClass::NotAHost),
            ("255.255.255.255", AddressClass::NotAHost),
            ("::", AddressClass::NotAHost),
            ("::1", AddressClass::Loopback),
            ("fe80::1", AddressClass::LinkLocal),
            ("fd12::1", AddressClass::Private),
            ("ff02::1", AddressClass::Multicast),
            ("2a00:1450:4007:80e::200e", AddressClass::Global),
            ("::ffff:10.0.0.1", AddressClass::Private),
            ("::ffff:8.8.8.8", AddressClass::Global),
        ] {
            assert_eq!(classify(ip(s)), c, "{s}");
        }
        for s in [
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.9",
            "198.18.0.1",
            "240.0.0.1",
            "0.1.2.3",
            "2001:db8::1",
            "3fff::1",
            "2002::1",
            "100::1",
            "::2",
            "4000::1",
        ] {
            assert!(
                matches!(classify(ip(s)), AddressClass::Reserved(_)),
                "{s} should be reserved"
            );
        }
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
