//! Arbitrary annotations, labels and pod CIDRs → `node_from_object` (upstream's `translateNode`):
//! never panics, never fails. What the agent would write for the node it read reads back to a node
//! that writes the same annotations again (one round reaches a fixed point), and `nodes_equal`
//! agrees with itself.
#![no_main]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use arbitrary::Arbitrary;
use kilo_core::annotations::{
    AGENT_ANNOTATION_KEYS, DEFAULT_TOPOLOGY_LABEL, NodeObject, agent_annotations, key,
    node_from_object, nodes_equal,
};
use kilo_core::health::LeaderHealth;
use kilo_core::{Cidr, Endpoint, Granularity, Key, Node};
use libfuzzer_sys::fuzz_target;

/// Every key `node_from_object` reads.
const KEYS: &[&str] = &[
    key::ENDPOINT,
    key::FORCE_ENDPOINT,
    key::INTERNAL_IP,
    key::FORCE_INTERNAL_IP,
    key::KEY,
    key::LAST_SEEN,
    key::LEADER,
    key::LOCATION,
    key::PERSISTENT_KEEPALIVE,
    key::WIREGUARD_IP,
    key::DISCOVERED_ENDPOINTS,
    key::ALLOWED_LOCATION_IPS,
    key::GRANULARITY,
    key::CNI_COMPATIBILITY_IP,
    key::LEADER_HEALTH,
];

#[derive(Debug, Arbitrary)]
enum AnnotationKey {
    Known(u8),
    Other(String),
}

#[derive(Debug, Arbitrary)]
enum Value {
    Raw(String),
    Empty,
    Dash,
    Cidr(Cidr),
    Cidrs(Vec<Cidr>),
    Endpoint(Endpoint),
    Key(Key),
    Int(i64),
    Granularity(Granularity),
    Discovered(BTreeMap<Key, SocketAddr>),
    Health(LeaderHealth),
}

impl Value {
    fn text(&self) -> String {
        match self {
            Value::Raw(s) => s.clone(),
            Value::Empty => String::new(),
            Value::Dash => "-".to_string(),
            Value::Cidr(c) => c.to_string(),
            Value::Cidrs(cs) => cs.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            Value::Endpoint(e) => e.to_string(),
            Value::Key(k) => k.to_base64(),
            Value::Int(i) => i.to_string(),
            Value::Granularity(g) => g.to_string(),
            Value::Discovered(map) => {
                let node = Node { discovered_endpoints: Some(map.clone()), ..Node::default() };
                agent_annotations(&node).remove(key::DISCOVERED_ENDPOINTS).unwrap_or_default()
            }
            Value::Health(h) => h.to_string(),
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Input {
    name: String,
    annotations: Vec<(AnnotationKey, Value)>,
    labels: BTreeMap<String, String>,
    region: Option<String>,
    pod_cidrs: Vec<String>,
    other_topology_label: Option<String>,
    now: i64,
}

fn read(name: &str, annotations: &BTreeMap<String, String>) -> Node {
    let none = BTreeMap::new();
    let obj = NodeObject { name, annotations, labels: &none, pod_cidrs: &[] };
    node_from_object(&obj, DEFAULT_TOPOLOGY_LABEL).0
}

fuzz_target!(|input: Input| {
    let annotations: BTreeMap<String, String> = input
        .annotations
        .iter()
        .map(|(k, v)| {
            let k = match k {
                AnnotationKey::Known(i) => KEYS[usize::from(*i) % KEYS.len()].to_string(),
                AnnotationKey::Other(s) => s.clone(),
            };
            (k, v.text())
        })
        .collect();
    let mut labels = input.labels.clone();
    if let Some(region) = &input.region {
        labels.insert(DEFAULT_TOPOLOGY_LABEL.to_string(), region.clone());
    }
    let label = input.other_topology_label.as_deref().unwrap_or(DEFAULT_TOPOLOGY_LABEL);
    let obj = NodeObject {
        name: &input.name,
        annotations: &annotations,
        labels: &labels,
        pod_cidrs: &input.pod_cidrs,
    };
    let (node, issues) = node_from_object(&obj, label);
    assert_eq!(node.name, input.name);
    for issue in &issues {
        let _ = issue.to_string();
    }
    assert!(nodes_equal(&node, &node, input.now));
    let _ = node.is_ready_at(input.now);

    let written = agent_annotations(&node);
    assert_eq!(written.len(), AGENT_ANNOTATION_KEYS.len());
    let second = read(&node.name, &written);
    let rewritten = agent_annotations(&second);
    let third = read(&node.name, &rewritten);
    assert_eq!(agent_annotations(&third), rewritten, "written once: {written:?}");
});
