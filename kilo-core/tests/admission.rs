//! The Peer admission rules (`kilo_core::admission`): every hijack class in both address families,
//! the mask rule, and the agreement between the webhook's answer and `kgctl validate`'s findings.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use kilo_core::admission::{Cluster, Refusal, check_peer, check_spec, refusals};
use kilo_core::backend::Invalid;
use kilo_core::peer_spec::{PeerSpec, PeerSpecError};
use kilo_core::validate::{Severity, ValidationInput, validate};
use kilo_core::{Cidr, Endpoint, Granularity, Key, Node, Peer};
use proptest::prelude::*;

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn key(n: u8) -> Key {
    Key::from_bytes([n; 32])
}

/// A dual-stack cluster: every kind of address exists in IPv4 and in IPv6.
fn nodes() -> Vec<Node> {
    vec![
        Node {
            name: "a".into(),
            key: key(1),
            endpoint: Some("203.0.113.1:51820".parse::<Endpoint>().unwrap()),
            internal_ip: Some(cidr("192.168.0.1/24")),
            subnets: vec![cidr("10.2.0.0/24"), cidr("fd00:2::/64")],
            wireguard_ip: Some(cidr("10.4.0.1/16")),
            allowed_location_ips: vec![cidr("172.16.0.0/24")],
            // What node a saw of nodes c and d behind NAT.
            discovered_endpoints: Some(BTreeMap::from([
                (key(3), "198.51.100.3:40000".parse::<SocketAddr>().unwrap()),
                (key(4), "[2001:db8:4::4]:40000".parse::<SocketAddr>().unwrap()),
            ])),
            ..Node::default()
        },
        Node {
            name: "b".into(),
            key: key(2),
            endpoint: Some("[2001:db8:2::2]:51820".parse::<Endpoint>().unwrap()),
            internal_ip: Some(cidr("fd00:1::2/64")),
            subnets: vec![cidr("10.2.1.0/24")],
            allowed_location_ips: vec![cidr("fd00:16::/64")],
            ..Node::default()
        },
        Node { name: "c".into(), key: key(3), ..Node::default() },
        Node { name: "d".into(), key: key(4), ..Node::default() },
    ]
}

fn peers() -> Vec<Peer> {
    vec![Peer {
        name: "laptop".into(),
        allowed_ips: vec![cidr("10.5.0.1/32"), cidr("fd00:5::1/128")],
        public_key: key(9),
        ..Peer::default()
    }]
}

const WIREGUARD: [&str; 2] = ["10.4.0.0/16", "fd00:4::/64"];
const SERVICES: [&str; 2] = ["10.96.0.0/12", "fd00:96::/108"];

fn check(allowed_ips: &[&str], public_key: Key, name: &str) -> Result<(), Refusal> {
    let (nodes, peers) = (nodes(), peers());
    let wireguard = WIREGUARD.map(cidr);
    let services = SERVICES.map(cidr);
    let cluster = Cluster {
        nodes: &nodes,
        peers: &peers,
        wireguard_subnets: &wireguard,
        service_cidrs: &services,
    };
    let peer = Peer {
        name: name.into(),
        allowed_ips: allowed_ips.iter().map(|s| cidr(s)).collect(),
        public_key,
        ..Peer::default()
    };
    check_peer(&peer, &cluster)
}

fn refused(allowed_ip: &str) -> Refusal {
    check(&[allowed_ip], key(7), "phone").unwrap_err()
}

#[test]
fn a_peer_clear_of_everything_is_admitted_in_both_families() {
    assert_eq!(
        check(&["10.5.0.2/32", "172.17.0.0/16", "2001:db8:99::/48"], key(7), "phone"),
        Ok(())
    );
}

#[test]
fn a_default_route_is_refused_in_both_families() {
    for (allowed_ip, family) in [("0.0.0.0/0", "IPv4"), ("::/0", "IPv6"), ("10.1.2.3/0", "IPv4")] {
        let refusal = refused(allowed_ip);
        assert_eq!(refusal, Refusal::DefaultRoute { allowed_ip: cidr(allowed_ip) });
        assert_eq!(
            refusal.to_string(),
            format!(
                "allowed IP {allowed_ip} is a default route: every node would send its {family} \
                 traffic to this peer"
            )
        );
    }
}

#[test]
fn an_ipv6_default_route_is_refused_in_an_ipv4_only_cluster() {
    let nodes = [Node {
        name: "a".into(),
        key: key(1),
        internal_ip: Some(cidr("192.168.0.1/24")),
        subnets: vec![cidr("10.2.0.0/24")],
        ..Node::default()
    }];
    let wireguard = [cidr("10.4.0.0/16")];
    let cluster =
        Cluster { nodes: &nodes, peers: &[], wireguard_subnets: &wireguard, service_cidrs: &[] };
    let peer = |allowed_ip: &str| Peer {
        name: "p".into(),
        allowed_ips: vec![cidr(allowed_ip)],
        public_key: key(7),
        ..Peer::default()
    };
    assert_eq!(
        check_peer(&peer("::/0"), &cluster),
        Err(Refusal::DefaultRoute { allowed_ip: cidr("::/0") })
    );
    assert_eq!(check_peer(&peer("2001:db8::/64"), &cluster), Ok(()));
}

#[test]
fn a_pod_subnet_is_refused_in_both_families() {
    assert_eq!(
        refused("10.2.1.128/25"),
        Refusal::PodSubnet {
            allowed_ip: cidr("10.2.1.128/25"),
            node: "b".into(),
            subnet: cidr("10.2.1.0/24")
        }
    );
    assert_eq!(
        refused("fd00:2::/48"),
        Refusal::PodSubnet {
            allowed_ip: cidr("fd00:2::/48"),
            node: "a".into(),
            subnet: cidr("fd00:2::/64")
        }
    );
}

#[test]
fn a_nodes_internal_ip_is_refused_in_both_families_but_not_its_neighbours() {
    assert_eq!(
        refused("192.168.0.0/30"),
        Refusal::InternalIp {
            allowed_ip: cidr("192.168.0.0/30"),
            node: "a".into(),
            internal_ip: ip("192.168.0.1")
        }
    );
    assert_eq!(
        refused("fd00:1::2/128"),
        Refusal::InternalIp {
            allowed_ip: cidr("fd00:1::2/128"),
            node: "b".into(),
            internal_ip: ip("fd00:1::2")
        }
    );
    assert_eq!(check(&["192.168.0.200/32", "fd00:1::3/128"], key(7), "phone"), Ok(()));
}

#[test]
fn a_nodes_endpoint_ip_is_refused_in_both_families() {
    assert_eq!(
        refused("203.0.113.0/24"),
        Refusal::NodeEndpoint {
            allowed_ip: cidr("203.0.113.0/24"),
            node: "a".into(),
            endpoint: ip("203.0.113.1")
        }
    );
    assert_eq!(
        refused("2001:db8:2::/64"),
        Refusal::NodeEndpoint {
            allowed_ip: cidr("2001:db8:2::/64"),
            node: "b".into(),
            endpoint: ip("2001:db8:2::2")
        }
    );
}

#[test]
fn an_endpoint_another_node_discovered_is_refused_in_both_families() {
    assert_eq!(
        refused("198.51.100.3/32"),
        Refusal::NodeEndpoint {
            allowed_ip: cidr("198.51.100.3/32"),
            node: "c".into(),
            endpoint: ip("198.51.100.3")
        }
    );
    assert_eq!(
        refused("2001:db8:4::/64"),
        Refusal::NodeEndpoint {
            allowed_ip: cidr("2001:db8:4::/64"),
            node: "d".into(),
            endpoint: ip("2001:db8:4::4")
        }
    );
}

#[test]
fn an_allowed_location_ip_is_refused_in_both_families() {
    assert_eq!(
        refused("172.16.0.7/32"),
        Refusal::AllowedLocationIp {
            allowed_ip: cidr("172.16.0.7/32"),
            node: "a".into(),
            location_ip: cidr("172.16.0.0/24")
        }
    );
    assert_eq!(
        refused("fd00:16::/32"),
        Refusal::AllowedLocationIp {
            allowed_ip: cidr("fd00:16::/32"),
            node: "b".into(),
            location_ip: cidr("fd00:16::/64")
        }
    );
}

#[test]
fn a_service_cidr_is_refused_in_both_families() {
    assert_eq!(
        refused("10.100.0.1/32"),
        Refusal::ServiceCidr {
            allowed_ip: cidr("10.100.0.1/32"),
            service_cidr: cidr("10.96.0.0/12")
        }
    );
    assert_eq!(
        refused("fd00:96::10/128"),
        Refusal::ServiceCidr {
            allowed_ip: cidr("fd00:96::10/128"),
            service_cidr: cidr("fd00:96::/108")
        }
    );
}

#[test]
fn the_wireguard_subnet_is_refused_in_both_families() {
    assert_eq!(
        refused("10.4.0.9/32"),
        Refusal::WireGuardSubnet { allowed_ip: cidr("10.4.0.9/32"), subnet: cidr("10.4.0.0/16") }
    );
    assert_eq!(
        refused("fd00:4::9/128"),
        Refusal::WireGuardSubnet { allowed_ip: cidr("fd00:4::9/128"), subnet: cidr("fd00:4::/64") }
    );
}

#[test]
fn another_peers_allowed_ips_are_refused_in_both_families_but_not_its_own_previous_version() {
    assert_eq!(
        refused("10.5.0.0/24"),
        Refusal::OtherPeer {
            allowed_ip: cidr("10.5.0.0/24"),
            peer: "laptop".into(),
            other: cidr("10.5.0.1/32")
        }
    );
    assert_eq!(
        refused("fd00:5::/64"),
        Refusal::OtherPeer {
            allowed_ip: cidr("fd00:5::/64"),
            peer: "laptop".into(),
            other: cidr("fd00:5::1/128")
        }
    );
    assert_eq!(check(&["10.5.0.0/24", "fd00:5::/64"], key(9), "laptop"), Ok(()));
}

#[test]
fn a_key_used_by_a_node_or_another_peer_is_refused() {
    assert_eq!(
        check(&["10.5.1.0/24"], key(2), "phone"),
        Err(Refusal::KeyOfNode { key: key(2), node: "b".into() })
    );
    assert_eq!(
        check(&["10.5.1.0/24"], key(9), "phone"),
        Err(Refusal::KeyOfPeer { key: key(9), peer: "laptop".into() })
    );
}

#[test]
fn upstream_validation_comes_first_with_its_message() {
    let spec = PeerSpec {
        allowed_ips: vec!["foo".into(), "::/0".into()],
        public_key: key(7).to_base64(),
        ..PeerSpec::default()
    };
    let cluster = Cluster { nodes: &[], peers: &[], wireguard_subnets: &[], service_cidrs: &[] };
    let refusal = check_spec("p", &spec, &cluster).unwrap_err();
    assert_eq!(refusal, Refusal::Invalid(PeerSpecError::AllowedIp { ip: "foo".into() }));
    assert_eq!(
        refusal.to_string(),
        "failed to parse \"foo\" as a valid IP address: invalid CIDR address: foo"
    );
}

/// The validation input of `nodes` and `peers` with this file's subnets (first family only: the
/// input has one WireGuard subnet).
fn findings(nodes: &[Node], peers: &[Peer], service_cidrs: &[Cidr]) -> Vec<String> {
    validate(&ValidationInput {
        nodes,
        peers,
        invalid: &[] as &[Invalid],
        ignored: &[],
        // Full granularity: these nodes mix families on one LAN, which location granularity
        // reports too (see `validate`); here only the hijacks are looked at.
        granularity: Granularity::Full,
        subnet: cidr(WIREGUARD[0]),
        subnet6: None,
        service_cidrs,
    })
    .into_iter()
    .filter(|f| f.severity == Severity::Error)
    .map(|f| f.to_string())
    .collect()
}

#[test]
fn validate_reports_every_hijack_class_with_the_webhooks_words() {
    let mut peers = peers();
    peers.push(Peer {
        name: "rogue".into(),
        allowed_ips: ["::/0", "203.0.113.1/32", "172.16.0.0/25", "10.100.0.0/16", "fd00:2::1/128"]
            .map(cidr)
            .to_vec(),
        public_key: key(8),
        ..Peer::default()
    });
    let found = findings(&nodes(), &peers, &SERVICES.map(cidr));
    assert_eq!(
        found,
        vec![
            "error: peer \"rogue\": allowed IP ::/0 is a default route: every node would send its \
             IPv6 traffic to this peer; give the peer only the networks it serves, never a \
             default route",
            "error: peer \"rogue\", node \"a\": allowed IP 203.0.113.1/32 covers the endpoint IP \
             203.0.113.1 of node \"a\": the peer would take the node's WireGuard traffic; remove \
             the overlapping allowed IP from the peer",
            "error: peer \"rogue\", node \"a\": allowed IP 172.16.0.0/25 overlaps the allowed \
             location IP 172.16.0.0/24 of node \"a\": the peer would take that traffic; remove \
             the overlapping allowed IP from the peer",
            "error: peer \"rogue\": allowed IP 10.100.0.0/16 overlaps the service CIDR \
             10.96.0.0/12: the peer would take that traffic; remove the overlapping allowed IP \
             from the peer",
            "error: peer \"rogue\", node \"a\": allowed IP fd00:2::1/128 overlaps the pod subnet \
             fd00:2::/64 of node \"a\": the peer would take that traffic; remove the overlapping \
             allowed IP from the peer",
        ]
    );
}

/// A generated cluster: node `i` has pod subnet 10.2.i.0/24 and fd00:2:i::/64, internal IP
/// 192.168.0.i (or fd00:1::i), endpoint 203.0.113.i (or 2001:db8::i), allowed location IPs
/// 172.16.i.0/24 and fd00:16:i::/64.
fn generated_node(i: u8, v6_internal: bool, v6_endpoint: bool) -> Node {
    let internal =
        if v6_internal { format!("fd00:1::{i}/64") } else { format!("192.168.0.{i}/24") };
    let endpoint =
        if v6_endpoint { format!("[2001:db8::{i}]:51820") } else { format!("203.0.113.{i}:51820") };
    Node {
        name: format!("n{i}"),
        key: key(i + 1),
        endpoint: Some(endpoint.parse().unwrap()),
        internal_ip: Some(cidr(&internal)),
        subnets: vec![cidr(&format!("10.2.{i}.0/24")), cidr(&format!("fd00:2:{i}::/64"))],
        allowed_location_ips: vec![
            cidr(&format!("172.16.{i}.0/24")),
            cidr(&format!("fd00:16:{i}::/64")),
        ],
        ..Node::default()
    }
}

/// An address inside `net` with random host bits, widened or narrowed to `prefix`.
fn inside(net: Cidr, bits: u128, prefix: u8) -> Cidr {
    let addr = match net.addr() {
        IpAddr::V4(a) => {
            let host = if net.prefix() == 32 { 0 } else { (bits as u32) >> net.prefix() };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) | host))
        }
        IpAddr::V6(a) => {
            let host = if net.prefix() == 128 { 0 } else { bits >> net.prefix() };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) | host))
        }
    };
    Cidr::new(addr, prefix).unwrap()
}

/// The protected network of `class` for node `i` in a family, and the matching refusal test.
fn protected(class: u8, i: u8, v6: bool, nodes: &[Node]) -> (Cidr, fn(&Refusal) -> bool) {
    let node = &nodes[usize::from(i)];
    match class {
        0 => (node.subnets[usize::from(v6)], |r| matches!(r, Refusal::PodSubnet { .. })),
        1 => (Cidr::host(node.internal_ip.unwrap().addr()), |r| {
            matches!(r, Refusal::InternalIp { .. })
        }),
        2 => (Cidr::host(node.endpoint.as_ref().unwrap().ip().unwrap()), |r| {
            matches!(r, Refusal::NodeEndpoint { .. })
        }),
        3 => (node.allowed_location_ips[usize::from(v6)], |r| {
            matches!(r, Refusal::AllowedLocationIp { .. })
        }),
        4 => (cidr(SERVICES[usize::from(v6)]), |r| matches!(r, Refusal::ServiceCidr { .. })),
        5 => (cidr(WIREGUARD[usize::from(v6)]), |r| matches!(r, Refusal::WireGuardSubnet { .. })),
        _ => (if v6 { cidr("fd00:5::/64") } else { cidr("10.5.0.0/24") }, |r| {
            matches!(r, Refusal::OtherPeer { .. })
        }),
    }
}

proptest! {
    /// Any allowed IP inside, equal to or around a protected network, written with any host bits,
    /// in either family, is refused for that reason; the webhook's first refusal is among
    /// `validate`'s findings for the same peer, word for word.
    #[test]
    fn every_hijack_class_is_refused_in_both_families_whatever_the_host_bits(
        count in 1u8..5,
        families in any::<[bool; 8]>(),
        class in 0u8..7,
        which in any::<u8>(),
        v6 in any::<bool>(),
        bits in any::<u128>(),
        widen in 0u8..8,
        narrow in 0u8..16,
    ) {
        let nodes: Vec<Node> = (0..count)
            .map(|i| generated_node(i, families[usize::from(i)], families[usize::from(i) + 4]))
            .collect();
        let i = which % count;
        let node = &nodes[usize::from(i)];
        let v6 = match class {
            1 => !node.internal_ip.unwrap().is_ipv4(),
            2 => node.endpoint.as_ref().unwrap().ip().unwrap().is_ipv6(),
            _ => v6,
        };
        let (net, is_class) = protected(class, i, v6, &nodes);
        let max = if v6 { 128 } else { 32 };
        // A prefix between 1 (a supernet) and the longest: never a default route.
        let prefix = if narrow % 2 == 0 {
            net.prefix().saturating_sub(widen).max(1)
        } else {
            (net.prefix() + narrow).min(max)
        };
        let allowed_ip = inside(net, bits, prefix);
        let others = vec![Peer {
            name: "other".into(),
            allowed_ips: vec![cidr("10.5.0.0/24"), cidr("fd00:5::/64")],
            public_key: key(200),
            ..Peer::default()
        }];
        let wireguard = WIREGUARD.map(cidr);
        let services = SERVICES.map(cidr);
        let cluster = Cluster {
            nodes: &nodes,
            peers: &others,
            wireguard_subnets: &wireguard,
            service_cidrs: &services,
        };
        let candidate = Peer {
            name: "candidate".into(),
            allowed_ips: vec![allowed_ip],
            public_key: key(201),
            ..Peer::default()
        };
        let all = refusals(&candidate, &cluster);
        prop_assert!(all.iter().any(is_class), "{allowed_ip} (class {class}): {all:?}");
        let first = check_peer(&candidate, &cluster).unwrap_err();
        prop_assert_eq!(&first, &all[0]);

        // validate (its one WireGuard subnet is the IPv4 one: skip the IPv6 WireGuard class).
        if !(class == 5 && v6) {
            let mut peers = others.clone();
            peers.push(candidate.clone());
            let found = findings(&nodes, &peers, &services);
            let words = first.to_string();
            prop_assert!(found.iter().any(|f| f.contains(&words)), "{words:?} not in {found:?}");
        }
    }

    /// An allowed IP clear of every protected network is admitted, and `validate` finds no error.
    #[test]
    fn an_allowed_ip_clear_of_everything_is_admitted(
        count in 1u8..5,
        families in any::<[bool; 8]>(),
        v6 in any::<bool>(),
        bits in any::<u128>(),
        prefix in 0u8..40,
    ) {
        let nodes: Vec<Node> = (0..count)
            .map(|i| generated_node(i, families[usize::from(i)], families[usize::from(i) + 4]))
            .collect();
        let free = if v6 { cidr("2001:db8:ff::/48") } else { cidr("100.64.0.0/10") };
        let max = if v6 { 128 } else { 32 };
        let allowed_ip = inside(free, bits, (free.prefix() + prefix).min(max));
        let candidate = Peer {
            name: "candidate".into(),
            allowed_ips: vec![allowed_ip],
            public_key: key(201),
            ..Peer::default()
        };
        let wireguard = WIREGUARD.map(cidr);
        let services = SERVICES.map(cidr);
        let cluster = Cluster {
            nodes: &nodes,
            peers: &[],
            wireguard_subnets: &wireguard,
            service_cidrs: &services,
        };
        prop_assert_eq!(check_peer(&candidate, &cluster), Ok(()));
        prop_assert_eq!(findings(&nodes, &[candidate], &services), Vec::<String>::new());
    }
}
