//! Routes that would take over a node's own connectivity are refused.
//!
//! A peer's allowed IPs (or a location's allowed-location IPs) become routes through the WireGuard
//! interface on leaders and through the leader on the other nodes. An allowed IP that covers a
//! whole address family (`0.0.0.0/0`, `::/0`) would replace the node's default route, and one
//! that contains a node's underlay address (its endpoint or its internal IP) would send the
//! node's own WireGuard packets, or its LAN traffic, into the tunnel. Neither is ever installed:
//! the agent leaves such an allowed IP out (with a warning) in every address family, and the
//! admission webhook and `kgctl validate` refuse it with the same words ([`Takeover`]).

use std::net::IpAddr;

use crate::{Cidr, Node, Peer};

/// Why a destination must not be routed into the mesh.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Takeover {
    /// The destination covers a whole address family: it would take the default route.
    #[error("{dst} covers every {family} address and would take over the default route")]
    DefaultRoute {
        /// The destination.
        dst: Cidr,
        /// `IPv4` or `IPv6`.
        family: &'static str,
    },
    /// The destination contains a node's underlay address.
    #[error("{dst} contains the {what} {addr} of node {node:?} and would take over its traffic")]
    Underlay {
        /// The destination.
        dst: Cidr,
        /// `endpoint address` or `internal IP`.
        what: &'static str,
        /// The address.
        addr: IpAddr,
        /// The node.
        node: String,
    },
}

/// The underlay addresses of `node`: its endpoint's IP (when it is an address), the endpoints
/// it discovered for others, and its internal IP, each with what it is.
pub fn underlay_addresses(node: &Node) -> impl Iterator<Item = (&'static str, IpAddr)> + '_ {
    let endpoint = node.endpoint.as_ref().and_then(|e| e.ip()).map(|ip| ("endpoint address", ip));
    let internal = node.internal_ip.map(|c| ("internal IP", c.addr()));
    endpoint.into_iter().chain(internal)
}

/// Whether routing `dst` into the mesh would take over the default route or an underlay address
/// of one of `nodes` (`dst` is compared by its masked network).
pub fn takeover<'a>(dst: Cidr, nodes: impl IntoIterator<Item = &'a Node>) -> Option<Takeover> {
    let net = dst.network();
    if net.prefix() == 0 {
        let family = if net.is_ipv4() { "IPv4" } else { "IPv6" };
        return Some(Takeover::DefaultRoute { dst, family });
    }
    nodes.into_iter().find_map(|node| {
        underlay_addresses(node)
            .find(|(_, addr)| net.contains(*addr))
            .map(|(what, addr)| Takeover::Underlay { dst, what, addr, node: node.name.clone() })
    })
}

/// `peers` without the allowed IPs that would take over a node's connectivity, with one warning
/// per allowed IP left out. A peer keeps its other allowed IPs.
pub fn guard_peers(peers: Vec<Peer>, nodes: &[Node]) -> (Vec<Peer>, Vec<String>) {
    let mut warnings = Vec::new();
    let peers = peers
        .into_iter()
        .map(|mut peer| {
            peer.allowed_ips.retain(|aip| match takeover(*aip, nodes) {
                Some(why) => {
                    warnings.push(format!("peer {:?}: allowed IP left out: {why}", peer.name));
                    false
                }
                None => true,
            });
            peer
        })
        .collect();
    (peers, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn node() -> Node {
        Node {
            name: "a".into(),
            endpoint: "192.0.2.1:51820".parse().ok(),
            internal_ip: Some(cidr("10.0.0.1/24")),
            ..Node::default()
        }
    }

    #[test]
    fn a_whole_family_is_refused_in_either_family() {
        for (dst, family) in [("0.0.0.0/0", "IPv4"), ("::/0", "IPv6"), ("10.1.0.1/0", "IPv4")] {
            let dst = cidr(dst);
            assert_eq!(takeover(dst, &[]), Some(Takeover::DefaultRoute { dst, family }));
        }
    }

    #[test]
    fn destinations_containing_an_underlay_address_are_refused() {
        let n = node();
        let endpoint = cidr("192.0.2.0/24");
        assert_eq!(
            takeover(endpoint, [&n]),
            Some(Takeover::Underlay {
                dst: endpoint,
                what: "endpoint address",
                addr: "192.0.2.1".parse().unwrap(),
                node: "a".into()
            })
        );
        let internal = cidr("10.0.0.1/32");
        assert_eq!(
            takeover(internal, [&n]).map(|t| t.to_string()),
            Some("10.0.0.1/32 contains the internal IP 10.0.0.1 of node \"a\" and would take over its traffic".to_string())
        );
        assert_eq!(takeover(cidr("10.0.1.0/24"), [&n]), None);
        assert_eq!(takeover(cidr("fd00::/64"), [&n]), None);
    }

    #[test]
    fn a_peer_keeps_its_harmless_allowed_ips() {
        let peer = Peer {
            name: "p".into(),
            allowed_ips: vec![cidr("::/0"), cidr("10.5.0.1/32"), cidr("192.0.2.0/30")],
            ..Peer::default()
        };
        let (peers, warnings) = guard_peers(vec![peer], &[node()]);
        assert_eq!(peers[0].allowed_ips, vec![cidr("10.5.0.1/32")]);
        assert_eq!(
            warnings,
            vec![
                "peer \"p\": allowed IP left out: ::/0 covers every IPv6 address and would take over the default route",
                "peer \"p\": allowed IP left out: 192.0.2.0/30 contains the endpoint address 192.0.2.1 of node \"a\" and would take over its traffic",
            ]
        );
    }
}
