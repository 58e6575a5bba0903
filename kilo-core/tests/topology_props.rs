//! Property tests of the topology over generated meshes: every node agrees on the segments, no two
//! WireGuard peers overlap, and WireGuard addresses are unique or the subnet is reported full.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use kilo_core::fixtures;
use kilo_core::topology::TopologyError;
use kilo_core::{Cidr, Endpoint, Granularity, Key, Node, Peer, Topology, TopologyInput};
use proptest::prelude::*;

/// One generated node's attributes; addresses derive from its index so they never collide.
#[derive(Debug, Clone)]
struct NodeSpec {
    location: u8,
    internal_ip: Option<u8>,
    leader: bool,
    endpoint: u8,
    keepalive: u8,
    ipv6_pods: bool,
    location_ips: Vec<u8>,
}

#[derive(Debug, Clone)]
struct PeerSpec {
    host: u8,
    ipv6: bool,
    endpoint: bool,
    keepalive: u8,
}

fn node_spec() -> impl Strategy<Value = NodeSpec> {
    (
        0u8..4,
        prop::option::of(1u8..250),
        any::<bool>(),
        0u8..7,
        prop_oneof![Just(0u8), 1u8..60],
        any::<bool>(),
        prop::collection::vec(0u8..10, 0..3),
    )
        .prop_map(
            |(location, internal_ip, leader, endpoint, keepalive, ipv6_pods, location_ips)| {
                NodeSpec {
                    location,
                    internal_ip,
                    leader,
                    endpoint,
                    keepalive,
                    ipv6_pods,
                    location_ips,
                }
            },
        )
}

fn peer_spec() -> impl Strategy<Value = PeerSpec> {
    (any::<u8>(), any::<bool>(), any::<bool>(), prop_oneof![Just(0u8), 1u8..60])
        .prop_map(|(host, ipv6, endpoint, keepalive)| PeerSpec { host, ipv6, endpoint, keepalive })
}

fn granularity() -> impl Strategy<Value = Granularity> {
    prop_oneof![Just(Granularity::Location), Just(Granularity::Full), Just(Granularity::Cross)]
}

fn c(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn test_key(tag: u8, i: usize) -> Key {
    let mut b = [0u8; 32];
    b[0] = tag;
    b[1..9].copy_from_slice(&(i as u64).to_be_bytes());
    Key::from_bytes(b)
}

/// Allowed-location IPs: a pool that overlaps itself (so filtering has work to do) and that
/// lies outside every pod CIDR, internal IP, WireGuard IP and peer, except entry 9, which lies
/// inside node 0's pod CIDR and is always dropped.
fn location_ip(n: u8) -> Cidr {
    match n {
        0..=3 => c(&format!("198.18.{n}.0/24")),
        4..=7 => c(&format!("198.18.0.{}/32", n - 3)),
        8 => c("198.18.0.0/22"),
        _ => c("172.16.0.9/32"),
    }
}

fn make_node(i: usize, name: &str, s: &NodeSpec) -> Node {
    let endpoint = match s.endpoint {
        0 => None,
        1 => Some(format!("8.8.{i}.1:51820")),
        2 => Some(format!("10.1.0.{i}:51820")),
        3 => Some(format!("[2001:db8::{i:x}]:51820")),
        4 => Some(format!("[fd00::{i:x}]:51820")),
        5 => Some(format!("n{i}.example.com:51820")),
        _ => Some(format!("100.64.0.{i}:51820")),
    };
    let mut subnets = vec![c(&format!("172.16.{i}.0/24"))];
    if s.ipv6_pods {
        subnets.push(c(&format!("fd10:{i:x}::/64")));
    }
    Node {
        name: name.to_string(),
        endpoint: endpoint.map(|e| e.parse::<Endpoint>().unwrap()),
        key: test_key(1, i),
        internal_ip: s.internal_ip.map(|h| c(&format!("192.168.{i}.{h}/24"))),
        leader: s.leader,
        location: ["", "x", "y", "z"][usize::from(s.location)].to_string(),
        persistent_keepalive: Duration::from_secs(u64::from(s.keepalive)),
        subnets,
        allowed_location_ips: s.location_ips.iter().map(|&n| location_ip(n)).collect(),
        ..Node::default()
    }
}

fn make_peer(j: usize, name: &str, s: &PeerSpec) -> Peer {
    let mut allowed_ips = vec![c(&format!("10.5.{j}.{}/24", s.host))];
    if s.ipv6 {
        allowed_ips.push(c(&format!("fd05:{j:x}::{:x}/64", s.host)));
    }
    Peer {
        name: name.to_string(),
        allowed_ips,
        public_key: test_key(2, j),
        preshared_key: None,
        persistent_keepalive: Duration::from_secs(u64::from(s.keepalive)),
        endpoint: s.endpoint.then(|| format!("203.0.113.{j}:51820").parse().unwrap()),
    }
}

#[derive(Debug, Clone)]
struct Mesh {
    nodes: Vec<Node>,
    peers: Vec<Peer>,
    granularity: Granularity,
}

fn mesh() -> impl Strategy<Value = Mesh> {
    (
        prop::collection::btree_set("[a-z]{1,3}", 1..12),
        prop::collection::btree_set("[a-z]{1,3}", 0..5),
        granularity(),
    )
        .prop_flat_map(|(names, peer_names, granularity)| {
            let names: Vec<String> = names.into_iter().collect();
            let peer_names: Vec<String> = peer_names.into_iter().collect();
            let n = names.len();
            let p = peer_names.len();
            (
                prop::collection::vec(node_spec(), n),
                prop::collection::vec(peer_spec(), p),
                Just(names),
                Just(peer_names),
                Just(granularity),
                // A permutation of the node indexes, so that node i's addresses do not follow
                // the name order.
                Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
            )
        })
        .prop_map(|(specs, peer_specs, names, peer_names, granularity, perm)| Mesh {
            nodes: names
                .iter()
                .zip(&perm)
                .map(|(name, &i)| make_node(i, name, &specs[i]))
                .collect(),
            peers: peer_names
                .iter()
                .zip(&peer_specs)
                .enumerate()
                .map(|(j, (name, s))| make_peer(j, name, s))
                .collect(),
            granularity,
        })
}

fn build(
    mesh: &Mesh,
    nodes: &[Node],
    hostname: &str,
    subnet: Cidr,
) -> Result<Topology, TopologyError> {
    Topology::new(TopologyInput {
        nodes,
        peers: &mesh.peers,
        granularity: mesh.granularity,
        hostname,
        port: fixtures::PORT,
        key: fixtures::private_key(),
        subnet,
        subnet6: None,
        service_cidrs: &[],
        persistent_keepalive: Duration::from_secs(5),
    })
}

/// The number of segments, computed from the generated mesh directly.
fn segment_count(mesh: &Mesh) -> usize {
    match mesh.granularity {
        Granularity::Location => {
            let locations: BTreeSet<&str> = mesh
                .nodes
                .iter()
                .filter(|n| n.internal_ip.is_some())
                .map(|n| n.location.as_str())
                .collect();
            locations.len() + mesh.nodes.iter().filter(|n| n.internal_ip.is_none()).count()
        }
        Granularity::Full | Granularity::Cross => mesh.nodes.len(),
        other => panic!("no model of the segment count in granularity {other}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Property 1: segments, leaders, WireGuard IPs and allowed IPs do not depend on who
    /// computes them nor on the input order.
    #[test]
    fn every_node_computes_the_same_segments_whatever_its_name_and_the_input_order(
        (mesh, order) in mesh().prop_flat_map(|m| {
            let n = m.nodes.len();
            (Just(m), Just((0..n).collect::<Vec<usize>>()).prop_shuffle())
        }),
    ) {
        let subnet = fixtures::subnet();
        let reference = build(&mesh, &mesh.nodes, &mesh.nodes[0].name, subnet).unwrap();
        let shuffled: Vec<Node> = order.iter().map(|&i| mesh.nodes[i].clone()).collect();
        let mut reversed = mesh.clone();
        reversed.peers.reverse();
        for node in &mesh.nodes {
            let t = build(&reversed, &shuffled, &node.name, subnet).unwrap();
            prop_assert_eq!(&t.segments, &reference.segments);
            prop_assert_eq!(&t.peers, &reference.peers);
            let local = t.local_segment().unwrap();
            prop_assert!(local.members.iter().any(|m| m.name == node.name));
            let leads = local.leader_member().name == node.name;
            prop_assert_eq!(t.leader, leads || mesh.granularity == Granularity::Cross);
            if t.leader {
                prop_assert_eq!(t.wireguard_cidr.addr(), local.wireguard_ip.unwrap());
                prop_assert_eq!(t.wireguard_cidr.prefix(), subnet.prefix());
            } else {
                prop_assert_eq!(t.wireguard_cidr, subnet);
            }
        }
    }

    /// Property 2: in every node's configuration no two WireGuard peers claim overlapping
    /// addresses, when pod CIDRs, internal IPs and peers are distinct.
    #[test]
    fn no_two_wireguard_peers_have_overlapping_allowed_ips(mesh in mesh()) {
        for node in &mesh.nodes {
            let t = build(&mesh, &mesh.nodes, &node.name, fixtures::subnet()).unwrap();
            let conf = t.conf();
            for (i, a) in conf.peers.iter().enumerate() {
                for b in &conf.peers[i + 1..] {
                    for x in &a.allowed_ips {
                        for y in &b.allowed_ips {
                            prop_assert!(
                                !x.overlaps(y),
                                "{} of {} overlaps {} of {} (from {})",
                                x, a.public_key, y, b.public_key, node.name
                            );
                        }
                    }
                }
            }
        }
    }

    /// Property 6: WireGuard addresses are unique and inside the subnet; a subnet with fewer
    /// addresses than segments is reported full.
    #[test]
    fn allocation_never_repeats_an_address_and_reports_a_full_subnet(
        mesh in mesh(),
        prefix in 26u8..=32,
    ) {
        let subnet = c(&format!("10.4.0.0/{prefix}"));
        let segments = segment_count(&mesh);
        let capacity = (1u128 << (32 - prefix)) - 1;
        match build(&mesh, &mesh.nodes, &mesh.nodes[0].name, subnet) {
            Ok(t) => {
                prop_assert!(segments as u128 <= capacity);
                prop_assert_eq!(t.segments.len(), segments);
                let mut seen = HashSet::new();
                for s in &t.segments {
                    let ip = s.wireguard_ip.unwrap();
                    prop_assert!(subnet.contains(ip));
                    prop_assert!(ip != subnet.addr());
                    prop_assert!(seen.insert(ip), "{} handed out twice", ip);
                }
            }
            Err(err) => {
                prop_assert!(segments as u128 > capacity);
                prop_assert_eq!(err, TopologyError::SubnetFull { subnet, capacity, segments });
            }
        }
    }
}

/// Allowed-location IPs that collide with everything: pod CIDRs, WireGuard IPs (some only once
/// later segments are allocated), peers, internal IPs, each other, IPv6, host bits.
const WIDE_POOL: [&str; 20] = [
    "172.16.0.0/16",
    "172.16.1.9/32",
    "172.16.2.0/24",
    "10.4.0.1/32",
    "10.4.0.2/32",
    "10.4.0.0/24",
    "10.5.0.7/32",
    "10.5.0.0/16",
    "192.168.1.5/32",
    "192.168.0.0/16",
    "198.18.0.0/24",
    "198.18.0.1/32",
    "198.18.0.0/22",
    "198.18.1.0/24",
    "fd10:1::5/128",
    "fd10::/16",
    "2001:db8::/64",
    "2001:db8::1/128",
    "198.18.0.1/24",
    "10.4.0.3/30",
];

/// A direct port of upstream's allocation loop and `filterAllowedLocationIPs` scan (5.5, 5.6),
/// replayed on `t`'s segments: returns every segment's filtered allowed-location IPs.
fn upstream_filter(t: &Topology, nodes: &[Node]) -> Vec<Vec<Cidr>> {
    struct S {
        location: String,
        allowed: Vec<Cidr>,
        location_ips: Vec<Cidr>,
    }
    let mut segs: Vec<S> = t
        .segments
        .iter()
        .map(|s| {
            let mut location_ips: Vec<Cidr> = Vec::new();
            for m in &s.members {
                let node = nodes.iter().find(|n| n.name == m.name).unwrap();
                for ip in &node.allowed_location_ips {
                    if !location_ips.iter().any(|x| x.to_string() == ip.to_string()) {
                        location_ips.push(*ip);
                    }
                }
            }
            location_ips.sort_by_key(|c| c.to_string());
            S {
                location: s.location.clone(),
                allowed: s.allowed_ips[..s.allowed_ips.len() - 1].to_vec(),
                location_ips,
            }
        })
        .collect();
    for k in 0..segs.len() {
        segs[k].allowed.push(Cidr::host(t.segments[k].wireguard_ip.unwrap()));
        let ips = segs[k].location_ips.clone();
        let kept = ips
            .into_iter()
            .filter(|ip| {
                let by_segment = segs.iter().any(|s| {
                    (s.location != segs[k].location
                        && s.location_ips.iter().any(|i| ip.intersects(i)))
                        || s.allowed.iter().any(|i| i.contains(ip.addr()))
                });
                let by_peer =
                    t.peers.iter().any(|p| p.allowed_ips.iter().any(|i| ip.intersects(i)));
                !by_segment && !by_peer
            })
            .collect();
        segs[k].location_ips = kept;
    }
    segs.into_iter().map(|s| s.location_ips).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The indexed filtering keeps exactly what upstream's scan keeps, order dependence included.
    #[test]
    fn allowed_location_ip_filtering_matches_a_direct_port_of_upstream(
        mesh in mesh(),
        picks in prop::collection::vec(prop::collection::vec(0usize..WIDE_POOL.len(), 0..4), 12),
    ) {
        let mut mesh = mesh;
        for (node, picks) in mesh.nodes.iter_mut().zip(&picks) {
            node.allowed_location_ips = picks.iter().map(|&i| c(WIDE_POOL[i])).collect();
        }
        let t = build(&mesh, &mesh.nodes, &mesh.nodes[0].name, fixtures::subnet()).unwrap();
        let want = upstream_filter(&t, &mesh.nodes);
        let got: Vec<Vec<Cidr>> =
            t.segments.iter().map(|s| s.allowed_location_ips.clone()).collect();
        prop_assert_eq!(&got, &want);
        let before: usize = t
            .segments
            .iter()
            .map(|s| {
                let set: HashSet<Cidr> = s
                    .members
                    .iter()
                    .flat_map(|m| {
                        mesh.nodes.iter().find(|n| n.name == m.name).unwrap().allowed_location_ips.clone()
                    })
                    .collect();
                set.len()
            })
            .sum();
        let after: usize = got.iter().map(Vec::len).sum();
        prop_assert_eq!(t.warnings.len(), before - after);
    }
}
