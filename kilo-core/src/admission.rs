//! Peer admission: the rules that keep a Peer from hijacking traffic, as pure functions over the
//! candidate Peer and the cluster it would join. One rule set, rendered both as the admission
//! webhook's rejection and as a `kgctl validate` finding (same [`Refusal`], same `Display`).
//!
//! Every rule holds in every address family: an IPv6 allowed IP in an IPv4-only cluster is checked
//! just the same. Allowed IPs are compared by their masked network (`10.5.0.1/24` is
//! `10.5.0.0/24`), as WireGuard and the kernel use them.
//!
//! ```
//! use kilo_core::admission::{Cluster, Refusal, check_peer};
//! use kilo_core::{Key, Peer};
//!
//! let peer = Peer {
//!     name: "laptop".into(),
//!     allowed_ips: vec!["::/0".parse().unwrap()],
//!     public_key: Key::from_bytes([7; 32]),
//!     ..Peer::default()
//! };
//! let cluster = Cluster { nodes: &[], peers: &[], wireguard_subnets: &[], service_cidrs: &[] };
//! let refusal = check_peer(&peer, &cluster).unwrap_err();
//! assert!(matches!(refusal, Refusal::DefaultRoute { .. }));
//! assert_eq!(
//!     refusal.to_string(),
//!     "allowed IP ::/0 is a default route: every node would send its IPv6 traffic to this peer"
//! );
//! ```

use std::collections::HashMap;
use std::net::IpAddr;

use crate::peer_spec::{PeerSpec, PeerSpecError, peer_from_spec, validate};
use crate::{Cidr, Key, Node, Peer};

/// The cluster a Peer would join: what its allowed IPs and key must stay clear of.
#[derive(Debug, Clone, Copy)]
pub struct Cluster<'a> {
    /// Every node (ready or not): their pod subnets, internal IPs, endpoint IPs, allowed location
    /// IPs, WireGuard IPs and keys.
    pub nodes: &'a [Node],
    /// The other Peers. A Peer with the candidate's name is its own previous version (an
    /// update) and is ignored.
    pub peers: &'a [Peer],
    /// The WireGuard subnet(s). The networks of the nodes' published WireGuard IPs are checked
    /// too.
    pub wireguard_subnets: &'a [Cidr],
    /// The service CIDRs.
    pub service_cidrs: &'a [Cidr],
}

/// Why a Peer may not join the cluster. The message names the allowed IP and what it would take;
/// [`Refusal::hint`] says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Upstream's `Validate()` fails; the message is upstream's.
    #[error(transparent)]
    Invalid(#[from] PeerSpecError),
    /// An allowed IP with prefix length 0 (`0.0.0.0/0`, `::/0`): the route would replace every
    /// node's default route in that family.
    #[error(
        "allowed IP {allowed_ip} is a default route: every node would send its {} traffic to this peer",
        family(allowed_ip)
    )]
    DefaultRoute {
        /// The Peer's allowed IP.
        allowed_ip: Cidr,
    },
    /// An allowed IP overlaps a node's pod subnet.
    #[error(
        "allowed IP {allowed_ip} overlaps the pod subnet {subnet} of node {node:?}: the peer would take that traffic"
    )]
    PodSubnet {
        /// The Peer's allowed IP.
        allowed_ip: Cidr,
        /// The node.
        node: String,
        /// The node's pod subnet.
        subnet: Cidr,
    },
    /// An allowed IP contains a node's internal IP.
    #[error(
        "allowed IP {allowed_ip} covers the internal IP {internal_ip} of node {node:?}: the peer would take that node's traffic"
    )]
    InternalIp {
        /// The Peer's allowed IP.
        allowed_ip: Cidr,
        /// The node.
        node: String,
        /// The node's internal IP.
        internal_ip: IpAddr,
    },
    /// An allowed IP contains a node's endpoint IP (its `endpoint`, or an endpoint another node
    /// discovered for it): the node's WireGuard traffic would be sent into the tunnel.
    #[error(
        "allowed IP {allowed_ip} covers the endpoint IP {endpoint} of node {node:?}: the peer would take the node's WireGuard traffic"
    )]
    NodeEndpoint {
        /// The Peer's allowed IP.
        allowed_ip: Cidr,
        /// The node.
        node: String,
        /// The node's endpoint IP.
        endpoint: IpAddr,
    },
    /// An allowed IP overlaps a node's `allowed-location-ips`.
    #[error(
        "allowed IP {allowed_ip} overlaps the allowed location IP {location_ip} of node {node:?}: the peer would take that traffic"
    )]
    AllowedLocationIp {
        /// The Peer's allowed IP.
        allowed_ip: Cidr,
        /// The node.
        node: String,
        /// The node's allowed location IP.
        location_ip: Cidr,
    },
    /// An allowed IP overlaps a service CIDR.
    #[error(
        "allowed IP {allowed_ip} overlaps the service CIDR {service_cidr}: the peer would take that traffic"
    )]
    ServiceCidr {
        /// The Peer's allowed IP.
        allowed_ip: Cidr,
        /// The service CIDR.
        service_cidr: Cidr,
    },
    /// An allowed IP overlaps the WireGuard subnet.
    #[error(
        "allowed IP {allowed_ip} overlaps the WireGuard subnet {subnet}: the peer would take the mesh's WireGuard traffic"
    )]
    WireGuardSubnet {
        /// The Peer's allowed IP.
        allowed_ip: Cidr,
        /// The WireGuard subnet.
        subnet: Cidr,
    },
    /// An allowed IP overlaps another Peer's.
    #[error(
        "allowed IP {allowed_ip} overlaps allowed IP {other} of peer {peer:?}: WireGuard gives a prefix to one peer only"
    )]
    OtherPeer {
        /// The Peer's allowed IP.
        allowed_ip: Cidr,
        /// The other Peer.
        peer: String,
        /// The other Peer's allowed IP.
        other: Cidr,
    },
    /// The public key is a node's.
    #[error("public key {key} is already used by node {node:?}")]
    KeyOfNode {
        /// The key.
        key: Key,
        /// The node.
        node: String,
    },
    /// The public key is another Peer's.
    #[error("public key {key} is already used by peer {peer:?}")]
    KeyOfPeer {
        /// The key.
        key: Key,
        /// The other Peer.
        peer: String,
    },
}

fn family(cidr: &Cidr) -> &'static str {
    if cidr.is_ipv4() { "IPv4" } else { "IPv6" }
}

impl Refusal {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            Refusal::Invalid(_) => "fix the Peer's spec",
            Refusal::DefaultRoute { .. } => {
                "give the peer only the networks it serves, never a default route"
            }
            Refusal::WireGuardSubnet { .. } => {
                "choose allowed IPs outside the mesh's WireGuard subnet"
            }
            Refusal::OtherPeer { .. } => "give each peer distinct allowed IPs",
            Refusal::KeyOfNode { .. } | Refusal::KeyOfPeer { .. } => {
                "every node and peer needs its own key pair (wg genkey | wg pubkey)"
            }
            _ => "remove the overlapping allowed IP from the peer",
        }
    }

    /// The node the refusal names, if any.
    pub fn node(&self) -> Option<&str> {
        match self {
            Refusal::PodSubnet { node, .. }
            | Refusal::InternalIp { node, .. }
            | Refusal::NodeEndpoint { node, .. }
            | Refusal::AllowedLocationIp { node, .. }
            | Refusal::KeyOfNode { node, .. } => Some(node),
            _ => None,
        }
    }

    /// The other Peer the refusal names, if any.
    pub fn peer(&self) -> Option<&str> {
        match self {
            Refusal::OtherPeer { peer, .. } | Refusal::KeyOfPeer { peer, .. } => Some(peer),
            _ => None,
        }
    }
}

/// Whether the Peer `name` with `spec` may join `cluster`: upstream's `Validate()` first (its
/// message wins), then [`check_peer`] on the Peer as the agents read it.
pub fn check_spec(name: &str, spec: &PeerSpec, cluster: &Cluster<'_>) -> Result<(), Refusal> {
    validate(spec)?;
    check_peer(&peer_from_spec(name, spec), cluster)
}

/// Whether `peer` may join `cluster`: the first of [`refusals`], if any.
pub fn check_peer(peer: &Peer, cluster: &Cluster<'_>) -> Result<(), Refusal> {
    match refusals(peer, cluster).into_iter().next() {
        Some(refusal) => Err(refusal),
        None => Ok(()),
    }
}

/// Every reason `peer` may not join `cluster`, allowed IP by allowed IP (in the Peer's order),
/// then its key. For each allowed IP: a default route is reported alone (it overlaps
/// everything); otherwise every overlap with a node's pod subnets, internal IP, endpoint IPs and
/// allowed location IPs, the service CIDRs, the WireGuard subnets, and the first overlapping
/// allowed IP of each other Peer. Then the key, if a node's or another Peer's.
pub fn refusals(peer: &Peer, cluster: &Cluster<'_>) -> Vec<Refusal> {
    ClusterIndex::new(*cluster).refusals(peer)
}

/// [`refusals`] for many Peers against the same nodes (`kgctl validate` checks every Peer of the
/// mesh): the nodes' addresses and networks are sorted once, so that the nodes an allowed IP
/// touches are found by binary search instead of by a scan of every node (and of every node's
/// [`endpoint_ips`], each a scan of every node). Same refusals, in the same order.
#[derive(Debug)]
pub struct ClusterIndex<'a> {
    cluster: Cluster<'a>,
    /// The nodes' internal and endpoint IPs, sorted, and the discovered endpoints by key.
    takeover: Takeover<'a>,
    /// Every node's pod subnets and allowed location IPs as (the [`sort_key`] of the network's
    /// address, prefix length, node index), sorted.
    networks: Vec<((bool, u128), u8, usize)>,
    /// The (family, prefix length) pairs in `networks`, sorted.
    prefixes: Vec<(bool, u8)>,
    /// [`wireguard_networks`] of the cluster.
    wireguard: Vec<Cidr>,
}

impl<'a> ClusterIndex<'a> {
    /// Indexes `cluster`'s nodes and WireGuard networks.
    pub fn new(cluster: Cluster<'a>) -> Self {
        let mut networks = Vec::new();
        for (i, node) in cluster.nodes.iter().enumerate() {
            for net in node.subnets.iter().chain(&node.allowed_location_ips).map(Cidr::network) {
                networks.push((sort_key(net.addr()), net.prefix(), i));
            }
        }
        networks.sort_unstable();
        let mut prefixes: Vec<(bool, u8)> =
            networks.iter().map(|&((family, _), prefix, _)| (family, prefix)).collect();
        prefixes.sort_unstable();
        prefixes.dedup();
        ClusterIndex {
            cluster,
            takeover: Takeover::new(cluster.nodes),
            networks,
            prefixes,
            wireguard: wireguard_networks(&cluster),
        }
    }

    /// Checks against these other Peers from now on instead of the cluster's (`kgctl validate`
    /// checks each Peer against the Peers listed before it).
    pub fn set_peers(&mut self, peers: &'a [Peer]) {
        self.cluster.peers = peers;
    }

    /// [`refusals`] of `peer` in the indexed cluster.
    pub fn refusals(&self, peer: &Peer) -> Vec<Refusal> {
        let cluster = &self.cluster;
        let mut out = Vec::new();
        let others = || cluster.peers.iter().filter(|p| p.name != peer.name);
        for &allowed_ip in &peer.allowed_ips {
            let net = allowed_ip.network();
            if net.prefix() == 0 {
                out.push(Refusal::DefaultRoute { allowed_ip });
                continue;
            }
            for i in self.nodes_touched(net) {
                self.node_refusals(allowed_ip, &cluster.nodes[i], &mut out);
            }
            for &service_cidr in cluster.service_cidrs {
                if service_cidr.network().overlaps(&net) {
                    out.push(Refusal::ServiceCidr { allowed_ip, service_cidr });
                }
            }
            for &subnet in &self.wireguard {
                if subnet.overlaps(&net) {
                    out.push(Refusal::WireGuardSubnet { allowed_ip, subnet });
                }
            }
            for other in others() {
                if let Some(&o) = other.allowed_ips.iter().find(|o| o.network().overlaps(&net)) {
                    let peer = other.name.clone();
                    out.push(Refusal::OtherPeer { allowed_ip, peer, other: o });
                }
            }
        }
        let key = peer.public_key;
        if !key.is_zero() {
            for node in cluster.nodes.iter().filter(|n| n.key == key) {
                out.push(Refusal::KeyOfNode { key, node: node.name.clone() });
            }
            for other in others().filter(|p| p.public_key == key) {
                out.push(Refusal::KeyOfPeer { key, peer: other.name.clone() });
            }
        }
        out
    }

    /// The indices, ascending and once each, of the nodes that may have an address or network
    /// the network `net` touches: every node that does, and possibly a few that do not (the
    /// exact checks are [`ClusterIndex::node_refusals`]'). Two CIDR networks overlap when one
    /// holds the other's first address: a node's network starting inside `net`, or one of the
    /// networks that hold `net`'s first address (one per prefix length).
    fn nodes_touched(&self, net: Cidr) -> Vec<usize> {
        let (family, first, last) = span(net);
        let mut found: Vec<usize> = self.takeover.addresses.within(family, first, last).collect();
        let start = self.networks.partition_point(|(k, _, _)| *k < (family, first));
        let end = self.networks.partition_point(|(k, _, _)| *k <= (family, last));
        found.extend(self.networks[start..end].iter().map(|&(_, _, i)| i));
        let max = if family { 32 } else { 128 };
        for &(_, prefix) in self.prefixes.iter().filter(|(f, p)| *f == family && *p < net.prefix())
        {
            let holder = ((family, first & !low_bits(max - u32::from(prefix))), prefix);
            let start = self.networks.partition_point(|(k, p, _)| (*k, *p) < holder);
            let end = self.networks.partition_point(|(k, p, _)| (*k, *p) <= holder);
            found.extend(self.networks[start..end].iter().map(|&(_, _, i)| i));
        }
        found.sort_unstable();
        found.dedup();
        found
    }

    /// The overlaps of one allowed IP with one node's addresses.
    fn node_refusals(&self, allowed_ip: Cidr, node: &Node, out: &mut Vec<Refusal>) {
        let net = allowed_ip.network();
        let name = || node.name.clone();
        for &subnet in node.subnets.iter().filter(|s| s.network().overlaps(&net)) {
            out.push(Refusal::PodSubnet { allowed_ip, node: name(), subnet });
        }
        for internal_ip in node.internal_ips().map(|c| c.addr()).filter(|ip| net.contains(*ip)) {
            out.push(Refusal::InternalIp { allowed_ip, node: name(), internal_ip });
        }
        for endpoint in self.takeover.endpoint_ips(node) {
            if net.contains(endpoint) {
                out.push(Refusal::NodeEndpoint { allowed_ip, node: name(), endpoint });
            }
        }
        for &location_ip in node.allowed_location_ips.iter().filter(|l| l.network().overlaps(&net))
        {
            out.push(Refusal::AllowedLocationIp { allowed_ip, node: name(), location_ip });
        }
    }
}

/// The addresses of the network `net` as (is IPv4, first, last), in [`sort_key`] terms.
fn span(net: Cidr) -> (bool, u128, u128) {
    let (family, first) = sort_key(net.addr());
    (family, first, first | low_bits(u32::from(net.host_bits())))
}

/// A mask of the `host` lowest bits.
fn low_bits(host: u32) -> u128 {
    if host >= 128 { u128::MAX } else { (1u128 << host) - 1 }
}

/// Whether routing `allowed_ip` into the mesh would take over a node's own connectivity: a
/// default route ([`Refusal::DefaultRoute`]), or a network holding a node's internal IP or
/// endpoint IP ([`Refusal::InternalIp`], [`Refusal::NodeEndpoint`]). The agent leaves such an
/// allowed IP out of its plan whatever admission said (see `topology::guard`).
pub fn takeover(allowed_ip: Cidr, nodes: &[Node]) -> Option<Refusal> {
    Takeover::new(nodes).check(allowed_ip)
}

/// [`takeover`] for many allowed IPs against the same nodes: every node's internal and endpoint
/// IPs (discovered ones included) are sorted once, so that one check is a binary search, not a
/// scan of every node's [`endpoint_ips`] (each of which looks through every node).
#[derive(Debug)]
pub struct Takeover<'a> {
    nodes: &'a [Node],
    /// The endpoints discovered for each key, in node order.
    discovered: HashMap<Key, Vec<IpAddr>>,
    /// Every node's internal IP and endpoint IPs with their node's index, sorted.
    addresses: Addresses,
}

/// Addresses tagged with a node index, sorted by (address, index), IPv4 and IPv6 apart: the
/// agent builds this on every topology, and sorting small integer keys is several times cheaper
/// than sorting `((bool, u128), usize)` tuples (it was most of the guard's cost at 10,000 nodes).
#[derive(Debug, Default)]
struct Addresses {
    /// IPv4: the address in the high 32 bits, the node index in the low 32 (one `u64` sorts
    /// fastest).
    v4: Vec<u64>,
    v6: Vec<(u128, usize)>,
}

impl Addresses {
    /// Adds `ip` (after [`crate::cidr::canonical`], as [`sort_key`]) for node `index`.
    fn push(&mut self, ip: IpAddr, index: usize) {
        match crate::cidr::canonical(ip) {
            IpAddr::V4(v4) => {
                // A slice of 2^32 nodes would need terabytes.
                let index = u32::try_from(index).expect("fewer than 2^32 nodes");
                self.v4.push(u64::from(u32::from(v4)) << 32 | u64::from(index));
            }
            IpAddr::V6(v6) => self.v6.push((u128::from(v6), index)),
        }
    }

    fn sort(&mut self) {
        self.v4.sort_unstable();
        self.v6.sort_unstable();
    }

    /// The node indices of the addresses from `first` to `last` (inclusive, [`sort_key`] terms)
    /// in the family `v4` (true for IPv4), in address order.
    fn within(&self, v4: bool, first: u128, last: u128) -> impl Iterator<Item = usize> + '_ {
        let (four, six) = if v4 {
            // IPv4 spans come from `sort_key`, so they fit in 32 bits.
            let clamp = |n: u128| u64::try_from(n).unwrap_or(u64::MAX).min(u64::from(u32::MAX));
            let (first, last) = (clamp(first), clamp(last));
            let start = self.v4.partition_point(|&e| e >> 32 < first);
            let end = self.v4.partition_point(|&e| e >> 32 <= last).max(start);
            (&self.v4[start..end], &[][..])
        } else {
            let start = self.v6.partition_point(|&(a, _)| a < first);
            let end = self.v6.partition_point(|&(a, _)| a <= last).max(start);
            (&[][..], &self.v6[start..end])
        };
        // The low 32 bits of an IPv4 entry are its node index.
        let index = |e: u64| (e & u64::from(u32::MAX)) as usize;
        four.iter().map(move |&e| index(e)).chain(six.iter().map(|&(_, i)| i))
    }
}

/// An address as (is IPv4, integer), after [`crate::cidr::canonical`] (as [`Cidr::contains`]
/// reads it).
fn sort_key(ip: IpAddr) -> (bool, u128) {
    match crate::cidr::canonical(ip) {
        IpAddr::V4(v4) => (true, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (false, u128::from(v6)),
    }
}

impl<'a> Takeover<'a> {
    /// Gathers and sorts what [`Takeover::check`] compares allowed IPs with.
    pub fn new(nodes: &'a [Node]) -> Self {
        Self::build(nodes, [Some((0, u128::MAX)); 2])
    }

    /// [`Takeover::new`] for checking the allowed IPs in `scope` only (the guard checks the
    /// Peers' allowed IPs): node addresses outside the span of every network in `scope`, per
    /// family, cannot be covered by any of them and are not indexed (node addresses usually lie
    /// apart from the Peers' networks, and sorting them was most of the guard's cost). For an
    /// allowed IP in `scope`, [`Takeover::check`] answers as after [`Takeover::new`]; for other
    /// allowed IPs it may miss a covered node.
    pub fn for_allowed_ips(nodes: &'a [Node], scope: &[Cidr]) -> Self {
        // Per family (IPv4, IPv6): the lowest first and the highest last address in `scope`.
        let mut hull: [Option<(u128, u128)>; 2] = [None; 2];
        for net in scope.iter().map(Cidr::network).filter(|n| n.prefix() > 0) {
            let (v4, first, last) = span(net);
            let slot = &mut hull[usize::from(!v4)];
            *slot = Some(slot.map_or((first, last), |(lo, hi)| (lo.min(first), hi.max(last))));
        }
        Self::build(nodes, hull)
    }

    /// Indexes the nodes' addresses inside `hull` (per family, IPv4 then IPv6, in
    /// [`sort_key`] terms; `None` for none).
    fn build(nodes: &'a [Node], hull: [Option<(u128, u128)>; 2]) -> Self {
        let mut discovered: HashMap<Key, Vec<IpAddr>> = HashMap::new();
        for map in nodes.iter().filter_map(|n| n.discovered_endpoints.as_ref()) {
            for (key, addr) in map {
                discovered.entry(*key).or_default().push(crate::cidr::canonical(addr.ip()));
            }
        }
        let mut addresses = Addresses::default();
        let mut push = |ip: IpAddr, i: usize| {
            let (v4, n) = sort_key(ip);
            if hull[usize::from(!v4)].is_some_and(|(lo, hi)| (lo..=hi).contains(&n)) {
                addresses.push(ip, i);
            }
        };
        for (i, node) in nodes.iter().enumerate() {
            for internal in node.internal_ips() {
                push(internal.addr(), i);
            }
            if let Some(ip) = node.endpoint.as_ref().and_then(|e| e.ip()) {
                push(ip, i);
            }
            if !node.key.is_zero() && !discovered.is_empty() {
                for ip in discovered.get(&node.key).into_iter().flatten() {
                    push(*ip, i);
                }
            }
        }
        addresses.sort();
        Takeover { nodes, discovered, addresses }
    }

    /// As [`takeover`]: the default route, or the first node, in order, whose internal IP or one
    /// of whose endpoint IPs ([`endpoint_ips`] order) `allowed_ip` covers.
    pub fn check(&self, allowed_ip: Cidr) -> Option<Refusal> {
        let net = allowed_ip.network();
        if net.prefix() == 0 {
            return Some(Refusal::DefaultRoute { allowed_ip });
        }
        let (family, first, last) = span(net);
        let index = self.addresses.within(family, first, last).min()?;
        self.node_refusal(allowed_ip, &self.nodes[index])
    }

    /// [`endpoint_ips`] of `node` (one of the indexed nodes), from the endpoints gathered once.
    fn endpoint_ips(&self, node: &Node) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> =
            node.endpoint.as_ref().and_then(|e| e.ip()).into_iter().collect();
        if !node.key.is_zero() {
            for &ip in self.discovered.get(&node.key).into_iter().flatten() {
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
        ips
    }

    /// What `allowed_ip` takes of `node`: its internal IP, else its first endpoint IP covered.
    fn node_refusal(&self, allowed_ip: Cidr, node: &Node) -> Option<Refusal> {
        let net = allowed_ip.network();
        let name = || node.name.clone();
        if let Some(internal_ip) =
            node.internal_ips().map(|c| c.addr()).find(|ip| net.contains(*ip))
        {
            return Some(Refusal::InternalIp { allowed_ip, node: name(), internal_ip });
        }
        let own = node.endpoint.as_ref().and_then(|e| e.ip());
        let discovered = match node.key.is_zero() {
            true => None,
            false => self.discovered.get(&node.key),
        };
        // The first covered IP of endpoint_ips(node) (its de-duplication cannot change which
        // comes first).
        own.into_iter()
            .chain(discovered.into_iter().flatten().copied())
            .find(|ip| net.contains(*ip))
            .map(|endpoint| Refusal::NodeEndpoint { allowed_ip, node: name(), endpoint })
    }
}

/// A node's underlay endpoint IPs: the IP of its endpoint (when it is one, or a resolved DNS
/// name), and every endpoint any node discovered for its key; de-duplicated, in that order.
pub fn endpoint_ips(node: &Node, nodes: &[Node]) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = node.endpoint.as_ref().and_then(|e| e.ip()).into_iter().collect();
    if !node.key.is_zero() {
        let discovered = nodes
            .iter()
            .filter_map(|n| n.discovered_endpoints.as_ref()?.get(&node.key))
            .map(|addr| crate::cidr::canonical(addr.ip()));
        for ip in discovered {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
    }
    ips
}

/// The WireGuard networks: the given subnets (masked), then the network of every node's
/// published WireGuard IP that none of them covers; de-duplicated.
pub fn wireguard_networks(cluster: &Cluster<'_>) -> Vec<Cidr> {
    let mut out: Vec<Cidr> = Vec::new();
    for subnet in cluster.wireguard_subnets.iter().map(Cidr::network) {
        if !out.contains(&subnet) {
            out.push(subnet);
        }
    }
    for ip in cluster.nodes.iter().flat_map(|n| n.wireguard_ip.into_iter().chain(n.wireguard_ip6)) {
        let net = ip.network();
        if !out.iter().any(|s| s.covers(&net)) {
            out.push(net);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn a_default_route_written_with_host_bits_is_still_a_default_route() {
        let peer =
            Peer { name: "p".into(), allowed_ips: vec![cidr("10.1.2.3/0")], ..Peer::default() };
        let cluster =
            Cluster { nodes: &[], peers: &[], wireguard_subnets: &[], service_cidrs: &[] };
        assert_eq!(
            refusals(&peer, &cluster),
            vec![Refusal::DefaultRoute { allowed_ip: cidr("10.1.2.3/0") }]
        );
    }

    #[test]
    fn a_wireguard_ip_outside_the_given_subnet_is_a_wireguard_network_too() {
        let nodes = [
            Node { wireguard_ip: Some(cidr("10.4.0.1/16")), ..Node::default() },
            Node { wireguard_ip: Some(cidr("10.9.0.1/24")), ..Node::default() },
        ];
        let subnets = [cidr("10.4.0.0/16")];
        let cluster =
            Cluster { nodes: &nodes, peers: &[], wireguard_subnets: &subnets, service_cidrs: &[] };
        assert_eq!(wireguard_networks(&cluster), vec![cidr("10.4.0.0/16"), cidr("10.9.0.0/24")]);
    }

    /// What [`takeover`] was before [`Takeover`] gathered the discovered endpoints once.
    fn takeover_by_scan(allowed_ip: Cidr, nodes: &[Node]) -> Option<Refusal> {
        let net = allowed_ip.network();
        if net.prefix() == 0 {
            return Some(Refusal::DefaultRoute { allowed_ip });
        }
        nodes.iter().find_map(|node| {
            if let Some(internal_ip) =
                node.internal_ips().map(|c| c.addr()).find(|ip| net.contains(*ip))
            {
                return Some(Refusal::InternalIp {
                    allowed_ip,
                    node: node.name.clone(),
                    internal_ip,
                });
            }
            endpoint_ips(node, nodes).into_iter().find(|ip| net.contains(*ip)).map(|endpoint| {
                Refusal::NodeEndpoint { allowed_ip, node: node.name.clone(), endpoint }
            })
        })
    }

    #[test]
    fn takeover_finds_what_a_scan_of_every_nodes_endpoint_ips_finds() {
        let key = |i: u8| Key::from_bytes([i; 32]);
        let addr = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        let nodes = [
            Node {
                name: "a".into(),
                key: key(1),
                endpoint: "192.0.2.1:51820".parse().ok(),
                internal_ip: Some(cidr("10.0.0.1/24")),
                discovered_endpoints: Some(
                    [(key(2), addr("198.51.100.7:1000")), (key(3), addr("[::ffff:203.0.113.9]:9"))]
                        .into(),
                ),
                ..Node::default()
            },
            Node {
                name: "b".into(),
                key: key(2),
                discovered_endpoints: Some(
                    [(key(1), addr("198.51.100.1:1")), (key(2), addr("198.51.100.8:2"))].into(),
                ),
                ..Node::default()
            },
            Node { name: "c".into(), key: key(3), ..Node::default() },
            Node {
                name: "zero".into(),
                discovered_endpoints: Some([(Key::ZERO, addr("192.0.2.200:1"))].into()),
                ..Node::default()
            },
        ];
        let check = Takeover::new(&nodes);
        for aip in [
            "0.0.0.0/0",
            "::/0",
            "10.0.0.0/30",
            "192.0.2.0/24",
            "198.51.100.0/29",
            "198.51.100.8/32",
            "198.51.100.0/24",
            "203.0.113.9/32",
            "192.0.2.200/32",
            "172.16.0.0/12",
            "fd00::/8",
        ] {
            let aip = cidr(aip);
            assert_eq!(check.check(aip), takeover_by_scan(aip, &nodes), "{aip}");
            assert_eq!(takeover(aip, &nodes), takeover_by_scan(aip, &nodes), "{aip}");
        }
    }
}
