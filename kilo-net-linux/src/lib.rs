//! Applies a kilo-core plan to a Linux host: WireGuard, links, addresses, routes, rules and firewall, as minimal diffs.

pub mod wireguard;
