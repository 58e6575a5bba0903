//! Host discovery (upstream 9.1, 9.4): the node's private and public IP, and the automatic
//! WireGuard MTU.
//!
//! The selection is a decision, so it lives in `kilo_core::discovery`; this module only gathers
//! the host's addresses over netlink ([`gather`], [`discover_ips`]).

use std::net::IpAddr;

use kilo_core::Cidr;
use kilo_core::routes::MAIN_TABLE;

use crate::error::NetlinkError;
use crate::netlink::{LinkInfo, Netlink};

pub use kilo_core::discovery::{
    DEFAULT_MTU, Discovered, DiscoveryInput, InterfaceAddresses, SelectError, WIREGUARD_OVERHEAD,
    auto_mtu,
};

/// Why the node's IPs could not be discovered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The main table has no default route.
    #[error("failed to find default route")]
    NoDefaultRoute,
    /// The default route has no output interface (a multipath or blackhole default).
    #[error("failed to determine the interface of the default route {dst}")]
    DefaultRouteWithoutInterface {
        /// The default route's destination (`0.0.0.0/0` or `::/0`).
        dst: Cidr,
    },
    /// No address survived the filters.
    #[error("no valid IP was found")]
    NoValidIp,
    /// Reading the host's state failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// The selection failed for a reason this crate does not name (a newer core's).
    #[error(transparent)]
    Select(SelectError),
}

impl From<SelectError> for DiscoveryError {
    fn from(e: SelectError) -> Self {
        match e {
            SelectError::NoDefaultRoute => DiscoveryError::NoDefaultRoute,
            SelectError::NoValidIp => DiscoveryError::NoValidIp,
            other => DiscoveryError::Select(other),
        }
    }
}

/// [`kilo_core::discovery::select_ips`], with this module's error type.
pub fn select_ips(input: &DiscoveryInput) -> Result<Discovered, DiscoveryError> {
    Ok(kilo_core::discovery::select_ips(input)?)
}

/// The interface of the first main-table default route (`ip route show default`, IPv4 then
/// IPv6).
pub async fn default_route_interface(netlink: &Netlink) -> Result<LinkInfo, DiscoveryError> {
    let routes = netlink.routes().await?;
    let default = routes
        .iter()
        .find(|r| r.route.table == MAIN_TABLE && r.route.dst.prefix() == 0)
        .ok_or(DiscoveryError::NoDefaultRoute)?;
    let link = netlink.link_by_index(default.oif).await?;
    link.filter(|_| default.oif != 0)
        .ok_or(DiscoveryError::DefaultRouteWithoutInterface { dst: default.route.dst })
}

/// Detects the WireGuard MTU for `--mtu=auto`: [`auto_mtu`] of the default-route interface;
/// any failure gives [`DEFAULT_MTU`].
pub async fn detect_mtu(netlink: &Netlink) -> u32 {
    auto_mtu(default_route_interface(netlink).await.ok().map(|l| l.mtu))
}

/// The addresses a hostname resolves to: the hostname itself if it is an IP literal, else a
/// DNS lookup (none when the lookup fails, as upstream), bounded and cached by
/// [`crate::resolve::Resolver::agent`] so that an unreachable DNS does not stall every resync.
pub async fn resolve_hostname(hostname: &str) -> Vec<IpAddr> {
    if let Ok(ip) = hostname.parse::<IpAddr>() {
        return vec![ip];
    }
    match crate::resolve::Resolver::agent().resolve(&format!("{hostname}:0")).await.ok_or(()) {
        Ok(addrs) => {
            let mut ips: Vec<IpAddr> = Vec::new();
            for a in addrs {
                if !ips.contains(&a.ip()) {
                    ips.push(a.ip());
                }
            }
            ips
        }
        Err(_) => Vec::new(),
    }
}

/// Reads the host's interfaces, addresses and default route into a [`DiscoveryInput`]
/// (`ip address show; ip route show default`). A missing default route is not an error here:
/// [`select_ips`] reports it.
pub async fn gather(
    netlink: &Netlink,
    hostname_ips: Vec<IpAddr>,
    ignored_interfaces: Vec<String>,
    internal_cidrs: Vec<Cidr>,
) -> Result<DiscoveryInput, DiscoveryError> {
    let links = netlink.links().await?;
    let addresses = netlink.addresses().await?;
    let interfaces = links
        .iter()
        .map(|l| InterfaceAddresses {
            name: l.name.clone(),
            addresses: addresses.iter().filter(|a| a.index == l.index).map(|a| a.cidr).collect(),
        })
        .collect();
    let default_interface = match default_route_interface(netlink).await {
        Ok(link) => Some(link.name),
        Err(DiscoveryError::NoDefaultRoute) => None,
        Err(e) => return Err(e),
    };
    Ok(DiscoveryInput {
        interfaces,
        default_interface,
        hostname_ips,
        ignored_interfaces,
        internal_cidrs,
    })
}

/// Discovers the node's private and public IP (upstream `getIP`): resolves `hostname`, gathers
/// the host's addresses and applies [`select_ips`].
pub async fn discover_ips(
    netlink: &Netlink,
    hostname: &str,
    ignored_interfaces: &[String],
    internal_cidrs: &[Cidr],
) -> Result<Discovered, DiscoveryError> {
    let ips = resolve_hostname(hostname).await;
    let input = gather(netlink, ips, ignored_interfaces.to_vec(), internal_cidrs.to_vec()).await?;
    select_ips(&input)
}
