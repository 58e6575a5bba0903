//! Route behaviour beyond upstream's table: peer routes (7.4, contract C11), cross-subnet
//! encapsulation, compatibility modes, NAT-discovered endpoints, `cross` granularity
//! (Appendix A), route identity (contract C7) and the `ip route` / `ip rule` text.

mod routes_common;

use std::time::Duration;

use kilo_core::routes::{Encapsulator, EncapsulatorConfig, KILO_TABLE, Route, Rule};
use kilo_core::{Encapsulation, Topology};
use routes_common::{c, expected, full_from, ifaces, logical_from};

fn enc(encapsulator: Encapsulator, strategy: Encapsulation) -> EncapsulatorConfig {
    EncapsulatorConfig { encapsulator, strategy }
}

fn lines(routes: &[Route]) -> Vec<String> {
    routes.iter().map(Route::to_string).collect()
}

fn check(t: &Topology, local: bool, e: EncapsulatorConfig, want: &str) {
    let (routes, rules) = t.routes(&ifaces(), local, &e);
    let (want_routes, want_rules) = expected(want);
    assert_eq!(lines(&routes), lines(&want_routes));
    assert_eq!(routes, want_routes);
    assert_eq!(rules, want_rules);
}

#[test]
fn peer_routes_reach_every_segment_and_the_other_peers_but_not_the_peer_itself() {
    let routes = logical_from("a").peer_routes("a", "wg0", &[]);
    assert_eq!(
        lines(&routes),
        [
            "10.2.1.0/24 via 10.4.0.1 dev wg0 onlink",
            "192.168.0.1/32 via 10.4.0.1 dev wg0 onlink",
            "10.4.0.1/32 dev wg0",
            "10.2.2.0/24 via 10.4.0.2 dev wg0 onlink",
            "10.2.3.0/24 via 10.4.0.2 dev wg0 onlink",
            "192.168.0.1/32 via 10.4.0.2 dev wg0 onlink",
            "192.168.0.2/32 via 10.4.0.2 dev wg0 onlink",
            "192.168.178.3/32 via 10.4.0.2 dev wg0 onlink",
            "10.4.0.2/32 dev wg0",
            "10.2.4.0/24 via 10.4.0.3 dev wg0 onlink",
            "10.4.0.3/32 dev wg0",
            "10.5.0.0/24 dev wg0",
        ]
    );
}

#[test]
fn peer_routes_send_extra_allowed_ips_via_the_segment_that_carries_them() {
    let mut t = logical_from("a");
    t.segments[2].allowed_location_ips = vec![c("172.31.0.0/16")];
    let routes = t.peer_routes("b", "wg0", &[c("172.31.4.0/24"), c("203.0.113.7/24")]);
    let tail = lines(&routes[routes.len() - 3..]);
    assert_eq!(
        tail,
        [
            "10.5.0.0/24 dev wg0",
            "172.31.4.0/24 via 10.4.0.3 dev wg0 onlink",
            // Carried by no segment: upstream's first segment.
            "203.0.113.0/24 via 10.4.0.1 dev wg0 onlink",
        ]
    );
}

#[test]
fn cross_subnet_leaves_same_subnet_traffic_unencapsulated() {
    let mut t = logical_from("b");
    t.private_ip = Some(c("192.168.0.1/24"));
    check(
        &t,
        true,
        enc(Encapsulator::Ipip, Encapsulation::CrossSubnet),
        "
        R 10.2.1.0/24    via 10.4.0.1 dev 0 src 192.168.0.1 onlink
        R 192.168.0.1/32 via 10.4.0.1 dev 0 src 192.168.0.1 onlink
        R 10.2.3.0/24    via 192.168.0.2 dev 1 onlink
        R 10.2.4.0/24    via 10.4.0.3 dev 0 src 192.168.0.1 onlink
        R 10.5.0.0/24 dev 0 src 192.168.0.1
        ",
    );
}

#[test]
fn cross_subnet_encapsulates_traffic_leaving_the_private_subnet() {
    check(
        &logical_from("b"),
        true,
        enc(Encapsulator::Ipip, Encapsulation::CrossSubnet),
        "
        R 10.2.1.0/24    via 10.4.0.1 dev 0 src 192.168.0.1 onlink
        R 192.168.0.1/32 via 10.4.0.1 dev 0 src 192.168.0.1 onlink
        R 10.2.3.0/24    via 192.168.0.2 dev 2 src 192.168.0.1 onlink
        R 192.168.0.2/32 via 192.168.0.2 dev 2 src 192.168.0.1 table 1107 onlink
        R 10.2.4.0/24    via 10.4.0.3 dev 0 src 192.168.0.1 onlink
        R 10.5.0.0/24 dev 0 src 192.168.0.1
        RULE from 10.2.2.0/24 to 192.168.0.2/32 table 1107
        RULE to 192.168.0.2/32 iif kilo0 table 1107
        ",
    );
}

#[test]
fn flannel_leader_without_local_reaches_location_private_ips_through_the_cni_tunnel() {
    check(
        &logical_from("b"),
        false,
        enc(Encapsulator::Flannel, Encapsulation::CrossSubnet),
        "
        R 10.2.1.0/24    via 10.4.0.1 dev 0 src 192.168.0.1 onlink
        R 192.168.0.1/32 via 10.4.0.1 dev 0 src 192.168.0.1 onlink
        R 192.168.0.2/32 via 10.2.3.0 dev 2 table 1107 onlink
        R 10.2.4.0/24    via 10.4.0.3 dev 0 src 192.168.0.1 onlink
        R 10.5.0.0/24 dev 0 src 192.168.0.1
        RULE to 192.168.0.2/32 iif kilo0 table 1107
        ",
    );
}

#[test]
fn cilium_gateway_prefers_the_cni_compatibility_ip() {
    let mut t = logical_from("b");
    t.segments[1].members[1].cni_compatibility_ip = Some(c("10.2.3.77/32"));
    let (routes, rules) =
        t.routes(&ifaces(), false, &enc(Encapsulator::Cilium, Encapsulation::Always));
    assert!(
        lines(&routes).contains(&"192.168.0.2/32 via 10.2.3.77 dev tunl0 table 1107 onlink".into())
    );
    assert_eq!(rules.len(), 1);
}

#[test]
fn ipip_leader_without_local_adds_no_compatibility_routes() {
    let (routes, rules) =
        logical_from("b").routes(&ifaces(), false, &enc(Encapsulator::Ipip, Encapsulation::Always));
    assert!(routes.iter().all(|r| r.table != KILO_TABLE));
    assert!(rules.is_empty());
}

#[test]
fn a_private_ip_that_is_the_nat_discovered_endpoint_gets_no_wireguard_route() {
    let mut t = logical_from("b");
    // Segment location:1's leader (a) has a keepalive; its endpoint was discovered at its
    // private IP, so that IP is reached directly and not through WireGuard.
    t.discovered_endpoints
        .insert(kilo_core::fixtures::key(1), "192.168.0.1:51820".parse().unwrap());
    let (routes, _) = t.routes(&ifaces(), false, &enc(Encapsulator::Ipip, Encapsulation::Never));
    assert_eq!(
        lines(&routes)[..2],
        [
            "10.2.1.0/24 via 10.4.0.1 dev kilo0 src 192.168.0.1 onlink",
            "10.2.4.0/24 via 10.4.0.3 dev kilo0 src 192.168.0.1 onlink"
        ]
    );
    // Without a keepalive the discovered endpoint is not used.
    t.segments[0].persistent_keepalive = Duration::ZERO;
    let (routes, _) = t.routes(&ifaces(), false, &enc(Encapsulator::Ipip, Encapsulation::Never));
    assert_eq!(
        routes[1].to_string(),
        "192.168.0.1/32 via 10.4.0.1 dev kilo0 src 192.168.0.1 onlink"
    );
}

/// Cross granularity from b: full segments, with nodes of location 1 (a, d) and 2 (b, c).
fn cross_from_b() -> Topology {
    let mut t = full_from("b");
    for (seg, loc) in t.segments.iter_mut().zip(["1", "2", "2", "1"]) {
        seg.node_location = Some(format!("location:{loc}"));
    }
    t.node_location = Some("location:2".into());
    t
}

#[test]
fn cross_granularity_routes_same_location_nodes_over_the_private_network() {
    check(
        &cross_from_b(),
        true,
        enc(Encapsulator::Ipip, Encapsulation::Never),
        "
        R 10.2.1.0/24    via 10.4.0.1 dev 0 src 192.168.0.1 onlink
        R 192.168.0.1/32 via 10.4.0.1 dev 0 src 192.168.0.1 onlink
        R 10.2.3.0/24    via 192.168.0.2 dev 1 onlink
        R 10.2.4.0/24    via 10.4.0.4 dev 0 src 192.168.0.1 onlink
        R 10.5.0.0/24 dev 0 src 192.168.0.1
        ",
    );
    assert_eq!(
        cross_from_b().encapsulation_ips(),
        ["192.168.0.1".parse::<std::net::IpAddr>().unwrap(), "192.168.0.2".parse().unwrap()]
    );
}

#[test]
fn route_identity_includes_the_table_and_the_device() {
    let main = Route {
        dst: c("192.168.0.2/32"),
        via: Some("192.168.0.2".parse().unwrap()),
        dev: "tunl0".into(),
        src: None,
        table: 254,
        onlink: true,
    };
    let kilo = Route { table: KILO_TABLE, ..main.clone() };
    let other_dev = Route { dev: "eth0".into(), ..main.clone() };
    assert_ne!(main.key(), kilo.key());
    assert_ne!(main.key(), other_dev.key());
    assert_eq!(main.key(), Route { onlink: false, ..main.clone() }.key());
    assert_eq!(main.key(), "unicast 192.168.0.2/32 via 192.168.0.2 dev tunl0 src - table 254");
    assert_eq!(kilo.to_string(), "192.168.0.2/32 via 192.168.0.2 dev tunl0 table 1107 onlink");
}

#[test]
fn rules_print_in_ip_rule_syntax() {
    let rule = Rule {
        from: None,
        to: Some(c("192.168.0.2/32")),
        iif: Some("kilo0".into()),
        table: KILO_TABLE,
    };
    assert_eq!(rule.to_string(), "to 192.168.0.2/32 iif kilo0 lookup 1107");
    assert_eq!(rule.key(), "from - to 192.168.0.2/32 iif kilo0 lookup 1107");
    let all = Rule { from: None, to: None, iif: None, table: KILO_TABLE };
    assert_eq!(all.to_string(), "from all lookup 1107");
}

#[test]
fn gateways_follow_each_encapsulator() {
    let private = Some("192.168.0.2".parse().unwrap());
    let cni = Some("10.2.3.77".parse().unwrap());
    let pod = Some(c("10.2.3.0/24"));
    assert_eq!(Encapsulator::Ipip.gw(None, private, cni, pod), private);
    assert_eq!(
        Encapsulator::Flannel.gw(None, private, cni, pod),
        Some("10.2.3.0".parse().unwrap())
    );
    assert_eq!(Encapsulator::Cilium.gw(None, private, cni, pod), cni);
    assert_eq!(
        Encapsulator::Cilium.gw(None, private, None, pod),
        Some("10.2.3.0".parse().unwrap())
    );
    assert_eq!(Encapsulator::Noop.gw(None, private, cni, pod), None);
    assert_eq!(Encapsulator::select(None, false), Encapsulator::Noop);
    assert_eq!(Encapsulator::select(None, true), Encapsulator::Ipip);
}
