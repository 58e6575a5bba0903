//! Reachability property (issue property 3): every ready node's pod CIDR is reachable from every
//! other ready node: its main-table routes and WireGuard allowed IPs cover it through exactly one
//! next hop.
//!
//! Meshes: 2-12 nodes over 1-4 locations, each with a distinct /24 pod CIDR, a distinct private
//! IP in its location's LAN (or none, for a few), a public-looking IPv4 endpoint and a random
//! leader flag, in random input order; `location`, `full` or `cross` granularity, `--local`, IPIP
//! chosen as the agent chooses it, never encapsulating.
//!
//! Narrowed (upstream behaviour, Appendix A and 7.2): in `cross` granularity two nodes of the
//! same location reach each other only over the private network, and a leader routes to the
//! other nodes of its location only when it has a private IP itself (`local && src.is_some()`)
//! and only to nodes with a private IP (IPIP's gateway is the private IP). `Conf()` skips
//! same-location segments, so such a pair has no path at all; the property skips it.

use std::net::IpAddr;
use std::time::Duration;

use kilo_core::routes::{Encapsulator, EncapsulatorConfig, Interfaces, MAIN_TABLE};
use kilo_core::{
    Cidr, Encapsulation, Endpoint, Granularity, Key, Node, Topology, TopologyInput, fixtures,
};
use proptest::prelude::*;

/// One generated node: its index fixes its addresses, so they never collide.
#[derive(Debug, Clone)]
struct Spec {
    location: u8,
    has_private_ip: bool,
    leader: bool,
}

#[derive(Debug, Clone)]
struct Mesh {
    nodes: Vec<Node>,
    granularity: Granularity,
}

fn c(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn key(i: usize) -> Key {
    let mut b = [0u8; 32];
    b[0] = 7;
    b[1..9].copy_from_slice(&(i as u64).to_be_bytes());
    Key::from_bytes(b)
}

fn make_node(i: usize, s: &Spec) -> Node {
    Node {
        name: format!("n{i:02}"),
        endpoint: Some(format!("203.0.113.{}:51820", i + 1).parse::<Endpoint>().unwrap()),
        key: key(i),
        internal_ip: s.has_private_ip.then(|| c(&format!("192.168.{}.{}/24", s.location, i + 1))),
        leader: s.leader,
        location: format!("loc{}", s.location),
        subnets: vec![c(&format!("10.2.{i}.0/24"))],
        ..Node::default()
    }
}

fn granularity() -> impl Strategy<Value = Granularity> {
    prop_oneof![Just(Granularity::Location), Just(Granularity::Full), Just(Granularity::Cross)]
}

fn mesh() -> impl Strategy<Value = Mesh> {
    (2usize..=12, 1u8..=4, granularity())
        .prop_flat_map(|(n, locations, granularity)| {
            let spec = (0..locations, prop::bool::weighted(0.8), any::<bool>()).prop_map(
                |(location, has_private_ip, leader)| Spec { location, has_private_ip, leader },
            );
            (
                prop::collection::vec(spec, n),
                Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
                Just(granularity),
            )
        })
        .prop_map(|(specs, order, granularity)| Mesh {
            nodes: order.iter().map(|&i| make_node(i, &specs[i])).collect(),
            granularity,
        })
}

fn ifaces() -> Interfaces {
    Interfaces { kilo: "kilo0".into(), private: "eth0".into(), tunnel: "tunl0".into() }
}

fn topology(mesh: &Mesh, hostname: &str) -> Topology {
    Topology::new(TopologyInput {
        nodes: &mesh.nodes,
        peers: &[],
        granularity: mesh.granularity,
        hostname,
        port: fixtures::PORT,
        key: fixtures::private_key(),
        subnet: fixtures::subnet(),
        subnet6: None,
        service_cidrs: &[],
        persistent_keepalive: Duration::ZERO,
    })
    .unwrap()
}

/// The index of the segment holding node `name`.
fn segment_of(t: &Topology, name: &str) -> usize {
    t.segments.iter().position(|s| s.members.iter().any(|m| m.name == name)).unwrap()
}

fn private_ip(n: &Node) -> Option<IpAddr> {
    n.internal_ip.map(|c| c.addr())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_ready_nodes_pod_cidr_is_reachable_from_every_other_through_exactly_one_next_hop(
        mesh in mesh(),
    ) {
        let cross = mesh.granularity == Granularity::Cross;
        for x in &mesh.nodes {
            let t = topology(&mesh, &x.name);
            let enc = EncapsulatorConfig {
                encapsulator: Encapsulator::select(None, x.internal_ip.is_some()),
                strategy: Encapsulation::Never,
            };
            let (routes, _) = t.routes(&ifaces(), true, &enc);
            let conf = t.conf();
            let own = &t.segments[segment_of(&t, &x.name)];
            for y in mesh.nodes.iter().filter(|y| y.name != x.name) {
                let s = y.subnets[0];
                let seg = &t.segments[segment_of(&t, &y.name)];
                let same_segment = seg.location == t.location;
                let same_location = cross && seg.node_location == t.node_location;
                if same_location && (x.internal_ip.is_none() || y.internal_ip.is_none()) {
                    // Upstream has no path here (see the module comment).
                    continue;
                }
                let covering: Vec<_> = routes
                    .iter()
                    .filter(|r| r.table == MAIN_TABLE && r.dst.covers(&s))
                    .collect();
                prop_assert_eq!(covering.len(), 1, "from {} to {} ({}): {:?}", x.name, y.name, s, covering);
                let r = covering[0];
                prop_assert_eq!(r.dst, s);
                let peers: Vec<_> = conf
                    .peers
                    .iter()
                    .filter(|p| p.allowed_ips.iter().any(|a| a.covers(&s)))
                    .collect();
                if same_segment || same_location {
                    prop_assert_eq!(r.via, private_ip(y), "from {} to {}: {}", x.name, y.name, r);
                    prop_assert_eq!(&r.dev, "eth0");
                    if t.leader {
                        prop_assert!(peers.is_empty(), "from {} to {}: {:?}", x.name, y.name, peers);
                    }
                } else if t.leader {
                    prop_assert_eq!(peers.len(), 1, "from {} to {}: {:?}", x.name, y.name, peers);
                    prop_assert_eq!(peers[0].public_key, seg.key);
                    prop_assert!(seg.wireguard_ip.is_some());
                    prop_assert_eq!(r.via, seg.wireguard_ip, "from {} to {}: {}", x.name, y.name, r);
                    prop_assert_eq!(&r.dev, "kilo0");
                } else {
                    let leader = &own.members[own.leader];
                    prop_assert_eq!(r.via, leader.internal_ip.map(|c| c.addr()), "from {} to {}: {}", x.name, y.name, r);
                    prop_assert_eq!(&r.dev, "eth0");
                }
            }
        }
    }
}
