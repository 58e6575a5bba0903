//! Upstream's `TestTranslateNode` and the issues reported on the way.

use std::collections::BTreeMap;
use std::time::Duration;

use kilo_core::annotations::{DEFAULT_TOPOLOGY_LABEL, NodeObject, key, node_from_object};
use kilo_core::fixtures;
use kilo_core::{Cidr, Endpoint, Granularity, Key, Node};

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn translate(
    annotations: &[(&str, &str)],
    labels: &[(&str, &str)],
    pod_cidr: &str,
) -> (Node, Vec<kilo_core::annotations::AnnotationIssue>) {
    let annotations = map(annotations);
    let labels = map(labels);
    let pod_cidrs = if pod_cidr.is_empty() { vec![] } else { vec![pod_cidr.to_string()] };
    let obj =
        NodeObject { name: "", annotations: &annotations, labels: &labels, pod_cidrs: &pod_cidrs };
    node_from_object(&obj, DEFAULT_TOPOLOGY_LABEL)
}

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn ep(s: &str) -> Option<Endpoint> {
    Some(s.parse().unwrap())
}

/// A test case: name, annotations, labels, pod CIDR, expected node.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<(&'a str, &'a str)>, &'a str, Node);

const REGION: &str = "topology.kubernetes.io/region";

#[test]
fn translate_node_matches_upstream_table() {
    let k = fixtures::key(1).to_base64();
    let k = k.as_str();
    let complete = [
        (key::ENDPOINT, "10.0.0.1:51820"),
        (key::FORCE_ENDPOINT, "10.0.0.2:51821"),
        (key::FORCE_INTERNAL_IP, "10.1.0.2/32"),
        (key::INTERNAL_IP, "10.1.0.1/32"),
        (key::KEY, k),
        (key::LAST_SEEN, "1000000000"),
        (key::LEADER, ""),
        (key::LOCATION, "b"),
        (key::PERSISTENT_KEEPALIVE, "25"),
        (key::WIREGUARD_IP, "10.4.0.1/16"),
    ];
    let complete_node = Node {
        endpoint: ep("10.0.0.2:51821"),
        internal_ip: Some(cidr("10.1.0.2/32")),
        key: fixtures::key(1),
        last_seen: 1_000_000_000,
        leader: true,
        location: "b".into(),
        persistent_keepalive: Duration::from_secs(25),
        subnets: vec![cidr("10.2.1.0/24")],
        wireguard_ip: Some(cidr("10.4.0.1/16")),
        ..Node::default()
    };
    let mut complete_v6 = complete;
    complete_v6[1] = (key::FORCE_ENDPOINT, "[1100::10]:51821");
    let no_internal = [
        (key::ENDPOINT, "10.0.0.1:51820"),
        (key::INTERNAL_IP, ""),
        (key::KEY, k),
        (key::LAST_SEEN, "1000000000"),
        (key::LOCATION, "b"),
        (key::PERSISTENT_KEEPALIVE, "25"),
        (key::WIREGUARD_IP, "10.4.0.1/16"),
    ];
    let no_internal_node = Node {
        endpoint: ep("10.0.0.1:51820"),
        internal_ip: None,
        leader: false,
        ..complete_node.clone()
    };
    let mut force_none = no_internal;
    force_none[1] = (key::INTERNAL_IP, "10.1.0.1/32");
    let mut force_none = force_none.to_vec();
    force_none.push((key::FORCE_INTERNAL_IP, ""));

    let cases: Vec<Case<'_>> = vec![
        ("empty", vec![], vec![], "", Node::default()),
        (
            "invalid ips",
            vec![(key::ENDPOINT, "10.0.0.1"), (key::INTERNAL_IP, "foo")],
            vec![],
            "",
            Node::default(),
        ),
        (
            "valid ips",
            vec![(key::ENDPOINT, "10.0.0.1:51820"), (key::INTERNAL_IP, "10.0.0.2/32")],
            vec![],
            "",
            Node {
                endpoint: ep("10.0.0.1:51820"),
                internal_ip: Some(cidr("10.0.0.2/32")),
                ..Node::default()
            },
        ),
        (
            "valid ips with ipv6",
            vec![(key::ENDPOINT, "[ff10::10]:51820"), (key::INTERNAL_IP, "ff60::10/64")],
            vec![],
            "",
            Node {
                endpoint: ep("[ff10::10]:51820"),
                internal_ip: Some(cidr("ff60::10/64")),
                ..Node::default()
            },
        ),
        ("invalid subnet", vec![], vec![], "foo", Node::default()),
        (
            "normalize subnet",
            vec![],
            vec![],
            "10.2.0.1/24",
            Node { subnets: vec![cidr("10.2.0.0/24")], ..Node::default() },
        ),
        (
            "valid subnet",
            vec![],
            vec![],
            "10.2.1.0/24",
            Node { subnets: vec![cidr("10.2.1.0/24")], ..Node::default() },
        ),
        (
            "region",
            vec![],
            vec![(REGION, "a")],
            "",
            Node { location: "a".into(), ..Node::default() },
        ),
        (
            "region override",
            vec![(key::LOCATION, "b")],
            vec![(REGION, "a")],
            "",
            Node { location: "b".into(), ..Node::default() },
        ),
        (
            "invalid endpoint override",
            vec![(key::ENDPOINT, "10.0.0.1:51820"), (key::FORCE_ENDPOINT, "-10.0.0.2:51821")],
            vec![],
            "",
            Node { endpoint: ep("10.0.0.1:51820"), ..Node::default() },
        ),
        (
            "endpoint override",
            vec![(key::ENDPOINT, "10.0.0.1:51820"), (key::FORCE_ENDPOINT, "10.0.0.2:51821")],
            vec![],
            "",
            Node { endpoint: ep("10.0.0.2:51821"), ..Node::default() },
        ),
        (
            "persistent keepalive",
            vec![(key::PERSISTENT_KEEPALIVE, "25")],
            vec![],
            "",
            Node { persistent_keepalive: Duration::from_secs(25), ..Node::default() },
        ),
        (
            "invalid internal IP override",
            vec![(key::INTERNAL_IP, "10.1.0.1/24"), (key::FORCE_INTERNAL_IP, "-10.1.0.2/24")],
            vec![],
            "",
            Node { internal_ip: Some(cidr("10.1.0.1/24")), ..Node::default() },
        ),
        (
            "internal IP override",
            vec![(key::INTERNAL_IP, "10.1.0.1/24"), (key::FORCE_INTERNAL_IP, "10.1.0.2/24")],
            vec![],
            "",
            Node { internal_ip: Some(cidr("10.1.0.2/24")), ..Node::default() },
        ),
        ("invalid time", vec![(key::LAST_SEEN, "foo")], vec![], "", Node::default()),
        ("complete", complete.to_vec(), vec![(REGION, "a")], "10.2.1.0/24", complete_node.clone()),
        (
            "complete with ipv6",
            complete_v6.to_vec(),
            vec![(REGION, "a")],
            "10.2.1.0/24",
            Node { endpoint: ep("[1100::10]:51821"), ..complete_node.clone() },
        ),
        ("no InternalIP", no_internal.to_vec(), vec![], "10.2.1.0/24", no_internal_node.clone()),
        (
            "Force no internal IP",
            force_none,
            vec![],
            "10.2.1.0/24",
            Node { no_internal_ip: true, ..no_internal_node },
        ),
    ];
    assert_eq!(cases.len(), 19);
    for (name, annotations, labels, pod_cidr, want) in cases {
        let (got, _) = translate(&annotations, &labels, pod_cidr);
        // Upstream's node has no record of what was forced (our addition, for contract C9).
        let got = Node { endpoint_forced: false, internal_ip_forced: false, ..got };
        assert_eq!(got, want, "test case {name:?}");
    }
}

#[test]
fn what_the_administrator_forced_is_marked_so_that_detection_never_replaces_it() {
    let (node, _) = translate(
        &[(key::ENDPOINT, "10.0.0.1:51820"), (key::FORCE_ENDPOINT, "10.0.0.2:51821")],
        &[],
        "",
    );
    assert!(node.endpoint_forced && !node.internal_ip_forced);
    let (node, _) = translate(&[(key::ENDPOINT, "10.0.0.1:51820")], &[], "");
    assert!(!node.endpoint_forced);
    let (node, _) = translate(&[(key::FORCE_ENDPOINT, "-bad")], &[], "");
    assert!(!node.endpoint_forced, "an unusable force-endpoint forces nothing");
    let (node, _) = translate(&[(key::FORCE_INTERNAL_IP, "10.1.0.2/24")], &[], "");
    assert!(node.internal_ip_forced);
    let (node, _) = translate(&[(key::FORCE_INTERNAL_IP, "")], &[], "");
    assert!(node.internal_ip_forced && node.no_internal_ip);
}

#[test]
fn values_that_do_not_parse_are_reported_once_each() {
    let (_, issues) = translate(
        &[
            (key::ENDPOINT, "10.0.0.1"),
            (key::FORCE_ENDPOINT, "-10.0.0.2:51821"),
            (key::INTERNAL_IP, "foo"),
            (key::FORCE_INTERNAL_IP, "-10.1.0.2/24"),
            (key::KEY, "foo"),
            (key::LAST_SEEN, "foo"),
            (key::PERSISTENT_KEEPALIVE, "-3"),
            (key::WIREGUARD_IP, "10.4.0.1"),
            (key::CNI_COMPATIBILITY_IP, "x"),
            (key::DISCOVERED_ENDPOINTS, "{"),
            (key::ALLOWED_LOCATION_IPS, "10.0.0.0/8, 10.1.0.0/16,,x"),
            (key::GRANULARITY, "mesh"),
        ],
        &[],
        "foo",
    );
    let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            key::FORCE_ENDPOINT,
            key::ENDPOINT,
            key::FORCE_INTERNAL_IP,
            key::INTERNAL_IP,
            key::KEY,
            key::LAST_SEEN,
            key::PERSISTENT_KEEPALIVE,
            "spec.podCIDRs",
            key::WIREGUARD_IP,
            key::CNI_COMPATIBILITY_IP,
            key::DISCOVERED_ENDPOINTS,
            key::ALLOWED_LOCATION_IPS,
            key::GRANULARITY,
        ]
    );
    let alip = &issues[11];
    assert_eq!(alip.value, "10.0.0.0/8, 10.1.0.0/16,,x");
    assert_eq!(
        alip.message,
        "\" 10.1.0.0/16\" is not a CIDR; \"\" is not a CIDR; \"x\" is not a CIDR; skipped"
    );
    assert!(issues[2].message.contains("using kilo.squat.ai/internal-ip instead"), "{}", issues[2]);
    assert!(issues[0].message.contains("using kilo.squat.ai/endpoint instead"), "{}", issues[0]);
    assert!(issues[4].message.contains("not base64"), "{}", issues[4]);
}

#[test]
fn empty_values_written_by_the_agent_are_not_issues() {
    let (node, issues) = translate(
        &[
            (key::ENDPOINT, ""),
            (key::INTERNAL_IP, ""),
            (key::WIREGUARD_IP, ""),
            (key::DISCOVERED_ENDPOINTS, ""),
            (key::GRANULARITY, ""),
            (key::CNI_COMPATIBILITY_IP, ""),
            (key::ALLOWED_LOCATION_IPS, ""),
            (key::FORCE_INTERNAL_IP, "-"),
            (key::LEADER_HEALTH, ""),
        ],
        &[],
        "",
    );
    assert_eq!(issues, vec![]);
    assert_eq!(node, Node { no_internal_ip: true, internal_ip_forced: true, ..Node::default() });
}

#[test]
fn negative_keepalive_yields_zero_with_an_issue() {
    let (node, issues) = translate(&[(key::PERSISTENT_KEEPALIVE, "-5")], &[], "");
    assert_eq!(node.persistent_keepalive, Duration::ZERO);
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].value, "-5");
}

#[test]
fn location_annotation_wins_even_when_empty_and_a_custom_label_is_read() {
    let (node, _) = translate(&[(key::LOCATION, "")], &[(REGION, "a")], "");
    assert_eq!(node.location, "");
    let annotations = BTreeMap::new();
    let labels = map(&[("example.com/site", "x")]);
    let obj = NodeObject { name: "n", annotations: &annotations, labels: &labels, pod_cidrs: &[] };
    let (node, _) = node_from_object(&obj, "example.com/site");
    assert_eq!((node.name.as_str(), node.location.as_str()), ("n", "x"));
}

#[test]
fn granularity_reads_location_full_and_cross_only() {
    for (value, want) in [
        ("location", Some(Granularity::Location)),
        ("full", Some(Granularity::Full)),
        ("cross", Some(Granularity::Cross)),
        ("Full", None),
        ("auto", None),
    ] {
        let (node, _) = translate(&[(key::GRANULARITY, value)], &[], "");
        assert_eq!(node.granularity, want, "{value}");
    }
}

#[test]
fn every_pod_cidr_is_read_network_masked_and_bad_ones_are_skipped() {
    let annotations = BTreeMap::new();
    let pod_cidrs = ["10.2.0.1/24".to_string(), "bad".to_string(), "fd00::1/64".to_string()];
    let obj = NodeObject {
        name: "n",
        annotations: &annotations,
        labels: &annotations,
        pod_cidrs: &pod_cidrs,
    };
    let (node, issues) = node_from_object(&obj, DEFAULT_TOPOLOGY_LABEL);
    assert_eq!(node.subnets, vec![cidr("10.2.0.0/24"), cidr("fd00::/64")]);
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].value, "bad");
}

#[test]
fn allowed_location_ips_keep_host_bits_and_order() {
    let (node, issues) = translate(
        &[(key::ALLOWED_LOCATION_IPS, "10.0.0.1/8,192.168.0.0/16,::ffff:1.2.3.4/120")],
        &[],
        "",
    );
    assert!(issues.is_empty());
    assert_eq!(
        node.allowed_location_ips,
        vec![cidr("10.0.0.1/8"), cidr("192.168.0.0/16"), cidr("1.2.3.4/24")]
    );
}

#[test]
fn keys_decode_as_go_does() {
    let text = fixtures::key(2).to_base64();
    let with_newline = format!("{}\n{}", &text[..10], &text[10..]);
    let (node, issues) = translate(&[(key::KEY, &with_newline)], &[], "");
    assert_eq!((node.key, issues.len()), (fixtures::key(2), 0));
    let (node, issues) = translate(&[(key::KEY, "Zm9v")], &[], "");
    assert_eq!(node.key, Key::ZERO);
    assert!(issues[0].message.contains("3 bytes"), "{}", issues[0]);
}

#[test]
fn last_seen_accepts_go_integer_syntax() {
    for (value, want) in
        [("+12", 12), ("-4", -4), ("1e3", 0), (" 1", 0), ("99999999999999999999", 0)]
    {
        let (node, _) = translate(&[(key::LAST_SEEN, value)], &[], "");
        assert_eq!(node.last_seen, want, "{value}");
    }
}

#[test]
fn a_leader_health_verdict_is_read_and_a_bad_one_is_an_issue_that_leaves_it_out() {
    let (node, issues) = translate(&[(key::LEADER_HEALTH, "v1 via=a down=a@17,c@3")], &[], "");
    assert_eq!(issues, vec![]);
    let expected = kilo_core::health::LeaderHealth {
        lead: None,
        via: Some("a".into()),
        down: [("a".to_string(), 17), ("c".to_string(), 3)].into(),
    };
    assert_eq!(node.health, Some(expected));
    let (node, issues) = translate(&[(key::LEADER_HEALTH, "v1 lead=soon")], &[], "");
    assert_eq!(node.health, None);
    assert_eq!(issues.len(), 1);
    assert_eq!(
        issues[0].to_string(),
        "kilo.squat.ai/leader-health=\"v1 lead=soon\": lead: \"soon\" is not Unix time; ignored \
         (the mesh keeps upstream's leader election)"
    );
}
