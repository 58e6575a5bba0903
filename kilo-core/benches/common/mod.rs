//! Bench inputs: the baseline's synthetic cluster (built by `kilo-gen`'s library), translated as
//! the agent and `kgctl` translate it, and the settings the upstream baseline used.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use kilo_core::annotations::{DEFAULT_TOPOLOGY_LABEL, NodeObject, node_from_object};
use kilo_core::peer_spec::{DnsOrIp, PeerEndpoint, PeerSpec, peer_from_spec, validate};
use kilo_core::plan::PlanOptions;
use kilo_core::routes::{Encapsulator, EncapsulatorConfig, Interfaces};
use kilo_core::{
    Cidr, Encapsulation, Granularity, Node, Peer, PrivateKey, Readiness, Topology, TopologyInput,
};
use kilo_gen::{GenPeer, Shape, generate};

pub mod cpu_time;

/// The local host of every measurement, as in the baseline.
pub const HOST: &str = "n00000";

/// A node as the Kubernetes API would hand it over: annotations, labels, pod CIDRs.
pub struct Object {
    pub name: String,
    pub annotations: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub pod_cidrs: Vec<String>,
}

/// The baseline mesh of `n` nodes, as API objects.
pub struct Input {
    pub objects: Vec<Object>,
    pub peer_specs: Vec<(String, PeerSpec)>,
}

pub fn input(n: usize) -> Input {
    let mesh = generate(&Shape::baseline(n)).expect("the baseline shape is valid");
    let objects = mesh
        .nodes
        .iter()
        .map(|g| Object {
            name: g.name.clone(),
            annotations: g.annotations(),
            labels: g.labels(),
            pod_cidrs: vec![g.pod_cidr.clone()],
        })
        .collect();
    let peer_specs = mesh.peers.iter().map(|p| (p.name.clone(), spec(p))).collect();
    Input { objects, peer_specs }
}

fn spec(p: &GenPeer) -> PeerSpec {
    PeerSpec {
        allowed_ips: p.allowed_ips.clone(),
        endpoint: p.endpoint.as_ref().map(|e| PeerEndpoint {
            dns_or_ip: DnsOrIp { dns: None, ip: Some(e.ip.clone()) },
            port: i32::from(e.port),
        }),
        persistent_keepalive: p.keepalive.map(i64::from),
        preshared_key: p.preshared_key.clone(),
        public_key: p.key.clone(),
    }
}

/// Upstream's `translateNode` for every node, and `Validate()` plus `translatePeer` for every peer.
pub fn translate(input: &Input) -> (Vec<Node>, Vec<Peer>) {
    let nodes = input
        .objects
        .iter()
        .map(|o| {
            let obj = NodeObject {
                name: &o.name,
                annotations: &o.annotations,
                labels: &o.labels,
                pod_cidrs: &o.pod_cidrs,
            };
            node_from_object(&obj, DEFAULT_TOPOLOGY_LABEL).0
        })
        .collect();
    let peers = input
        .peer_specs
        .iter()
        .filter(|(_, s)| validate(s).is_ok())
        .map(|(name, s)| peer_from_spec(name, s))
        .collect();
    (nodes, peers)
}

/// kgctl's preparation: the ready nodes and peers.
pub fn ready(nodes: &[Node], peers: &[Peer]) -> (Vec<Node>, Vec<Peer>) {
    let readiness = Readiness::IgnoringLastSeen;
    (
        nodes.iter().filter(|n| n.is_ready(readiness)).cloned().collect(),
        peers.iter().filter(|p| p.is_ready()).cloned().collect(),
    )
}

/// The translated, ready mesh.
pub struct Mesh {
    pub nodes: Vec<Node>,
    pub peers: Vec<Peer>,
    pub service_cidrs: Vec<Cidr>,
}

pub fn mesh(n: usize) -> Mesh {
    let (nodes, peers) = translate(&input(n));
    let (nodes, peers) = ready(&nodes, &peers);
    Mesh { nodes, peers, service_cidrs: vec!["10.43.0.0/16".parse().expect("a CIDR")] }
}

impl Mesh {
    /// `NewTopology` as the agent on `n00000` calls it.
    pub fn topology(&self, granularity: Granularity) -> Topology {
        self.topology_of(&self.nodes, granularity)
    }

    pub fn topology_of(&self, nodes: &[Node], granularity: Granularity) -> Topology {
        Topology::new(TopologyInput {
            nodes,
            peers: &self.peers,
            granularity,
            hostname: HOST,
            port: kilo_gen::PORT,
            key: PrivateKey::from_bytes([7; 32]),
            subnet: "10.4.0.0/16".parse().expect("a CIDR"),
            subnet6: None,
            service_cidrs: &self.service_cidrs,
            persistent_keepalive: Duration::ZERO,
        })
        .expect("the baseline mesh makes a topology")
    }
}

pub fn interfaces() -> Interfaces {
    Interfaces { kilo: "kilo0".into(), private: "eth0".into(), tunnel: "tunl0".into() }
}

/// `Routes("kilo0", …, local=true, IPIP crosssubnet)`, as the baseline.
pub fn encapsulation() -> EncapsulatorConfig {
    EncapsulatorConfig { encapsulator: Encapsulator::Ipip, strategy: Encapsulation::CrossSubnet }
}

/// The agent's defaults plus `--iptables-forward-rules`, as the baseline's `Rules(cni, fwd)`.
pub fn plan_options() -> PlanOptions {
    let mut options = PlanOptions::new(HOST, interfaces());
    options.local = true;
    options.cni = true;
    options.iptables_forward_rules = true;
    options.encapsulation = Encapsulation::CrossSubnet;
    options.compatibility = None;
    options
}

/// The bench sizes; `KILO_BENCH_SIZES=100,1000` narrows them.
pub fn sizes() -> Vec<usize> {
    std::env::var("KILO_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 1_000, 10_000])
}

pub const GRANULARITIES: [Granularity; 2] = [Granularity::Location, Granularity::Full];
