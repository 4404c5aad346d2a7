//! Target address policy: what may be measured.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// "invalid-address" or "bogon".
    pub code: &'static str,
    pub message: String,
}

/// Longest text accepted as an address (the longest IPv6 literal is 45 characters).
pub const MAX_ADDRESS_LEN: usize = 64;

/// Parses an address literal and applies the bogon policy (private, loopback, link-local,
/// documentation, multicast... are refused unless `allow_private`).
pub fn check(text: &str, allow_private: bool) -> Result<IpAddr, Refused> {
    let t = text.trim();
    if t.is_empty() {
        return Err(Refused {
            code: "invalid-address",
            message: "empty address".into(),
        });
    }
    if t.len() > MAX_ADDRESS_LEN {
        return Err(Refused {
            code: "invalid-address",
            message: format!(
                "not an IP address: {} bytes long (an address is at most {MAX_ADDRESS_LEN})",
                t.len()
            ),
        });
    }
    let ip: IpAddr = t.parse().map_err(|_| Refused {
        code: "invalid-address",
        message: format!("not an IP address: {t:?}"),
    })?;
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(Refused {
            code: "bogon",
            message: format!(
                "{ip} is {} and cannot be located",
                bogon_kind(ip).unwrap_or("special")
            ),
        });
    }
    if !allow_private {
        if let Some(kind) = bogon_kind(ip) {
            return Err(Refused {
                code: "bogon",
                message: format!("{ip} is a {kind} address (not routable on the Internet); the coordinator was not started with --allow-private"),
            });
        }
    }
    Ok(ip)
}

/// The kind of non-public address `ip` is, if any.
pub fn bogon_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => bogon_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return bogon_v4(v4);
            }
            let s = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if s[0] & 0xfe00 == 0xfc00 {
                Some("unique-local")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if s[0] == 0x2001 && s[1] == 0x0db8 {
                Some("documentation")
            } else if s[0] == 0x0064 && s[1] == 0xff9b {
                Some("NAT64")
            } else if s[0] & 0xe000 != 0x2000 {
                Some("unallocated (outside 2000::/3)")
            } else {
                None
            }
        }
    }
}

fn bogon_v4(v4: Ipv4Addr) -> Option<&'static str> {
    let o = v4.octets();
    if v4.is_loopback() {
        Some("loopback")
    } else if v4.is_private() {
        Some("private")
    } else if v4.is_link_local() {
        Some("link-local")
    } else if o[0] == 0 {
        Some("this-network (0/8)")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("shared/CGNAT (100.64/10)")
    } else if v4.is_documentation() {
        Some("documentation")
    } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
        Some("benchmarking (198.18/15)")
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        Some("IETF protocol assignment (192.0.0/24)")
    } else if v4.is_multicast() {
        Some("multicast")
    } else if v4.is_broadcast() || o[0] >= 240 {
        Some("reserved (240/4)")
    } else {
        None
    }
}

/// Canonical text of an address (what results are stored under).
pub fn canonical(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => Ipv6Addr::from(v6.octets()).to_string(),
        },
        IpAddr::V4(v4) => v4.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses_pass() {
        assert_eq!(
            check(" 81.2.69.142 ", false).unwrap().to_string(),
            "81.2.69.142"
        );
        assert!(check("2a00:1450:4007:80a::200e", false).is_ok());
    }

    #[test]
    fn bogons_refused_unless_allowed() {
        for b in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "100.64.0.1",
            "192.0.2.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
            "240.0.0.1",
        ] {
            let e = check(b, false).unwrap_err();
            assert_eq!(e.code, "bogon", "{b}");
            assert!(e.message.contains("--allow-private"), "{}", e.message);
            assert!(check(b, true).is_ok(), "{b} with allow_private");
        }
        assert_eq!(check("0.0.0.0", true).unwrap_err().code, "bogon");
        assert_eq!(check("224.0.0.1", true).unwrap_err().code, "bogon");
    }

    #[test]
    fn garbage_is_invalid() {
        assert_eq!(check("", false).unwrap_err().code, "invalid-address");
        assert_eq!(
            check("1.2.3", false).unwrap_err().message,
            "not an IP address: \"1.2.3\""
        );
        let long = "x".repeat(10 << 20);
        let e = check(&long, false).unwrap_err();
        assert!(e.message.contains("10485760 bytes"), "{}", e.message);
        assert!(e.message.len() < 200);
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(canonical("::ffff:1.2.3.4".parse().unwrap()), "1.2.3.4");
        assert_eq!(canonical("2001:0DB8:0::1".parse().unwrap()), "2001:db8::1");
    }
}
