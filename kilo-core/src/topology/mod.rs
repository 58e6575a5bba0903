//! The topology: nodes grouped into segments with one leader each, WireGuard addresses allocated,
//! allowed IPs computed, exactly as upstream's `NewTopology`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::{Cidr, Endpoint, Granularity, Key, Peer, PrivateKey};

mod build;
mod conf;
mod filter;
pub mod guard;

pub use build::{LOCATION_PREFIX, NODE_PREFIX, deduplicate_peer_ips, find_leader, segment_key};
pub use conf::keepalive_secs;
pub use filter::Filtered;

/// Why a topology cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    /// The local node is not among the nodes.
    #[error("the local node {hostname:?} is not among the {nodes} nodes of the mesh")]
    UnknownNode {
        /// The local node's name as given.
        hostname: String,
        /// How many nodes there are.
        nodes: usize,
    },
    /// Two nodes have the same name.
    #[error("the node name {name:?} appears more than once")]
    DuplicateNode {
        /// The repeated name.
        name: String,
    },
    /// Two peers have the same name.
    #[error("the peer name {name:?} appears more than once")]
    DuplicatePeer {
        /// The repeated name.
        name: String,
    },
    /// The WireGuard subnet has fewer addresses than there are segments (contract C5).
    #[error(
        "WireGuard subnet {subnet} is too small: it has {capacity} usable addresses but the mesh has {segments} segments"
    )]
    SubnetFull {
        /// The WireGuard subnet.
        subnet: Cidr,
        /// How many addresses it can hand out.
        capacity: u128,
        /// How many segments need one.
        segments: usize,
    },
}

/// One node's contribution to its segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The node's name.
    pub name: String,
    /// The node's pod CIDRs (upstream `cidrs[i]`; upstream has at most one).
    pub subnets: Vec<Cidr>,
    /// The node's private IP with its interface mask (upstream `privateIPs`), if it has one.
    pub internal_ip: Option<Cidr>,
    /// The node's IPv6 private IP on a dual-stack LAN (see [`crate::Node::internal_ip6`]).
    pub internal_ip6: Option<Cidr>,
    /// The node's CNI compatibility IP (cilium), if any.
    pub cni_compatibility_ip: Option<Cidr>,
}

/// A group of nodes that appears to the rest of the mesh as one WireGuard peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The segment key: `location:<location>` or `node:<name>`.
    pub location: String,
    /// In `cross` granularity, `location:<node location>`; otherwise `None`.
    pub node_location: Option<String>,
    /// Members, sorted by name.
    pub members: Vec<Member>,
    /// Index of the leader in `members`.
    pub leader: usize,
    /// The leader's public key.
    pub key: Key,
    /// The leader's endpoint.
    pub endpoint: Option<Endpoint>,
    /// The leader's own `persistent-keepalive` (gates NAT endpoint substitution).
    pub persistent_keepalive: Duration,
    /// Per member `[subnets…, internal IP/32, IPv6 internal IP/128]`, then the segment's
    /// WireGuard IP /32 and, in a dual-stack mesh, its IPv6 WireGuard IP /128 (upstream order,
    /// extended).
    pub allowed_ips: Vec<Cidr>,
    /// The segment's WireGuard IP (in the mesh's first range: IPv4 in a dual-stack mesh).
    pub wireguard_ip: Option<IpAddr>,
    /// The segment's IPv6 WireGuard IP in a dual-stack mesh.
    pub wireguard_ip6: Option<IpAddr>,
    /// Allowed-location IPs after de-duplication, filtering and sorting by CIDR text.
    pub allowed_location_ips: Vec<Cidr>,
    /// How the leader was chosen (see [`crate::health`]).
    pub election: crate::health::Election,
}

/// Inputs to [`Topology::new`].
#[derive(Debug, Clone)]
pub struct TopologyInput<'a> {
    /// The nodes (the agent passes ready nodes only).
    pub nodes: &'a [crate::Node],
    /// The peers (ready peers only).
    pub peers: &'a [Peer],
    /// How nodes are grouped.
    pub granularity: Granularity,
    /// The local node's name; it must be among `nodes`.
    pub hostname: &'a str,
    /// The local WireGuard listen port.
    pub port: u16,
    /// The local private key (zero for offline tools such as `kgctl`).
    pub key: PrivateKey,
    /// The WireGuard (Kilo) subnet: the only one in a single-stack mesh, the IPv4 one in a
    /// dual-stack mesh.
    pub subnet: Cidr,
    /// The IPv6 WireGuard subnet of a dual-stack mesh (`subnet` is then IPv4).
    pub subnet6: Option<Cidr>,
    /// Service CIDRs (excluded from NAT).
    pub service_cidrs: &'a [Cidr],
    /// The local node's persistent keepalive.
    pub persistent_keepalive: Duration,
}

/// The mesh seen from one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The local private key.
    pub key: PrivateKey,
    /// The local listen port.
    pub port: u16,
    /// The local segment key.
    pub location: String,
    /// In `cross` granularity, the local node's `location:<location>`.
    pub node_location: Option<String>,
    /// Whether the local node leads its segment (always true in `cross`).
    pub leader: bool,
    /// The local node's persistent keepalive (applied to every WireGuard peer, contract C10).
    pub persistent_keepalive: Duration,
    /// The local node's private IP.
    pub private_ip: Option<Cidr>,
    /// The local node's IPv6 private IP on a dual-stack LAN.
    pub private_ip6: Option<Cidr>,
    /// The local node's pod CIDRs.
    pub subnets: Vec<Cidr>,
    /// The local WireGuard address with the subnet's prefix if leader, else the WireGuard subnet.
    pub wireguard_cidr: Cidr,
    /// The same for the IPv6 range of a dual-stack mesh.
    pub wireguard_cidr6: Option<Cidr>,
    /// Segments sorted by key.
    pub segments: Vec<Segment>,
    /// Peers sorted by name, allowed IPs de-duplicated.
    pub peers: Vec<Peer>,
    /// NAT-discovered endpoints by public key (local node's first, then first writer wins).
    pub discovered_endpoints: BTreeMap<Key, SocketAddr>,
    /// Service CIDRs.
    pub service_cidrs: Vec<Cidr>,
    /// Human-readable warnings produced while building (dropped allowed-location IPs).
    pub warnings: Vec<String>,
}
