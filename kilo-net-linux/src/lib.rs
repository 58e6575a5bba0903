//! Applies a kilo-core plan to a Linux host: WireGuard, links, addresses, routes, rules and firewall, as minimal diffs.

/// Firewall rules: iptables (binaries) and native nftables (netlink), with upstream's controller semantics.
pub mod firewall;
pub mod wireguard;
