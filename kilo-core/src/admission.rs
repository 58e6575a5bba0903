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
    let mut out = Vec::new();
    let others = || cluster.peers.iter().filter(|p| p.name != peer.name);
    let wireguard = wireguard_networks(cluster);
    for &allowed_ip in &peer.allowed_ips {
        let net = allowed_ip.network();
        if net.prefix() == 0 {
            out.push(Refusal::DefaultRoute { allowed_ip });
            continue;
        }
        for node in cluster.nodes {
            node_refusals(allowed_ip, node, cluster, &mut out);
        }
        for &service_cidr in cluster.service_cidrs {
            if service_cidr.network().overlaps(&net) {
                out.push(Refusal::ServiceCidr { allowed_ip, service_cidr });
            }
        }
        for &subnet in &wireguard {
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

/// Whether routing `allowed_ip` into the mesh would take over a node's own connectivity: a
/// default route ([`Refusal::DefaultRoute`]), or a network holding a node's internal IP or
/// endpoint IP ([`Refusal::InternalIp`], [`Refusal::NodeEndpoint`]). The agent leaves such an
/// allowed IP out of its plan whatever admission said (see `topology::guard`).
pub fn takeover(allowed_ip: Cidr, nodes: &[Node]) -> Option<Refusal> {
    takeover_among(allowed_ip, nodes, &all_endpoint_ips(nodes))
}

/// [`takeover`] with every node's [`endpoint_ips`] computed beforehand ([`all_endpoint_ips`]):
/// what checking many allowed IPs against the same nodes calls, in time linear in the nodes.
pub fn takeover_among(
    allowed_ip: Cidr,
    nodes: &[Node],
    endpoint_ips: &[Vec<IpAddr>],
) -> Option<Refusal> {
    let net = allowed_ip.network();
    if net.prefix() == 0 {
        return Some(Refusal::DefaultRoute { allowed_ip });
    }
    nodes.iter().zip(endpoint_ips).find_map(|(node, endpoints)| {
        let name = || node.name.clone();
        if let Some(internal_ip) = node.internal_ip.map(|c| c.addr()).filter(|ip| net.contains(*ip))
        {
            return Some(Refusal::InternalIp { allowed_ip, node: name(), internal_ip });
        }
        endpoints.iter().find(|ip| net.contains(**ip)).map(|&endpoint| Refusal::NodeEndpoint {
            allowed_ip,
            node: name(),
            endpoint,
        })
    })
}

/// Every node's [`endpoint_ips`], in the nodes' order, from one pass over the discovered
/// endpoints (calling [`endpoint_ips`] for each node scans every node each time).
pub fn all_endpoint_ips(nodes: &[Node]) -> Vec<Vec<IpAddr>> {
    let mut discovered: std::collections::HashMap<&Key, Vec<IpAddr>> =
        std::collections::HashMap::new();
    for map in nodes.iter().filter_map(|n| n.discovered_endpoints.as_ref()) {
        for (key, addr) in map {
            discovered.entry(key).or_default().push(crate::cidr::canonical(addr.ip()));
        }
    }
    nodes
        .iter()
        .map(|node| {
            let mut ips: Vec<IpAddr> =
                node.endpoint.as_ref().and_then(|e| e.ip()).into_iter().collect();
            if !node.key.is_zero() {
                for &ip in discovered.get(&node.key).into_iter().flatten() {
                    if !ips.contains(&ip) {
                        ips.push(ip);
                    }
                }
            }
            ips
        })
        .collect()
}

/// The overlaps of one allowed IP with one node's addresses.
fn node_refusals(allowed_ip: Cidr, node: &Node, cluster: &Cluster<'_>, out: &mut Vec<Refusal>) {
    let net = allowed_ip.network();
    let name = || node.name.clone();
    for &subnet in node.subnets.iter().filter(|s| s.network().overlaps(&net)) {
        out.push(Refusal::PodSubnet { allowed_ip, node: name(), subnet });
    }
    if let Some(internal_ip) = node.internal_ip.map(|c| c.addr()).filter(|ip| net.contains(*ip)) {
        out.push(Refusal::InternalIp { allowed_ip, node: name(), internal_ip });
    }
    for endpoint in endpoint_ips(node, cluster.nodes) {
        if net.contains(endpoint) {
            out.push(Refusal::NodeEndpoint { allowed_ip, node: name(), endpoint });
        }
    }
    for &location_ip in node.allowed_location_ips.iter().filter(|l| l.network().overlaps(&net)) {
        out.push(Refusal::AllowedLocationIp { allowed_ip, node: name(), location_ip });
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
    for ip in cluster.nodes.iter().filter_map(|n| n.wireguard_ip) {
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
}
