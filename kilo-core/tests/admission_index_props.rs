//! The indexed admission rules (`admission::ClusterIndex`, what `refusals` and `kgctl validate`
//! use) against the scan they replaced (`refusals_by_scan` below: every allowed IP against every
//! node, and every node's endpoint IPs by a scan of every node): the same refusals, in the same
//! order, on random meshes whose addresses are drawn from a few small ranges so that they overlap
//! often (IPv4, IPv6 and IPv4-mapped IPv6, every prefix length, shared and zero keys, discovered
//! endpoints, default routes).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use kilo_core::admission::{Cluster, ClusterIndex, Refusal, endpoint_ips, refusals};
use kilo_core::{Cidr, Endpoint, Key, Node, Peer};
use proptest::prelude::*;

/// `admission::refusals` as it was before the nodes were indexed.
fn refusals_by_scan(peer: &Peer, cluster: &Cluster<'_>) -> Vec<Refusal> {
    let mut out = Vec::new();
    let others = || cluster.peers.iter().filter(|p| p.name != peer.name);
    let wireguard = kilo_core::admission::wireguard_networks(cluster);
    for &allowed_ip in &peer.allowed_ips {
        let net = allowed_ip.network();
        if net.prefix() == 0 {
            out.push(Refusal::DefaultRoute { allowed_ip });
            continue;
        }
        for node in cluster.nodes {
            node_refusals_by_scan(allowed_ip, node, cluster, &mut out);
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

/// The overlaps of one allowed IP with one node's addresses, as they were computed.
fn node_refusals_by_scan(
    allowed_ip: Cidr,
    node: &Node,
    cluster: &Cluster<'_>,
    out: &mut Vec<Refusal>,
) {
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

/// An address in 10.0.0.0/22, in fd00::/118, or 10.0.0.0/22 written IPv4-mapped.
fn address() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        4 => (0u32..1024).prop_map(|n| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | n))),
        2 => (0u128..1024).prop_map(|n| IpAddr::V6(Ipv6Addr::from(0xfd00_u128 << 112 | n))),
        1 => (0u32..1024).prop_map(|n| {
            IpAddr::V6(Ipv4Addr::from(0x0a00_0000 | n).to_ipv6_mapped())
        }),
    ]
}

/// A CIDR on [`address`], host bits kept: mostly long prefixes (the ranges are small), sometimes
/// short ones, rarely a default route.
fn cidr() -> impl Strategy<Value = Cidr> {
    (address(), prop_oneof![8 => 20u8..=32, 2 => 1u8..20, 1 => Just(0u8)]).prop_map(
        |(addr, prefix)| {
            // An IPv6 (or IPv4-mapped) prefix counts from 96: the ranges lie in the last 32 bits.
            let prefix = match addr {
                IpAddr::V6(_) if prefix > 0 => prefix + 96,
                _ => prefix,
            };
            Cidr::new(addr, prefix).unwrap()
        },
    )
}

/// One of a few keys, the zero key included, so that keys are shared.
fn key() -> impl Strategy<Value = Key> {
    (0u8..5).prop_map(|n| if n == 0 { Key::ZERO } else { Key::from_bytes([n; 32]) })
}

fn socket() -> impl Strategy<Value = SocketAddr> {
    (address(), 1u16..4).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

fn endpoint() -> impl Strategy<Value = Option<Endpoint>> {
    prop_oneof![
        3 => socket().prop_map(|a| Some(Endpoint::from_addr(a))),
        1 => Just(Some("node.example.com:51820".parse::<Endpoint>().unwrap())),
        1 => Just(None),
    ]
}

fn node() -> impl Strategy<Value = Node> {
    (
        key(),
        endpoint(),
        proptest::option::of(cidr()),
        proptest::collection::vec(cidr(), 0..3),
        proptest::collection::vec(cidr(), 0..3),
        proptest::option::of(cidr()),
        proptest::option::of(proptest::collection::btree_map(key(), socket(), 0..3)),
    )
        .prop_map(
            |(key, endpoint, internal_ip, subnets, allowed_location_ips, wireguard_ip, found)| {
                Node {
                    key,
                    endpoint,
                    internal_ip,
                    subnets,
                    allowed_location_ips,
                    wireguard_ip,
                    discovered_endpoints: found,
                    ..Node::default()
                }
            },
        )
}

fn peer() -> impl Strategy<Value = Peer> {
    // Few names, so that a peer sometimes shares its name with another (its previous version).
    (0u8..6, proptest::collection::vec(cidr(), 0..4), key()).prop_map(
        |(name, allowed_ips, public_key)| Peer {
            name: format!("p{name}"),
            allowed_ips,
            public_key,
            ..Peer::default()
        },
    )
}

#[derive(Debug, Clone)]
struct Mesh {
    nodes: Vec<Node>,
    peers: Vec<Peer>,
    wireguard_subnets: Vec<Cidr>,
    service_cidrs: Vec<Cidr>,
}

fn mesh() -> impl Strategy<Value = Mesh> {
    (
        proptest::collection::vec(node(), 0..24),
        proptest::collection::vec(peer(), 1..6),
        proptest::collection::vec(cidr(), 0..3),
        proptest::collection::vec(cidr(), 0..3),
    )
        .prop_map(|(mut nodes, peers, wireguard_subnets, service_cidrs)| {
            for (i, node) in nodes.iter_mut().enumerate() {
                node.name = format!("n{i}");
            }
            Mesh { nodes, peers, wireguard_subnets, service_cidrs }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every peer against the whole cluster (the webhook's question) and against the peers
    /// listed before it (`kgctl validate`'s): the index finds what the scan found.
    #[test]
    fn the_index_refuses_what_the_scan_refused(mesh in mesh()) {
        let cluster = Cluster {
            nodes: &mesh.nodes,
            peers: &mesh.peers,
            wireguard_subnets: &mesh.wireguard_subnets,
            service_cidrs: &mesh.service_cidrs,
        };
        let mut index = ClusterIndex::new(Cluster { peers: &[], ..cluster });
        for (i, peer) in mesh.peers.iter().enumerate() {
            let expected = refusals_by_scan(peer, &cluster);
            prop_assert_eq!(&refusals(peer, &cluster), &expected);
            let before = Cluster { peers: &mesh.peers[..i], ..cluster };
            index.set_peers(&mesh.peers[..i]);
            prop_assert_eq!(index.refusals(peer), refusals_by_scan(peer, &before));
        }
    }
}
