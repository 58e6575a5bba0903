//! Routes and policy rules, as data. Devices are named, not indexed, so that
//! the core stays free of the kernel; `kilo-net-linux` resolves names to indexes.

use std::fmt;
use std::net::IpAddr;

use crate::Cidr;

/// The main routing table.
pub const MAIN_TABLE: u32 = 254;
/// Kilo's policy routing table.
pub const KILO_TABLE: u32 = 1107;

/// A route, always `proto static` (as `ip route replace DST [via GW] dev DEV [src SRC] [table T] [onlink] proto static`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Route {
    /// Destination (peer allowed IPs are masked to their network, contract C17).
    pub dst: Cidr,
    /// Gateway.
    pub via: Option<IpAddr>,
    /// Output device name.
    pub dev: String,
    /// Preferred source address.
    pub src: Option<IpAddr>,
    /// Routing table ([`MAIN_TABLE`] or [`KILO_TABLE`]).
    pub table: u32,
    /// Whether the gateway is on-link (`RTNH_F_ONLINK`).
    pub onlink: bool,
}

/// A policy routing rule (as `ip rule add [from SRC] [to DST] [iif IIF] lookup TABLE`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Rule {
    /// Source selector.
    pub from: Option<Cidr>,
    /// Destination selector.
    pub to: Option<Cidr>,
    /// Input interface selector.
    pub iif: Option<String>,
    /// The table to look up.
    pub table: u32,
}

/// The interface names a node's routes use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interfaces {
    /// The WireGuard interface (`kilo0`).
    pub kilo: String,
    /// The interface carrying the private IP (`eth0`).
    pub private: String,
    /// The encapsulation tunnel (`tunl0`, `flannel.1`, `cilium_tunl`).
    pub tunnel: String,
}

/// Kilo's own IPIP tunnel device (the kernel's fallback `tunl0`).
pub const IPIP_TUNNEL: &str = "tunl0";

/// The bridge of Kilo's CNI configuration (upstream's `kube-bridge`).
pub const CNI_BRIDGE: &str = "kube-bridge";

impl Interfaces {
    /// An agent's interfaces: `kilo` (`--interface`), `private` (the interface carrying the
    /// private IP; `eth0` when there is none), and the tunnel traffic is encapsulated through:
    /// flannel's `flannel.1` in flannel compatibility, else Kilo's own [`IPIP_TUNNEL`].
    pub fn of_agent(
        kilo: &str,
        private: Option<String>,
        compatibility: Option<crate::Compatibility>,
    ) -> Interfaces {
        let tunnel = match compatibility {
            Some(crate::Compatibility::Flannel) => "flannel.1",
            _ => IPIP_TUNNEL,
        };
        Interfaces {
            kilo: kilo.to_string(),
            private: private.unwrap_or_else(|| "eth0".to_string()),
            tunnel: tunnel.to_string(),
        }
    }

    /// The interfaces whose addresses are never a node's own (upstream 9.1): the WireGuard
    /// interface `kilo`, Kilo's IPIP tunnel and the CNI bridge.
    pub fn ignored_by_discovery(kilo: &str) -> Vec<String> {
        vec![kilo.to_string(), IPIP_TUNNEL.to_string(), CNI_BRIDGE.to_string()]
    }
}

mod build;
mod diff;
mod encap;

pub use diff::{
    InstalledRoute, InstalledRule, KILO_REALM, Ownership, PROTO_STATIC, RouteDiff, RouteKey,
    RouteKind, RuleKey, diff,
};
pub use encap::{Encapsulator, EncapsulatorConfig};

impl Route {
    /// The route's identity for diffing (contract C7), as text: [`RouteKey`] (type, masked
    /// destination, gateway, device, source, table; not `onlink`).
    pub fn key(&self) -> String {
        RouteKey::of(self).to_string()
    }
}

impl Rule {
    /// The rule's identity for diffing, as text: [`RuleKey`] (selectors and table).
    pub fn key(&self) -> String {
        RuleKey::of(self).to_string()
    }
}

fn table_name(table: u32) -> String {
    if table == MAIN_TABLE { "main".to_string() } else { table.to_string() }
}

impl fmt::Display for Route {
    /// `ip route` syntax: `DST [via GW] dev DEV [src SRC] [table T] [onlink]` (the main table is
    /// not printed; every route is `proto static`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.dst)?;
        if let Some(via) = self.via {
            write!(f, " via {via}")?;
        }
        write!(f, " dev {}", self.dev)?;
        if let Some(src) = self.src {
            write!(f, " src {src}")?;
        }
        if self.table != MAIN_TABLE {
            write!(f, " table {}", table_name(self.table))?;
        }
        if self.onlink {
            f.write_str(" onlink")?;
        }
        Ok(())
    }
}

impl fmt::Display for Rule {
    /// `ip rule` syntax: `[from SRC] [to DST] [iif IIF] lookup TABLE` (`from all` when there is
    /// no selector at all).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(from) = self.from {
            parts.push(format!("from {from}"));
        }
        if let Some(to) = self.to {
            parts.push(format!("to {to}"));
        }
        if let Some(iif) = &self.iif {
            parts.push(format!("iif {iif}"));
        }
        if parts.is_empty() {
            parts.push("from all".to_string());
        }
        parts.push(format!("lookup {}", table_name(self.table)));
        f.write_str(&parts.join(" "))
    }
}
