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

use crate::admission::Takeover;
use crate::{Cidr, Node, Peer};

/// `peers` without the allowed IPs that would take over a node's connectivity, with one warning
/// per allowed IP left out. A peer keeps its other allowed IPs.
pub fn guard_peers(peers: Vec<Peer>, nodes: &[Node]) -> (Vec<Peer>, Vec<String>) {
    let mut warnings = Vec::new();
    let scope: Vec<Cidr> = peers.iter().flat_map(|p| p.allowed_ips.iter().copied()).collect();
    let check = Takeover::for_allowed_ips(nodes, &scope);
    let peers = peers
        .into_iter()
        .map(|mut peer| {
            peer.allowed_ips.retain(|aip| match check.check(*aip) {
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

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn the_scoped_index_answers_as_the_full_one_for_the_allowed_ips_in_scope() {
        let node = |name: &str, endpoint: &str, internal: &str| Node {
            name: name.into(),
            endpoint: endpoint.parse().ok(),
            internal_ip: Some(cidr(internal)),
            ..Node::default()
        };
        let nodes = [
            node("a", "192.0.2.1:51820", "10.0.0.1/24"),
            node("b", "[2001:db8::5]:51820", "9.0.0.10/24"),
            node("c", "198.51.100.7:51820", "10.0.0.2/24"),
            node("d", "[::ffff:203.0.113.9]:51820", "10.9.0.1/16"),
        ];
        let scope: Vec<Cidr> = [
            "0.0.0.0/0",
            "10.0.0.0/30",
            "10.5.0.1/32",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "2001:db8::/64",
            "fd00::/64",
        ]
        .into_iter()
        .map(cidr)
        .collect();
        let (full, scoped) = (Takeover::new(&nodes), Takeover::for_allowed_ips(&nodes, &scope));
        for &aip in &scope {
            assert_eq!(scoped.check(aip), full.check(aip), "{aip}");
        }
        assert!(full.check(cidr("10.0.0.0/30")).is_some());
        assert!(full.check(cidr("203.0.113.0/24")).is_some());
        assert!(full.check(cidr("2001:db8::/64")).is_some());
        // Only the span of the scope is indexed: 9.0.0.10 lies below it.
        assert!(scoped.check(cidr("9.0.0.0/24")).is_none());
        assert!(full.check(cidr("9.0.0.0/24")).is_some());
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
