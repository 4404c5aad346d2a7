//! What may be measured: one table of special-purpose address ranges (IANA's IPv4 and
//! IPv6 special-purpose registries, RFC 6890 and its updates), used by the probe agent
//! (its last line of defence), the coordinator (before any probe is asked) and the client
//! (before anything is sent).
//!
//! * [`classify`] sorts an address into global / private / loopback / link-local /
//!   multicast / reserved / not-a-host.
//! * [`Probeable`]: what a class may be used for. Global unicast is always measurable;
//!   private, loopback, link-local and reserved ranges only where the operator allowed
//!   private targets (the lab, a private network); unspecified, broadcast and multicast
//!   addresses never (no single host answers them).
//! * [`parse_target`]: text from a client or a file → an address, with a [`Refused`]
//!   reason naming what was wrong.
//!
//! No I/O and no dependencies.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What kind of address a target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Globally routable unicast.
    Global,
    /// RFC 1918, CGNAT (100.64/10), IPv6 unique local (fc00::/7).
    Private,
    /// 127/8, ::1.
    Loopback,
    /// 169.254/16, fe80::/10.
    LinkLocal,
    /// 224/4, ff00::/8.
    Multicast,
    /// Documentation, benchmarking, 0/8, 240/4, IETF special purpose, non-2000::/3 IPv6…
    Reserved(&'static str),
    /// 0.0.0.0, ::, 255.255.255.255: not a host.
    NotAHost,
}

impl AddressClass {
    /// Human-readable name used in refusal messages.
    pub fn describe(&self) -> &'static str {
        match self {
            AddressClass::Global => "global unicast",
            AddressClass::Private => "private",
            AddressClass::Loopback => "loopback",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Multicast => "multicast",
            AddressClass::Reserved(what) => what,
            AddressClass::NotAHost => "unspecified/broadcast",
        }
    }

    /// Whether an address of this class may be measured.
    pub fn probeable(&self) -> Probeable {
        match self {
            AddressClass::Global => Probeable::Always,
            AddressClass::NotAHost | AddressClass::Multicast => Probeable::Never,
            _ => Probeable::IfPrivateAllowed,
        }
    }

    /// True for every class but [`AddressClass::Global`].
    pub fn is_bogon(&self) -> bool {
        *self != AddressClass::Global
    }
}

/// Whether a class of address may be measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probeable {
    /// Global unicast.
    Always,
    /// Private, loopback, link-local, reserved: only where private targets are allowed.
    IfPrivateAllowed,
    /// Unspecified, broadcast, multicast: never.
    Never,
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    (u128::from(ip) & mask) == (u128::from(net) & mask)
}

/// The IPv4 table: network, prefix length, class. First match wins.
const V4_TABLE: &[([u8; 4], u32, AddressClass)] = &[
    (
        [0, 0, 0, 0],
        8,
        AddressClass::Reserved("\"this network\" (0.0.0.0/8)"),
    ),
    ([10, 0, 0, 0], 8, AddressClass::Private),
    ([100, 64, 0, 0], 10, AddressClass::Private),
    ([127, 0, 0, 0], 8, AddressClass::Loopback),
    ([169, 254, 0, 0], 16, AddressClass::LinkLocal),
    ([172, 16, 0, 0], 12, AddressClass::Private),
    (
        [192, 0, 0, 0],
        24,
        AddressClass::Reserved("IETF protocol assignments (192.0.0.0/24)"),
    ),
    (
        [192, 0, 2, 0],
        24,
        AddressClass::Reserved("documentation (TEST-NET-1, 192.0.2.0/24)"),
    ),
    (
        [192, 88, 99, 0],
        24,
        AddressClass::Reserved("6to4 relay anycast (192.88.99.0/24)"),
    ),
    ([192, 168, 0, 0], 16, AddressClass::Private),
    (
        [198, 18, 0, 0],
        15,
        AddressClass::Reserved("benchmarking (198.18.0.0/15)"),
    ),
    (
        [198, 51, 100, 0],
        24,
        AddressClass::Reserved("documentation (TEST-NET-2, 198.51.100.0/24)"),
    ),
    (
        [203, 0, 113, 0],
        24,
        AddressClass::Reserved("documentation (TEST-NET-3, 203.0.113.0/24)"),
    ),
    ([224, 0, 0, 0], 4, AddressClass::Multicast),
    (
        [240, 0, 0, 0],
        4,
        AddressClass::Reserved("reserved (240.0.0.0/4)"),
    ),
];

/// The IPv6 table (besides ::, ::1, IPv4-mapped and the 2000::/3 rule). First match wins.
const V6_TABLE: &[(u128, u32, AddressClass)] = &[
    (0xfc00 << 112, 7, AddressClass::Private),
    (0xfe80 << 112, 10, AddressClass::LinkLocal),
    (
        0xfec0 << 112,
        10,
        AddressClass::Reserved("deprecated site-local (fec0::/10)"),
    ),
    (0xff00 << 112, 8, AddressClass::Multicast),
    (
        0x2001_0db8 << 96,
        32,
        AddressClass::Reserved("documentation (2001:db8::/32)"),
    ),
    (
        0x3fff << 112,
        20,
        AddressClass::Reserved("documentation (3fff::/20)"),
    ),
    (
        0x2001 << 112,
        23,
        AddressClass::Reserved("IETF protocol assignments (2001::/23)"),
    ),
    (
        0x2002 << 112,
        16,
        AddressClass::Reserved("6to4 (2002::/16)"),
    ),
    (
        0x0064_ff9b << 96,
        96,
        AddressClass::Reserved("NAT64 (64:ff9b::/96)"),
    ),
    (
        0x0100 << 112,
        64,
        AddressClass::Reserved("discard-only (100::/64)"),
    ),
];

/// Classifies an IPv4 address.
pub fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    if ip.is_unspecified() || ip.is_broadcast() {
        return AddressClass::NotAHost;
    }
    V4_TABLE
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, class)| *class)
        .unwrap_or(AddressClass::Global)
}

/// Classifies an IPv6 address (IPv4-mapped addresses are classified as IPv4).
pub fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    if ip.is_unspecified() {
        return AddressClass::NotAHost;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    if let Some((_, _, class)) = V6_TABLE
        .iter()
        .find(|(net, prefix, _)| in_v6(ip, Ipv6Addr::from(*net), *prefix))
    {
        return *class;
    }
    if !in_v6(ip, Ipv6Addr::from(0x2000u128 << 112), 3) {
        return AddressClass::Reserved("outside global unicast (2000::/3)");
    }
    AddressClass::Global
}

/// Classifies any address.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Longest text accepted as an address (the longest IPv6 literal is 45 characters).
pub const MAX_ADDRESS_LEN: usize = 64;

/// Why a target is refused: a machine-readable code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// `"invalid-address"` or `"bogon"` (see [`Refused::INVALID_ADDRESS`], [`Refused::BOGON`]).
    pub code: &'static str,
    pub message: String,
}

impl Refused {
    /// The text is not an IP address.
    pub const INVALID_ADDRESS: &'static str = "invalid-address";
    /// The address is not one that may be measured.
    pub const BOGON: &'static str = "bogon";
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Refused {}

/// Checks an address against the policy: `Ok` when it may be measured.
pub fn check_ip(ip: IpAddr, allow_private: bool) -> Result<(), Refused> {
    let class = classify(ip);
    match (class.probeable(), allow_private) {
        (Probeable::Always, _) | (Probeable::IfPrivateAllowed, true) => Ok(()),
        (Probeable::Never, _) => Err(Refused {
            code: Refused::BOGON,
            message: format!("{ip} is {} and cannot be measured", class.describe()),
        }),
        (Probeable::IfPrivateAllowed, false) => Err(Refused {
            code: Refused::BOGON,
            message: format!(
                "{ip} is a {} address (not routable on the Internet); measured only with --allow-private",
                class.describe()
            ),
        }),
    }
}

/// Parses an address literal (surrounding white space ignored) and applies [`check_ip`].
pub fn parse_target(text: &str, allow_private: bool) -> Result<IpAddr, Refused> {
    let t = text.trim();
    if t.is_empty() {
        return Err(Refused {
            code: Refused::INVALID_ADDRESS,
            message: "empty address".into(),
        });
    }
    if t.len() > MAX_ADDRESS_LEN {
        return Err(Refused {
            code: Refused::INVALID_ADDRESS,
            message: format!(
                "not an IP address: {} bytes long (an address is at most {MAX_ADDRESS_LEN})",
                t.len()
            ),
        });
    }
    let ip: IpAddr = t.parse().map_err(|_| Refused {
        code: Refused::INVALID_ADDRESS,
        message: format!("not an IP address: {t:?}"),
    })?;
    check_ip(ip, allow_private)?;
    Ok(ip)
}

/// Canonical text of an address (what results are stored under): IPv4-mapped IPv6 as
/// IPv4, IPv6 in its compressed lower-case form.
pub fn canonical(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        IpAddr::V4(v4) => v4.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AddressClass::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The one table of tests: every row is (address, class, measurable without
    /// allow-private, measurable with it).
    #[test]
    fn one_table() {
        let r = |what| Reserved(what);
        let rows: &[(&str, AddressClass, bool, bool)] = &[
            ("8.8.8.8", Global, true, true),
            ("1.1.1.1", Global, true, true),
            ("81.2.69.142", Global, true, true),
            ("10.1.2.3", Private, false, true),
            ("172.16.0.1", Private, false, true),
            ("172.31.255.255", Private, false, true),
            ("172.32.0.1", Global, true, true),
            ("192.168.1.1", Private, false, true),
            ("100.64.0.1", Private, false, true),
            ("100.128.0.1", Global, true, true),
            ("127.0.0.1", Loopback, false, true),
            ("127.255.255.254", Loopback, false, true),
            ("169.254.1.1", LinkLocal, false, true),
            ("224.0.0.1", Multicast, false, false),
            ("239.255.255.255", Multicast, false, false),
            ("0.0.0.0", NotAHost, false, false),
            ("255.255.255.255", NotAHost, false, false),
            ("0.1.2.3", r("\"this network\" (0.0.0.0/8)"), false, true),
            (
                "192.0.0.8",
                r("IETF protocol assignments (192.0.0.0/24)"),
                false,
                true,
            ),
            (
                "192.0.2.1",
                r("documentation (TEST-NET-1, 192.0.2.0/24)"),
                false,
                true,
            ),
            (
                "192.88.99.1",
                r("6to4 relay anycast (192.88.99.0/24)"),
                false,
                true,
            ),
            ("198.18.0.1", r("benchmarking (198.18.0.0/15)"), false, true),
            (
                "198.19.255.255",
                r("benchmarking (198.18.0.0/15)"),
                false,
                true,
            ),
            ("198.20.0.1", Global, true, true),
            (
                "198.51.100.7",
                r("documentation (TEST-NET-2, 198.51.100.0/24)"),
                false,
                true,
            ),
            (
                "203.0.113.9",
                r("documentation (TEST-NET-3, 203.0.113.0/24)"),
                false,
                true,
            ),
            ("240.0.0.1", r("reserved (240.0.0.0/4)"), false, true),
            ("::", NotAHost, false, false),
            ("::1", Loopback, false, true),
            ("::2", r("outside global unicast (2000::/3)"), false, true),
            ("fe80::1", LinkLocal, false, true),
            ("fd12::1", Private, false, true),
            ("fc00::1", Private, false, true),
            (
                "fec0::1",
                r("deprecated site-local (fec0::/10)"),
                false,
                true,
            ),
            ("ff02::1", Multicast, false, false),
            (
                "2001:db8::1",
                r("documentation (2001:db8::/32)"),
                false,
                true,
            ),
            ("3fff::1", r("documentation (3fff::/20)"), false, true),
            (
                "2001::1",
                r("IETF protocol assignments (2001::/23)"),
                false,
                true,
            ),
            ("2002::1", r("6to4 (2002::/16)"), false, true),
            ("64:ff9b::1.2.3.4", r("NAT64 (64:ff9b::/96)"), false, true),
            ("100::1", r("discard-only (100::/64)"), false, true),
            (
                "4000::1",
                r("outside global unicast (2000::/3)"),
                false,
                true,
            ),
            ("2a00:1450:4007:80e::200e", Global, true, true),
            ("::ffff:10.0.0.1", Private, false, true),
            ("::ffff:8.8.8.8", Global, true, true),
            (
                "::ffff:192.88.99.1",
                r("6to4 relay anycast (192.88.99.0/24)"),
                false,
                true,
            ),
        ];
        for (s, class, public_ok, private_ok) in rows {
            let a = ip(s);
            assert_eq!(classify(a), *class, "{s}");
            assert_eq!(
                check_ip(a, false).is_ok(),
                *public_ok,
                "{s} without allow-private"
            );
            assert_eq!(
                check_ip(a, true).is_ok(),
                *private_ok,
                "{s} with allow-private"
            );
            let via_text = parse_target(&format!("  {s}\t"), false);
            assert_eq!(via_text.is_ok(), *public_ok, "{s} parsed");
            if let Err(e) = via_text {
                assert_eq!(e.code, Refused::BOGON, "{s}");
                assert!(e.message.contains(class.describe()), "{s}: {}", e.message);
            }
        }
    }

    #[test]
    fn refusals_say_why() {
        let e = parse_target("10.0.0.1", false).unwrap_err();
        assert!(e.message.contains("--allow-private"), "{}", e.message);
        let e = parse_target("224.0.0.1", true).unwrap_err();
        assert!(e.message.contains("cannot be measured"), "{}", e.message);
    }

    #[test]
    fn garbage_is_invalid_and_bounded() {
        assert_eq!(
            parse_target("", false).unwrap_err().code,
            Refused::INVALID_ADDRESS
        );
        assert_eq!(
            parse_target("  ", false).unwrap_err().message,
            "empty address"
        );
        assert_eq!(
            parse_target("1.2.3", false).unwrap_err().message,
            "not an IP address: \"1.2.3\""
        );
        let long = "x".repeat(10 << 20);
        let e = parse_target(&long, false).unwrap_err();
        assert!(e.message.contains("10485760 bytes"), "{}", e.message);
        assert!(e.message.len() < 200);
        // Control characters are escaped, never echoed raw.
        let e = parse_target("1.2.3.4\x1b[2J", false).unwrap_err();
        assert!(!e.message.contains('\x1b'), "{:?}", e.message);
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(canonical(ip("::ffff:1.2.3.4")), "1.2.3.4");
        assert_eq!(canonical(ip("2001:0DB8:0::1")), "2001:db8::1");
        assert_eq!(canonical(ip("8.8.8.8")), "8.8.8.8");
    }
}
