//! Applies a kilo-core plan to a Linux host: WireGuard, links, addresses, routes, rules and firewall, as minimal diffs.
//!
//! This crate never decides anything: it reads the kernel's state, diffs it against what
//! `kilo-core` computed, applies the minimal changes and reports what it did.
//!
//! - [`netlink::Netlink`]: one rtnetlink connection (optionally opened inside a network
//!   namespace) with link, address, route, rule and IPIP operations.
//! - [`reconcile::RouteReconciler`]: routes and policy rules as a typed diff, applied minimally,
//!   with a route monitor that restores deleted routes at once.
//! - [`discovery`]: private/public IP detection and automatic MTU.
//! - [`cni`]: the CNI conflist pod-CIDR update.
//! - [`wireguard::Device`]: the WireGuard device, kernel (generic netlink) or userspace
//!   (in-process gotatun with a UAPI socket), read back and changed peer by peer.
//! - [`host::Host`]: applies a whole plan as minimal changes and reports them.
//! - [`firewall`]: iptables or native nftables rules with upstream's rule strings.

pub mod cni;
pub mod discovery;
pub mod error;
pub mod firewall;
pub mod host;
pub mod netlink;
pub mod reconcile;
pub mod resolve;

pub mod wireguard;

pub use error::NetlinkError;
pub use netlink::Netlink;
