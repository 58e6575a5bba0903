//! Host address selection (upstream 9.1, 9.4): which of a host's addresses is its private IP and
//! which its public one, and the automatic WireGuard MTU. Pure: `kilo-net-linux` gathers the
//! host's interfaces, addresses and default route and passes them in.

use std::net::IpAddr;

use crate::Cidr;
use crate::cidr::{canonical, is_local, is_public, sort_upstream};

/// The WireGuard MTU when automatic detection fails (upstream 1.6).
pub const DEFAULT_MTU: u32 = 1420;
/// WireGuard's overhead, subtracted from the default-route interface's MTU.
pub const WIREGUARD_OVERHEAD: u32 = 80;

/// Why no address could be selected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectError {
    /// The main table has no default route.
    #[error("failed to find default route")]
    NoDefaultRoute,
    /// No address survived the filters.
    #[error("no valid IP was found")]
    NoValidIp,
}

/// One interface's addresses (host bits kept, as assigned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddresses {
    /// The interface name.
    pub name: String,
    /// Its addresses.
    pub addresses: Vec<Cidr>,
}

/// Everything IP selection looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscoveryInput {
    /// Every interface with its addresses.
    pub interfaces: Vec<InterfaceAddresses>,
    /// The interface carrying the default route; `None`: there is no default route.
    pub default_interface: Option<String>,
    /// The addresses the hostname resolves to (the hostname itself if it is an IP).
    pub hostname_ips: Vec<IpAddr>,
    /// Interfaces whose addresses are never chosen (the Kilo link, the tunnel, `kube-bridge`).
    pub ignored_interfaces: Vec<String>,
    /// `--internal-cidr`: when not empty, a private IP must lie in one of these.
    pub internal_cidrs: Vec<Cidr>,
}

/// The discovered addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discovered {
    /// The first private address, if any.
    pub private: Option<Cidr>,
    /// The first public address, or the private one when there is no public address.
    pub public: Option<Cidr>,
    /// When `private` is IPv4, an IPv6 address on the same interface (a dual-stack LAN): the
    /// first unique-local one, else the first global one; link-local addresses never count. With
    /// IPv6 `--internal-cidr`s it must lie in one of them.
    pub private6: Option<Cidr>,
}

/// Upstream's `getIP`: candidates from the hostname's addresses (only those assigned to an
/// interface, with that interface's mask), then the default-route interface's addresses, then
/// every interface's; each group split by [`is_public`], local addresses skipped, sorted in
/// upstream's order; addresses of ignored interfaces dropped; private ones outside every
/// internal CIDR dropped. Private: the first private candidate. Public: the first public one,
/// else the private one.
pub fn select_ips(input: &DiscoveryInput) -> Result<Discovered, SelectError> {
    let default = input.default_interface.as_deref().ok_or(SelectError::NoDefaultRoute)?;

    let mut ignore = Vec::new();
    for iface in input.interfaces.iter().filter(|i| input.ignored_interfaces.contains(&i.name)) {
        for a in &iface.addresses {
            ignore.push(*a);
            ignore.push(Cidr::host(a.addr()));
        }
    }

    let mut by_name: Vec<&InterfaceAddresses> = input.interfaces.iter().collect();
    by_name.sort_by(|a, b| a.name.cmp(&b.name));
    let host: Vec<Cidr> = input
        .hostname_ips
        .iter()
        .filter_map(|ip| {
            let ip = canonical(*ip);
            by_name.iter().find_map(|iface| {
                let mut addrs = iface.addresses.clone();
                addrs.sort_by_key(|a| a.to_string());
                addrs.into_iter().find(|a| a.addr() == ip)
            })
        })
        .collect();
    let on_default: Vec<Cidr> = input
        .interfaces
        .iter()
        .filter(|i| i.name == default)
        .flat_map(|i| i.addresses.iter().copied())
        .collect();
    let all: Vec<Cidr> =
        input.interfaces.iter().flat_map(|i| i.addresses.iter().copied()).collect();

    let (mut private, mut public) = (Vec::new(), Vec::new());
    for group in [host, on_default, all] {
        let (mut priv_group, mut pub_group): (Vec<Cidr>, Vec<Cidr>) =
            group.into_iter().filter(|a| !is_local(a.addr())).partition(|a| !is_public(a.addr()));
        sort_upstream(&mut priv_group);
        sort_upstream(&mut pub_group);
        private.extend(priv_group);
        public.extend(pub_group);
    }
    private.retain(|a| !ignore.contains(a));
    public.retain(|a| !ignore.contains(a));
    if !input.internal_cidrs.is_empty() {
        private.retain(|a| input.internal_cidrs.iter().any(|c| c.contains(a.addr())));
    }
    if private.is_empty() && public.is_empty() {
        return Err(SelectError::NoValidIp);
    }
    let private = private.first().copied();
    let private6 = private.filter(|p| p.is_ipv4()).and_then(|p| second_family(input, p, &ignore));
    Ok(Discovered { private, public: public.first().copied().or(private), private6 })
}

/// The IPv6 address beside the IPv4 private IP `private` on its interface (see
/// [`Discovered::private6`]).
fn second_family(input: &DiscoveryInput, private: Cidr, ignore: &[Cidr]) -> Option<Cidr> {
    let iface = input.interfaces.iter().find(|i| i.addresses.contains(&private))?;
    let v6_internal: Vec<&Cidr> = input.internal_cidrs.iter().filter(|c| !c.is_ipv4()).collect();
    let mut candidates: Vec<Cidr> = iface
        .addresses
        .iter()
        .copied()
        .filter(|a| !a.is_ipv4() && !is_local(a.addr()) && !ignore.contains(a))
        .filter(|a| v6_internal.is_empty() || v6_internal.iter().any(|c| c.contains(a.addr())))
        .collect();
    sort_upstream(&mut candidates);
    candidates.iter().find(|a| !is_public(a.addr())).or(candidates.first()).copied()
}

/// The WireGuard MTU for `--mtu=auto` (upstream 9.4): the default-route interface's MTU minus
/// [`WIREGUARD_OVERHEAD`], or [`DEFAULT_MTU`] when it is unknown (or too small).
pub fn auto_mtu(default_interface_mtu: Option<u32>) -> u32 {
    match default_interface_mtu {
        Some(mtu) if mtu > WIREGUARD_OVERHEAD => mtu - WIREGUARD_OVERHEAD,
        _ => DEFAULT_MTU,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn iface(name: &str, addrs: &[&str]) -> InterfaceAddresses {
        InterfaceAddresses { name: name.into(), addresses: addrs.iter().map(|a| c(a)).collect() }
    }

    fn host() -> DiscoveryInput {
        DiscoveryInput {
            interfaces: vec![
                iface("lo", &["127.0.0.1/8", "::1/128"]),
                iface("eth0", &["192.168.0.10/24", "fe80::1/64", "203.0.113.5/24"]),
                iface("eth1", &["10.0.0.5/16"]),
                iface("kilo0", &["10.4.0.1/16"]),
                iface("kube-bridge", &["10.2.0.1/24"]),
            ],
            default_interface: Some("eth0".into()),
            hostname_ips: vec![],
            ignored_interfaces: vec!["kilo0".into(), "kube-bridge".into()],
            internal_cidrs: vec![],
        }
    }

    fn pick(input: &DiscoveryInput) -> (Option<String>, Option<String>) {
        let d = select_ips(input).unwrap();
        (d.private.map(|c| c.to_string()), d.public.map(|c| c.to_string()))
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn selection_follows_upstream_priorities_in_a_table() {
        type Edit = fn(&mut DiscoveryInput);
        let cases: Vec<(&str, Edit, Option<String>, Option<String>)> = vec![
            ("default interface first", |_| {}, s("192.168.0.10/24"), s("203.0.113.5/24")),
            (
                "hostname address wins, with its interface mask",
                |i| i.hostname_ips = vec!["10.0.0.5".parse().unwrap()],
                s("10.0.0.5/16"),
                s("203.0.113.5/24"),
            ),
            (
                "hostname addresses not on an interface are ignored",
                |i| i.hostname_ips = vec!["10.99.0.1".parse().unwrap()],
                s("192.168.0.10/24"),
                s("203.0.113.5/24"),
            ),
            (
                "internal CIDR filters private addresses only",
                |i| i.internal_cidrs = vec!["10.0.0.0/8".parse().unwrap()],
                s("10.0.0.5/16"),
                s("203.0.113.5/24"),
            ),
            (
                "no public address: public is the private one",
                |i| i.interfaces[1].addresses.retain(|a| a.to_string() != "203.0.113.5/24"),
                s("192.168.0.10/24"),
                s("192.168.0.10/24"),
            ),
            (
                "no private address: private is none",
                |i| {
                    i.interfaces[1].addresses.retain(|a| a.to_string() == "203.0.113.5/24");
                    i.interfaces.truncate(2);
                },
                None,
                s("203.0.113.5/24"),
            ),
            (
                "ignored interfaces never win, even through the hostname",
                |i| {
                    i.hostname_ips = vec!["10.4.0.1".parse().unwrap()];
                    i.default_interface = Some("kilo0".into());
                    i.interfaces.truncate(1);
                    i.interfaces.push(iface("kilo0", &["10.4.0.1/16"]));
                    i.interfaces.push(iface("eth9", &["172.20.0.2/16"]));
                },
                s("172.20.0.2/16"),
                s("172.20.0.2/16"),
            ),
            (
                "within a group, upstream's textual order (not numeric)",
                |i| i.interfaces[1].addresses = vec![c("192.168.0.9/24"), c("192.168.0.10/24")],
                s("192.168.0.10/24"),
                s("192.168.0.10/24"),
            ),
            (
                "IPv4 before IPv6; fd00::/16 is private, other IPv6 public",
                |i| {
                    i.interfaces = vec![iface("eth0", &["fd00::5/64", "2001:db8::5/64"])];
                },
                s("fd00::5/64"),
                s("2001:db8::5/64"),
            ),
        ];
        for (name, edit, private, public) in cases {
            let mut input = host();
            edit(&mut input);
            assert_eq!(pick(&input), (private, public), "{name}");
        }
    }

    #[test]
    fn no_default_route_is_an_error() {
        let mut input = host();
        input.default_interface = None;
        assert_eq!(select_ips(&input), Err(SelectError::NoDefaultRoute));
        assert_eq!(SelectError::NoDefaultRoute.to_string(), "failed to find default route");
    }

    #[test]
    fn nothing_usable_is_no_valid_ip() {
        let mut input = host();
        input.interfaces = vec![iface("lo", &["127.0.0.1/8"]), iface("eth0", &["fe80::1/64"])];
        assert_eq!(select_ips(&input), Err(SelectError::NoValidIp));
        assert_eq!(SelectError::NoValidIp.to_string(), "no valid IP was found");
        // An internal CIDR that excludes every private address and no public one: same.
        let mut input = host();
        input.interfaces = vec![iface("eth0", &["192.168.0.10/24"])];
        input.internal_cidrs = vec![c("10.0.0.0/8")];
        assert_eq!(select_ips(&input), Err(SelectError::NoValidIp));
    }

    #[test]
    fn auto_mtu_subtracts_the_wireguard_overhead_or_falls_back() {
        assert_eq!(auto_mtu(Some(1500)), 1420);
        assert_eq!(auto_mtu(Some(9001)), 8921);
        assert_eq!(auto_mtu(None), 1420);
        assert_eq!(auto_mtu(Some(60)), 1420);
    }
}
