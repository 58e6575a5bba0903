//! What the agent writes for its own node (golden strings), reading it back (property test),
//! upstream's `nodesAreEqual`, and hostile input.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use kilo_core::annotations::{
    AGENT_ANNOTATION_KEYS, DEFAULT_TOPOLOGY_LABEL, NodeObject, agent_annotations, key,
    node_from_object, nodes_equal,
};
use kilo_core::fixtures;
use kilo_core::{Cidr, Endpoint, Granularity, Key, Node};
use proptest::prelude::*;

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn ep(s: &str) -> Option<Endpoint> {
    Some(s.parse().unwrap())
}

fn read(
    annotations: &BTreeMap<String, String>,
) -> (Node, Vec<kilo_core::annotations::AnnotationIssue>) {
    let labels = BTreeMap::new();
    let obj = NodeObject { name: "n", annotations, labels: &labels, pod_cidrs: &[] };
    node_from_object(&obj, DEFAULT_TOPOLOGY_LABEL)
}

fn written(node: &Node) -> Vec<(String, String)> {
    agent_annotations(node).into_iter().collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<_> = expected.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    v.sort();
    v
}

#[test]
fn agent_writes_exactly_the_keys_it_cleans_up() {
    let keys: Vec<String> = agent_annotations(&Node::default()).into_keys().collect();
    let mut expected: Vec<String> = AGENT_ANNOTATION_KEYS.iter().map(|k| k.to_string()).collect();
    expected.sort();
    assert_eq!(keys, expected);
    assert!(AGENT_ANNOTATION_KEYS.contains(&key::CNI_COMPATIBILITY_IP));
    assert!(!AGENT_ANNOTATION_KEYS.contains(&key::FORCE_ENDPOINT));
}

#[test]
fn non_leader_with_ipv4_endpoint_writes_empty_strings_for_none() {
    let node = Node {
        name: "a".into(),
        endpoint: ep("10.1.0.1:51820"),
        key: fixtures::key(1),
        internal_ip: Some(cidr("192.168.0.1/24")),
        last_seen: 1_700_000_000,
        granularity: Some(Granularity::Location),
        ..Node::default()
    };
    assert_eq!(
        written(&node),
        pairs(&[
            ("kilo.squat.ai/endpoint", "10.1.0.1:51820"),
            ("kilo.squat.ai/internal-ip", "192.168.0.1/24"),
            ("kilo.squat.ai/key", "a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            ("kilo.squat.ai/last-seen", "1700000000"),
            ("kilo.squat.ai/wireguard-ip", ""),
            ("kilo.squat.ai/discovered-endpoints", ""),
            ("kilo.squat.ai/granularity", "location"),
            ("kilo.squat.ai/cni-compatibility-ip", ""),
            ("kilo.squat.ai/leader-health", ""),
            ("kilo.squat.ai/internal-ip6", ""),
            ("kilo.squat.ai/wireguard-ip6", ""),
        ])
    );
}

#[test]
fn leader_with_ipv6_endpoint_and_wireguard_ip() {
    let node = Node {
        endpoint: ep("[2001:db8::1]:51821"),
        key: fixtures::key(2),
        internal_ip: Some(cidr("fd00::5/64")),
        last_seen: 5,
        leader: true,
        wireguard_ip: Some(cidr("10.4.0.1/16")),
        cni_compatibility_ip: Some(cidr("10.0.1.7/32")),
        granularity: Some(Granularity::Full),
        health: Some(kilo_core::health::LeaderHealth {
            lead: Some(3),
            via: None,
            down: [("b".to_string(), 2)].into(),
        }),
        ..Node::default()
    };
    assert_eq!(
        written(&node),
        pairs(&[
            ("kilo.squat.ai/endpoint", "[2001:db8::1]:51821"),
            ("kilo.squat.ai/internal-ip", "fd00::5/64"),
            ("kilo.squat.ai/key", "a2V5MgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            ("kilo.squat.ai/last-seen", "5"),
            ("kilo.squat.ai/wireguard-ip", "10.4.0.1/16"),
            ("kilo.squat.ai/discovered-endpoints", ""),
            ("kilo.squat.ai/granularity", "full"),
            ("kilo.squat.ai/cni-compatibility-ip", "10.0.1.7/32"),
            ("kilo.squat.ai/leader-health", "v1 lead=3 down=b@2"),
            ("kilo.squat.ai/internal-ip6", ""),
            ("kilo.squat.ai/wireguard-ip6", ""),
        ])
    );
}

/// A dual-stack leader keeps upstream's annotations IPv4 (what an upstream agent in the same
/// cluster reads) and publishes its IPv6 addresses in the two annotations upstream ignores; an
/// agent reading them back gets the same node.
#[test]
fn a_dual_stack_leader_keeps_the_upstream_annotations_ipv4_and_round_trips() {
    let node = Node {
        name: "a".into(),
        endpoint: ep("10.1.0.1:51820"),
        key: fixtures::key(1),
        internal_ip: Some(cidr("192.168.0.1/24")),
        internal_ip6: Some(cidr("fd00:50::1/64")),
        last_seen: 7,
        wireguard_ip: Some(cidr("10.4.0.1/16")),
        wireguard_ip6: Some(cidr("fd04::1/64")),
        subnets: vec![cidr("10.2.1.0/24"), cidr("fd02:1::/64")],
        granularity: Some(Granularity::Location),
        discovered_endpoints: Some(BTreeMap::new()),
        ..Node::default()
    };
    let written = agent_annotations(&node);
    assert_eq!(written[key::INTERNAL_IP], "192.168.0.1/24");
    assert_eq!(written[key::WIREGUARD_IP], "10.4.0.1/16");
    assert_eq!(written[key::INTERNAL_IP6], "fd00:50::1/64");
    assert_eq!(written[key::WIREGUARD_IP6], "fd04::1/64");
    let pod_cidrs = ["10.2.1.0/24".to_string(), "fd02:1::/64".to_string()];
    let labels = BTreeMap::new();
    let (read, issues) = kilo_core::annotations::node_from_object(
        &kilo_core::annotations::NodeObject {
            name: "a",
            annotations: &written,
            labels: &labels,
            pod_cidrs: &pod_cidrs,
        },
        kilo_core::annotations::DEFAULT_TOPOLOGY_LABEL,
    );
    assert!(issues.is_empty(), "{issues:?}");
    assert_eq!(read, node);
}

/// IPv6 annotations that cannot complete the node are ignored with an issue each, and a second
/// pod CIDR of one family too; the rest of the node is read.
#[test]
fn ipv6_annotations_that_do_not_fit_are_ignored_with_an_issue() {
    let annotations: BTreeMap<String, String> = [
        (key::INTERNAL_IP, "fd00::5/64"),
        (key::INTERNAL_IP6, "fd00::6/64"),
        (key::WIREGUARD_IP, "10.4.0.1/16"),
        (key::WIREGUARD_IP6, "10.5.0.1/16"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .into();
    let pod_cidrs = ["10.2.1.0/24".to_string(), "10.2.9.0/24".to_string()];
    let labels = BTreeMap::new();
    let (read, issues) = kilo_core::annotations::node_from_object(
        &kilo_core::annotations::NodeObject {
            name: "a",
            annotations: &annotations,
            labels: &labels,
            pod_cidrs: &pod_cidrs,
        },
        kilo_core::annotations::DEFAULT_TOPOLOGY_LABEL,
    );
    assert_eq!(read.internal_ip, Some(cidr("fd00::5/64")));
    assert_eq!((read.internal_ip6, read.wireguard_ip6), (None, None));
    assert_eq!(read.subnets, vec![cidr("10.2.1.0/24")]);
    let found: Vec<String> = issues.iter().map(ToString::to_string).collect();
    assert_eq!(
        found,
        [
            "kilo.squat.ai/internal-ip6=\"fd00::6/64\": the IPv4 annotation it completes holds IPv6; ignored",
            "spec.podCIDRs=\"10.2.9.0/24\": a second pod CIDR of one address family (Kubernetes allows one per family); ignored",
            "kilo.squat.ai/wireguard-ip6=\"10.5.0.1/16\": not an IPv6 CIDR; ignored",
        ]
    );
}

#[test]
fn dns_endpoint_is_written_dns_first_even_when_resolved() {
    let resolved = "example.com:51820"
        .parse::<Endpoint>()
        .unwrap()
        .with_resolved("1.1.1.1:51820".parse().unwrap());
    let node =
        Node { endpoint: Some(resolved), granularity: Some(Granularity::Cross), ..Node::default() };
    let annotations = agent_annotations(&node);
    assert_eq!(annotations[key::ENDPOINT], "example.com:51820");
    assert_eq!(annotations[key::KEY], "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    assert_eq!(annotations[key::LAST_SEEN], "0");
    assert_eq!(annotations[key::GRANULARITY], "cross");
}

#[test]
fn discovered_endpoints_are_written_as_go_json_with_keys_in_text_order() {
    let mut discovered = BTreeMap::new();
    discovered.insert(Key::from_bytes([0xff; 32]), "1.2.3.4:51820".parse().unwrap());
    discovered.insert(Key::ZERO, "[2001:db8::2]:1".parse().unwrap());
    discovered.insert(
        fixtures::key(1),
        SocketAddr::new(IpAddr::V6(Ipv4Addr::new(5, 6, 7, 8).to_ipv6_mapped()), 9),
    );
    let node = Node { discovered_endpoints: Some(discovered), ..Node::default() };
    assert_eq!(
        agent_annotations(&node)[key::DISCOVERED_ENDPOINTS],
        concat!(
            r#"{"//////////////////////////////////////////8=":{"IP":"1.2.3.4","Port":51820,"Zone":""},"#,
            r#""AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=":{"IP":"2001:db8::2","Port":1,"Zone":""},"#,
            r#""a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=":{"IP":"5.6.7.8","Port":9,"Zone":""}}"#,
        )
    );
    let empty = Node { discovered_endpoints: Some(BTreeMap::new()), ..Node::default() };
    assert_eq!(agent_annotations(&empty)[key::DISCOVERED_ENDPOINTS], "{}");
}

#[test]
fn discovered_endpoints_written_by_upstream_are_read() {
    let mut annotations = BTreeMap::new();
    annotations.insert(
        key::DISCOVERED_ENDPOINTS.to_string(),
        r#"{"a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=":{"ip":"::ffff:1.2.3.4","PORT":7,"Zone":"","x":1},"a2V5MgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=":{"IP":"fe80::1","Port":8,"Zone":"3"}}"#
            .to_string(),
    );
    let (node, issues) = read(&annotations);
    assert_eq!(issues, vec![]);
    let discovered = node.discovered_endpoints.unwrap();
    assert_eq!(discovered[&fixtures::key(1)], "1.2.3.4:7".parse().unwrap());
    assert_eq!(discovered[&fixtures::key(2)], "[fe80::1%3]:8".parse().unwrap());
    annotations.insert(key::DISCOVERED_ENDPOINTS.to_string(), "{}".to_string());
    assert_eq!(read(&annotations).0.discovered_endpoints, Some(BTreeMap::new()));
}

#[test]
fn discovered_endpoints_that_go_cannot_decode_are_ignored_entirely() {
    for bad in [
        "[]",
        "{",
        r#"{"a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=":{"IP":"1.2.3.4","Port":1.5}}"#,
        r#"{"a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=":{"IP":"1.2.3","Port":1}}"#,
        r#"{"a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=":"1.2.3.4:5"}"#,
    ] {
        let annotations =
            BTreeMap::from([(key::DISCOVERED_ENDPOINTS.to_string(), bad.to_string())]);
        let (node, issues) = read(&annotations);
        assert_eq!(node.discovered_endpoints, None, "{bad}");
        assert_eq!(issues.len(), 1, "{bad}");
    }
}

#[test]
fn discovered_entries_our_model_cannot_hold_are_left_out_with_an_issue() {
    let text = r#"{"foo":{"IP":"1.2.3.4","Port":1},"a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=":{"IP":"1.2.3.4","Port":70000},"a2V5MgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=":null,"a2V5MwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=":{"IP":"","Port":1},"a2V5NAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=":{"IP":"10.0.0.1","Port":2}}"#;
    let annotations = BTreeMap::from([(key::DISCOVERED_ENDPOINTS.to_string(), text.to_string())]);
    let (node, issues) = read(&annotations);
    let discovered = node.discovered_endpoints.unwrap();
    assert_eq!(discovered.len(), 1);
    assert_eq!(discovered[&fixtures::key(4)], "10.0.0.1:2".parse().unwrap());
    assert_eq!(issues.len(), 1);
    assert!(issues[0].message.contains("\"foo\" is not a WireGuard public key"), "{}", issues[0]);
}

#[test]
fn huge_or_garbage_annotations_do_not_panic() {
    let huge = "9".repeat(1 << 20);
    let commas = ",".repeat(1 << 20);
    let brackets = "[".repeat(1 << 20);
    let binary: String = (0..(1u32 << 16)).filter_map(char::from_u32).collect();
    for value in [
        huge.as_str(),
        commas.as_str(),
        brackets.as_str(),
        binary.as_str(),
        "\u{0}:\u{0}",
        "[::1]:",
    ] {
        let annotations: BTreeMap<String, String> = [
            key::ENDPOINT,
            key::FORCE_ENDPOINT,
            key::INTERNAL_IP,
            key::FORCE_INTERNAL_IP,
            key::KEY,
            key::LAST_SEEN,
            key::LOCATION,
            key::PERSISTENT_KEEPALIVE,
            key::WIREGUARD_IP,
            key::DISCOVERED_ENDPOINTS,
            key::ALLOWED_LOCATION_IPS,
            key::GRANULARITY,
            key::CNI_COMPATIBILITY_IP,
        ]
        .iter()
        .map(|k| (k.to_string(), value.to_string()))
        .collect();
        let pod_cidrs = vec![value.to_string()];
        let obj = NodeObject {
            name: value,
            annotations: &annotations,
            labels: &annotations,
            pod_cidrs: &pod_cidrs,
        };
        let (node, issues) = node_from_object(&obj, value);
        assert!(node.endpoint.is_none() && node.key.is_zero());
        assert!(issues.len() >= 10 && issues.len() <= 14);
        for issue in &issues {
            assert!(issue.message.len() < 1000, "{}: {}", issue.key, &issue.message[..300]);
            assert!(issue.to_string().len() < 1500, "{}", issue.key);
        }
    }
}

#[test]
fn nodes_equal_ignores_last_seen_but_not_readiness() {
    let now = 1_000_000;
    let mut a = fixtures::nodes().remove(0);
    a.last_seen = now - 10;
    let mut b = a.clone();
    b.last_seen = now - 20;
    assert!(nodes_equal(&a, &b, now));
    b.last_seen = now - 60;
    assert!(!nodes_equal(&a, &b, now));
}

#[test]
fn nodes_equal_compares_each_field_upstream_compares() {
    let now = 0;
    let base = fixtures::nodes().remove(1);
    assert!(nodes_equal(&base, &base.clone(), now));
    let resolved = Node {
        endpoint: base
            .endpoint
            .as_ref()
            .map(|e| e.with_resolved("10.1.0.2:51820".parse().unwrap())),
        ..base.clone()
    };
    assert!(nodes_equal(&base, &resolved, now));
    let changes: Vec<(&str, Node)> = vec![
        ("endpoint", Node { endpoint: ep("10.1.0.9:51820"), ..base.clone() }),
        ("key", Node { key: fixtures::key(9), ..base.clone() }),
        ("wireguard ip", Node { wireguard_ip: Some(cidr("10.4.0.1/16")), ..base.clone() }),
        ("internal ip mask", Node { internal_ip: Some(cidr("192.168.0.1/24")), ..base.clone() }),
        ("cni ip", Node { cni_compatibility_ip: Some(cidr("10.0.0.1/32")), ..base.clone() }),
        ("leader", Node { leader: true, ..base.clone() }),
        ("location", Node { location: "9".into(), ..base.clone() }),
        ("name", Node { name: "z".into(), ..base.clone() }),
        ("subnet", Node { subnets: vec![cidr("10.2.2.0/25")], ..base.clone() }),
        ("keepalive", Node { persistent_keepalive: Duration::from_secs(1), ..base.clone() }),
        ("discovered", Node { discovered_endpoints: Some(BTreeMap::new()), ..base.clone() }),
        ("allowed location ips", Node { allowed_location_ips: vec![], ..base.clone() }),
        ("granularity", Node { granularity: Some(Granularity::Full), ..base.clone() }),
        ("leader health", Node { health: Some(Default::default()), ..base.clone() }),
    ];
    for (what, changed) in changes {
        assert!(!nodes_equal(&base, &changed, now), "{what}");
        assert!(!nodes_equal(&changed, &base, now), "{what}");
    }
    let same: Vec<(&str, Node)> = vec![
        ("subnet host bits", Node { subnets: vec![cidr("10.2.2.1/24")], ..base.clone() }),
        ("no internal ip flag", Node { no_internal_ip: true, ..base.clone() }),
    ];
    for (what, changed) in same {
        assert!(nodes_equal(&base, &changed, now), "{what}");
    }
}

#[test]
fn nodes_equal_compares_discovered_addresses_not_zones() {
    let k = fixtures::key(1);
    let with = |addr: &str| Node {
        discovered_endpoints: Some(BTreeMap::from([(k, addr.parse().unwrap())])),
        ..Node::default()
    };
    assert!(nodes_equal(&with("[fe80::1%2]:5"), &with("[fe80::1]:5"), 0));
    assert!(!nodes_equal(&with("[fe80::1]:5"), &with("[fe80::1]:6"), 0));
    assert!(!nodes_equal(&with("1.2.3.4:5"), &with("1.2.3.5:5"), 0));
}

fn arb_cidr() -> impl Strategy<Value = Cidr> {
    prop_oneof![
        (any::<u32>(), 0u8..=32)
            .prop_map(|(ip, p)| Cidr::new(IpAddr::V4(Ipv4Addr::from(ip)), p).unwrap()),
        (any::<u128>(), 0u8..=128).prop_filter_map("mapped", |(ip, p)| {
            let v6 = Ipv6Addr::from(ip);
            v6.to_ipv4_mapped().is_none().then(|| Cidr::new(IpAddr::V6(v6), p).unwrap())
        }),
    ]
}

fn arb_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|ip| IpAddr::V4(Ipv4Addr::from(ip))),
        any::<u128>().prop_map(|ip| kilo_core::cidr::canonical(IpAddr::V6(Ipv6Addr::from(ip)))),
    ]
}

fn arb_endpoint() -> impl Strategy<Value = Endpoint> {
    prop_oneof![
        (arb_ip(), 1u16..).prop_map(|(ip, port)| Endpoint::from_addr(SocketAddr::new(ip, port))),
        ("[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z0-9]{1,5}){0,2}", 1u16..)
            .prop_map(|(host, port)| format!("{host}:{port}").parse().unwrap()),
    ]
}

fn arb_node() -> impl Strategy<Value = Node> {
    let discovered = proptest::collection::btree_map(
        any::<[u8; 32]>().prop_map(Key::from_bytes),
        (arb_ip(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port)),
        0..4,
    );
    (
        proptest::option::of(arb_endpoint()),
        any::<[u8; 32]>().prop_map(Key::from_bytes),
        proptest::option::of(arb_cidr()),
        proptest::option::of(arb_cidr()),
        any::<i64>(),
        proptest::option::of(arb_cidr()),
        proptest::option::of(discovered),
        proptest::option::of(proptest::sample::select(Granularity::ALL.to_vec())),
    )
        .prop_map(
            |(endpoint, key, internal_ip, cni, last_seen, wg, discovered, granularity)| Node {
                name: "n".into(),
                endpoint,
                key,
                internal_ip,
                cni_compatibility_ip: cni,
                last_seen,
                wireguard_ip: wg,
                discovered_endpoints: discovered,
                granularity,
                ..Node::default()
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn what_the_agent_writes_reads_back_as_the_same_node(node in arb_node()) {
        let annotations = agent_annotations(&node);
        let (back, issues) = read(&annotations);
        prop_assert_eq!(issues, vec![]);
        prop_assert_eq!(&back, &node);
        prop_assert!(nodes_equal(&back, &node, node.last_seen));
    }
}
