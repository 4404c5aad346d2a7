//! TCP handshake RTT: time from SYN to SYN/ACK (connect succeeds) or RST (connection
//! refused). Both mean the host answered; a timeout means no answer.
//!
//! `connect()` is timed in user space, from before the call to the task's wake-up: under
//! CPU load that figure comes out high by the wake-up latency (up to ~16 ms seen). On a
//! SYN/ACK the kernel's own first RTT sample is read from `TCP_INFO` ([`kernel_rtt`]) and
//! the smaller of the two is reported. The kernel's sample is never below the physical RTT:
//! it stamps the SYN when it builds it and the SYN/ACK when it processes it. A RST leaves
//! no connected socket to ask, so it keeps the user-space figure.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::safety::PacketBudget;

/// How a TCP probe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TcpOutcomeKind {
    /// SYN/ACK: the port is open.
    SynAck,
    /// RST: the port is closed, the host answered.
    Rst,
    /// Nothing came back in time.
    Timeout,
    /// A local or ICMP-reported error (unreachable network, …).
    Error,
}

/// One port's result (JSON schema: see the crate README).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TcpProbe {
    /// Destination port.
    pub port: u16,
    /// Outcome.
    pub outcome: TcpOutcomeKind,
    /// SYN to SYN/ACK or RST, ms; null on timeout/error.
    pub rtt_ms: Option<f64>,
    /// Error text for `error` outcomes.
    pub error: Option<String>,
}

/// The kernel's RTT of the handshake of a freshly connected TCP socket: `tcpi_rtt` of
/// `TCP_INFO`, which right after `connect()` is the first and only sample, SYN →
/// SYN/ACK, in µs.
///
/// `None` when `getsockopt` fails, when the kernel took no sample (`tcpi_rtt` 0) or when
/// the SYN was retransmitted: the sample then comes from TCP timestamps, whose millisecond
/// granularity can put it below the physical RTT.
#[allow(unsafe_code)]
pub fn kernel_rtt(socket: &impl AsRawFd) -> Option<Duration> {
    // SAFETY: `tcp_info` is plain old data (integers only), so all-zero is a valid value;
    // getsockopt writes at most `len` bytes into it (`len` is its exact size) and reports
    // how many it wrote in `len`. The fd is borrowed from a live socket for the whole call.
    let (rc, info, len) = unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast::<libc::c_void>(),
            &mut len,
        );
        (rc, info, len)
    };
    // `tcpi_total_retrans` comes after `tcpi_rtt` in the struct: a kernel that filled that
    // far filled both.
    let filled =
        std::mem::offset_of!(libc::tcp_info, tcpi_total_retrans) + std::mem::size_of::<u32>();
    if rc != 0 || (len as usize) < filled || info.tcpi_total_retrans != 0 || info.tcpi_rtt == 0 {
        return None;
    }
    Some(Duration::from_micros(info.tcpi_rtt.into()))
}

/// One handshake: its outcome, the user-space RTT (SYN/ACK and RST) and, for a SYN/ACK,
/// the kernel's ([`kernel_rtt`]).
#[derive(Debug)]
struct Handshake {
    outcome: TcpOutcomeKind,
    user_rtt: Option<Duration>,
    kernel_rtt: Option<Duration>,
    error: Option<String>,
}

impl Handshake {
    /// The RTT reported: the smaller of the two figures (both are at or above the truth).
    fn rtt(&self) -> Option<Duration> {
        match (self.user_rtt, self.kernel_rtt) {
            (Some(u), Some(k)) => Some(u.min(k)),
            (u, _) => u,
        }
    }
}

async fn handshake(addr: SocketAddr, timeout: Duration) -> Handshake {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    };
    let socket = match socket {
        Ok(s) => s,
        Err(e) => {
            return Handshake {
                outcome: TcpOutcomeKind::Error,
                user_rtt: None,
                kernel_rtt: None,
                error: Some(format!("socket: {e}")),
            }
        }
    };
    let start = Instant::now();
    let result = tokio::time::timeout(timeout, socket.connect(addr)).await;
    let user_rtt = start.elapsed();
    let (outcome, user_rtt, kernel_rtt, error) = match result {
        Ok(Ok(stream)) => (
            TcpOutcomeKind::SynAck,
            Some(user_rtt),
            kernel_rtt(&stream),
            None,
        ),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            (TcpOutcomeKind::Rst, Some(user_rtt), None, None)
        }
        Ok(Err(e)) => (TcpOutcomeKind::Error, None, None, Some(e.to_string())),
        Err(_) => (TcpOutcomeKind::Timeout, None, None, None),
    };
    Handshake {
        outcome,
        user_rtt,
        kernel_rtt,
        error,
    }
}

async fn probe_port(target: IpAddr, port: u16, timeout: Duration) -> TcpProbe {
    let h = handshake(SocketAddr::new(target, port), timeout).await;
    TcpProbe {
        port,
        outcome: h.outcome,
        rtt_ms: h.rtt().map(|d| d.as_secs_f64() * 1000.0),
        error: h.error,
    }
}

/// Measures the handshake RTT to each port concurrently (each SYN takes a packet token);
/// every probe ends by `deadline`.
pub async fn tcp_rtt(
    budget: &Arc<PacketBudget>,
    target: IpAddr,
    ports: &[u16],
    timeout: Duration,
    deadline: Instant,
) -> Vec<TcpProbe> {
    let mut tasks = Vec::new();
    for &port in ports {
        if !budget.take(target, deadline).await {
            tasks.push(tokio::spawn(async move {
                TcpProbe {
                    port,
                    outcome: TcpOutcomeKind::Error,
                    rtt_ms: None,
                    error: Some("packet rate cap: no budget left before the deadline".into()),
                }
            }));
            continue;
        }
        let wait = timeout.min(deadline.saturating_duration_since(Instant::now()));
        tasks.push(tokio::spawn(probe_port(target, port, wait)));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for (t, &port) in tasks.into_iter().zip(ports) {
        out.push(t.await.unwrap_or_else(|e| TcpProbe {
            port,
            outcome: TcpOutcomeKind::Error,
            rtt_ms: None,
            error: Some(format!("task: {e}")),
        }));
    }
    out
}

/// Minimum RTT over the ports that answered.
pub fn min_rtt_ms(probes: &[TcpProbe]) -> Option<f64> {
    probes.iter().filter_map(|p| p.rtt_ms).reduce(f64::min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn kernel_rtt_of_a_loopback_handshake_is_positive_and_at_most_the_user_space_one() {
        // No privilege needed: plain connect() to a local listener.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for _ in 0..5 {
            let h = handshake(addr, Duration::from_secs(2)).await;
            assert_eq!(h.outcome, TcpOutcomeKind::SynAck, "{h:?}");
            let user = h.user_rtt.expect("user-space RTT");
            let kernel = h.kernel_rtt.expect("TCP_INFO gave no RTT");
            assert!(kernel > Duration::ZERO, "{h:?}");
            assert!(kernel <= user, "kernel {kernel:?} > user-space {user:?}");
            assert_eq!(h.rtt(), Some(kernel));
            let _ = listener.accept().await.unwrap();
        }
    }

    #[tokio::test]
    async fn rst_keeps_the_user_space_rtt() {
        // A port that was free a moment ago: bind, note, close.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let h = handshake(closed, Duration::from_secs(2)).await;
        assert_eq!(h.outcome, TcpOutcomeKind::Rst, "{h:?}");
        assert_eq!(h.kernel_rtt, None);
        assert_eq!(h.rtt(), h.user_rtt);
        assert!(h.rtt().is_some());
    }

    #[test]
    fn reported_rtt_is_the_smaller_figure() {
        let ms = Duration::from_millis;
        let h = |user, kernel| Handshake {
            outcome: TcpOutcomeKind::SynAck,
            user_rtt: user,
            kernel_rtt: kernel,
            error: None,
        };
        assert_eq!(h(Some(ms(20)), Some(ms(4))).rtt(), Some(ms(4)));
        assert_eq!(h(Some(ms(3)), Some(ms(4))).rtt(), Some(ms(3)));
        assert_eq!(h(Some(ms(3)), None).rtt(), Some(ms(3)));
        assert_eq!(h(None, None).rtt(), None);
    }
}
