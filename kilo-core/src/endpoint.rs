//! WireGuard endpoints: an IP and port, or a DNS name and port, as upstream Kilo parses and prints
//! them.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::cidr::canonical;

/// Why a string is not an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid endpoint {input:?}: {reason}")]
pub struct EndpointError {
    /// The text that failed to parse.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A WireGuard endpoint: a resolved UDP address and/or a DNS name with a port.
///
/// A DNS endpoint keeps its original `host:port` text, which is what it prints (DNS first);
/// resolution happens outside the core and is attached with [`Endpoint::with_resolved`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    addr: Option<SocketAddr>,
    dns: Option<String>,
}

impl Endpoint {
    /// An endpoint at an IP address and port.
    pub fn from_addr(addr: SocketAddr) -> Endpoint {
        Endpoint { addr: Some(SocketAddr::new(canonical(addr.ip()), addr.port())), dns: None }
    }

    /// The same endpoint with its DNS name resolved to `addr` (the DNS text is kept).
    pub fn with_resolved(&self, addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr: Some(SocketAddr::new(canonical(addr.ip()), addr.port())),
            dns: self.dns.clone(),
        }
    }

    /// Upstream's readiness: an address with a port, or a DNS name.
    pub fn is_ready(&self) -> bool {
        self.addr.is_some_and(|a| a.port() > 0)
            || self.dns.as_deref().is_some_and(|d| !d.is_empty())
    }

    /// The resolved address, if any.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// The resolved IP, if any.
    pub fn ip(&self) -> Option<IpAddr> {
        self.addr.map(|a| a.ip())
    }

    /// The port: from the address, else from the DNS text; 0 when not ready.
    pub fn port(&self) -> u16 {
        if !self.is_ready() {
            return 0;
        }
        if let Some(a) = self.addr {
            return a.port();
        }
        self.dns
            .as_deref()
            .and_then(|d| d.rsplit_once(':'))
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(0)
    }

    /// The original `host:port` text of a DNS endpoint.
    pub fn dns(&self) -> Option<&str> {
        self.dns.as_deref()
    }

    /// The DNS host name without the port (contract C1: upstream returned the port here), and
    /// without the brackets the parser accepts around it (`[example]:1` → `example`).
    pub fn dns_host(&self) -> Option<&str> {
        let host = self.dns.as_deref().and_then(|d| d.rsplit_once(':')).map(|(h, _)| h)?;
        Some(host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host))
    }

    /// Whether this is a DNS endpoint that has not been resolved yet.
    pub fn needs_resolution(&self) -> bool {
        self.dns.is_some() && self.addr.is_none()
    }

    /// Upstream's `StringOpt`: DNS text first when `dns_first`, else the address first.
    pub fn to_string_opt(&self, dns_first: bool) -> String {
        let addr = self.addr.map(|a| a.to_string());
        let (first, second) =
            if dns_first { (self.dns.clone(), addr) } else { (addr, self.dns.clone()) };
        first.or(second).unwrap_or_default()
    }

    /// Upstream's `Endpoint.Equal`: the two print the same with [`Endpoint::to_string_opt`].
    pub fn equal(a: Option<&Endpoint>, b: Option<&Endpoint>, dns_first: bool) -> bool {
        let s = |e: Option<&Endpoint>| e.map(|e| e.to_string_opt(dns_first)).unwrap_or_default();
        s(a) == s(b)
    }
}

impl fmt::Display for Endpoint {
    /// DNS text first, else `ip:port` (`[v6]:port`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `to_string_opt(true)` without its intermediate strings.
        match (&self.dns, &self.addr) {
            (Some(dns), _) => f.write_str(dns),
            (None, Some(addr)) => write!(f, "{addr}"),
            (None, None) => Ok(()),
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.dns, &self.addr) {
            (Some(d), Some(a)) => write!(f, "Endpoint({d} = {a})"),
            _ => write!(f, "Endpoint({self})"),
        }
    }
}

/// Go's `net.SplitHostPort`.
fn split_host_port(s: &str) -> Result<(&str, &str), &'static str> {
    let i = s.rfind(':').ok_or("missing port")?;
    let (host, j, k) = if s.starts_with('[') {
        let end = s.find(']').ok_or("missing ']'")?;
        if end + 1 == s.len() {
            return Err("missing port");
        }
        if end + 1 != i {
            return Err(if s.as_bytes()[end + 1] == b':' {
                "too many colons"
            } else {
                "missing port"
            });
        }
        (&s[1..end], 1, end + 1)
    } else {
        let host = &s[..i];
        if host.contains(':') {
            return Err("too many colons (an IPv6 address needs brackets: [addr]:port)");
        }
        (host, 0, 0)
    };
    if s[j..].contains('[') {
        return Err("unexpected '['");
    }
    if s[k..].contains(']') {
        return Err("unexpected ']'");
    }
    Ok((host, &s[i + 1..]))
}

/// Kubernetes' `IsDNS1123Subdomain`: at most 253 characters of lower-case labels.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    s.split('.').all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    })
}

/// Parses a port as upstream does: decimal digits only (leading zeros allowed), 1 to 65535.
pub fn parse_port(s: &str) -> Result<u16, &'static str> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("port is not a number");
    }
    let trimmed = s.trim_start_matches('0');
    let port: u32 = if trimmed.is_empty() {
        0
    } else if trimmed.len() > 5 {
        u32::MAX
    } else {
        trimmed.parse().map_err(|_| "port is not a number")?
    };
    match u16::try_from(port) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err("port must be between 1 and 65535"),
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    /// Upstream's `ParseEndpoint`: `ip:port`, `[ipv6]:port` or `dns-name:port`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| EndpointError { input: s.to_string(), reason };
        if s.is_empty() {
            return Err(err("empty"));
        }
        let (host, port) = split_host_port(s).map_err(err)?;
        let port = parse_port(port).map_err(err)?;
        match host.parse::<IpAddr>() {
            Ok(ip) => Ok(Endpoint::from_addr(SocketAddr::new(ip, port))),
            Err(_) if is_dns1123_subdomain(host) => {
                Ok(Endpoint { addr: None, dns: Some(s.to_string()) })
            }
            Err(_) => Err(err("host is neither an IP address nor a lower-case DNS name")),
        }
    }
}

impl serde::Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Endpoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(s: &str) -> Option<Endpoint> {
        s.parse().ok()
    }

    #[test]
    fn parse_endpoint_matches_upstream_table() {
        for bad in [
            "",
            ":1000",
            "10.0.0.0",
            "ff50::10",
            "10.0.0.1:0",
            "10.0.0.1:65536",
            "Foo.com:1",
            "a_b:1",
        ] {
            assert_eq!(e(bad), None, "{bad}");
        }
        assert_eq!(e("10.0.0.0:1000").unwrap().to_string(), "10.0.0.0:1000");
        let v6 = e("[ff50::10]:1000").unwrap();
        assert_eq!(v6.ip(), Some("ff50::10".parse().unwrap()));
        assert_eq!(v6.port(), 1000);
        assert_eq!(v6.to_string(), "[ff50::10]:1000");
        assert_eq!(e("1.2.3.4:08").unwrap().to_string(), "1.2.3.4:8");
        assert_eq!(e("[::ffff:1.2.3.4]:5").unwrap().to_string(), "1.2.3.4:5");
    }

    #[test]
    fn dns_endpoints_keep_their_text_and_print_dns_first() {
        let d = e("example.com:51820").unwrap();
        assert_eq!(d.to_string(), "example.com:51820");
        assert_eq!(d.dns_host(), Some("example.com"));
        assert_eq!(d.port(), 51820);
        assert!(d.is_ready() && d.ip().is_none());
        let r = d.with_resolved("1.1.1.1:51820".parse().unwrap());
        assert_eq!(r.to_string(), "example.com:51820");
        assert_eq!(r.to_string_opt(false), "1.1.1.1:51820");
    }

    #[test]
    fn equal_matches_upstream_table() {
        assert!(Endpoint::equal(None, None, true));
        let a = e("example.com:1000").unwrap().with_resolved("1.1.1.1:1000".parse().unwrap());
        let b = Endpoint::from_addr("1.1.1.1:1000".parse().unwrap());
        assert!(Endpoint::equal(Some(&a), Some(&b), false));
        assert!(!Endpoint::equal(Some(&a), Some(&b), true));
    }
}
