//! Routes and policy rules, as data (upstream-kilo.md 7). Devices are named, not indexed, so that
//! the core stays free of the kernel; `kilo-net-linux` resolves names to indexes.

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
