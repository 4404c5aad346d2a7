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

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::UdpSocket as TokioUdp;

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
    Ok(s
        .local_addr()
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
    let std_socket = std::net::UdpSocket::from(OwnedFd::from(s));
    TokioUdp::from_std(std_socket).map_err(|e| Error::io("raw socket: register with tokio", e))
}

/// Reads one datagram and the sender's address.
async fn recv(sock: &TokioUdp, buf: &mut [u8]) -> io::Result<(usize, Option<IpAddr>)> {
    let (n, from) = sock.recv_from(buf).await?;
    Ok((n, Some(from.ip())))
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
        let source = source_address_for(target)?;
        let v6 = target.is_ipv6();
        let icmp_proto = if v6 { Protocol::ICMPV6 } else { Protocol::ICMPV4 };
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
                let pkt = packet::build_echo_request(s, d, self.identifier, sequence, self.checksum)?;
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
                let pkt = packet::build_udp_probe(s, d, self.src_port, self.params.udp_port, checksum)?;
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
                let pkt = packet::build_tcp_syn(s, d, self.src_port, self.params.tcp_port, sequence)?;
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
        let at = Instant::now();
        sock.send_to(&pkt, &dest)
            .map_err(|e| Error::io(format!("send probe ttl {ttl} to {}", self.target), e))?;
        self.sent.insert(key, Sent { ttl, at });
        self.highest_sent = self.highest_sent.max(ttl);
        Ok(())
    }

    fn on_reply(&mut self, reply: Reply, at: Instant) {
        if reply.probe_destination != self.target {
            return;
        }
        let Some(sent) = self.sent.remove(&reply.probe) else {
            return;
        };
        let rtt = at.saturating_duration_since(sent.at);
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
                    let (n, from) = r.map_err(|e| Error::io("receive ICMP", e))?;
                    let at = Instant::now();
                    icmp_buf.get(..n).and_then(|b| self.parse_icmp(b, from)).map(|r| (r, at))
                }
                r = async {
                    match &self.l4 {
                        Some(fd) => recv(fd, &mut l4_buf).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let (n, from) = r.map_err(|e| Error::io("receive TCP", e))?;
                    let at = Instant::now();
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
