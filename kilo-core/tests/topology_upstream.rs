//! Upstream's topology tests, with upstream's values.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use kilo_core::fixtures::{self, key};
use kilo_core::topology::{Member, Segment, TopologyError, deduplicate_peer_ips, find_leader};
use kilo_core::{Cidr, Endpoint, Granularity, Node, Peer, Topology, TopologyInput};

fn c(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn cs(list: &[&str]) -> Vec<Cidr> {
    list.iter().map(|s| c(s)).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ep(s: &str) -> Option<Endpoint> {
    Some(s.parse().unwrap())
}

fn topology(nodes: &[Node], granularity: Granularity, hostname: &str) -> Topology {
    Topology::new(TopologyInput {
        nodes,
        peers: &fixtures::peers(),
        granularity,
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

/// The fixture's nodes as segment members (13.1).
fn member(name: &str) -> Member {
    let (subnet, internal) = match name {
        "a" => ("10.2.1.0/24", Some("192.168.0.1/32")),
        "b" => ("10.2.2.0/24", Some("192.168.0.1/32")),
        "c" => ("10.2.3.0/24", Some("192.168.0.2/32")),
        "d" => ("10.2.4.0/24", None),
        _ => unreachable!(),
    };
    Member {
        name: name.into(),
        subnets: vec![c(subnet)],
        internal_ip: internal.map(c),
        internal_ip6: None,
        cni_compatibility_ip: None,
    }
}

struct Seg<'a> {
    location: &'a str,
    node_location: Option<&'a str>,
    members: &'a [&'a str],
    key: u8,
    endpoint: &'a str,
    keepalive: Duration,
    allowed_ips: &'a [&'a str],
    wg: &'a str,
    alips: &'a [&'a str],
}

impl Seg<'_> {
    fn build(&self) -> Segment {
        Segment {
            location: self.location.into(),
            node_location: self.node_location.map(Into::into),
            members: self.members.iter().map(|m| member(m)).collect(),
            leader: 0,
            key: key(self.key),
            endpoint: ep(self.endpoint),
            persistent_keepalive: self.keepalive,
            allowed_ips: cs(self.allowed_ips),
            wireguard_ip: Some(ip(self.wg)),
            wireguard_ip6: None,
            allowed_location_ips: cs(self.alips),
            election: kilo_core::health::Election::upstream(),
        }
    }
}

const A_KEEPALIVE: Duration = Duration::from_nanos(25);

fn logical_segments() -> Vec<Segment> {
    vec![
        Seg {
            location: "location:1",
            node_location: None,
            members: &["a"],
            key: 1,
            endpoint: "10.1.0.1:51820",
            keepalive: A_KEEPALIVE,
            allowed_ips: &["10.2.1.0/24", "192.168.0.1/32", "10.4.0.1/32"],
            wg: "10.4.0.1",
            alips: &[],
        }
        .build(),
        Seg {
            location: "location:2",
            node_location: None,
            members: &["b", "c"],
            key: 2,
            endpoint: "10.1.0.2:51820",
            keepalive: Duration::ZERO,
            allowed_ips: &[
                "10.2.2.0/24",
                "192.168.0.1/32",
                "10.2.3.0/24",
                "192.168.0.2/32",
                "10.4.0.2/32",
            ],
            wg: "10.4.0.2",
            alips: &["192.168.178.3/32"],
        }
        .build(),
        Seg {
            location: "node:d",
            node_location: None,
            members: &["d"],
            key: 4,
            endpoint: "10.1.0.4:51820",
            keepalive: Duration::ZERO,
            allowed_ips: &["10.2.4.0/24", "10.4.0.3/32"],
            wg: "10.4.0.3",
            alips: &[],
        }
        .build(),
    ]
}

/// Full (and cross) segments: one per node; `node_locations` gives cross's node locations.
fn single_node_segments(node_locations: [Option<&str>; 4]) -> Vec<Segment> {
    let allowed: [&[&str]; 4] = [
        &["10.2.1.0/24", "192.168.0.1/32", "10.4.0.1/32"],
        &["10.2.2.0/24", "192.168.0.1/32", "10.4.0.2/32"],
        &["10.2.3.0/24", "192.168.0.2/32", "10.4.0.3/32"],
        &["10.2.4.0/24", "10.4.0.4/32"],
    ];
    ["a", "b", "c", "d"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let n = u8::try_from(i + 1).unwrap();
            Seg {
                location: &format!("node:{name}"),
                node_location: node_locations[i],
                members: &[name],
                key: n,
                endpoint: &format!("10.1.0.{n}:51820"),
                keepalive: if i == 0 { A_KEEPALIVE } else { Duration::ZERO },
                allowed_ips: allowed[i],
                wg: &format!("10.4.0.{n}"),
                alips: if i == 1 { &["192.168.178.3/32"] } else { &[] },
            }
            .build()
        })
        .collect()
}

fn expected(
    location: &str,
    node_location: Option<&str>,
    leader: bool,
    wireguard_cidr: &str,
    private_ip: Option<&str>,
    subnet: &str,
    segments: Vec<Segment>,
) -> Topology {
    Topology {
        key: fixtures::private_key(),
        port: 51820,
        location: location.into(),
        node_location: node_location.map(Into::into),
        leader,
        persistent_keepalive: Duration::ZERO,
        private_ip: private_ip.map(c),
        private_ip6: None,
        subnets: vec![c(subnet)],
        wireguard_cidr: c(wireguard_cidr),
        wireguard_cidr6: None,
        segments,
        peers: fixtures::peers(),
        discovered_endpoints: BTreeMap::new(),
        service_cidrs: vec![],
        warnings: vec![],
    }
}

#[test]
fn new_topology_matches_upstream_for_every_granularity_and_hostname() {
    let nodes = fixtures::nodes();
    let logical = logical_segments();
    let full = single_node_segments([None; 4]);
    let cross = single_node_segments([
        Some("location:1"),
        Some("location:2"),
        Some("location:2"),
        Some("location:1"),
    ]);
    let cases = [
        (
            "logical from a",
            Granularity::Location,
            "a",
            expected(
                "location:1",
                None,
                true,
                "10.4.0.1/16",
                Some("192.168.0.1/32"),
                "10.2.1.0/24",
                logical.clone(),
            ),
        ),
        (
            "logical from b",
            Granularity::Location,
            "b",
            expected(
                "location:2",
                None,
                true,
                "10.4.0.2/16",
                Some("192.168.0.1/32"),
                "10.2.2.0/24",
                logical.clone(),
            ),
        ),
        (
            "logical from c",
            Granularity::Location,
            "c",
            expected(
                "location:2",
                None,
                false,
                "10.4.0.0/16",
                Some("192.168.0.2/32"),
                "10.2.3.0/24",
                logical.clone(),
            ),
        ),
        (
            "logical from d",
            Granularity::Location,
            "d",
            expected("node:d", None, true, "10.4.0.3/16", None, "10.2.4.0/24", logical.clone()),
        ),
        (
            "full from a",
            Granularity::Full,
            "a",
            expected(
                "node:a",
                None,
                true,
                "10.4.0.1/16",
                Some("192.168.0.1/32"),
                "10.2.1.0/24",
                full.clone(),
            ),
        ),
        (
            "full from b",
            Granularity::Full,
            "b",
            expected(
                "node:b",
                None,
                true,
                "10.4.0.2/16",
                Some("192.168.0.1/32"),
                "10.2.2.0/24",
                full.clone(),
            ),
        ),
        (
            "full from c",
            Granularity::Full,
            "c",
            expected(
                "node:c",
                None,
                true,
                "10.4.0.3/16",
                Some("192.168.0.2/32"),
                "10.2.3.0/24",
                full.clone(),
            ),
        ),
        (
            "full from d",
            Granularity::Full,
            "d",
            expected("node:d", None, true, "10.4.0.4/16", None, "10.2.4.0/24", full.clone()),
        ),
        (
            "cross from a",
            Granularity::Cross,
            "a",
            expected(
                "node:a",
                Some("location:1"),
                true,
                "10.4.0.1/16",
                Some("192.168.0.1/32"),
                "10.2.1.0/24",
                cross.clone(),
            ),
        ),
        (
            "cross from b",
            Granularity::Cross,
            "b",
            expected(
                "node:b",
                Some("location:2"),
                true,
                "10.4.0.2/16",
                Some("192.168.0.1/32"),
                "10.2.2.0/24",
                cross.clone(),
            ),
        ),
        (
            "cross from c",
            Granularity::Cross,
            "c",
            expected(
                "node:c",
                Some("location:2"),
                true,
                "10.4.0.3/16",
                Some("192.168.0.2/32"),
                "10.2.3.0/24",
                cross.clone(),
            ),
        ),
        (
            "cross from d",
            Granularity::Cross,
            "d",
            expected(
                "node:d",
                Some("location:1"),
                true,
                "10.4.0.4/16",
                None,
                "10.2.4.0/24",
                cross.clone(),
            ),
        ),
    ];
    for (name, granularity, hostname, want) in cases {
        assert_eq!(topology(&nodes, granularity, hostname), want, "{name}");
    }
}

#[test]
fn input_order_does_not_change_the_topology() {
    let mut nodes = fixtures::nodes();
    let want = topology(&nodes, Granularity::Location, "b");
    nodes.reverse();
    assert_eq!(topology(&nodes, Granularity::Location, "b"), want);
}

#[test]
fn a_node_with_an_empty_location_and_an_internal_ip_forms_segment_location_colon_first() {
    let mut nodes = fixtures::nodes();
    nodes.push(Node {
        name: "e".into(),
        endpoint: ep("10.1.0.5:51820"),
        internal_ip: Some(c("192.168.0.5/32")),
        location: String::new(),
        subnets: vec![c("10.2.5.0/24")],
        key: key(5),
        ..Node::default()
    });
    let t = topology(&nodes, Granularity::Location, "e");
    let locations: Vec<_> = t.segments.iter().map(|s| s.location.as_str()).collect();
    assert_eq!(locations, ["location:", "location:1", "location:2", "node:d"]);
    let first = &t.segments[0];
    assert_eq!(first.wireguard_ip, Some(ip("10.4.0.1")));
    assert_eq!(first.allowed_ips, cs(&["10.2.5.0/24", "192.168.0.5/32", "10.4.0.1/32"]));
    assert!(t.leader);
    assert_eq!(t.wireguard_cidr, c("10.4.0.1/16"));
    assert_eq!(t.segments[1].wireguard_ip, Some(ip("10.4.0.2")));
}

#[test]
fn an_unknown_hostname_is_an_error_naming_it() {
    let nodes = fixtures::nodes();
    let err = Topology::new(TopologyInput {
        nodes: &nodes,
        peers: &[],
        granularity: Granularity::Location,
        hostname: "z",
        port: 51820,
        key: fixtures::private_key(),
        subnet: fixtures::subnet(),
        subnet6: None,
        service_cidrs: &[],
        persistent_keepalive: Duration::ZERO,
    })
    .unwrap_err();
    assert_eq!(err, TopologyError::UnknownNode { hostname: "z".into(), nodes: 4 });
    assert!(err.to_string().contains("\"z\""));
}

#[test]
fn a_subnet_smaller_than_the_segment_count_is_subnet_full() {
    let nodes = fixtures::nodes();
    let input = |subnet: &str| {
        Topology::new(TopologyInput {
            nodes: &nodes,
            peers: &[],
            granularity: Granularity::Full,
            hostname: "a",
            port: 51820,
            key: fixtures::private_key(),
            subnet: c(subnet),
            subnet6: None,
            service_cidrs: &[],
            persistent_keepalive: Duration::ZERO,
        })
    };
    assert_eq!(
        input("10.4.0.0/31").unwrap_err(),
        TopologyError::SubnetFull { subnet: c("10.4.0.0/31"), capacity: 1, segments: 4 }
    );
    let err = input("10.4.0.0/30").unwrap_err();
    assert!(err.to_string().contains("10.4.0.0/30"), "{err}");
    assert!(err.to_string().contains("4 segments"), "{err}");
    // Four segments fit a /29; the broadcast address of a /30 is allocatable, so 3 fit a /30.
    assert!(input("10.4.0.0/29").is_ok());
}

#[test]
fn duplicate_node_or_peer_names_are_errors() {
    let mut nodes = fixtures::nodes();
    nodes.push(nodes[1].clone());
    let err = Topology::new(TopologyInput {
        nodes: &nodes,
        peers: &[],
        granularity: Granularity::Location,
        hostname: "a",
        port: 51820,
        key: fixtures::private_key(),
        subnet: fixtures::subnet(),
        subnet6: None,
        service_cidrs: &[],
        persistent_keepalive: Duration::ZERO,
    })
    .unwrap_err();
    assert_eq!(err, TopologyError::DuplicateNode { name: "b".into() });
    let nodes = fixtures::nodes();
    let mut peers = fixtures::peers();
    peers.push(peers[0].clone());
    let err = Topology::new(TopologyInput {
        nodes: &nodes,
        peers: &peers,
        granularity: Granularity::Location,
        hostname: "a",
        port: 51820,
        key: fixtures::private_key(),
        subnet: fixtures::subnet(),
        subnet6: None,
        service_cidrs: &[],
        persistent_keepalive: Duration::ZERO,
    })
    .unwrap_err();
    assert_eq!(err, TopologyError::DuplicatePeer { name: "a".into() });
}

#[test]
fn find_leader_matches_upstream_table() {
    let node = |name: &str, endpoint: &str, leader: bool| Node {
        name: name.into(),
        endpoint: ep(endpoint),
        leader,
        ..Node::default()
    };
    let a = node("a", "10.0.0.1:51820", false);
    let b = node("b", "8.8.8.8:51820", false);
    let c = node("c", "8.8.8.8:51820", false);
    let d = node("d", "10.0.0.1:51820", true);
    let two = node("2", "8.8.8.8:51820", true);
    let cases: [(&str, Vec<&Node>, usize); 7] = [
        ("nil", vec![], 0),
        ("one", vec![&a], 0),
        ("non-leaders", vec![&a, &b, &c], 1),
        ("leaders", vec![&d, &two], 1),
        ("public", vec![&b, &c, &two], 2),
        ("private", vec![&a, &d], 1),
        ("all", vec![&a, &b, &c, &d, &two], 4),
    ];
    for (name, nodes, want) in cases {
        assert_eq!(find_leader(&nodes), want, "{name}");
    }
}

#[test]
fn deduplicate_peer_ips_matches_upstream_table() {
    let peer = |n: u8, ips: &[&str]| Peer {
        name: format!("p{n}"),
        allowed_ips: cs(ips),
        public_key: key(n),
        ..Peer::default()
    };
    let p1 = peer(1, &["10.0.0.1/24", "10.0.0.2/24"]);
    let p2 = peer(2, &["10.0.0.1/24", "10.0.0.3/24"]);
    let p3 = peer(3, &["10.0.0.2/24", "10.0.0.3/24", "10.0.0.1/24"]);
    let p4 = peer(4, &["10.0.0.3/24", "10.0.0.3/24"]);
    let with = |p: &Peer, ips: &[&str]| Peer { allowed_ips: cs(ips), ..p.clone() };
    let cases = [
        ("nil", vec![], vec![]),
        (
            "simple dupe",
            vec![p1.clone(), p2.clone()],
            vec![p1.clone(), with(&p2, &["10.0.0.3/24"])],
        ),
        (
            "simple dupe reversed",
            vec![p2.clone(), p1.clone()],
            vec![p2.clone(), with(&p1, &["10.0.0.2/24"])],
        ),
        (
            "one duplicates all",
            vec![p3.clone(), p2.clone(), p1.clone(), p4.clone()],
            vec![p3.clone(), with(&p2, &[]), with(&p1, &[]), with(&p4, &[])],
        ),
        (
            "one duplicates itself",
            vec![p4.clone(), p1.clone()],
            vec![with(&p4, &["10.0.0.3/24"]), p1.clone()],
        ),
    ];
    for (name, input, want) in cases {
        assert_eq!(deduplicate_peer_ips(&input), want, "{name}");
    }
}

#[test]
fn filter_allowed_location_ips_matches_upstream_table_including_order_dependence() {
    let n = |last: &str| format!("192.168.178.{last}");
    let list = |items: &[&str]| -> Vec<Cidr> {
        items
            .iter()
            .map(|s| if s.contains('.') { c(s) } else { c(&format!("{}/32", n(s))) })
            .collect()
    };
    type Case<'a> = (&'a str, [&'a [&'a str]; 3], [&'a [&'a str]; 3]);
    let cases: [Case<'_>; 4] = [
        ("nothing to filter", [&["4"], &["5"], &["6", "7"]], [&["4"], &["5"], &["6", "7"]]),
        (
            "intersections between segments",
            [&["4", "8"], &["5"], &["6", "7", "4"]],
            [&["8"], &["5"], &["6", "7", "4"]],
        ),
        (
            "intersections with wireGuardCIDR",
            [&["10.4.0.1/32", "8"], &["5"], &["6", "7"]],
            [&["8"], &["5"], &["6", "7"]],
        ),
        (
            "intersections with more than one allowedLocationIPs",
            [&["8"], &["5"], &["192.168.178.0/24"]],
            [&[], &[], &["192.168.178.0/24"]],
        ),
    ];
    let base = topology(&fixtures::nodes(), Granularity::Location, "a");
    for (name, input, want) in cases {
        let mut t = base.clone();
        for (k, ips) in input.iter().enumerate() {
            t.segments[k].allowed_location_ips = list(ips);
        }
        for k in 0..3 {
            t.segments[k].allowed_location_ips = t.filter_allowed_location_ips(k).kept;
        }
        for (k, ips) in want.iter().enumerate() {
            assert_eq!(t.segments[k].allowed_location_ips, list(ips), "{name}: segment {k}");
        }
    }
}

#[test]
fn allowed_location_ips_inside_a_pod_cidr_or_a_peer_are_dropped_with_a_warning() {
    let mut nodes = fixtures::nodes();
    nodes[0].allowed_location_ips =
        cs(&["10.2.2.7/32", "10.5.0.9/32", "10.2.0.0/16", "172.16.0.0/12"]);
    let t = topology(&nodes, Granularity::Location, "a");
    // 10.2.0.0/16 merely contains pod CIDRs: kept, as upstream does.
    assert_eq!(t.segments[0].allowed_location_ips, cs(&["10.2.0.0/16", "172.16.0.0/12"]));
    assert_eq!(t.warnings.len(), 2, "{:?}", t.warnings);
    assert!(t.warnings[0].contains("10.2.2.7/32") && t.warnings[0].contains("10.2.2.0/24"));
    assert!(t.warnings[1].contains("10.5.0.9/32") && t.warnings[1].contains("peer a"));
}

#[test]
fn discovered_endpoints_start_with_the_local_nodes_then_first_writer_wins() {
    let mut nodes = fixtures::nodes();
    let addr = |s: &str| s.parse().unwrap();
    nodes[2].discovered_endpoints =
        Some(BTreeMap::from([(key(1), addr("1.1.1.1:1")), (key(5), addr("3.3.3.3:3"))]));
    nodes[0].discovered_endpoints = Some(BTreeMap::from([(key(5), addr("2.2.2.2:2"))]));
    nodes[3].discovered_endpoints = Some(BTreeMap::from([(key(5), addr("4.4.4.4:4"))]));
    let t = topology(&nodes, Granularity::Location, "c");
    assert_eq!(
        t.discovered_endpoints,
        BTreeMap::from([(key(1), addr("1.1.1.1:1")), (key(5), addr("3.3.3.3:3"))])
    );
    let t = topology(&nodes, Granularity::Location, "d");
    assert_eq!(
        t.discovered_endpoints,
        BTreeMap::from([(key(1), addr("1.1.1.1:1")), (key(5), addr("4.4.4.4:4"))])
    );
    let t = topology(&nodes, Granularity::Location, "b");
    assert_eq!(
        t.discovered_endpoints,
        BTreeMap::from([(key(1), addr("1.1.1.1:1")), (key(5), addr("2.2.2.2:2"))])
    );
}

#[test]
fn nodes_with_several_pod_cidrs_contribute_all_of_them_before_their_internal_ip() {
    let mut nodes = fixtures::nodes();
    nodes[0].subnets.push(c("fd00:10:2:1::/64"));
    let t = topology(&nodes, Granularity::Location, "a");
    assert_eq!(
        t.segments[0].allowed_ips,
        cs(&["10.2.1.0/24", "fd00:10:2:1::/64", "192.168.0.1/32", "10.4.0.1/32"])
    );
    assert_eq!(t.subnets, cs(&["10.2.1.0/24", "fd00:10:2:1::/64"]));
}
