//! Every reply parser on arbitrary bytes: must never panic.
#![no_main]

use std::net::{IpAddr, Ipv6Addr};

use geoloc_probe_agent::packet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    let _ = packet::parse_ipv4_icmp(data);
    let _ = packet::parse_ipv4_tcp(data);
    let _ = packet::parse_icmpv6(data, src);
    let _ = packet::parse_tcp_answer(data, IpAddr::V6(src));
    let _ = packet::parse_ipv4_header(data);
    let _ = packet::ones_sum(data);
});
