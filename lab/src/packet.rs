//! Wire formats the emulator touches: just enough IPv4/IPv6 to route a packet, lower its
//! TTL / hop limit, classify it (ICMP echo, TCP, ...) and build ICMP Time Exceeded.
//!
//! No I/O here; every function takes bytes that came from an emulated host and treats
//! them as untrusted (short or malformed packets give `None`, never a panic).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol / IPv6 next-header numbers used here.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// TTL / hop limit of the ICMP errors the virtual routers send.
pub const ROUTER_TTL: u8 = 64;

/// What the emulator needs to know about one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL (IPv4) or hop limit (IPv6) as the packet is now.
    pub ttl: u8,
    /// IPv4 protocol or IPv6 next header (of the fixed header: extension headers are
    /// not walked).
    pub proto: u8,
    /// Offset of the transport header.
    pub payload_offset: usize,
    /// Length of the whole packet according to its header (never more than the buffer).
    pub len: usize,
}

impl Header {
    /// ICMP echo request (IPv4 type 8) or ICMPv6 echo request (type 128).
    pub fn is_echo_request(&self, pkt: &[u8]) -> bool {
        let t = pkt.get(self.payload_offset).copied();
        match self.src {
            IpAddr::V4(_) => self.proto == PROTO_ICMP && t == Some(8),
            IpAddr::V6(_) => self.proto == PROTO_ICMPV6 && t == Some(128),
        }
    }

    /// Any ICMP / ICMPv6 message.
    pub fn is_icmp(&self) -> bool {
        matches!(
            (self.src, self.proto),
            (IpAddr::V4(_), PROTO_ICMP) | (IpAddr::V6(_), PROTO_ICMPV6)
        )
    }

    /// An ICMP error message (never answered with another ICMP error, RFC 1812 / RFC 4443).
    pub fn is_icmp_error(&self, pkt: &[u8]) -> bool {
        if !self.is_icmp() {
            return false;
        }
        match (self.src, pkt.get(self.payload_offset)) {
            (IpAddr::V4(_), Some(t)) => matches!(t, 3 | 4 | 5 | 11 | 12),
            (IpAddr::V6(_), Some(t)) => *t < 128,
            _ => true,
        }
    }

    pub fn is_tcp(&self) -> bool {
        self.proto == PROTO_TCP
    }
}

/// Parses the fixed IPv4 or IPv6 header. `None` for anything too short or inconsistent.
pub fn parse(pkt: &[u8]) -> Option<Header> {
    match pkt.first()? >> 4 {
        4 => {
            if pkt.len() < 20 {
                return None;
            }
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
            if ihl < 20 || total < ihl || total > pkt.len() {
                return None;
            }
            Some(Header {
                src: IpAddr::V4(Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15])),
                dst: IpAddr::V4(Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19])),
                ttl: pkt[8],
                proto: pkt[9],
                payload_offset: ihl,
                len: total,
            })
        }
        6 => {
            if pkt.len() < 40 {
                return None;
            }
            let payload = usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
            if 40 + payload > pkt.len() {
                return None;
            }
            let src: [u8; 16] = pkt[8..24].try_into().ok()?;
            let dst: [u8; 16] = pkt[24..40].try_into().ok()?;
            Some(Header {
                src: IpAddr::V6(Ipv6Addr::from(src)),
                dst: IpAddr::V6(Ipv6Addr::from(dst)),
                ttl: pkt[7],
                proto: pkt[6],
                payload_offset: 40,
                len: 40 + payload,
            })
        }
        _ => None,
    }
}

/// Sets the TTL / hop limit of a packet already validated by [`parse`], fixing the IPv4
/// header checksum.
pub fn set_ttl(pkt: &mut [u8], ttl: u8) {
    match pkt.first().map(|b| b >> 4) {
        Some(4) if pkt.len() >= 20 => {
            pkt[8] = ttl;
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            if ihl >= 20 && pkt.len() >= ihl {
                pkt[10] = 0;
                pkt[11] = 0;
                let sum = checksum(&[&pkt[..ihl]]);
                pkt[10..12].copy_from_slice(&sum.to_be_bytes());
            }
        }
        Some(6) if pkt.len() >= 40 => pkt[7] = ttl,
        _ => {}
    }
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts`.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &b in *part {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Builds the ICMP Time Exceeded (TTL exceeded in transit) that `router` sends back to the
/// source of `expired`, the packet as it arrived at the router.
///
/// IPv4 (RFC 792): quotes the original IP header and the first 8 bytes of its payload.
/// IPv6 (RFC 4443): quotes as much of the packet as fits in the 1280-byte minimum MTU.
/// Returns `None` when `expired` is not a valid packet of the router's family, or is
/// itself an ICMP error.
pub fn time_exceeded(expired: &[u8], router: IpAddr) -> Option<Vec<u8>> {
    let h = parse(expired)?;
    if h.is_icmp_error(expired) {
        return None;
    }
    match (router, h.src) {
        (IpAddr::V4(r), IpAddr::V4(src)) => {
            let quote = &expired[..(h.payload_offset + 8).min(h.len)];
            let icmp_len = 8 + quote.len();
            let total = 20 + icmp_len;
            let mut out = Vec::with_capacity(total);
            out.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, ROUTER_TTL, PROTO_ICMP, 0, 0]);
            out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            out.extend_from_slice(&r.octets());
            out.extend_from_slice(&src.octets());
            let ip_sum = checksum(&[&out[..20]]);
            out[10..12].copy_from_slice(&ip_sum.to_be_bytes());
            out.extend_from_slice(&[11, 0, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(quote);
            let icmp_sum = checksum(&[&out[20..]]);
            out[22..24].copy_from_slice(&icmp_sum.to_be_bytes());
            Some(out)
        }
        (IpAddr::V6(r), IpAddr::V6(src)) => {
            let quote = &expired[..h.len.min(1280 - 48)];
            let icmp_len = 8 + quote.len();
            let mut out = Vec::with_capacity(40 + icmp_len);
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&(icmp_len as u16).to_be_bytes());
            out.extend_from_slice(&[PROTO_ICMPV6, ROUTER_TTL]);
            out.extend_from_slice(&r.octets());
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(quote);
            let sum = icmpv6_checksum(&r, &src, &out[40..]);
            out[42..44].copy_from_slice(&sum.to_be_bytes());
            Some(out)
        }
        _ => None,
    }
}

/// ICMPv6 checksum: over the IPv6 pseudo-header and the message (checksum field zero).
pub fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, msg: &[u8]) -> u16 {
    let len = (msg.len() as u32).to_be_bytes();
    checksum(&[
        &src.octets(),
        &dst.octets(),
        &len,
        &[0, 0, 0, PROTO_ICMPV6],
        msg,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UDP probe as `traceroute` sends it: 10.77.1.10 -> 10.77.1.11, TTL 1, port 33434.
    fn udp_v4(ttl: u8) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 32, 0x12, 0x34, 0x40, 0, ttl, PROTO_UDP, 0, 0, 10, 77, 1, 10, 10, 77, 1, 11,
        ];
        let s = checksum(&[&p]);
        p[10..12].copy_from_slice(&s.to_be_bytes());
        p.extend_from_slice(&[0x82, 0x9a, 0x82, 0x9a, 0, 12, 0, 0, 0xde, 0xad, 0xbe, 0xef]);
        p
    }

    fn echo_v6(hops: u8) -> Vec<u8> {
        let src: Ipv6Addr = "fd77::1:a".parse().unwrap();
        let dst: Ipv6Addr = "fd77::1:b".parse().unwrap();
        let mut p = vec![0x60, 0, 0, 0, 0, 12, PROTO_ICMPV6, hops];
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        let mut icmp = vec![128, 0, 0, 0, 0, 1, 0, 1, 1, 2, 3, 4];
        let s = icmpv6_checksum(&src, &dst, &icmp);
        icmp[2..4].copy_from_slice(&s.to_be_bytes());
        p.extend_from_slice(&icmp);
        p
    }

    #[test]
    fn checksum_of_rfc1071_example() {
        // RFC 1071 section 3 example: sum of 0001 f203 f4f5 f6f7 is ddf2, checksum 220d.
        assert_eq!(
            checksum(&[&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]]),
            0x220d
        );
        // Odd split across parts gives the same answer.
        assert_eq!(
            checksum(&[&[0x00, 0x01, 0xf2], &[0x03, 0xf4, 0xf5, 0xf6, 0xf7]]),
            0x220d
        );
    }

    #[test]
    fn parses_v4_and_v6() {
        let h = parse(&udp_v4(5)).unwrap();
        assert_eq!(h.src, "10.77.1.10".parse::<IpAddr>().unwrap());
        assert_eq!(h.dst, "10.77.1.11".parse::<IpAddr>().unwrap());
        assert_eq!(
            (h.ttl, h.proto, h.payload_offset, h.len),
            (5, PROTO_UDP, 20, 32)
        );
        let p6 = echo_v6(9);
        let h6 = parse(&p6).unwrap();
        assert!(h6.is_echo_request(&p6));
        assert_eq!((h6.ttl, h6.len), (9, 52));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse(&[]).is_none());
        assert!(parse(&[0x45; 10]).is_none());
        let mut p = udp_v4(3);
        p[3] = 200; // total length beyond the buffer
        assert!(parse(&p).is_none());
        assert!(parse(&[0x60; 39]).is_none());
        assert!(time_exceeded(&[0x10, 1, 2], "10.77.0.1".parse().unwrap()).is_none());
    }

    #[test]
    fn set_ttl_keeps_the_header_checksum_valid() {
        let mut p = udp_v4(7);
        set_ttl(&mut p, 6);
        assert_eq!(p[8], 6);
        assert_eq!(checksum(&[&p[..20]]), 0, "a valid header sums to zero");
    }

    #[test]
    fn time_exceeded_v4_is_well_formed() {
        let orig = udp_v4(1);
        let router: IpAddr = "10.77.128.10".parse().unwrap();
        let te = time_exceeded(&orig, router).unwrap();
        let h = parse(&te).unwrap();
        assert_eq!(h.src, router);
        assert_eq!(h.dst, "10.77.1.10".parse::<IpAddr>().unwrap());
        assert_eq!(h.proto, PROTO_ICMP);
        assert_eq!(te.len(), 20 + 8 + 20 + 8);
        assert_eq!(checksum(&[&te[..20]]), 0, "IP header checksum");
        assert_eq!(checksum(&[&te[20..]]), 0, "ICMP checksum");
        assert_eq!((te[20], te[21]), (11, 0));
        assert_eq!(&te[28..], &orig[..28], "quotes the header and 8 bytes");
        assert!(h.is_icmp_error(&te));
        assert!(
            time_exceeded(&te, router).is_none(),
            "no error about an error"
        );
    }

    #[test]
    fn time_exceeded_v6_is_well_formed() {
        let orig = echo_v6(1);
        let router: Ipv6Addr = "fd77::2:5".parse().unwrap();
        let te = time_exceeded(&orig, IpAddr::V6(router)).unwrap();
        let h = parse(&te).unwrap();
        assert_eq!(h.src, IpAddr::V6(router));
        assert_eq!(h.dst, "fd77::1:a".parse::<IpAddr>().unwrap());
        assert_eq!((te[40], te[41]), (3, 0));
        assert_eq!(&te[48..], &orig[..]);
        let dst: Ipv6Addr = "fd77::1:a".parse().unwrap();
        assert_eq!(icmpv6_checksum(&router, &dst, &te[40..]), 0);
        assert!(
            time_exceeded(&orig, "10.0.0.1".parse().unwrap()).is_none(),
            "family mismatch"
        );
    }
}
