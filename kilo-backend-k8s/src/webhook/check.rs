//! What the webhook decides about a Peer: upstream's `Validate()`, then checks beyond upstream
//! against the cluster's nodes and peers, so that a Peer cannot hijack traffic.

use kilo_core::peer_spec::{PeerSpec, PeerSpecError, peer_from_spec, validate};
use kilo_core::{Cidr, Node, Peer};

/// Why the webhook refuses a Peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerRejection {
    /// Upstream's `Validate()` fails; the message is upstream's.
    #[error(transparent)]
    Invalid(#[from] PeerSpecError),
    /// An allowed IP overlaps a node's pod subnet.
    #[error(
        "allowed IP {allowed_ip} overlaps the pod subnet {subnet} of node {node:?}: \
         traffic to those pods would go to this peer"
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
        "allowed IP {allowed_ip} contains the internal IP {internal_ip} of node {node:?}: \
         traffic to that node would go to this peer"
    )]
    InternalIp {
        /// The Peer's allowed IP.
        allowed_ip: Cidr,
        /// The node.
        node: String,
        /// The node's internal IP.
        internal_ip: Cidr,
    },
    /// An allowed IP overlaps the WireGuard subnet.
    #[error(
        "allowed IP {allowed_ip} overlaps the WireGuard subnet {subnet}: \
         traffic to the mesh's WireGuard addresses would go to this peer"
    )]
    WireGuardSubnet {
        /// The Peer's allowed IP.
        allowed_ip: Cidr,
        /// The Kilo subnet.
        subnet: Cidr,
    },
    /// An allowed IP overlaps another Peer's.
    #[error("allowed IP {allowed_ip} overlaps allowed IP {other} of peer {peer:?}")]
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
        key: String,
        /// The node.
        node: String,
    },
    /// The public key is another Peer's.
    #[error("public key {key} is already used by peer {peer:?}")]
    KeyOfPeer {
        /// The key.
        key: String,
        /// The other Peer.
        peer: String,
    },
}

/// Whether the Peer `name` with `spec` may be admitted into a cluster with `nodes`, `peers` and
/// the WireGuard `subnet`: upstream's `Validate()` first (its message wins), then every allowed IP
/// (masked to its network) must stay clear of every node's pod subnets and internal IP, of the
/// WireGuard subnet and of every other Peer's allowed IPs, and the public key must be neither a
/// node's nor another Peer's. The Peer's own current version (same name, an UPDATE) is not
/// "another Peer".
pub fn check_peer(
    spec: &PeerSpec,
    name: &str,
    nodes: &[Node],
    peers: &[Peer],
    subnet: Cidr,
) -> Result<(), PeerRejection> {
    validate(spec)?;
    let candidate = peer_from_spec(name, spec);
    let others = || peers.iter().filter(|p| p.name != name);
    for &allowed_ip in &candidate.allowed_ips {
        let net = allowed_ip.network();
        for node in nodes {
            if let Some(&pod) = node.subnets.iter().find(|s| s.network().overlaps(&net)) {
                let node = node.name.clone();
                return Err(PeerRejection::PodSubnet { allowed_ip, node, subnet: pod });
            }
            if let Some(internal_ip) = node.internal_ip.filter(|ip| net.contains(ip.addr())) {
                let node = node.name.clone();
                return Err(PeerRejection::InternalIp { allowed_ip, node, internal_ip });
            }
        }
        if subnet.network().overlaps(&net) {
            return Err(PeerRejection::WireGuardSubnet { allowed_ip, subnet });
        }
        for peer in others() {
            if let Some(&other) = peer.allowed_ips.iter().find(|o| o.network().overlaps(&net)) {
                let peer = peer.name.clone();
                return Err(PeerRejection::OtherPeer { allowed_ip, peer, other });
            }
        }
    }
    let key = candidate.public_key;
    let text = || spec.public_key.clone();
    if let Some(node) = nodes.iter().find(|n| !key.is_zero() && n.key == key) {
        return Err(PeerRejection::KeyOfNode { key: text(), node: node.name.clone() });
    }
    if let Some(peer) = others().find(|p| !key.is_zero() && p.public_key == key) {
        return Err(PeerRejection::KeyOfPeer { key: text(), peer: peer.name.clone() });
    }
    Ok(())
}
