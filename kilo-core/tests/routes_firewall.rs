//! Firewall rule sets for the 13.2 fixture, checked string by
//! string against upstream's rule identities.

mod routes_common;

use kilo_core::firewall::{Entry, Family, RuleSet, encapsulation_rules};
use kilo_core::routes::Encapsulator;
use routes_common::{c, full_from, logical_from};

fn lines(entries: &[Entry]) -> Vec<String> {
    entries.iter().map(Entry::identity).collect()
}

fn text(s: &str) -> Vec<String> {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

const APPEND_NO_SERVICES: &str = r#"
nat -N KILO-NAT
nat -N KILO-NAT
nat -A KILO-NAT -m comment --comment "Kilo: NAT remaining packets" -j MASQUERADE
nat -A KILO-NAT -m comment --comment "Kilo: NAT remaining packets" -j MASQUERADE
"#;

const SEGMENTS_AND_PEERS_HEAD: &str = r#"
nat -A KILO-NAT -d 10.4.0.1/32 -m comment --comment "Kilo: do not NAT packets destined for WireGuared IPs" -j RETURN
nat -A KILO-NAT -d 10.2.1.0/24 -m comment --comment "Kilo: do not NAT packets destined for known IPs" -j RETURN
nat -A KILO-NAT -d 192.168.0.1/32 -m comment --comment "Kilo: do not NAT packets destined for known IPs" -j RETURN
nat -A KILO-NAT -d 10.4.0.1/32 -m comment --comment "Kilo: do not NAT packets destined for known IPs" -j RETURN
nat -A KILO-NAT -d 10.4.0.2/32 -m comment --comment "Kilo: do not NAT packets destined for WireGuared IPs" -j RETURN
nat -A KILO-NAT -d 10.2.2.0/24 -m comment --comment "Kilo: do not NAT packets destined for known IPs" -j RETURN
nat -A KILO-NAT -d 192.168.0.1/32 -m comment --comment "Kilo: do not NAT packets destined for known IPs" -j RETURN
nat -A KILO-NAT -d 10.2.3.0/24 -m comment --comment "Kilo: do not NAT packets destined for known IPs" -j RETURN
nat -A KILO-NAT -d 192.168.0.2/32 -m comment --comment "Kilo: do not NAT packets destined for known IPs" -j RETURN
nat -A KILO-NAT -d 10.4.0.2/32 -m comment --comment "Kilo: do not NAT packets destined for known IPs" -j RETURN
"#;

const SEGMENTS_AND_PEERS_TAIL: &str = r#"
nat -A KILO-NAT -d 10.4.0.3/32 -m comment --comment "Kilo: do not NAT packets destined for WireGuared IPs" -j RETURN
nat -A KILO-NAT -d 10.2.4.0/24 -m comment --comment "Kilo: do not NAT packets destined for known IPs" -j RETURN
nat -A KILO-NAT -d 10.4.0.3/32 -m comment --comment "Kilo: do not NAT packets destined for known IPs" -j RETURN
nat -A POSTROUTING -s 10.5.0.1/24 -m comment --comment "Kilo: jump to NAT chain" -j KILO-NAT
nat -A KILO-NAT -d 10.5.0.1/24 -m comment --comment "Kilo: do not NAT packets destined for peers" -j RETURN
nat -A POSTROUTING -s 10.5.0.2/24 -m comment --comment "Kilo: jump to NAT chain" -j KILO-NAT
nat -A KILO-NAT -d 10.5.0.2/24 -m comment --comment "Kilo: do not NAT packets destined for peers" -j RETURN
nat -A POSTROUTING -s 10.5.0.3/24 -m comment --comment "Kilo: jump to NAT chain" -j KILO-NAT
nat -A KILO-NAT -d 10.5.0.3/24 -m comment --comment "Kilo: do not NAT packets destined for peers" -j RETURN
"#;

#[test]
fn leader_a_with_cni_and_forward_rules_gets_upstreams_exact_rule_strings() {
    let rules = logical_from("a").rules(true, true);
    assert_eq!(lines(&rules.append), text(APPEND_NO_SERVICES));
    let mut want = text(
        r#"
        nat -A POSTROUTING -s 10.2.1.0/24 -m comment --comment "Kilo: jump to KILO-NAT chain" -j KILO-NAT
        filter -A FORWARD -m comment --comment "Kilo: forward packets from the pod subnet" -s 10.2.1.0/24 -j ACCEPT
        filter -A FORWARD -m comment --comment "Kilo: forward packets to the pod subnet" -d 10.2.1.0/24 -j ACCEPT
        filter -A FORWARD -m comment --comment "Kilo: forward packets from private IPs" -s 192.168.0.1/32 -j ACCEPT
        filter -A FORWARD -m comment --comment "Kilo: forward packets to private IPs" -d 192.168.0.1/32 -j ACCEPT
        "#,
    );
    want.extend(text(SEGMENTS_AND_PEERS_HEAD));
    want.extend(text(SEGMENTS_AND_PEERS_TAIL));
    assert_eq!(lines(&rules.prepend), want);
    let families: Vec<Family> = rules.append.iter().map(Entry::family).collect();
    assert_eq!(families, [Family::Ipv4, Family::Ipv6, Family::Ipv4, Family::Ipv6]);
    assert!(rules.prepend.iter().all(|e| e.family() == Family::Ipv4));
}

#[test]
fn non_leader_c_forwards_only_its_own_pod_subnet_and_nats_its_locations_allowed_ips() {
    let rules = logical_from("c").rules(true, true);
    assert_eq!(lines(&rules.append), text(APPEND_NO_SERVICES));
    let mut want = text(
        r#"
        nat -A POSTROUTING -s 10.2.3.0/24 -m comment --comment "Kilo: jump to KILO-NAT chain" -j KILO-NAT
        filter -A FORWARD -m comment --comment "Kilo: forward packets from the node's pod subnet" -s 10.2.3.0/24 -j ACCEPT
        filter -A FORWARD -m comment --comment "Kilo: forward packets to the node's pod subnet" -d 10.2.3.0/24 -j ACCEPT
        "#,
    );
    want.extend(text(SEGMENTS_AND_PEERS_HEAD));
    want.push(
        r#"nat -A POSTROUTING -d 192.168.178.3/32 -m comment --comment "Kilo: jump to NAT chain" -j KILO-NAT"#
            .to_string(),
    );
    want.extend(text(SEGMENTS_AND_PEERS_TAIL));
    assert_eq!(lines(&rules.prepend), want);
}

#[test]
fn leader_b_forwards_its_whole_location_including_allowed_location_ips() {
    let rules = logical_from("b").rules(true, true);
    let forward: Vec<String> =
        lines(&rules.prepend).into_iter().filter(|l| l.starts_with("filter")).collect();
    let comment = |what: &str, flag: &str, c: &str| {
        format!(
            "filter -A FORWARD -m comment --comment \"Kilo: forward packets {what}\" {flag} {c} -j ACCEPT"
        )
    };
    assert_eq!(
        forward,
        [
            comment("from the pod subnet", "-s", "10.2.2.0/24"),
            comment("to the pod subnet", "-d", "10.2.2.0/24"),
            comment("from the pod subnet", "-s", "10.2.3.0/24"),
            comment("to the pod subnet", "-d", "10.2.3.0/24"),
            comment("from allowed location IPs", "-s", "192.168.178.3/32"),
            comment("to allowed location IPs", "-d", "192.168.178.3/32"),
            comment("from private IPs", "-s", "192.168.0.1/32"),
            comment("to private IPs", "-d", "192.168.0.1/32"),
            comment("from private IPs", "-s", "192.168.0.2/32"),
            comment("to private IPs", "-d", "192.168.0.2/32"),
        ]
    );
}

#[test]
fn without_cni_there_are_no_pod_subnet_jumps_and_no_forward_rules() {
    let rules = logical_from("a").rules(false, true);
    let mut want = text(SEGMENTS_AND_PEERS_HEAD);
    want.extend(text(SEGMENTS_AND_PEERS_TAIL));
    assert_eq!(lines(&rules.prepend), want);
}

#[test]
fn service_cidrs_return_before_the_final_masquerade() {
    let mut t = full_from("a");
    t.service_cidrs = vec![c("10.96.0.0/12"), c("fd00:10:96::/108")];
    let rules = t.rules(false, false);
    let append = lines(&rules.append);
    assert_eq!(
        append[2..4],
        [
            r#"nat -A KILO-NAT -d 10.96.0.0/12 -m comment --comment "Kilo: do not NAT packets destined for service CIDRs" -j RETURN"#,
            r#"nat -A KILO-NAT -d fd00:10:96::/108 -m comment --comment "Kilo: do not NAT packets destined for service CIDRs" -j RETURN"#,
        ]
    );
    assert_eq!(rules.append[3].family(), Family::Ipv6);
    assert!(append[4].ends_with("-j MASQUERADE") && append[5].ends_with("-j MASQUERADE"));
}

#[test]
fn ipip_rules_accept_the_locations_private_ips_and_drop_other_ipip_traffic() {
    let t = logical_from("c");
    assert_eq!(
        t.encapsulation_ips(),
        ["192.168.0.1".parse::<std::net::IpAddr>().unwrap(), "192.168.0.2".parse().unwrap()]
    );
    let rules = encapsulation_rules(Encapsulator::Ipip, &t.encapsulation_ips());
    assert_eq!(
        lines(&rules.append),
        text(
            r#"
            filter -N KILO-IPIP
            filter -N KILO-IPIP
            filter -A INPUT -p ipencap -m comment --comment "Kilo: jump to IPIP chain" -j KILO-IPIP
            filter -A INPUT -p ipencap -m comment --comment "Kilo: jump to IPIP chain" -j KILO-IPIP
            filter -A INPUT -p ipencap -m comment --comment "Kilo: reject other IPIP traffic" -j DROP
            filter -A INPUT -p ipencap -m comment --comment "Kilo: reject other IPIP traffic" -j DROP
            "#
        )
    );
    assert_eq!(
        lines(&rules.prepend),
        text(
            r#"
            filter -A KILO-IPIP -s 192.168.0.1/32 -m comment --comment "Kilo: allow IPIP traffic" -j ACCEPT
            filter -A KILO-IPIP -s 192.168.0.2/32 -m comment --comment "Kilo: allow IPIP traffic" -j ACCEPT
            "#
        )
    );
    assert_eq!(encapsulation_rules(Encapsulator::Cilium, &[]).append.len(), 6);
    assert!(encapsulation_rules(Encapsulator::Flannel, &t.encapsulation_ips()).is_empty());
    assert!(encapsulation_rules(Encapsulator::Noop, &[]).is_empty());
}

#[test]
fn full_granularity_accepts_ipip_from_nobody() {
    assert!(full_from("a").encapsulation_ips().is_empty());
}

#[test]
fn extending_puts_encapsulation_rules_before_topology_rules_in_both_lists() {
    let t = logical_from("c");
    let mut set = encapsulation_rules(Encapsulator::Ipip, &t.encapsulation_ips());
    set.extend(t.rules(true, false));
    let append = lines(&set.append);
    assert_eq!(append[0], "filter -N KILO-IPIP");
    assert_eq!(append[6], "nat -N KILO-NAT");
    assert!(set.prepend[0].identity().starts_with("filter -A KILO-IPIP"));
    assert!(set.prepend[2].identity().starts_with("nat -A POSTROUTING -s 10.2.3.0/24"));
    let mut empty = RuleSet::default();
    empty.extend(t.rules(true, false));
    assert_eq!(empty, t.rules(true, false));
}
