//! Routes that would take over a node's own connectivity are never planned.
//!
//! A peer's allowed IPs become routes through the WireGuard interface on leaders and through the
//! leader on the other nodes. An allowed IP that covers a whole address family (`0.0.0.0/0`,
//! `::/0`) would replace the node's default route, and one that contains a node's underlay
//! address (its endpoint or its internal IP) would send the node's own WireGuard packets, or its
//! LAN traffic, into the tunnel. The admission webhook refuses such Peers; the agent does not
//! rely on it (a Peer may predate the webhook, or come from a file): it leaves such an allowed IP
//! out, in every address family, with a warning worded as the webhook's refusal
//! ([`crate::admission::takeover`]).

use crate::admission::{all_endpoint_ips, takeover_among};
use crate::{Node, Peer};

/// `peers` without the allowed IPs that would take over a node's connectivity, with one warning
/// per allowed IP left out. A peer keeps its other allowed IPs.
pub fn guard_peers(peers: Vec<Peer>, nodes: &[Node]) -> (Vec<Peer>, Vec<String>) {
    let mut warnings = Vec::new();
    let endpoint_ips = all_endpoint_ips(nodes);
    let peers = peers
        .into_iter()
        .map(|mut peer| {
            peer.allowed_ips.retain(|aip| match takeover_among(*aip, nodes, &endpoint_ips) {
                Some(why) => {
                    warnings.push(format!("peer {:?}: left out: {why}", peer.name));
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
    use crate::Cidr;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn endpoint_ips_from_one_pass_equal_each_nodes_own() {
        use crate::Key;
        use crate::admission::endpoint_ips;
        let key = |b: u8| Key::from_bytes([b; 32]);
        let mut nodes: Vec<Node> = (1..=4u8)
            .map(|i| Node {
                name: format!("n{i}"),
                key: if i == 4 { Key::default() } else { key(i) },
                endpoint: format!("192.0.2.{i}:51820").parse().ok(),
                ..Node::default()
            })
            .collect();
        nodes[0].discovered_endpoints = Some(
            [(key(2), "198.51.100.2:1".parse().unwrap()), (key(3), "192.0.2.3:2".parse().unwrap())]
                .into(),
        );
        nodes[2].discovered_endpoints = Some(
            [
                (key(2), "198.51.100.9:1".parse().unwrap()),
                (key(1), "[::ffff:10.0.0.1]:3".parse().unwrap()),
            ]
            .into(),
        );
        let each: Vec<_> = nodes.iter().map(|n| endpoint_ips(n, &nodes)).collect();
        assert_eq!(all_endpoint_ips(&nodes), each);
        assert_eq!(each[1].len(), 3);
    }

    #[test]
    fn a_peer_keeps_its_harmless_allowed_ips() {
        let node = Node {
            name: "a".into(),
            endpoint: "192.0.2.1:51820".parse().ok(),
            internal_ip: Some(cidr("10.0.0.1/24")),
            ..Node::default()
        };
        let peer = Peer {
            name: "p".into(),
            allowed_ips: vec![
                cidr("::/0"),
                cidr("10.5.0.1/32"),
                cidr("192.0.2.0/30"),
                cidr("10.0.0.0/31"),
                cidr("fd00::/64"),
            ],
            ..Peer::default()
        };
        let (peers, warnings) = guard_peers(vec![peer], &[node]);
        assert_eq!(peers[0].allowed_ips, vec![cidr("10.5.0.1/32"), cidr("fd00::/64")]);
        assert_eq!(
            warnings,
            vec![
                "peer \"p\": left out: allowed IP ::/0 is a default route: every node would send its IPv6 traffic to this peer",
                "peer \"p\": left out: allowed IP 192.0.2.0/30 covers the endpoint IP 192.0.2.1 of node \"a\": the peer would take the node's WireGuard traffic",
                "peer \"p\": left out: allowed IP 10.0.0.0/31 covers the internal IP 10.0.0.1 of node \"a\": the peer would take that node's traffic",
            ]
        );
    }
}
