//! Paris traceroute over raw sockets (IPv4 and IPv6; ICMP, UDP or TCP probes).
//!
//! The flow identifier stays constant for the whole trace so per-flow load balancers keep
//! every probe on one path: ICMP probes keep identifier and checksum (a balance word in the
//! payload absorbs the changing sequence number), UDP probes keep their ports (the probe is
//! told apart by its checksum), TCP probes keep their ports (told apart by the sequence
//! number). Only the TTL and fields outside the flow hash change. See [`crate::packet`].
//!
//! Probes go out one TTL after the other, each taking a packet token, with a short gap
//! during which replies are collected; once the destination (or an unreachable) answers,
//! higher TTLs are not probed. With several probes per hop, later rounds stop two TTLs past
//! the last hop that answered. Needs `CAP_NET_RAW`.
//!
//! Replies are timestamped by the kernel (`SO_TIMESTAMPNS`, read with `recvmsg`), not when
//! the task gets round to reading them: under CPU load, or while the trace waits for a
//! packet token, a reply can sit in the socket for milliseconds. The kernel's receive
//! time (`CLOCK_REALTIME`) is carried into the [`Instant`] domain by [`kernel_instant`].
//! A probe's send time is stamped *before* `sendto`, so an RTT is never below the truth.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket as TokioUdp;
use tracing::debug;

use crate::config::TracerouteProtocol;
use crate::error::{Error, Result};
use crate::packet::{self, ProbeKey, Reply, ReplyKind};
use crate::safety::PacketBudget;

/// Gap after each probe during which replies are read before the next probe.
const PROBE_GAP: Duration = Duration::from_millis(10);

/// Parameters of one trace.
#[derive(Debug, Clone, Copy)]
pub struct TraceParams {
    /// Probe protocol.
    pub protocol: TracerouteProtocol,
    /// Highest TTL probed.
    pub max_ttl: u8,
    /// Probes per TTL (minimum RTT kept).
    pub probes_per_hop: u32,
    /// Wait for late replies after the last probe of a round.
    pub wait: Duration,
    /// UDP destination port.
    pub udp_port: u16,
    /// TCP destination port.
    pub tcp_port: u16,
}

/// One hop (JSON schema: see the crate README).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hop {
    /// TTL (hop limit) of the probes.
    pub ttl: u8,
    /// Who answered; null when nobody did.
    pub address: Option<IpAddr>,
    /// Minimum RTT of the answers, ms; null when nobody answered.
    pub rtt_ms: Option<f64>,
}

/// The last responsive hop before the target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastHop {
    /// Its TTL.
    pub ttl: u8,
    /// Its address.
    pub address: IpAddr,
    /// Its minimum RTT, ms.
    pub rtt_ms: f64,
}

/// Result of a trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceOutcome {
    /// Probe protocol.
    pub protocol: TracerouteProtocol,
    /// The destination answered.
    pub reached: bool,
    /// Minimum RTT of the destination's answers, ms.
    pub destination_rtt_ms: Option<f64>,
    /// Every TTL probed, in order.
    pub hops: Vec<Hop>,
    /// The last responsive hop that is not the target (for a silent target: the router
    /// closest to it, used as a `last-hop` measurement by the engine).
    pub last_hop: Option<LastHop>,
    /// Why the trace stopped early or could not run; null when it ran normally.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    ttl: u8,
    at: Instant,
}

#[derive(Debug, Default, Clone)]
struct HopAcc {
    address: Option<IpAddr>,
    rtt: Option<Duration>,
}

/// Which source address the kernel would use towards `target` (no packet is sent).
pub fn source_address_for(target: IpAddr) -> Result<IpAddr> {
    let bind: SocketAddr = match target {
        IpAddr::V4(_) => "0.0.0.0:0".parse().map_err(|_| Error::Malformed("bind"))?,
        IpAddr::V6(_) => "[::]:0".parse().map_err(|_| Error::Malformed("bind"))?,
    };
    let s = UdpSocket::bind(bind).map_err(|e| Error::io("source address probe: bind", e))?;
    s.connect(SocketAddr::new(target, 33434))
        .map_err(|e| Error::io(format!("no route to {target}"), e))?;
    Ok(s.local_addr()
        .map_err(|e| Error::io("source address probe: getsockname", e))?
        .ip())
}

/// A raw socket wrapped as a tokio datagram socket (recvfrom/sendto work the same on raw
/// sockets; no unsafe conversion needed: Socket → OwnedFd → std UdpSocket).
fn raw_socket(target: IpAddr, protocol: Protocol) -> Result<TokioUdp> {
    let domain = match target {
        IpAddr::V4(_) => Domain::IPV4,
        IpAddr::V6(_) => Domain::IPV6,
    };
    let s = Socket::new(domain, Type::RAW, Some(protocol)).map_err(|e| {
        if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
            Error::RawSocketDenied {
                what: "traceroute",
                source: e,
            }
        } else {
            Error::io("raw socket", e)
        }
    })?;
    s.set_nonblocking(true)
        .map_err(|e| Error::io("raw socket: nonblocking", e))?;
    if let Err(e) = enable_rx_timestamps(&s) {
        // Replies are then stamped when read (at worst the read latency too high).
        debug!(error = %e, "SO_TIMESTAMPNS unavailable; traceroute replies stamped when read");
    }
    let std_socket = std::net::UdpSocket::from(OwnedFd::from(s));
    TokioUdp::from_std(std_socket).map_err(|e| Error::io("raw socket: register with tokio", e))
}

/// Asks the kernel to attach its receive time (`CLOCK_REALTIME`, ns) to every datagram
/// read from `sock` (`SO_TIMESTAMPNS`; read back by [`recvmsg_timestamped`]).
#[allow(unsafe_code)]
fn enable_rx_timestamps(sock: &impl AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the option value is a live `c_int` and its exact size is passed; the fd is
    // borrowed from a live socket for the whole call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Keeps kernel receive timestamps switched on for the whole process.
///
/// Linux stamps incoming packets only while some socket wants timestamps (a global switch,
/// turned on by deferred work when the first such socket appears and off when the last one
/// closes); a packet read before the switch is on gets the time of the read instead. Each
/// trace opens fresh raw sockets, so without a socket that stays open the first replies of
/// a trace could miss their stamp. This opens one unbound UDP socket with `SO_TIMESTAMPNS`
/// (no port, no traffic) and never closes it; called when the measurer is built and before
/// every trace (only the first call does anything).
pub fn keep_rx_timestamps_enabled() {
    static KEEPER: OnceLock<Option<Socket>> = OnceLock::new();
    KEEPER.get_or_init(|| {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, None)
            .or_else(|_| Socket::new(Domain::IPV6, Type::DGRAM, None))
            .ok()?;
        enable_rx_timestamps(&s).ok()?;
        Some(s)
    });
}

/// One datagram read by [`recvmsg_timestamped`].
#[derive(Debug, Clone, Copy)]
struct Datagram {
    /// Bytes written into the buffer.
    len: usize,
    /// Sender's address.
    from: Option<IpAddr>,
    /// Kernel receive time (`SCM_TIMESTAMPNS`), when the socket has `SO_TIMESTAMPNS` on.
    kernel_time: Option<SystemTime>,
}

/// Room for one `SCM_TIMESTAMPNS` message (and a spare one), aligned for `cmsghdr`.
#[repr(C, align(8))]
struct ControlBuf([u8; 128]);

/// One non-blocking `recvmsg` on `sock` into `buf`: the datagram, its sender and the
/// kernel's receive time from the `SCM_TIMESTAMPNS` control message. `WouldBlock` when
/// nothing is queued (what tokio's readiness API expects).
#[allow(unsafe_code)]
fn recvmsg_timestamped(sock: &impl AsRawFd, buf: &mut [u8]) -> io::Result<Datagram> {
    let mut control = ControlBuf([0; 128]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast::<libc::c_void>(),
        iov_len: buf.len(),
    };
    // SAFETY: `sockaddr_storage` and `msghdr` are plain C structs for which all-zero is
    // valid. `msg` points at `addr`, `iov` (→ `buf`) and `control`, which all outlive the
    // call, with their true sizes, so the kernel writes only inside them. The control
    // messages are walked with the libc CMSG macros, which stay within `msg_controllen`
    // (set by the kernel to the bytes it wrote); a timestamp is read (unaligned) only from
    // a message whose length covers a `timespec`. `SockAddr::new` gets the storage and the
    // length the kernel filled in.
    unsafe {
        let mut addr: libc::sockaddr_storage = std::mem::zeroed();
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast::<libc::c_void>();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast::<libc::c_void>();
        msg.msg_controllen = control.0.len() as _;
        let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut kernel_time = None;
        if msg.msg_flags & libc::MSG_CTRUNC == 0 {
            let need = libc::CMSG_LEN(std::mem::size_of::<libc::timespec>() as u32) as usize;
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                let c = &*cmsg;
                if c.cmsg_level == libc::SOL_SOCKET
                    && c.cmsg_type == libc::SCM_TIMESTAMPNS
                    && c.cmsg_len as usize >= need
                {
                    let ts: libc::timespec =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>());
                    // `time_t` and `c_long` are `i32` on some targets.
                    #[allow(clippy::useless_conversion)]
                    let (sec, nsec) = (i64::from(ts.tv_sec), i64::from(ts.tv_nsec));
                    kernel_time = timespec_to_system_time(sec, nsec);
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        let from = SockAddr::new(addr, msg.msg_namelen)
            .as_socket()
            .map(|a| a.ip());
        Ok(Datagram {
            len: n as usize,
            from,
            kernel_time,
        })
    }
}

/// A `timespec` since the Unix epoch as a `SystemTime`; `None` for the all-zero stamp the
/// kernel gives when it has none, and for nonsense.
fn timespec_to_system_time(sec: i64, nsec: i64) -> Option<SystemTime> {
    let sec = u64::try_from(sec).ok()?;
    let nsec = u32::try_from(nsec).ok().filter(|&n| n < 1_000_000_000)?;
    if sec == 0 && nsec == 0 {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::new(sec, nsec))
}

/// When a datagram arrived, in the [`Instant`] domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Arrival {
    /// The kernel's receive time carried over by [`kernel_instant`], if it gave one.
    kernel: Option<Instant>,
    /// When the datagram was read (the fallback: never early, maybe late).
    read: Instant,
}

impl Arrival {
    /// The arrival time of a reply to a probe sent at `sent`: the kernel's stamp when
    /// there is one not before the send, else the read time. A kernel stamp before the
    /// send can only come from a wall clock step; the read time is then the safe figure.
    fn for_probe_sent_at(&self, sent: Instant) -> Instant {
        self.kernel.filter(|&k| k >= sent).unwrap_or(self.read)
    }
}

/// Carries a kernel receive time (`CLOCK_REALTIME`) into the [`Instant`] domain:
/// `mono_now − (wall_now − kernel)`, never later than `mono_now`. Both clocks must be read
/// together right after the datagram, the wall clock *first*: the gap between the two
/// reads then makes the result later (an RTT larger), never earlier. `None` when the age
/// reaches back before `Instant`'s origin.
fn kernel_instant(kernel: SystemTime, wall_now: SystemTime, mono_now: Instant) -> Option<Instant> {
    // A stamp in the future (the wall clock stepped back): age 0, i.e. `mono_now`.
    let age = wall_now.duration_since(kernel).unwrap_or(Duration::ZERO);
    mono_now.checked_sub(age)
}

/// Waits for and reads one datagram, with its arrival time.
async fn recv(sock: &TokioUdp, buf: &mut [u8]) -> io::Result<(usize, Option<IpAddr>, Arrival)> {
    sock.async_io(Interest::READABLE, || {
        let d = recvmsg_timestamped(sock, buf)?;
        // Wall clock first (see `kernel_instant`).
        let wall_now = SystemTime::now();
        let read = Instant::now();
        let kernel = d
            .kernel_time
            .and_then(|k| kernel_instant(k, wall_now, read));
        Ok((d.len, d.from, Arrival { kernel, read }))
    })
    .await
}

struct Tracer {
    target: IpAddr,
    source: IpAddr,
    params: TraceParams,
    icmp: TokioUdp,
    /// Sends UDP/TCP probes; for TCP also receives the target's SYN/ACK or RST.
    l4: Option<TokioUdp>,
    identifier: u16,
    checksum: u16,
    src_port: u16,
    tcp_seq_base: u32,
    next_index: u32,
    sent: HashMap<ProbeKey, Sent>,
    hops: BTreeMap<u8, HopAcc>,
    destination_ttl: Option<u8>,
    unreachable_ttl: Option<u8>,
    highest_sent: u8,
}

impl Tracer {
    fn new(target: IpAddr, params: TraceParams) -> Result<Self> {
        keep_rx_timestamps_enabled();
        let source = source_address_for(target)?;
        let v6 = target.is_ipv6();
        let icmp_proto = if v6 {
            Protocol::ICMPV6
        } else {
            Protocol::ICMPV4
        };
        let icmp = raw_socket(target, icmp_proto)?;
        let l4 = match params.protocol {
            TracerouteProtocol::Icmp => None,
            TracerouteProtocol::Udp => Some(raw_socket(target, Protocol::UDP)?),
            TracerouteProtocol::Tcp => Some(raw_socket(target, Protocol::TCP)?),
        };
        let sender = l4.as_ref().unwrap_or(&icmp);
        socket2::SockRef::from(sender)
            .bind(&SockAddr::from(SocketAddr::new(source, 0)))
            .map_err(|e| Error::io(format!("bind raw socket to {source}"), e))?;
        Ok(Tracer {
            target,
            source,
            params,
            icmp,
            l4,
            identifier: rand::random(),
            checksum: rand::random_range(1..0xffffu16),
            src_port: rand::random_range(40000..60000u16),
            tcp_seq_base: rand::random(),
            next_index: 0,
            sent: HashMap::new(),
            hops: BTreeMap::new(),
            destination_ttl: None,
            unreachable_ttl: None,
            highest_sent: 0,
        })
    }

    fn sender(&self) -> &TokioUdp {
        self.l4.as_ref().unwrap_or(&self.icmp)
    }

    fn build(&self, index: u32) -> Result<(ProbeKey, Vec<u8>)> {
        let (s, d) = (self.source, self.target);
        match self.params.protocol {
            TracerouteProtocol::Icmp => {
                let sequence = index as u16;
                let pkt =
                    packet::build_echo_request(s, d, self.identifier, sequence, self.checksum)?;
                Ok((
                    ProbeKey::Echo {
                        identifier: self.identifier,
                        sequence,
                    },
                    pkt,
                ))
            }
            TracerouteProtocol::Udp => {
                // 1..=0xfffe: never 0 (no checksum) nor 0xffff.
                let checksum = (index % 0xfffe) as u16 + 1;
                let pkt =
                    packet::build_udp_probe(s, d, self.src_port, self.params.udp_port, checksum)?;
                Ok((
                    ProbeKey::Udp {
                        src_port: self.src_port,
                        dst_port: self.params.udp_port,
                        checksum,
                    },
                    pkt,
                ))
            }
            TracerouteProtocol::Tcp => {
                let sequence = self.tcp_seq_base.wrapping_add(index);
                let pkt =
                    packet::build_tcp_syn(s, d, self.src_port, self.params.tcp_port, sequence)?;
                Ok((
                    ProbeKey::Tcp {
                        src_port: self.src_port,
                        dst_port: self.params.tcp_port,
                        sequence,
                    },
                    pkt,
                ))
            }
        }
    }

    fn send(&mut self, ttl: u8) -> Result<()> {
        let index = self.next_index;
        self.next_index = self.next_index.wrapping_add(1);
        let (key, pkt) = self.build(index)?;
        let sock = socket2::SockRef::from(self.sender());
        match self.target {
            IpAddr::V4(_) => sock.set_ttl(u32::from(ttl)),
            IpAddr::V6(_) => sock.set_unicast_hops_v6(u32::from(ttl)),
        }
        .map_err(|e| Error::io("set TTL", e))?;
        let dest = SockAddr::from(SocketAddr::new(self.target, 0));
        // Stamped before the send: a task descheduled around `sendto` makes the RTT
        // larger, never smaller than the truth.
        let at = Instant::now();
        sock.send_to(&pkt, &dest)
            .map_err(|e| Error::io(format!("send probe ttl {ttl} to {}", self.target), e))?;
        self.sent.insert(key, Sent { ttl, at });
        self.highest_sent = self.highest_sent.max(ttl);
        Ok(())
    }

    fn on_reply(&mut self, reply: Reply, arrival: Arrival) {
        if reply.probe_destination != self.target {
            return;
        }
        let Some(sent) = self.sent.remove(&reply.probe) else {
            return;
        };
        let rtt = arrival
            .for_probe_sent_at(sent.at)
            .saturating_duration_since(sent.at);
        let hop = self.hops.entry(sent.ttl).or_default();
        match hop.address {
            None => {
                hop.address = Some(reply.responder);
                hop.rtt = Some(rtt);
            }
            Some(a) if a == reply.responder => {
                hop.rtt = Some(hop.rtt.map_or(rtt, |r| r.min(rtt)));
            }
            // Another router at the same TTL (a per-packet balancer): keep the first.
            Some(_) => {}
        }
        let from_destination = reply.is_from_destination()
            && matches!(
                reply.kind,
                ReplyKind::EchoReply
                    | ReplyKind::TcpSynAck
                    | ReplyKind::TcpReset
                    | ReplyKind::DestinationUnreachable { .. }
            );
        if from_destination {
            self.destination_ttl = Some(self.destination_ttl.map_or(sent.ttl, |t| t.min(sent.ttl)));
        } else if matches!(reply.kind, ReplyKind::DestinationUnreachable { .. }) {
            self.unreachable_ttl = Some(self.unreachable_ttl.map_or(sent.ttl, |t| t.min(sent.ttl)));
        }
    }

    fn parse_icmp(&self, buf: &[u8], from: Option<IpAddr>) -> Option<Reply> {
        match (self.target, from) {
            (IpAddr::V4(_), _) => packet::parse_ipv4_icmp(buf).ok(),
            (IpAddr::V6(_), Some(IpAddr::V6(src))) => packet::parse_icmpv6(buf, src).ok(),
            _ => None,
        }
    }

    fn parse_l4(&self, buf: &[u8], from: Option<IpAddr>) -> Option<Reply> {
        if self.params.protocol != TracerouteProtocol::Tcp {
            return None;
        }
        let reply = match (self.target, from) {
            (IpAddr::V4(_), _) => packet::parse_ipv4_tcp(buf).ok(),
            (IpAddr::V6(_), Some(src)) => packet::parse_tcp_answer(buf, src).ok(),
            _ => None,
        }?;
        (reply.responder == self.target).then_some(reply)
    }

    /// Reads replies until `until` (or until nothing is outstanding, if `early`).
    async fn collect(&mut self, until: Instant, early: bool) -> Result<()> {
        let mut icmp_buf = vec![0u8; 2048];
        let mut l4_buf = vec![0u8; 2048];
        loop {
            if early && self.sent.is_empty() {
                return Ok(());
            }
            if Instant::now() >= until {
                return Ok(());
            }
            let sleep = tokio::time::sleep_until(until.into());
            let got = tokio::select! {
                r = recv(&self.icmp, &mut icmp_buf) => {
                    let (n, from, at) = r.map_err(|e| Error::io("receive ICMP", e))?;
                    icmp_buf.get(..n).and_then(|b| self.parse_icmp(b, from)).map(|r| (r, at))
                }
                r = async {
                    match &self.l4 {
                        Some(fd) => recv(fd, &mut l4_buf).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let (n, from, at) = r.map_err(|e| Error::io("receive TCP", e))?;
                    l4_buf.get(..n).and_then(|b| self.parse_l4(b, from)).map(|r| (r, at))
                }
                _ = sleep => None,
            };
            if let Some((reply, at)) = got {
                self.on_reply(reply, at);
            }
        }
    }

    fn stop_ttl(&self) -> Option<u8> {
        match (self.destination_ttl, self.unreachable_ttl) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    async fn run(&mut self, budget: &PacketBudget, deadline: Instant) -> Option<String> {
        for round in 0..self.params.probes_per_hop {
            // Later rounds only re-probe up to two TTLs past the last hop that answered:
            // silent TTLs far beyond it are already known and cost packets.
            let round_limit = match (round, self.hops.keys().next_back()) {
                (0, _) | (_, None) => self.params.max_ttl,
                (_, Some(&last)) => last.saturating_add(2).min(self.params.max_ttl),
            };
            for ttl in 1..=round_limit {
                if self.stop_ttl().is_some_and(|s| ttl > s) {
                    break;
                }
                if Instant::now() >= deadline {
                    return Some("request deadline reached".into());
                }
                if !budget.take(self.target, deadline).await {
                    return Some("packet rate cap: no budget left before the deadline".into());
                }
                if let Err(e) = self.send(ttl) {
                    return Some(e.to_string());
                }
                let until = (Instant::now() + PROBE_GAP).min(deadline);
                if let Err(e) = self.collect(until, false).await {
                    return Some(e.to_string());
                }
            }
            let until = (Instant::now() + self.params.wait).min(deadline);
            if let Err(e) = self.collect(until, true).await {
                return Some(e.to_string());
            }
            self.sent.clear();
        }
        None
    }

    fn outcome(&self, error: Option<String>) -> TraceOutcome {
        let last_ttl = self.stop_ttl().unwrap_or(self.highest_sent);
        let hops: Vec<Hop> = (1..=last_ttl)
            .map(|ttl| {
                let acc = self.hops.get(&ttl).cloned().unwrap_or_default();
                Hop {
                    ttl,
                    address: acc.address,
                    rtt_ms: acc.rtt.map(|d| d.as_secs_f64() * 1000.0),
                }
            })
            .collect();
        let destination_rtt_ms = self
            .destination_ttl
            .and_then(|t| self.hops.get(&t))
            .and_then(|h| h.rtt)
            .map(|d| d.as_secs_f64() * 1000.0);
        let last_hop = hops
            .iter()
            .rev()
            .filter(|h| h.address.is_some_and(|a| a != self.target))
            .find_map(|h| {
                Some(LastHop {
                    ttl: h.ttl,
                    address: h.address?,
                    rtt_ms: h.rtt_ms?,
                })
            });
        TraceOutcome {
            protocol: self.params.protocol,
            reached: self.destination_ttl.is_some(),
            destination_rtt_ms,
            hops,
            last_hop,
            error,
        }
    }
}

/// Traces the path to `target`. Errors only when the trace cannot start at all (no raw
/// socket, no route); problems during the trace end it early with `error` set.
pub async fn traceroute(
    target: IpAddr,
    params: TraceParams,
    budget: &Arc<PacketBudget>,
    deadline: Instant,
) -> Result<TraceOutcome> {
    if params.max_ttl == 0 {
        return Err(Error::InvalidRequest("max TTL must be at least 1".into()));
    }
    let mut tracer = Tracer::new(target, params)?;
    let error = tracer.run(budget, deadline).await;
    Ok(tracer.outcome(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_time_is_carried_into_the_instant_domain() {
        let mono = Instant::now();
        let wall = SystemTime::now();
        let ms = Duration::from_millis;
        // Arrived 7 ms before the clocks were read.
        assert_eq!(kernel_instant(wall - ms(7), wall, mono), Some(mono - ms(7)));
        // Never later than now, even for a stamp "in the future" (wall clock stepped back).
        assert_eq!(kernel_instant(wall + ms(50), wall, mono), Some(mono));
        assert_eq!(kernel_instant(wall, wall, mono), Some(mono));
    }

    #[test]
    fn arrival_is_never_before_the_send() {
        let sent = Instant::now();
        let ms = Duration::from_millis;
        let read = sent + ms(20);
        let a = |kernel| Arrival { kernel, read };
        assert_eq!(a(Some(sent + ms(3))).for_probe_sent_at(sent), sent + ms(3));
        assert_eq!(a(Some(sent)).for_probe_sent_at(sent), sent);
        // Before the send (wall clock stepped forward): the read time, not an RTT of 0.
        assert_eq!(a(Some(sent - ms(1))).for_probe_sent_at(sent), read);
        assert_eq!(a(None).for_probe_sent_at(sent), read);
    }

    #[test]
    fn timespec_conversion() {
        assert_eq!(timespec_to_system_time(0, 0), None);
        assert_eq!(timespec_to_system_time(-1, 0), None);
        assert_eq!(timespec_to_system_time(1, 1_000_000_000), None);
        assert_eq!(
            timespec_to_system_time(1_700_000_000, 5),
            Some(UNIX_EPOCH + Duration::new(1_700_000_000, 5))
        );
    }

    #[tokio::test]
    async fn recv_reports_the_kernel_arrival_time_not_the_read_time() {
        // SO_TIMESTAMPNS and recvmsg work the same on a UDP socket (no privilege needed):
        // a datagram read 50 ms after it arrived must be stamped ~50 ms before the read.
        keep_rx_timestamps_enabled();
        let rx = TokioUdp::bind("127.0.0.1:0").await.unwrap();
        enable_rx_timestamps(&rx).unwrap();
        let tx = TokioUdp::bind("127.0.0.1:0").await.unwrap();
        let mut buf = [0u8; 64];
        // The kernel switches stamping on with deferred work the first time a process asks
        // for it: a datagram that beats the switch carries its read time. A few tries
        // cover that; a socket that never gives a real stamp fails.
        let mut seen = Vec::new();
        for _ in 0..10 {
            let before_send = Instant::now();
            tx.send_to(b"probe", rx.local_addr().unwrap())
                .await
                .unwrap();
            std::thread::sleep(Duration::from_millis(50));
            let (n, from, arrival) = recv(&rx, &mut buf).await.unwrap();
            assert_eq!(buf.get(..n), Some(&b"probe"[..]));
            assert_eq!(from, Some(tx.local_addr().unwrap().ip()));
            let kernel = arrival.kernel.expect("no SCM_TIMESTAMPNS");
            assert!(kernel <= arrival.read);
            // Never before the send (the monotonic conversion does not shift it early).
            assert!(kernel >= before_send, "{:?}", before_send - kernel);
            let late_read = arrival.read - kernel;
            let after_send = kernel - before_send;
            // Loopback delivery is immediate: the stamp is near the send, far from the read.
            // A preempted sender (loaded machine) can delay the send; such a round is
            // retried rather than judged.
            if late_read >= Duration::from_millis(45) && after_send < Duration::from_millis(25) {
                return;
            }
            seen.push((late_read, after_send));
        }
        panic!("(read - stamp, stamp - send) were {seen:?}, never (~50 ms, ~0)");
    }

    #[tokio::test]
    async fn without_the_option_only_the_read_time() {
        let plain = TokioUdp::bind("127.0.0.1:0").await.unwrap();
        let tx = TokioUdp::bind("127.0.0.1:0").await.unwrap();
        tx.send_to(b"x", plain.local_addr().unwrap()).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, _, arrival) = recv(&plain, &mut buf).await.unwrap();
        assert_eq!(n, 1);
        assert_eq!(arrival.kernel, None);
    }
}
