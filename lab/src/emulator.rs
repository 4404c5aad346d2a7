//! The packet loop: read every TUN, route, delay, lower TTLs, answer for routers.
//!
//! One thread does everything: `ppoll` on all TUN descriptors with a nanosecond timeout
//! equal to the time until the next scheduled delivery (timer slack set to 1 µs), reads
//! every ready packet, decides its fate, and pushes the resulting deliveries (the packet
//! itself, or a router's ICMP Time Exceeded) into a binary heap keyed by delivery time.
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::packet;
use crate::topology::{Behaviour, Topology};

/// Counters and switches shared between the emulator thread and the [`crate::Lab`].
#[derive(Debug)]
pub struct Shared {
    pub stop: AtomicBool,
    /// Per host: cut off (every packet from or to it is dropped).
    pub cut: Vec<AtomicBool>,
    pub stats: Stats,
}

/// Packet counters (monotonic).
#[derive(Debug, Default)]
pub struct Stats {
    pub received: AtomicU64,
    pub delivered: AtomicU64,
    pub time_exceeded: AtomicU64,
    /// Dropped by a host's behaviour (drop-icmp, drop-tcp, silent) or a cut.
    pub dropped_policy: AtomicU64,
    /// No host has the destination address, or the source address is not the sender's.
    pub dropped_unroutable: AtomicU64,
    pub dropped_malformed: AtomicU64,
    /// The destination's TUN queue was full.
    pub dropped_write: AtomicU64,
    /// Sum and max of (actual write time - scheduled time), ns.
    pub lateness_ns_sum: AtomicU64,
    pub lateness_ns_max: AtomicU64,
}

/// A plain copy of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    pub received: u64,
    pub delivered: u64,
    pub time_exceeded: u64,
    pub dropped_policy: u64,
    pub dropped_unroutable: u64,
    pub dropped_malformed: u64,
    pub dropped_write: u64,
    /// Mean lateness of deliveries against their schedule, µs.
    pub mean_lateness_us: u64,
    pub max_lateness_us: u64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let sent = l(&self.delivered) + l(&self.time_exceeded);
        StatsSnapshot {
            received: l(&self.received),
            delivered: l(&self.delivered),
            time_exceeded: l(&self.time_exceeded),
            dropped_policy: l(&self.dropped_policy),
            dropped_unroutable: l(&self.dropped_unroutable),
            dropped_malformed: l(&self.dropped_malformed),
            dropped_write: l(&self.dropped_write),
            mean_lateness_us: l(&self.lateness_ns_sum).checked_div(sent).unwrap_or(0) / 1000,
            max_lateness_us: l(&self.lateness_ns_max) / 1000,
        }
    }
}

struct Pending {
    at: Instant,
    seq: u64,
    out: usize,
    pkt: Vec<u8>,
    is_te: bool,
}
impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// `SCHED_FIFO` priority of the emulator thread (low among real-time threads).
const REALTIME_PRIORITY: i32 = 10;

/// How long before a scheduled delivery the loop stops sleeping and busy-polls.
const SPIN: Duration = Duration::from_micros(300);

fn ms(d: f64) -> Duration {
    Duration::from_secs_f64(d.max(0.0) / 1000.0)
}

/// The emulator state owned by its thread.
pub(crate) struct Emulator {
    topo: Arc<Topology>,
    tuns: Vec<File>,
    shared: Arc<Shared>,
    heap: BinaryHeap<Reverse<Pending>>,
    seq: u64,
    rng: StdRng,
    /// Last delivery time per (src, dst): jitter never reorders a flow.
    last: HashMap<(usize, usize), Instant>,
}

impl Emulator {
    pub(crate) fn new(
        topo: Arc<Topology>,
        tuns: Vec<File>,
        shared: Arc<Shared>,
        seed: u64,
    ) -> Self {
        Self {
            topo,
            tuns,
            shared,
            heap: BinaryHeap::new(),
            seq: 0,
            rng: StdRng::seed_from_u64(seed),
            last: HashMap::new(),
        }
    }

    /// Runs until `shared.stop` is set.
    pub(crate) fn run(mut self) {
        // Wake-ups within a microsecond of the requested time instead of the default 50 µs.
        let _ = nix::sys::prctl::set_timerslack(1_000);
        // Deliveries on time even when the machine is busy (best effort: needs root).
        if let Err(e) = crate::sys::set_realtime_priority(REALTIME_PRIORITY) {
            tracing::warn!(error = %e, "emulator thread stays in the normal scheduling class");
        }
        let mut buf = vec![0u8; 65536];
        while !self.shared.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            // Sleep until SPIN before the next delivery, then poll without sleeping: timer
            // wake-ups on a virtual machine come 100-200 µs late even with 1 µs slack.
            let timeout = self
                .heap
                .peek()
                .map_or(Duration::from_millis(50), |p| {
                    p.0.at.saturating_duration_since(now).saturating_sub(SPIN)
                })
                .min(Duration::from_millis(50));
            let mut ready = vec![false; self.tuns.len()];
            {
                let mut fds: Vec<PollFd> = self
                    .tuns
                    .iter()
                    .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
                    .collect();
                if !timeout.is_zero() {
                    match nix::poll::ppoll(&mut fds, Some(timeout.into()), None) {
                        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                        Err(e) => {
                            tracing::error!(error = %e, "ppoll failed; emulator stops");
                            return;
                        }
                    }
                } else {
                    let _ = nix::poll::ppoll(&mut fds, Some(Duration::ZERO.into()), None);
                }
                for (i, fd) in fds.iter().enumerate() {
                    ready[i] = fd
                        .revents()
                        .is_some_and(|r| r.intersects(PollFlags::POLLIN));
                }
            }
            for (i, is_ready) in ready.iter().enumerate() {
                if !is_ready {
                    continue;
                }
                loop {
                    match (&self.tuns[i]).read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            let t0 = Instant::now();
                            self.on_packet(i, &buf[..n], t0);
                        }
                        Err(e)
                            if e.kind() == ErrorKind::WouldBlock
                                || e.kind() == ErrorKind::Interrupted =>
                        {
                            break
                        }
                        Err(e) => {
                            tracing::debug!(host = i, error = %e, "TUN read failed");
                            break;
                        }
                    }
                }
            }
            self.flush_due();
        }
    }

    fn flush_due(&mut self) {
        let stats = &self.shared.stats;
        loop {
            let now = Instant::now();
            match self.heap.peek() {
                Some(p) if p.0.at <= now => {}
                _ => break,
            }
            let Some(Reverse(p)) = self.heap.pop() else {
                break;
            };
            if self.shared.cut[p.out].load(Ordering::Relaxed) {
                stats.dropped_policy.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            // A TUN write takes the whole packet or fails; a short count is a dropped packet.
            match (&self.tuns[p.out]).write(&p.pkt) {
                Ok(n) if n == p.pkt.len() => {
                    let late = now.duration_since(p.at).as_nanos() as u64;
                    stats.lateness_ns_sum.fetch_add(late, Ordering::Relaxed);
                    stats.lateness_ns_max.fetch_max(late, Ordering::Relaxed);
                    if p.is_te {
                        stats.time_exceeded.fetch_add(1, Ordering::Relaxed);
                    } else {
                        stats.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(_) | Err(_) => {
                    stats.dropped_write.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn jitter(&mut self) -> f64 {
        let mean = self.topo.jitter_ms;
        if mean <= 0.0 {
            return 0.0;
        }
        let u: f64 = self.rng.random::<f64>();
        -mean * (1.0 - u).ln()
    }

    fn schedule(&mut self, at: Instant, out: usize, pkt: Vec<u8>, is_te: bool) {
        self.seq += 1;
        self.heap.push(Reverse(Pending {
            at,
            seq: self.seq,
            out,
            pkt,
            is_te,
        }));
    }

    /// Decides what happens to one packet read from host `src`'s TUN at `t0`.
    fn on_packet(&mut self, src: usize, pkt: &[u8], t0: Instant) {
        let stats = &self.shared.stats;
        stats.received.fetch_add(1, Ordering::Relaxed);
        let Some(h) = packet::parse(pkt) else {
            stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if self.shared.cut[src].load(Ordering::Relaxed) {
            stats.dropped_policy.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if !self.topo.owns(src, h.src) {
            stats.dropped_unroutable.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(dst) = self.topo.route(src, h.dst) else {
            stats.dropped_unroutable.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let path = self.topo.path(src, dst);
        let mut pkt = pkt[..h.len].to_vec();
        let v6 = h.dst.is_ipv6();
        if usize::from(h.ttl) <= path.hops.len() {
            // Expires at router k, where it arrives with TTL 1 (or 0 if sent with 0).
            let k = usize::from(h.ttl.max(1)) - 1;
            packet::set_ttl(&mut pkt, h.ttl - k as u8);
            let hop = path.hops[k];
            if let Some(te) = packet::time_exceeded(&pkt, hop.addr(v6)) {
                let at = t0 + ms(2.0 * hop.one_way_ms + self.jitter());
                self.schedule(at, src, te, true);
            }
            return;
        }
        let drop = match self.topo.hosts()[dst].behaviour {
            Behaviour::Normal => false,
            Behaviour::Silent => true,
            Behaviour::DropIcmp => h.is_echo_request(&pkt),
            Behaviour::DropTcp => h.is_tcp(),
        };
        if drop {
            stats.dropped_policy.fetch_add(1, Ordering::Relaxed);
            return;
        }
        packet::set_ttl(&mut pkt, h.ttl - path.hops.len() as u8);
        let mut at = t0 + ms(path.one_way_ms + self.jitter());
        if self.topo.jitter_ms > 0.0 {
            let last = self.last.entry((src, dst)).or_insert(at);
            if *last > at {
                at = *last;
            }
            *last = at;
        }
        self.schedule(at, dst, pkt, false);
    }
}
