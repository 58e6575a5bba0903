//! CIDRs with upstream Kilo's semantics (host bits kept, IPv4-mapped addresses folded to IPv4), IP
//! classification (`isPublic`, `isLocal`), sorting, and the WireGuard IP allocator.

use std::cmp::Ordering;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Why a string is not a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {input:?}: want an address and a prefix length such as 10.1.0.1/24")]
pub struct CidrError {
    /// The text that failed to parse.
    pub input: String,
}

/// An IP address with a prefix length, host bits kept as written (`10.1.0.1/24` stays so), as
/// Go's `net.IPNet` does in upstream Kilo. [`Cidr::network`] gives the masked network.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// A CIDR from an address and a prefix length; `None` when the prefix is too long.
    /// IPv4-mapped IPv6 addresses are folded to IPv4 (the prefix loses 96 bits).
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix.saturating_sub(96)),
                None => (addr, prefix),
            },
            IpAddr::V4(_) => (addr, prefix),
        };
        (prefix <= max_prefix(&addr)).then_some(Cidr { addr, prefix })
    }

    /// The single-address CIDR of an IP: `ip/32` or `ip/128` (upstream's `oneAddressCIDR`).
    pub fn host(addr: IpAddr) -> Cidr {
        let addr = canonical(addr);
        Cidr { addr, prefix: max_prefix(&addr) }
    }

    /// The address as written, host bits included.
    pub const fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub const fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether this is an IPv4 CIDR.
    pub const fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// The same CIDR with host bits cleared (`10.1.0.1/24` → `10.1.0.0/24`).
    pub fn network(&self) -> Cidr {
        Cidr { addr: mask(self.addr, self.prefix), prefix: self.prefix }
    }

    /// Whether the host bits are all zero.
    pub fn is_network(&self) -> bool {
        self.network().addr == self.addr
    }

    /// Whether `ip` is inside this CIDR's network (Go's `IPNet.Contains`).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == mask(self.addr, self.prefix)
    }

    /// Whether `other`'s network lies entirely inside this one's.
    pub fn covers(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }

    /// Upstream's "intersects": either network contains the other's stored address.
    pub fn intersects(&self, other: &Cidr) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    /// Whether the two networks share any address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.covers(other) || other.covers(self)
    }

    /// The number of host bits (32 or 128 minus the prefix).
    pub fn host_bits(&self) -> u8 {
        max_prefix(&self.addr) - self.prefix
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// Parses as upstream's `normalizeIP`: `ip/prefix`, host bits kept, IPv4-mapped folded to IPv4,
    /// no whitespace, no bare IP.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrError { input: s.to_string() };
        let (ip, prefix) = s.split_once('/').ok_or_else(err)?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        // Go's `dtoi`: leading zeros are fine (`/0008` is 8).
        let digits = prefix.trim_start_matches('0');
        let prefix: u8 = if digits.is_empty() { 0 } else { digits.parse().map_err(|_| err())? };
        let addr: IpAddr = ip.parse().map_err(|_| err())?;
        if prefix > max_prefix(&addr) {
            return Err(err());
        }
        Cidr::new(addr, prefix).ok_or_else(err)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            // IPv4 is written without the formatting machinery: firewall rules, routes and
            // WireGuard configurations print tens of thousands of CIDRs, and `Ipv4Addr`'s
            // `Display` (one padded integer per octet) was a hot spot in the profile.
            IpAddr::V4(v4) => {
                let mut buf = [0u8; 20];
                f.write_str(v4_text(v4, self.prefix, &mut buf))
            }
            IpAddr::V6(_) => write!(f, "{}/{}", self.addr, self.prefix),
        }
    }
}

impl Cidr {
    /// Appends the CIDR's text (as [`Display`](fmt::Display) writes it) to `out`; IPv4 without
    /// going through `core::fmt` (the WireGuard INI text holds one per allowed IP).
    pub(crate) fn push_text(&self, out: &mut String) {
        match self.addr {
            IpAddr::V4(v4) => out.push_str(v4_text(v4, self.prefix, &mut [0; 20])),
            IpAddr::V6(_) => {
                // Writing to a String cannot fail.
                let _ = fmt::Write::write_fmt(out, format_args!("{self}"));
            }
        }
    }
}

/// The text `a.b.c.d/prefix` of an IPv4 CIDR, written into `buf` (at most 18 bytes of text;
/// [`write_decimal`] writes 3 bytes per number).
fn v4_text(v4: std::net::Ipv4Addr, prefix: u8, buf: &mut [u8; 20]) -> &str {
    let [a, b, c, d] = v4.octets();
    let mut len = write_decimal(buf, a);
    for (separator, n) in [(b'.', b), (b'.', c), (b'.', d), (b'/', prefix)] {
        buf[len] = separator;
        len = len + 1 + write_decimal(&mut buf[len + 1..], n);
    }
    // Only ASCII digits and separators were written, so this cannot fail.
    std::str::from_utf8(&buf[..len]).unwrap_or_default()
}

/// The decimal digits of every `u8`, left-aligned, and how many there are.
const DECIMAL: [([u8; 3], u8); 256] = {
    let mut table = [([0; 3], 0); 256];
    let mut n = 0;
    while n < 256 {
        let (hundreds, tens, ones) =
            (b'0' + (n / 100) as u8, b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8);
        table[n] = if n >= 100 {
            ([hundreds, tens, ones], 3)
        } else if n >= 10 {
            ([tens, ones, 0], 2)
        } else {
            ([ones, 0, 0], 1)
        };
        n += 1;
    }
    table
};

/// Writes `n` in decimal at the start of `buf` (at least 3 bytes long; all 3 are written) and
/// returns its length.
fn write_decimal(buf: &mut [u8], n: u8) -> usize {
    let (digits, len) = DECIMAL[usize::from(n)];
    buf[..3].copy_from_slice(&digits);
    usize::from(len)
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses a CIDR as Kubernetes' `spec.podCIDR` is parsed upstream: network-masked
/// (`10.2.0.1/24` → `10.2.0.0/24`).
pub fn parse_network(s: &str) -> Result<Cidr, CidrError> {
    s.parse::<Cidr>().map(|c| c.network())
}

/// Two CIDRs of one address family where at most one per family is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{first} and {second} are both {family}: give at most one CIDR per address family")]
pub struct SameFamilyError {
    /// The first CIDR of the family.
    pub first: Cidr,
    /// The second one.
    pub second: Cidr,
    /// `IPv4` or `IPv6`.
    pub family: &'static str,
}

/// A list of at most one CIDR per family as Kilo holds dual-stack values: the first (IPv4 when
/// there is one, else the IPv6 one) and, in a dual-stack list, the IPv6 one as the second.
/// An empty list gives `(None, None)`.
///
/// # Errors
/// Two CIDRs of one family.
pub fn per_family(cidrs: &[Cidr]) -> Result<(Option<Cidr>, Option<Cidr>), SameFamilyError> {
    let (mut v4, mut v6): (Option<Cidr>, Option<Cidr>) = (None, None);
    for c in cidrs {
        let (slot, family) = if c.is_ipv4() { (&mut v4, "IPv4") } else { (&mut v6, "IPv6") };
        if let Some(first) = *slot {
            return Err(SameFamilyError { first, second: *c, family });
        }
        *slot = Some(*c);
    }
    Ok(match (v4, v6) {
        (Some(a), b) => (Some(a), b),
        (None, b) => (b, None),
    })
}

/// IPv4-mapped IPv6 addresses as IPv4; every other address unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

fn max_prefix(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & m))
        }
        IpAddr::V6(v6) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & m))
        }
    }
}

/// Upstream's `isPublic`, kept for leader election (contract C4): IPv4 is private only in
/// 10/8, 172.16/12 and 192.168/16; IPv6 is private only when it starts with `fd00` (so fd00::/16).
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(o[0] == 10 || (o[0] == 172 && (o[1] & 0xf0) == 16) || (o[0] == 192 && o[1] == 168))
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            !(o[0] == 0xfd && o[1] == 0x00)
        }
    }
}

/// Upstream's `isLocal`: loopback, link-local multicast or link-local unicast.
pub fn is_local(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback() || v4.is_link_local() || (o[0] == 224 && o[1] == 0 && o[2] == 0)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback() || (s[0] & 0xffc0) == 0xfe80 || (s[0] & 0xff0f) == 0xff02
        }
    }
}

/// The RFC 6890 class of an address, for human-readable validation messages (contract C4).
pub fn describe_ip_class(ip: IpAddr) -> &'static str {
    match canonical(ip) {
        IpAddr::V4(v4) if v4.is_loopback() => "loopback",
        IpAddr::V4(v4) if v4.is_private() => "private (RFC 1918)",
        IpAddr::V4(v4) if v4.is_link_local() => "link-local",
        IpAddr::V4(v4) if v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64 => {
            "shared address space (RFC 6598, CGNAT)"
        }
        IpAddr::V4(v4) if v4.is_documentation() => "documentation (RFC 5737)",
        IpAddr::V4(v4) if v4.is_unspecified() => "unspecified",
        IpAddr::V6(v6) if v6.is_loopback() => "loopback",
        IpAddr::V6(v6) if (v6.segments()[0] & 0xfe00) == 0xfc00 => "unique local (RFC 4193)",
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => "link-local",
        IpAddr::V6(v6) if v6.segments()[0] == 0x2001 && v6.segments()[1] == 0xdb8 => {
            "documentation (RFC 3849)"
        }
        _ => "global",
    }
}

/// Upstream's CIDR order (`sortIPs`): IPv4 before IPv6, then by CIDR text (byte-wise, not numeric).
pub fn cmp_upstream(a: &Cidr, b: &Cidr) -> Ordering {
    b.is_ipv4().cmp(&a.is_ipv4()).then_with(|| a.to_string().cmp(&b.to_string()))
}

/// Sorts CIDRs in upstream's order (see [`cmp_upstream`]).
pub fn sort_upstream(cidrs: &mut [Cidr]) {
    if cidrs.len() > 1 {
        cidrs.sort_by_cached_key(|c| (!c.is_ipv4(), Text::of(c)));
    }
}

/// A CIDR's text as a sort key; IPv4 text lives on the stack (sorting allocated one string per
/// CIDR, a hot spot when diffing configurations).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Text {
    /// Up to 18 bytes (`255.255.255.255/32`), zero-padded: zero sorts before every text byte, so
    /// the order is the strings' order.
    Short([u8; 18]),
    /// Anything longer.
    Long(String),
}

impl Text {
    fn of(c: &Cidr) -> Text {
        use std::io::Write as _;
        let mut buf = [0u8; 18];
        let mut cursor = std::io::Cursor::new(&mut buf[..]);
        if c.is_ipv4() && write!(cursor, "{c}").is_ok() {
            Text::Short(buf)
        } else {
            Text::Long(c.to_string())
        }
    }
}

/// The subnet is full: more segments than WireGuard addresses (contract C5).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "WireGuard subnet {subnet} is too small: it has {capacity} usable addresses but the mesh needs {needed}"
)]
pub struct SubnetFullError {
    /// The WireGuard subnet.
    pub subnet: Cidr,
    /// How many addresses it can hand out.
    pub capacity: u128,
    /// How many were asked for.
    pub needed: usize,
}

/// Hands out WireGuard addresses from a subnet in upstream's order: network+1, network+2, …,
/// the broadcast address included, each with the subnet's prefix length.
#[derive(Debug, Clone)]
pub struct Allocator {
    subnet: Cidr,
    next: u128,
}

impl Allocator {
    /// An allocator over `subnet` (its host bits are ignored).
    pub fn new(subnet: Cidr) -> Allocator {
        Allocator { subnet: subnet.network(), next: 1 }
    }

    /// How many addresses this subnet can hand out in total.
    pub fn capacity(&self) -> u128 {
        let bits = u32::from(self.subnet.host_bits());
        if bits >= 128 { u128::MAX } else { (1u128 << bits) - 1 }
    }

    /// The next address with the subnet's prefix, or `None` when the subnet is exhausted.
    pub fn next_ip(&mut self) -> Option<Cidr> {
        if self.next > self.capacity() {
            return None;
        }
        let base = self.subnet.addr();
        let addr = match base {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(
                u32::from(v4).wrapping_add(u32::try_from(self.next).ok()?),
            )),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6).wrapping_add(self.next))),
        };
        self.next += 1;
        Cidr::new(addr, self.subnet.prefix())
    }

    /// Like [`Allocator::next_ip`], with an error naming the subnet and the demand.
    pub fn next_for(&mut self, needed: usize) -> Result<Cidr, SubnetFullError> {
        let capacity = self.capacity();
        self.next_ip().ok_or(SubnetFullError { subnet: self.subnet, capacity, needed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_cidrs_print_as_dotted_quads_with_their_prefix() {
        for text in
            ["0.0.0.0/0", "255.255.255.255/32", "10.0.100.9/8", "172.16.5.10/24", "1.20.3.199/9"]
        {
            assert_eq!(c(text).to_string(), text);
        }
        assert_eq!(c("2001:db8::1/64").to_string(), "2001:db8::1/64");
    }

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn normalize_ip_keeps_host_bits_and_folds_mapped_addresses() {
        assert_eq!(c("10.1.0.1/24").to_string(), "10.1.0.1/24");
        assert_eq!(c("::ffff:1.2.3.4/120").to_string(), "1.2.3.4/24");
        assert_eq!(c("ff60::10/64").to_string(), "ff60::10/64");
        for bad in [" 10.0.0.1/32", "10.0.0.1", "foo", "10.0.0.1/33", "10.0.0.1/+8", "10.0.0.1/"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert_eq!(c("10.0.0.0/0008").to_string(), "10.0.0.0/8");
        assert_eq!(parse_network("10.2.0.1/24").unwrap().to_string(), "10.2.0.0/24");
    }

    #[test]
    fn allocator_matches_upstream_table() {
        let mut a = Allocator::new(c("10.1.0.0/16"));
        assert_eq!(a.next_ip().unwrap().to_string(), "10.1.0.1/16");
        assert_eq!(a.next_ip().unwrap().to_string(), "10.1.0.2/16");
        assert_eq!(Allocator::new(c("10.1.0.0/32")).next_ip(), None);
        let mut a = Allocator::new(c("10.1.0.0/31"));
        assert_eq!(a.next_ip().unwrap().to_string(), "10.1.0.1/31");
        assert_eq!(a.next_ip(), None);
        let mut a = Allocator::new(c("10.1.0.0/30"));
        let got: Vec<_> = std::iter::from_fn(|| a.next_ip()).map(|c| c.to_string()).collect();
        assert_eq!(got, ["10.1.0.1/30", "10.1.0.2/30", "10.1.0.3/30"]);
        let err = Allocator::new(c("10.1.0.0/31")).clone().next_for(2);
        assert!(err.is_ok());
    }

    #[test]
    fn sort_ips_matches_upstream_table() {
        let ips: Vec<Cidr> = [
            "10.0.0.1/32",
            "10.0.0.2/32",
            "192.168.0.1/32",
            "2001::7/128",
            "fd68:da49:9da:b27f::/128",
        ]
        .iter()
        .map(|s| c(s))
        .collect();
        let mut v = vec![ips[2], ips[3], ips[1], ips[4], ips[0]];
        sort_upstream(&mut v);
        assert_eq!(v, ips);
        let mut v = vec![ips[4], ips[3]];
        v.sort_by(cmp_upstream);
        assert_eq!(v, vec![ips[3], ips[4]]);
    }

    #[test]
    fn is_public_matches_upstream_table() {
        for (ip, want) in [
            ("10.0.0.1", false),
            ("172.16.0.0", false),
            ("172.24.135.46", false),
            ("172.15.255.255", true),
            ("172.160.255.255", true),
            ("192.168.0.0", false),
            ("fd00::1", false),
            ("fd01::1", true),
            ("127.0.0.1", true),
        ] {
            assert_eq!(is_public(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn intersects_is_upstream_stored_address_containment() {
        assert!(c("192.168.178.0/24").intersects(&c("192.168.178.8/32")));
        assert!(!c("192.168.178.4/32").intersects(&c("192.168.178.8/32")));
        assert!(c("10.0.0.0/8").overlaps(&c("10.1.0.0/16")));
    }
}
