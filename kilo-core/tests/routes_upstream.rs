//! Upstream's `TestRoutes`, all 16 cases, value for value. The one
//! documented difference: peer allowed IPs are masked to their network (contract C17), so the
//! three peer routes `10.5.0.1/24`, `10.5.0.2/24`, `10.5.0.3/24` become the single
//! `10.5.0.0/24` route (identical routes are listed once).

mod routes_common;

use kilo_core::routes::{Encapsulator, EncapsulatorConfig};
use kilo_core::{Encapsulation, Topology};
use routes_common::{expected, full_from, ifaces, logical_from};

fn check(t: &Topology, local: bool, strategy: Encapsulation, want: &str) {
    let enc = EncapsulatorConfig { encapsulator: Encapsulator::Ipip, strategy };
    let (routes, rules) = t.routes(&ifaces(), local, &enc);
    let (want_routes, want_rules) = expected(want);
    let show = |r: &[kilo_core::routes::Route]| {
        r.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("\n")
    };
    assert_eq!(show(&routes), show(&want_routes), "route lines");
    assert_eq!(routes, want_routes);
    assert_eq!(rules, want_rules);
}

const FROM_A: &str = "
R 10.2.2.0/24    via 10.4.0.2 dev 0 src 192.168.0.1 onlink
R 192.168.0.1/32 via 10.4.0.2 dev 0 src 192.168.0.1 onlink
R 10.2.3.0/24    via 10.4.0.2 dev 0 src 192.168.0.1 onlink
R 192.168.0.2/32 via 10.4.0.2 dev 0 src 192.168.0.1 onlink
R 192.168.178.3/32 via 10.4.0.2 dev 0 src 192.168.0.1 onlink
R 10.2.4.0/24    via 10.4.0.3 dev 0 src 192.168.0.1 onlink
R 10.5.0.0/24 dev 0 src 192.168.0.1
";

#[test]
fn logical_leader_a_routes_other_locations_through_their_wireguard_ips() {
    check(&logical_from("a"), false, Encapsulation::Never, FROM_A);
}

#[test]
fn logical_leader_a_alone_in_its_location_adds_nothing_with_local() {
    check(&logical_from("a"), true, Encapsulation::Never, FROM_A);
}

#[test]
fn logical_leader_a_alone_in_its_location_adds_nothing_with_local_always() {
    check(&logical_from("a"), true, Encapsulation::Always, FROM_A);
}

#[test]
fn logical_leader_b_adds_no_routes_to_its_own_location() {
    check(
        &logical_from("b"),
        false,
        Encapsulation::Never,
        "
        R 10.2.1.0/24    via 10.4.0.1 dev 0 src 192.168.0.1 onlink
        R 192.168.0.1/32 via 10.4.0.1 dev 0 src 192.168.0.1 onlink
        R 10.2.4.0/24    via 10.4.0.3 dev 0 src 192.168.0.1 onlink
        R 10.5.0.0/24 dev 0 src 192.168.0.1
        ",
    );
}

#[test]
fn logical_leader_b_with_local_routes_c_pod_cidr_over_the_private_network() {
    check(
        &logical_from("b"),
        true,
        Encapsulation::Never,
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
fn logical_leader_b_with_local_always_encapsulates_and_adds_policy_rules() {
    check(
        &logical_from("b"),
        true,
        Encapsulation::Always,
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

const FROM_C: &str = "
R 10.4.0.1/32    via 192.168.0.1 dev 1 onlink
R 10.2.1.0/24    via 192.168.0.1 dev 1 onlink
R 192.168.0.1/32 via 192.168.0.1 dev 1 onlink
R 10.4.0.2/32    via 192.168.0.1 dev 1 onlink
R 10.4.0.3/32    via 192.168.0.1 dev 1 onlink
R 10.2.4.0/24    via 192.168.0.1 dev 1 onlink
R 10.5.0.0/24    via 192.168.0.1 dev 1 onlink
";

#[test]
fn logical_non_leader_c_routes_everything_via_its_leaders_private_ip() {
    check(&logical_from("c"), false, Encapsulation::Never, FROM_C);
}

#[test]
fn logical_non_leader_c_with_local_adds_the_leaders_pod_cidr() {
    let want = FROM_C.replace(
        "R 10.4.0.2/32    via 192.168.0.1 dev 1 onlink\n",
        "R 10.4.0.2/32    via 192.168.0.1 dev 1 onlink\nR 10.2.2.0/24 via 192.168.0.1 dev 1 onlink\n",
    );
    check(&logical_from("c"), true, Encapsulation::Never, &want);
}

#[test]
fn logical_non_leader_c_with_local_always_encapsulates_everything() {
    check(
        &logical_from("c"),
        true,
        Encapsulation::Always,
        "
        R 10.4.0.1/32    via 192.168.0.1 dev 2 src 192.168.0.2 onlink
        R 10.2.1.0/24    via 192.168.0.1 dev 2 src 192.168.0.2 onlink
        R 192.168.0.1/32 via 192.168.0.1 dev 2 src 192.168.0.2 onlink
        R 10.4.0.2/32    via 192.168.0.1 dev 2 src 192.168.0.2 onlink
        R 10.2.2.0/24    via 192.168.0.1 dev 2 src 192.168.0.2 onlink
        R 192.168.0.1/32 via 192.168.0.1 dev 2 src 192.168.0.2 table 1107 onlink
        R 10.4.0.3/32    via 192.168.0.1 dev 2 src 192.168.0.2 onlink
        R 10.2.4.0/24    via 192.168.0.1 dev 2 src 192.168.0.2 onlink
        R 10.5.0.0/24    via 192.168.0.1 dev 2 src 192.168.0.2 onlink
        RULE from 10.2.3.0/24 to 192.168.0.1/32 table 1107
        ",
    );
}

#[test]
fn logical_leader_d_without_private_ip_routes_without_source() {
    check(
        &logical_from("d"),
        false,
        Encapsulation::Never,
        "
        R 10.2.1.0/24    via 10.4.0.1 dev 0 onlink
        R 192.168.0.1/32 via 10.4.0.1 dev 0 onlink
        R 10.2.2.0/24    via 10.4.0.2 dev 0 onlink
        R 192.168.0.1/32 via 10.4.0.2 dev 0 onlink
        R 10.2.3.0/24    via 10.4.0.2 dev 0 onlink
        R 192.168.0.2/32 via 10.4.0.2 dev 0 onlink
        R 192.168.178.3/32 via 10.4.0.2 dev 0 onlink
        R 10.5.0.0/24 dev 0
        ",
    );
}

const FULL_FROM_A: &str = "
R 10.2.2.0/24    via 10.4.0.2 dev 0 src 192.168.0.1 onlink
R 192.168.0.1/32 via 10.4.0.2 dev 0 src 192.168.0.1 onlink
R 192.168.178.3/32 via 10.4.0.2 dev 0 src 192.168.0.1 onlink
R 10.2.3.0/24    via 10.4.0.3 dev 0 src 192.168.0.1 onlink
R 192.168.0.2/32 via 10.4.0.3 dev 0 src 192.168.0.1 onlink
R 10.2.4.0/24    via 10.4.0.4 dev 0 src 192.168.0.1 onlink
R 10.5.0.0/24 dev 0 src 192.168.0.1
";

#[test]
fn full_mesh_a_routes_every_node_through_its_own_wireguard_ip() {
    check(&full_from("a"), false, Encapsulation::Never, FULL_FROM_A);
}

#[test]
fn full_mesh_a_with_local_is_unchanged() {
    check(&full_from("a"), true, Encapsulation::Never, FULL_FROM_A);
}

const FULL_FROM_B: &str = "
R 10.2.1.0/24    via 10.4.0.1 dev 0 src 192.168.0.1 onlink
R 192.168.0.1/32 via 10.4.0.1 dev 0 src 192.168.0.1 onlink
R 10.2.3.0/24    via 10.4.0.3 dev 0 src 192.168.0.1 onlink
R 192.168.0.2/32 via 10.4.0.3 dev 0 src 192.168.0.1 onlink
R 10.2.4.0/24    via 10.4.0.4 dev 0 src 192.168.0.1 onlink
R 10.5.0.0/24 dev 0 src 192.168.0.1
";

#[test]
fn full_mesh_b_routes_every_node_through_its_own_wireguard_ip() {
    check(&full_from("b"), false, Encapsulation::Never, FULL_FROM_B);
}

#[test]
fn full_mesh_b_with_local_is_unchanged() {
    check(&full_from("b"), true, Encapsulation::Never, FULL_FROM_B);
}

const FULL_FROM_C: &str = "
R 10.2.1.0/24    via 10.4.0.1 dev 0 src 192.168.0.2 onlink
R 192.168.0.1/32 via 10.4.0.1 dev 0 src 192.168.0.2 onlink
R 10.2.2.0/24    via 10.4.0.2 dev 0 src 192.168.0.2 onlink
R 192.168.0.1/32 via 10.4.0.2 dev 0 src 192.168.0.2 onlink
R 192.168.178.3/32 via 10.4.0.2 dev 0 src 192.168.0.2 onlink
R 10.2.4.0/24    via 10.4.0.4 dev 0 src 192.168.0.2 onlink
R 10.5.0.0/24 dev 0 src 192.168.0.2
";

#[test]
fn full_mesh_c_routes_every_node_through_its_own_wireguard_ip() {
    check(&full_from("c"), false, Encapsulation::Never, FULL_FROM_C);
}

#[test]
fn full_mesh_c_with_local_is_unchanged() {
    check(&full_from("c"), true, Encapsulation::Never, FULL_FROM_C);
}
