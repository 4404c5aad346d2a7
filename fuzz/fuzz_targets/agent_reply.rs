//! What arrives on the agent's raw sockets: any host on the Internet can send it. The
//! ICMP/ICMPv6/TCP reply parsers (`probe_agent::packet`) must answer with a value or an
//! error, never panic.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use geoloc_probe_agent::packet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let v6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(which));
    let v4 = Ipv4Addr::new(198, 51, 100, which);
    match which % 5 {
        0 => {
            let _ = packet::parse_ipv4_header(bytes);
        }
        1 => {
            if let Ok(reply) = packet::parse_ipv4_icmp(bytes) {
                let _ = reply.is_from_destination();
            }
        }
        2 => {
            if let Ok(reply) = packet::parse_icmpv6(bytes, v6) {
                let _ = reply.is_from_destination();
            }
        }
        3 => {
            let source = if which & 0x80 == 0 {
                IpAddr::V4(v4)
            } else {
                IpAddr::V6(v6)
            };
            if let Ok(reply) = packet::parse_tcp_answer(bytes, source) {
                let _ = reply.is_from_destination();
            }
        }
        _ => {
            if let Ok(reply) = packet::parse_ipv4_tcp(bytes) {
                let _ = reply.is_from_destination();
            }
        }
    }
    let _ = packet::internet_checksum(&[bytes]);
});
