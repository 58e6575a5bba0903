//! Small arbitrary node and peer lists → `Topology::new` → WireGuard confs, routes, rules, graph,
//! DOT, plan (JSON and text) and validation: never panics. Names, locations and keys come from
//! small pools so that duplicates, shared locations and node/peer key clashes are common; one
//! entry in each list may instead be a wholly arbitrary `Node` or `Peer`.
#![no_main]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use arbitrary::Arbitrary;
use kilo_core::plan::{Plan, PlanOptions};
use kilo_core::routes::{Encapsulator, EncapsulatorConfig, Interfaces};
use kilo_core::validate::{ValidationInput, segment_count, validate};
use kilo_core::{
    Cidr, Compatibility, Encapsulation, Endpoint, Granularity, Key, Node, Peer, PrivateKey,
    Topology, TopologyInput,
};
use libfuzzer_sys::fuzz_target;

const NAMES: &[&str] = &["a", "b", "c", "d", "e", "../etc", "", "node-with-a-long-name.example"];
const LOCATIONS: &[&str] = &["", "gcp", "aws", "a b"];
const PEERS: &[&str] = &["p1", "p2", "a", ""];

fn pick<'s>(pool: &[&'s str], i: u8) -> &'s str {
    pool[usize::from(i) % pool.len()]
}

/// Key 0 is the zero key; keys are shared between nodes and peers.
fn key(i: u8) -> Key {
    Key::from_bytes([i % 6; 32])
}

fn few<T: Clone>(v: &[T], n: usize) -> Vec<T> {
    v.iter().take(n).cloned().collect()
}

#[derive(Debug, Arbitrary)]
struct SmallNode {
    name: u8,
    location: u8,
    key: u8,
    endpoint: Option<Endpoint>,
    internal_ip: Option<Cidr>,
    no_internal_ip: bool,
    cni_compatibility_ip: Option<Cidr>,
    subnets: Vec<Cidr>,
    leader: bool,
    keepalive: u16,
    wireguard_ip: Option<Cidr>,
    allowed_location_ips: Vec<Cidr>,
    discovered: Option<Vec<(u8, SocketAddr)>>,
    granularity: Option<Granularity>,
    last_seen: i64,
}

#[derive(Debug, Arbitrary)]
enum NodeIn {
    Small(SmallNode),
    Any(Node),
}

impl NodeIn {
    fn node(&self) -> Node {
        match self {
            NodeIn::Any(n) => Node {
                subnets: few(&n.subnets, 3),
                allowed_location_ips: few(&n.allowed_location_ips, 4),
                ..n.clone()
            },
            NodeIn::Small(n) => Node {
                name: pick(NAMES, n.name).to_string(),
                endpoint: n.endpoint.clone(),
                key: key(n.key),
                no_internal_ip: n.no_internal_ip,
                internal_ip: n.internal_ip,
                cni_compatibility_ip: n.cni_compatibility_ip,
                last_seen: n.last_seen,
                leader: n.leader,
                location: pick(LOCATIONS, n.location).to_string(),
                persistent_keepalive: Duration::from_secs(n.keepalive.into()),
                subnets: few(&n.subnets, 3),
                wireguard_ip: n.wireguard_ip,
                discovered_endpoints: n.discovered.as_ref().map(|d| {
                    d.iter().take(4).map(|(k, a)| (key(*k), *a)).collect::<BTreeMap<_, _>>()
                }),
                allowed_location_ips: few(&n.allowed_location_ips, 4),
                granularity: n.granularity,
                ..Node::default()
            },
        }
    }
}

#[derive(Debug, Arbitrary)]
struct SmallPeer {
    name: u8,
    key: u8,
    allowed_ips: Vec<Cidr>,
    preshared_key: Option<u8>,
    keepalive: u16,
    endpoint: Option<Endpoint>,
}

#[derive(Debug, Arbitrary)]
enum PeerIn {
    Small(SmallPeer),
    Any(Peer),
}

impl PeerIn {
    fn peer(&self) -> Peer {
        match self {
            PeerIn::Any(p) => Peer { allowed_ips: few(&p.allowed_ips, 4), ..p.clone() },
            PeerIn::Small(p) => Peer {
                name: pick(PEERS, p.name).to_string(),
                allowed_ips: few(&p.allowed_ips, 4),
                public_key: key(p.key),
                preshared_key: p
                    .preshared_key
                    .map(|n| kilo_core::PresharedKey::from_bytes(*key(n).as_bytes())),
                persistent_keepalive: Duration::from_secs(p.keepalive.into()),
                endpoint: p.endpoint.clone(),
            },
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Input {
    nodes: Vec<NodeIn>,
    peers: Vec<PeerIn>,
    granularity: Granularity,
    hostname: u8,
    port: u16,
    key: PrivateKey,
    subnet: Option<Cidr>,
    service_cidrs: Vec<Cidr>,
    keepalive: u16,
    local: bool,
    cni: bool,
    forward: bool,
    encapsulation: Encapsulation,
    compatibility: Option<Compatibility>,
    extra_allowed_ips: Vec<Cidr>,
}

fuzz_target!(|input: Input| {
    let nodes: Vec<Node> = input.nodes.iter().take(8).map(NodeIn::node).collect();
    let peers: Vec<Peer> = input.peers.iter().take(6).map(PeerIn::peer).collect();
    let subnet = input.subnet.unwrap_or_else(kilo_core::offline::default_subnet);
    let service_cidrs = few(&input.service_cidrs, 3);

    let findings = validate(&ValidationInput {
        nodes: &nodes,
        peers: &peers,
        invalid: &[],
        ignored: &[],
        granularity: input.granularity,
        subnet,
        subnet6: None,
        service_cidrs: &service_cidrs,
    });
    for finding in &findings {
        let _ = finding.to_string();
    }
    let _ = segment_count(&nodes, input.granularity);

    let hostname = match nodes.len() {
        0 => "a".to_string(),
        n => nodes[usize::from(input.hostname) % n].name.clone(),
    };
    let topology = Topology::new(TopologyInput {
        nodes: &nodes,
        peers: &peers,
        granularity: input.granularity,
        hostname: &hostname,
        port: input.port,
        key: input.key.clone(),
        subnet,
        subnet6: None,
        service_cidrs: &service_cidrs,
        persistent_keepalive: Duration::from_secs(input.keepalive.into()),
    });
    let topology = match topology {
        Ok(t) => t,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };

    let _ = topology.conf().to_ini();
    let _ = topology.conf_for_device().to_ini();
    let _ = topology.peer_conf(None).to_ini();
    for peer in &peers {
        let _ = topology.peer_conf(Some(&peer.name)).to_ini();
        let _ = topology.peer_routes(&peer.name, "kilo0", &few(&input.extra_allowed_ips, 3));
    }
    let _ = topology.as_peer();
    let _ = topology.dot();
    let _ = topology.graph();

    let interfaces = Interfaces {
        kilo: "kilo0".to_string(),
        private: "eth0".to_string(),
        tunnel: "tunl0".to_string(),
    };
    let enc = EncapsulatorConfig {
        encapsulator: Encapsulator::select(input.compatibility, topology.private_ip.is_some()),
        strategy: input.encapsulation,
    };
    let _ = topology.routes(&interfaces, input.local, &enc);

    let mut options = PlanOptions::new(hostname.clone(), interfaces);
    options.local = input.local;
    options.cni = input.cni;
    options.iptables_forward_rules = input.forward;
    options.encapsulation = input.encapsulation;
    options.compatibility = input.compatibility;
    let plan = Plan::new(&topology, topology.leader.then(|| topology.conf_for_device()), &options);
    let _ = plan.to_json_pretty();
    let _ = plan.to_text();
});
