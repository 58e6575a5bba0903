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

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::admission::{Refusal, all_endpoint_ips};
use crate::cidr::canonical;
use crate::{Cidr, Node, Peer};

/// An underlay address: (canonical address, rank, node index, address as reported, whether it
/// is the node's internal IP).
type Address = (IpAddr, (usize, usize), usize, IpAddr, bool);

/// The nodes' underlay addresses (internal IPs and endpoint IPs) sorted by address, each with
/// its rank in [`crate::admission::takeover`]'s search order (node by node, the internal IP
/// before the endpoint IPs), so that the first node an allowed IP would take over is found by a
/// binary search instead of a scan of every node.
struct Underlay<'a> {
    nodes: &'a [Node],
    by_ip: Vec<Address>,
}

impl<'a> Underlay<'a> {
    fn new(nodes: &'a [Node]) -> Underlay<'a> {
        let mut by_ip = Vec::new();
        for (i, (node, endpoints)) in nodes.iter().zip(all_endpoint_ips(nodes)).enumerate() {
            if let Some(ip) = node.internal_ip.map(|c| c.addr()) {
                by_ip.push((canonical(ip), (i, 0), i, ip, true));
            }
            for (j, ip) in endpoints.into_iter().enumerate() {
                by_ip.push((canonical(ip), (i, j + 1), i, ip, false));
            }
        }
        by_ip.sort_unstable_by_key(|e| (e.0, e.1));
        Underlay { nodes, by_ip }
    }

    /// [`crate::admission::takeover`] of `allowed_ip` over these nodes.
    fn takeover(&self, allowed_ip: Cidr) -> Option<Refusal> {
        let net = allowed_ip.network();
        if net.prefix() == 0 {
            return Some(Refusal::DefaultRoute { allowed_ip });
        }
        let (first, last) = match net.addr() {
            IpAddr::V4(a) => {
                let host = u32::MAX.checked_shr(u32::from(net.prefix())).unwrap_or(0);
                (IpAddr::V4(a), IpAddr::V4(Ipv4Addr::from(u32::from(a) | host)))
            }
            IpAddr::V6(a) => {
                let host = u128::MAX.checked_shr(u32::from(net.prefix())).unwrap_or(0);
                (IpAddr::V6(a), IpAddr::V6(Ipv6Addr::from(u128::from(a) | host)))
            }
        };
        let from = self.by_ip.partition_point(|e| e.0 < first);
        let to = self.by_ip.partition_point(|e| e.0 <= last);
        let &(_, _, i, ip, internal) = self.by_ip[from..to].iter().min_by_key(|e| e.1)?;
        let node = self.nodes[i].name.clone();
        Some(if internal {
            Refusal::InternalIp { allowed_ip, node, internal_ip: ip }
        } else {
            Refusal::NodeEndpoint { allowed_ip, node, endpoint: ip }
        })
    }
}

/// `peers` without the allowed IPs that would take over a node's connectivity, with one warning
/// per allowed IP left out. A peer keeps its other allowed IPs.
pub fn guard_peers(peers: Vec<Peer>, nodes: &[Node]) -> (Vec<Peer>, Vec<String>) {
    let mut warnings = Vec::new();
    let underlay = Underlay::new(nodes);
    let peers = peers
        .into_iter()
        .map(|mut peer| {
            peer.allowed_ips.retain(|aip| match underlay.takeover(*aip) {
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
    fn the_index_finds_what_the_scan_finds() {
        use crate::admission::takeover;
        let nodes: Vec<Node> = (0..40u32)
            .map(|i| Node {
                name: format!("n{i}"),
                endpoint: format!("192.0.{}.{}:51820", i % 3, i % 7).parse().ok(),
                internal_ip: (i % 2 == 0).then(|| cidr(&format!("10.{}.0.{}/24", i % 4, i))),
                ..Node::default()
            })
            .collect();
        let underlay = Underlay::new(&nodes);
        for a in 0..4u32 {
            for b in 0..8u32 {
                for prefix in [0, 8, 16, 24, 30, 32] {
                    for text in
                        [format!("10.{a}.0.{b}/{prefix}"), format!("192.0.{a}.{b}/{prefix}")]
                    {
                        let c = cidr(&text);
                        assert_eq!(underlay.takeover(c), takeover(c, &nodes), "{text}");
                    }
                }
            }
        }
        let v6 = cidr("::ffff:192.0.1.0/120");
        assert_eq!(underlay.takeover(v6), takeover(v6, &nodes));
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
