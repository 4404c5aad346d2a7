//! Can this process send ICMP at all? And if not, what exactly to do about it.
//!
//! Linux offers two ways: a raw socket (needs `CAP_NET_RAW`, which also allows the
//! traceroute) or an unprivileged "ping" datagram socket (allowed when the process's group
//! is inside `net.ipv4.ping_group_range`; echo only, no traceroute).

use std::io;

use socket2::{Domain, Protocol, Socket, Type};

use crate::error::{Error, Result};

/// Exit code when ICMP is impossible (sysexits `EX_NOPERM`).
pub const EXIT_NO_PERMISSION: i32 = 77;

/// What kind of ICMP sockets this process may open.
#[derive(Debug, Clone)]
pub struct IcmpAccess {
    /// A raw IPv4 ICMP socket opened: CAP_NET_RAW (ping and traceroute).
    pub raw: bool,
    /// An unprivileged IPv4 ICMP datagram socket opened: ping_group_range (ping only).
    pub datagram: bool,
    /// Why the raw socket failed, if it did.
    pub raw_error: Option<String>,
    /// Current `net.ipv4.ping_group_range` as read from /proc, if readable.
    pub ping_group_range: Option<String>,
    /// Effective group id of the process, if readable.
    pub egid: Option<u32>,
}

impl IcmpAccess {
    /// True when pings can be sent one way or the other.
    pub fn can_ping(&self) -> bool {
        self.raw || self.datagram
    }
}

fn try_open(ty: Type) -> io::Result<()> {
    Socket::new(Domain::IPV4, ty, Some(Protocol::ICMPV4)).map(drop)
}

fn egid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Gid:"))?;
    // Gid: real effective saved fs
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Probes the process's ICMP permissions by opening (and closing) sockets.
pub fn probe_icmp_access() -> IcmpAccess {
    let raw = try_open(Type::RAW);
    IcmpAccess {
        raw: raw.is_ok(),
        raw_error: raw.err().map(|e| e.to_string()),
        datagram: try_open(Type::DGRAM).is_ok(),
        ping_group_range: std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range")
            .ok()
            .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ")),
        egid: egid(),
    }
}

/// The operator-facing explanation when ICMP is impossible.
pub fn no_icmp_message(access: &IcmpAccess) -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "/usr/local/bin/geoloc-probe-agent".to_string());
    let range = access.ping_group_range.as_deref().unwrap_or("unreadable");
    let gid = access
        .egid
        .map(|g| g.to_string())
        .unwrap_or_else(|| "unknown".into());
    format!(
        "geoloc-probe-agent cannot send ICMP: it has neither CAP_NET_RAW (raw socket: {raw}) \
         nor an open net.ipv4.ping_group_range (current range \"{range}\" does not include its group {gid}).\n\
         Fix one of:\n  \
         1. give the binary the capability:   sudo setcap cap_net_raw+ep {exe}\n  \
         2. under systemd, in the [Service] section:   AmbientCapabilities=CAP_NET_RAW  \
         (see deploy/geoloc-probe-agent.service)\n  \
         3. allow unprivileged ICMP echo (ping only, no traceroute):   \
         sudo sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"",
        raw = access.raw_error.as_deref().unwrap_or("refused"),
    )
}

/// Fails with the full explanation when neither kind of ICMP socket can be opened.
pub fn require_icmp() -> Result<IcmpAccess> {
    let access = probe_icmp_access();
    if access.can_ping() {
        Ok(access)
    } else {
        Err(Error::NoIcmpPermission(no_icmp_message(&access)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_every_fix() {
        let access = IcmpAccess {
            raw: false,
            datagram: false,
            raw_error: Some("Operation not permitted (os error 1)".into()),
            ping_group_range: Some("1 0".into()),
            egid: Some(65534),
        };
        let m = no_icmp_message(&access);
        for needle in [
            "neither CAP_NET_RAW",
            "ping_group_range",
            "\"1 0\"",
            "65534",
            "setcap cap_net_raw+ep",
            "AmbientCapabilities=CAP_NET_RAW",
            "sysctl -w net.ipv4.ping_group_range",
        ] {
            assert!(m.contains(needle), "missing {needle:?} in {m}");
        }
    }
}
