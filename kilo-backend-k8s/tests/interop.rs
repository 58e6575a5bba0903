//! Interop with upstream Kilo: Node objects annotated exactly as upstream's agent and users write
//! them read identically, and what `publish_local` writes parses
//! back to the node that was published.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node as KubeNode;
use kilo_backend_k8s::translate::{node_from_kube, peer_from_kube};
use kilo_backend_k8s::{Peer, publish_patch};
use kilo_core::annotations::DEFAULT_TOPOLOGY_LABEL;
use kilo_core::{Cidr, Endpoint, Granularity, Key, Node};
use serde_json::{Value, json};

const KEY: &str = "xT9lUpBzFhZbT3fyJYVJOeyRtEIRQSWgGP6HWJeMvWA=";

fn kube_node(annotations: Value, labels: Value, pod_cidr: &str) -> KubeNode {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "n", "annotations": annotations, "labels": labels},
        "spec": {"podCIDR": pod_cidr},
    }))
    .unwrap()
}

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

#[test]
fn a_node_annotated_by_upstream_kg_reads_as_upstream_reads_it() {
    // Upstream's table: case "complete".
    let object = kube_node(
        json!({
            "kilo.squat.ai/endpoint": "10.0.0.1:51820",
            "kilo.squat.ai/force-endpoint": "10.0.0.2:51821",
            "kilo.squat.ai/force-internal-ip": "10.1.0.2/32",
            "kilo.squat.ai/internal-ip": "10.1.0.1/32",
            "kilo.squat.ai/key": KEY,
            "kilo.squat.ai/last-seen": "1000000000",
            "kilo.squat.ai/leader": "",
            "kilo.squat.ai/location": "b",
            "kilo.squat.ai/persistent-keepalive": "25",
            "kilo.squat.ai/wireguard-ip": "10.4.0.1/16",
        }),
        json!({"topology.kubernetes.io/region": "a"}),
        "10.2.1.0/24",
    );
    let (node, issues) = node_from_kube(&object, DEFAULT_TOPOLOGY_LABEL);
    assert!(issues.is_empty(), "{issues:?}");
    let expected = Node {
        name: "n".into(),
        endpoint: Some("10.0.0.2:51821".parse::<Endpoint>().unwrap()),
        // The administrator's force-endpoint and force-internal-ip: never replaced (C9).
        endpoint_forced: true,
        internal_ip: Some(cidr("10.1.0.2/32")),
        internal_ip_forced: true,
        key: KEY.parse::<Key>().unwrap(),
        last_seen: 1_000_000_000,
        leader: true,
        location: "b".into(),
        persistent_keepalive: Duration::from_secs(25),
        subnets: vec![cidr("10.2.1.0/24")],
        wireguard_ip: Some(cidr("10.4.0.1/16")),
        ..Node::default()
    };
    assert_eq!(node, expected);
}

#[test]
fn a_node_with_every_annotation_upstream_writes_reads_them_all() {
    // The values upstream's agent writes, discovered endpoints as Go's JSON.
    let discovered = format!(r#"{{"{KEY}":{{"IP":"203.0.113.9","Port":51820,"Zone":""}}}}"#);
    let object = kube_node(
        json!({
            "kilo.squat.ai/endpoint": "[ff10::10]:51820",
            "kilo.squat.ai/internal-ip": "ff60::10/64",
            "kilo.squat.ai/key": KEY,
            "kilo.squat.ai/last-seen": "1700000000",
            "kilo.squat.ai/wireguard-ip": "",
            "kilo.squat.ai/discovered-endpoints": discovered,
            "kilo.squat.ai/granularity": "full",
            "kilo.squat.ai/cni-compatibility-ip": "",
            "kilo.squat.ai/allowed-location-ips": "172.31.16.0/20,bad,10.9.0.1/24",
        }),
        json!({}),
        "10.2.0.1/24",
    );
    let (node, issues) = node_from_kube(&object, DEFAULT_TOPOLOGY_LABEL);
    assert_eq!(node.endpoint.unwrap().to_string(), "[ff10::10]:51820");
    assert_eq!(node.internal_ip, Some(cidr("ff60::10/64")));
    assert_eq!(node.wireguard_ip, None);
    assert_eq!(node.granularity, Some(Granularity::Full));
    assert_eq!(node.subnets, vec![cidr("10.2.0.0/24")], "the pod CIDR is network-masked");
    assert_eq!(node.allowed_location_ips, vec![cidr("172.31.16.0/20"), cidr("10.9.0.1/24")]);
    let discovered = node.discovered_endpoints.unwrap();
    assert_eq!(discovered[&KEY.parse::<Key>().unwrap()], "203.0.113.9:51820".parse().unwrap());
    assert_eq!(issues.len(), 1, "only the bad allowed-location IP: {issues:?}");
}

#[test]
fn what_publish_local_writes_parses_back_to_the_published_node() {
    let mut node = Node {
        name: "n".into(),
        endpoint: Some("example.com:51820".parse::<Endpoint>().unwrap()),
        key: KEY.parse().unwrap(),
        internal_ip: Some(cidr("10.1.0.1/24")),
        cni_compatibility_ip: Some(cidr("10.0.9.1/32")),
        last_seen: 1_700_000_000,
        wireguard_ip: Some(cidr("10.4.0.1/16")),
        discovered_endpoints: Some(BTreeMap::from([(
            Key::from_bytes([5; 32]),
            "198.51.100.3:4000".parse().unwrap(),
        )])),
        granularity: Some(Granularity::Location),
        ..Node::default()
    };
    let patch = publish_patch(&node, None).unwrap();
    let object = kube_node(patch, json!({}), "10.2.0.0/24");
    let (read, issues) = node_from_kube(&object, DEFAULT_TOPOLOGY_LABEL);
    assert!(issues.is_empty(), "{issues:?}");
    node.subnets = vec![cidr("10.2.0.0/24")];
    assert_eq!(read, node);
}

#[test]
fn the_empty_values_kg_writes_for_none_parse_back_as_none() {
    let node = Node { name: "n".into(), key: KEY.parse().unwrap(), ..Node::default() };
    let patch = publish_patch(&node, None).unwrap();
    assert_eq!(patch["kilo.squat.ai/internal-ip"], "");
    assert_eq!(patch["kilo.squat.ai/wireguard-ip"], "");
    assert_eq!(patch["kilo.squat.ai/discovered-endpoints"], "");
    assert_eq!(patch["kilo.squat.ai/cni-compatibility-ip"], "");
    let (read, issues) = node_from_kube(&kube_node(patch, json!({}), ""), DEFAULT_TOPOLOGY_LABEL);
    assert!(issues.iter().all(|i| i.key == "spec.podCIDRs"), "{issues:?}");
    assert_eq!(read.internal_ip, None);
    assert_eq!(read.discovered_endpoints, None);
    assert_eq!(read.key, node.key);
}

fn peer(spec: Value) -> Peer {
    serde_json::from_value(json!({
        "apiVersion": "kilo.squat.ai/v1alpha1", "kind": "Peer",
        "metadata": {"name": "p"}, "spec": spec,
    }))
    .unwrap()
}

#[test]
fn a_peer_as_upstream_users_write_it_translates_as_upstream() {
    // Upstream's table: TestTranslatePeer, through the CRD type.
    let p = peer(json!({
        "allowedIPs": ["10.0.0.1/24", "10.0.0.2/32"],
        "endpoint": {"dnsOrIP": {"dns": "example.com", "ip": "10.0.0.1"}, "port": 51820},
        "persistentKeepalive": 1,
        "presharedKey": KEY,
        "publicKey": KEY,
    }));
    let mesh = peer_from_kube(&p).unwrap();
    assert_eq!(mesh.name, "p");
    assert_eq!(mesh.allowed_ips, vec![cidr("10.0.0.1/24"), cidr("10.0.0.2/32")]);
    assert_eq!(mesh.endpoint.unwrap().to_string(), "example.com:51820", "DNS wins (C3)");
    assert_eq!(mesh.persistent_keepalive, Duration::from_secs(1));
    assert_eq!(mesh.preshared_key, Some(KEY.parse().unwrap()));
    assert_eq!(mesh.public_key, KEY.parse().unwrap());
}

#[test]
fn an_invalid_peer_is_left_out_with_upstreams_message() {
    let invalid = peer_from_kube(&peer(json!({
        "allowedIPs": ["10.0.0.1/24"],
        "endpoint": {"dnsOrIP": {}, "port": 51820},
        "publicKey": KEY,
    })))
    .unwrap_err();
    assert_eq!(invalid.name, "p");
    assert_eq!(invalid.message, "either an endpoint DNS name IP address must be given");
}

#[test]
fn upstreams_translate_node_table_holds_through_kubernetes_node_objects() {
    // Upstream's table: TestTranslateNode, the cases that involve the object's shape.
    let read = |annotations: Value, labels: Value, pod_cidr: &str| {
        node_from_kube(&kube_node(annotations, labels, pod_cidr), DEFAULT_TOPOLOGY_LABEL).0
    };
    assert_eq!(read(json!({}), json!({}), "foo").subnets, Vec::<Cidr>::new(), "invalid subnet");
    assert_eq!(read(json!({}), json!({}), "10.2.0.1/24").subnets, vec![cidr("10.2.0.0/24")]);
    assert_eq!(read(json!({}), json!({}), "10.2.1.0/24").subnets, vec![cidr("10.2.1.0/24")]);
    let region = json!({"topology.kubernetes.io/region": "a"});
    assert_eq!(read(json!({}), region.clone(), "").location, "a");
    assert_eq!(read(json!({"kilo.squat.ai/location": "b"}), region, "").location, "b");
    let invalid_ips = read(
        json!({"kilo.squat.ai/endpoint": "10.0.0.1", "kilo.squat.ai/internal-ip": "foo"}),
        json!({}),
        "",
    );
    assert_eq!((invalid_ips.endpoint, invalid_ips.internal_ip), (None, None));
    let forced_none = read(
        json!({"kilo.squat.ai/internal-ip": "10.1.0.1/32", "kilo.squat.ai/force-internal-ip": ""}),
        json!({}),
        "",
    );
    assert!(forced_none.no_internal_ip);
    assert_eq!(forced_none.internal_ip, None);
    let bad_override = read(
        json!({"kilo.squat.ai/endpoint": "10.0.0.1:51820", "kilo.squat.ai/force-endpoint": "-10.0.0.2:51821"}),
        json!({}),
        "",
    );
    assert_eq!(bad_override.endpoint.unwrap().to_string(), "10.0.0.1:51820");
    assert_eq!(read(json!({"kilo.squat.ai/last-seen": "foo"}), json!({}), "").last_seen, 0);
}

#[test]
fn dual_stack_pod_cidrs_are_all_read() {
    let object: KubeNode = serde_json::from_value(json!({
        "metadata": {"name": "n"},
        "spec": {"podCIDR": "10.2.0.0/24", "podCIDRs": ["10.2.0.0/24", "fd00:2::/64"]},
    }))
    .unwrap();
    let (node, _) = node_from_kube(&object, DEFAULT_TOPOLOGY_LABEL);
    assert_eq!(node.subnets, vec![cidr("10.2.0.0/24"), cidr("fd00:2::/64")]);
    assert_eq!(node.subnet(), Some(cidr("10.2.0.0/24")), "upstream's single subnet is the first");
}
