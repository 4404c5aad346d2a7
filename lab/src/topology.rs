//! Hosts, virtual routers and the paths between them.
//!
//! Every host hangs off its own *access* router, which hangs off its own *core* router.
//! A packet from host A to host B crosses four routers:
//! `access(A) -> core(A) -> core(B) -> access(B)`, so `traceroute` shows four hops before
//! the target, and the last one (`access(B)`) is the target's *last hop*, the router that
//! still answers for a fully silent target.
//!
//! Addresses: hosts take 10.77.0.0/17 (third octet below 128) and fd77:0:0:1::/64;
//! routers take 10.77.200.0/21-ish (access) and 10.77.220.0/.. (core), fd77:0:0:a::/64 and
//! fd77:0:0:c::/64. Nothing outside 10.77.0.0/16 and fd77::/48 is ever used, and those
//! addresses exist only inside the namespaces the lab creates.
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::error::{LabError, Result};

/// Hosts per lab, bounded by the router address plan below.
pub const MAX_HOSTS: usize = 5000;

/// What an emulated host answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Behaviour {
    /// Its kernel answers ICMP echo, TCP and UDP as usual.
    #[default]
    Normal,
    /// ICMP / ICMPv6 echo requests to it are dropped (TCP still answered).
    DropIcmp,
    /// TCP to it is dropped (ICMP still answered).
    DropTcp,
    /// Everything to it is dropped; its last router still answers Time Exceeded.
    Silent,
}

/// One emulated host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostSpec {
    /// Unique name (letters, digits, `-`, `_`).
    pub name: String,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    #[serde(default)]
    pub behaviour: Behaviour,
    /// One-way delay between the host and its access router, ms.
    #[serde(default)]
    pub access_ms: f64,
}

/// Default address of the `i`-th host.
pub fn host_v4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 1 + (i / 250) as u8, 1 + (i % 250) as u8)
}
pub fn host_v6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd77, 0, 0, 1, 0, 0, 0, 1 + i as u16)
}

fn access_router(i: usize) -> (Ipv4Addr, Ipv6Addr) {
    (
        Ipv4Addr::new(10, 77, 200 + (i / 250) as u8, 1 + (i % 250) as u8),
        Ipv6Addr::new(0xfd77, 0, 0, 0xa, 0, 0, 0, 1 + i as u16),
    )
}
fn core_router(i: usize) -> (Ipv4Addr, Ipv6Addr) {
    (
        Ipv4Addr::new(10, 77, 220 + (i / 250) as u8, 1 + (i % 250) as u8),
        Ipv6Addr::new(0xfd77, 0, 0, 0xc, 0, 0, 0, 1 + i as u16),
    )
}

/// True for addresses a lab host may use.
pub fn is_lab_host_addr(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 10 && o[1] == 77 && o[2] < 128 && o[3] != 0 && o[3] != 255
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            s[0] == 0xfd77 && s[1] == 0 && s[2] == 0 && s[3] != 0xa && s[3] != 0xc
        }
    }
}

/// One router on a path: its addresses and the one-way delay from the source to it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hop {
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    pub one_way_ms: f64,
}

impl Hop {
    pub fn addr(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.v6)
        } else {
            IpAddr::V4(self.v4)
        }
    }
}

/// The route from one host to another.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    pub hops: [Hop; 4],
    /// One-way delay source to destination, ms.
    pub one_way_ms: f64,
}

/// Hosts plus the one-way delay between every ordered pair.
#[derive(Debug, Clone)]
pub struct Topology {
    hosts: Vec<HostSpec>,
    /// `one_way_ms[src * n + dst]`.
    one_way_ms: Vec<f64>,
    /// Mean of the exponential per-packet jitter, ms (0 = none).
    pub jitter_ms: f64,
    by_addr: HashMap<IpAddr, Vec<usize>>,
}

impl Topology {
    /// Validates and builds a topology. `one_way_ms` is row-major `n x n`
    /// (`[src * n + dst]`); the diagonal is ignored. Hosts sharing an address form an
    /// anycast group: packets to it go to the instance nearest the sender.
    pub fn new(hosts: Vec<HostSpec>, one_way_ms: Vec<f64>, jitter_ms: f64) -> Result<Self> {
        let n = hosts.len();
        if n == 0 || n > MAX_HOSTS {
            return Err(LabError::Topology(format!(
                "{n} hosts (1..={MAX_HOSTS} allowed)"
            )));
        }
        if one_way_ms.len() != n * n {
            return Err(LabError::Topology(format!(
                "delay matrix has {} entries, {n} hosts need {}",
                one_way_ms.len(),
                n * n
            )));
        }
        for (k, d) in one_way_ms.iter().enumerate() {
            if k / n != k % n && !(d.is_finite() && *d >= 0.0 && *d < 10_000.0) {
                return Err(LabError::Topology(format!(
                    "one-way delay {} -> {} is {d} ms (must be 0..10000)",
                    hosts[k / n].name,
                    hosts[k % n].name
                )));
            }
        }
        if !(jitter_ms.is_finite() && jitter_ms >= 0.0) {
            return Err(LabError::Topology(format!(
                "jitter {jitter_ms} ms must be >= 0"
            )));
        }
        let mut by_addr: HashMap<IpAddr, Vec<usize>> = HashMap::new();
        let mut names = std::collections::HashSet::new();
        for (i, h) in hosts.iter().enumerate() {
            if h.name.is_empty()
                || !h
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(LabError::Topology(format!("bad host name {:?}", h.name)));
            }
            if !names.insert(h.name.clone()) {
                return Err(LabError::Topology(format!(
                    "host name {:?} used twice",
                    h.name
                )));
            }
            if !(h.access_ms.is_finite() && h.access_ms >= 0.0) {
                return Err(LabError::Topology(format!(
                    "{}: access_ms {} must be >= 0",
                    h.name, h.access_ms
                )));
            }
            for a in [IpAddr::V4(h.v4), IpAddr::V6(h.v6)] {
                if !is_lab_host_addr(a) {
                    return Err(LabError::AddressOutsideLab(a));
                }
                by_addr.entry(a).or_default().push(i);
            }
        }
        // An anycast group must share both addresses, or routing replies would be ambiguous.
        for (a, group) in &by_addr {
            if group.len() > 1 {
                let (v4, v6) = (hosts[group[0]].v4, hosts[group[0]].v6);
                if group
                    .iter()
                    .any(|&g| hosts[g].v4 != v4 || hosts[g].v6 != v6)
                {
                    return Err(LabError::Topology(format!(
                        "address {a} is shared by hosts that do not share both their addresses"
                    )));
                }
            }
        }
        Ok(Self {
            hosts,
            one_way_ms,
            jitter_ms,
            by_addr,
        })
    }

    pub fn hosts(&self) -> &[HostSpec] {
        &self.hosts
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.hosts.iter().position(|h| h.name == name)
    }

    /// One-way delay `src -> dst`, ms.
    pub fn one_way_ms(&self, src: usize, dst: usize) -> f64 {
        if src == dst {
            0.0
        } else {
            self.one_way_ms[src * self.hosts.len() + dst]
        }
    }

    /// The host a packet from `src` to `dst` is delivered to: for an anycast address, the
    /// instance with the least delay from `src` (ties: the first declared).
    pub fn route(&self, src: usize, dst: IpAddr) -> Option<usize> {
        let group = self.by_addr.get(&dst)?;
        group
            .iter()
            .copied()
            .filter(|&g| g != src)
            .min_by(|&a, &b| self.one_way_ms(src, a).total_cmp(&self.one_way_ms(src, b)))
    }

    /// Does `addr` belong to host `i` (a check against spoofed sources)?
    pub fn owns(&self, i: usize, addr: IpAddr) -> bool {
        let h = &self.hosts[i];
        addr == IpAddr::V4(h.v4) || addr == IpAddr::V6(h.v6)
    }

    /// The four routers from `src` to `dst` and the delay to each.
    pub fn path(&self, src: usize, dst: usize) -> Path {
        let total = self.one_way_ms(src, dst);
        let a_src = self.hosts[src].access_ms.min(total / 4.0);
        let a_dst = self.hosts[dst].access_ms.min(total / 4.0);
        let middle = total - a_src - a_dst;
        let eps = (middle / 3.0).min(0.05);
        let delays = [a_src, a_src + eps, total - a_dst - eps, total - a_dst];
        let routers = [
            access_router(src),
            core_router(src),
            core_router(dst),
            access_router(dst),
        ];
        let hops = std::array::from_fn(|k| Hop {
            v4: routers[k].0,
            v6: routers[k].1,
            one_way_ms: delays[k],
        });
        Path {
            hops,
            one_way_ms: total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(i: usize, name: &str) -> HostSpec {
        HostSpec {
            name: name.into(),
            v4: host_v4(i),
            v6: host_v6(i),
            behaviour: Behaviour::Normal,
            access_ms: 1.0,
        }
    }

    #[test]
    fn paths_are_monotonic_and_end_at_the_target_delay() {
        let t = Topology::new(
            vec![host(0, "a"), host(1, "b")],
            vec![0.0, 20.0, 20.0, 0.0],
            0.0,
        )
        .unwrap();
        let p = t.path(0, 1);
        assert_eq!(p.one_way_ms, 20.0);
        assert_eq!(p.hops[0].one_way_ms, 1.0);
        assert_eq!(p.hops[3].one_way_ms, 19.0);
        assert!(p
            .hops
            .windows(2)
            .all(|w| w[0].one_way_ms <= w[1].one_way_ms));
        for h in p.hops {
            assert!(!is_lab_host_addr(IpAddr::V4(h.v4)) && !is_lab_host_addr(IpAddr::V6(h.v6)));
        }
        // Zero delay still gives a valid, monotonic path.
        let t0 = Topology::new(vec![host(0, "a"), host(1, "b")], vec![0.0; 4], 0.0).unwrap();
        assert!(t0.path(0, 1).hops.iter().all(|h| h.one_way_ms == 0.0));
    }

    #[test]
    fn anycast_goes_to_the_nearest_instance() {
        let mut hosts = vec![host(0, "src"), host(1, "near"), host(2, "far")];
        hosts[2].v4 = hosts[1].v4;
        hosts[2].v6 = hosts[1].v6;
        #[rustfmt::skip]
        let d = vec![0.0, 5.0, 50.0,
                     5.0, 0.0, 60.0,
                     50.0, 60.0, 0.0];
        let t = Topology::new(hosts.clone(), d.clone(), 0.0).unwrap();
        assert_eq!(t.route(0, IpAddr::V4(host_v4(1))), Some(1));
        let mut d2 = d;
        d2[1] = 70.0;
        let t2 = Topology::new(hosts, d2, 0.0).unwrap();
        assert_eq!(t2.route(0, IpAddr::V6(host_v6(1))), Some(2));
        assert_eq!(t2.route(0, "10.77.99.99".parse().unwrap()), None);
    }

    #[test]
    fn rejects_bad_topologies() {
        let ok = || vec![host(0, "a"), host(1, "b")];
        assert!(Topology::new(ok(), vec![0.0; 3], 0.0).is_err());
        assert!(Topology::new(ok(), vec![0.0, -1.0, 1.0, 0.0], 0.0).is_err());
        assert!(Topology::new(ok(), vec![0.0, f64::NAN, 1.0, 0.0], 0.0).is_err());
        let mut outside = ok();
        outside[1].v4 = "192.168.1.1".parse().unwrap();
        assert!(matches!(
            Topology::new(outside, vec![0.0; 4], 0.0),
            Err(LabError::AddressOutsideLab(_))
        ));
        let mut dup = ok();
        dup[1].name = "a".into();
        assert!(Topology::new(dup, vec![0.0; 4], 0.0).is_err());
        let mut half = ok();
        half[1].v4 = half[0].v4;
        assert!(
            Topology::new(half, vec![0.0; 4], 0.0).is_err(),
            "anycast must share both addresses"
        );
    }
}
