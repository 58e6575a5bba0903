//! Golden files for a small fixed dual-stack mesh (see `dual_stack_common`): `kgctl plan` text
//! and JSON of a1 (leader of location a), a2 (its non-leader, no endpoint) and b1 (alone in
//! location b), a1's WireGuard configuration (`kgctl showconf`, upstream's INI) and a1's
//! `kgctl graph` DOT, in `location` and in `full` granularity.
//!
//! `UPDATE_GOLDEN=1 cargo test -p kilo-core --test dual_stack_golden` rewrites the files (under
//! `tests/golden/dual_stack/`).
//!
//! Besides the byte-for-byte comparison, each golden's content is checked for what a dual-stack
//! plan must hold, so that regenerating the files cannot silently bless a wrong one.

mod dual_stack_common;

use std::path::PathBuf;

use dual_stack_common::{plan, topology};
use kilo_core::Granularity;
use kilo_core::plan::Plan;

fn golden(name: &str, got: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/dual_stack").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(got, want, "{} differs (UPDATE_GOLDEN=1 rewrites it)", path.display());
}

fn prefix(g: Granularity) -> &'static str {
    match g {
        Granularity::Location => "location",
        Granularity::Full => "full",
        _ => unreachable!(),
    }
}

fn plan_of(g: Granularity, node: &str) -> Plan {
    plan(&topology(g, node), node)
}

fn check_plan_files(g: Granularity, node: &str) {
    let p = plan_of(g, node);
    golden(&format!("{}_plan_{node}.txt", prefix(g)), &p.to_text());
    golden(&format!("{}_plan_{node}.json", prefix(g)), &(p.to_json_pretty() + "\n"));
}

#[test]
fn location_plans_match_the_golden_files() {
    for node in ["a1", "a2", "b1"] {
        check_plan_files(Granularity::Location, node);
    }
}

#[test]
fn full_plans_match_the_golden_files() {
    for node in ["a1", "a2", "b1"] {
        check_plan_files(Granularity::Full, node);
    }
}

#[test]
fn wireguard_configuration_of_a1_matches_the_golden_files() {
    for g in [Granularity::Location, Granularity::Full] {
        golden(&format!("{}_conf_a1.ini", prefix(g)), &topology(g, "a1").conf().to_ini());
    }
}

#[test]
fn graph_of_a1_matches_the_golden_files() {
    for g in [Granularity::Location, Granularity::Full] {
        let dot = topology(g, "a1").dot();
        // The graph is labelled with both WireGuard ranges.
        assert!(dot.contains("\tlabel=\"10.4.0.0/16, fd04::/64\";\n"), "{dot}");
        golden(&format!("{}_graph_a1.dot", prefix(g)), &dot);
    }
}

// What the goldens must say, checked on the values themselves.

fn route_lines(p: &Plan) -> Vec<String> {
    p.routes.iter().map(ToString::to_string).collect()
}

#[test]
fn leader_a1_has_both_addresses_on_kilo0_and_routes_each_family_through_its_wireguard_ip() {
    let p = plan_of(Granularity::Location, "a1");
    assert!(p.leader);
    assert!(p.to_text().contains("\n  kilo0 10.4.0.1/16 fd04::1/64 up\n"), "{}", p.to_text());
    assert!(p.to_json_pretty().contains("\"address6\": \"fd04::1/64\""));
    let lines = route_lines(&p);
    for want in [
        "10.2.3.0/24 via 10.4.0.2 dev kilo0 src 192.168.10.1 onlink",
        "fd02:3::/64 via fd04::2 dev kilo0 src fd00:10::1 onlink",
        "192.168.20.1/32 via 10.4.0.2 dev kilo0 src 192.168.10.1 onlink",
        "fd00:20::1/128 via fd04::2 dev kilo0 src fd00:10::1 onlink",
        "10.5.0.1/32 dev kilo0 src 192.168.10.1",
        "fd05::1/128 dev kilo0 src fd00:10::1",
        // a2 over the LAN: IPv4 through the IPIP tunnel, IPv6 directly on eth0.
        "10.2.2.0/24 via 192.168.10.2 dev tunl0 src 192.168.10.1 onlink",
        "fd02:2::/64 via fd00:10::2 dev eth0 onlink",
    ] {
        assert!(lines.iter().any(|l| l == want), "missing {want:?} in {lines:#?}");
    }
    let conf = p.wireguard.as_ref().unwrap();
    let b1 = &conf.peers[0];
    let ips: Vec<String> = b1.allowed_ips.iter().map(ToString::to_string).collect();
    assert_eq!(
        ips,
        [
            "10.2.3.0/24",
            "fd02:3::/64",
            "192.168.20.1/32",
            "fd00:20::1/128",
            "10.4.0.2/32",
            "fd04::2/128"
        ]
    );
}

#[test]
fn non_leader_a2_routes_ipv6_through_a1s_ipv6_private_ip_on_the_lan() {
    let p = plan_of(Granularity::Location, "a2");
    assert!(!p.leader);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert!(p.to_text().contains("\n  kilo0 down (no address)\n"));
    let lines = route_lines(&p);
    for want in [
        "fd04::1/128 via fd00:10::1 dev eth0 onlink",
        "fd04::2/128 via fd00:10::1 dev eth0 onlink",
        "fd02:3::/64 via fd00:10::1 dev eth0 onlink",
        "fd00:20::1/128 via fd00:10::1 dev eth0 onlink",
        "fd05::1/128 via fd00:10::1 dev eth0 onlink",
        "fd02:1::/64 via fd00:10::1 dev eth0 onlink",
        "10.2.3.0/24 via 192.168.10.1 dev tunl0 src 192.168.10.2 onlink",
        "10.5.0.1/32 via 192.168.10.1 dev tunl0 src 192.168.10.2 onlink",
    ] {
        assert!(lines.iter().any(|l| l == want), "missing {want:?} in {lines:#?}");
    }
}

#[test]
fn every_golden_plan_keeps_routes_within_one_family_and_has_ipv6_firewall_rules() {
    for g in [Granularity::Location, Granularity::Full] {
        for node in ["a1", "a2", "b1"] {
            let p = plan_of(g, node);
            let mut families = [false; 2];
            for r in &p.routes {
                families[usize::from(!r.dst.is_ipv4())] = true;
                let v4 = r.dst.is_ipv4();
                assert!(r.via.is_none_or(|a| a.is_ipv4() == v4), "{g} {node}: {r}");
                assert!(r.src.is_none_or(|a| a.is_ipv4() == v4), "{g} {node}: {r}");
                if !v4 {
                    assert_ne!(r.dev, "tunl0", "{g} {node}: {r}");
                }
            }
            assert_eq!(families, [true, true], "{g} {node}: {:#?}", p.routes);
            for r in &p.rules {
                let fams: Vec<bool> = r.from.iter().chain(&r.to).map(|c| c.is_ipv4()).collect();
                assert!(fams.windows(2).all(|w| w[0] == w[1]), "{g} {node}: {r}");
            }
            let text = p.to_text();
            for want in [
                "-d fd04::1/128 -m comment --comment \"Kilo: do not NAT packets destined for WireGuared IPs\" -j RETURN",
                "-d fd04::2/128 -m comment --comment \"Kilo: do not NAT packets destined for WireGuared IPs\" -j RETURN",
                "-d 10.4.0.1/32 -m comment --comment \"Kilo: do not NAT packets destined for WireGuared IPs\" -j RETURN",
                "-d fd05::1/128 -m comment --comment \"Kilo: do not NAT packets destined for peers\" -j RETURN",
                "-s fd05::1/128 -m comment --comment \"Kilo: jump to NAT chain\" -j KILO-NAT",
            ] {
                assert!(text.contains(want), "{g} {node}: missing {want:?}\n{text}");
            }
            // Every firewall rule's addresses are of the family it is filed under.
            let ipv6 = text.split("# IPv6 (ip6tables)").nth(1).expect("an IPv6 block");
            let ipv4 = text.split("# IPv6 (ip6tables)").next().unwrap();
            assert!(ipv6.contains("-s fd02:"), "{g} {node}: no IPv6 pod NAT jump\n{ipv6}");
            for line in ipv4.lines().filter(|l| l.contains(" -d ") || l.contains(" -s ")) {
                assert!(!line.contains("fd0"), "{g} {node}: IPv6 address in IPv4 block: {line}");
            }
            for line in ipv6.lines().filter(|l| l.contains(" -d ") || l.contains(" -s ")) {
                if line.starts_with("  -I") || line.starts_with("  -A") {
                    assert!(line.contains(':'), "{g} {node}: IPv4 address in IPv6 block: {line}");
                }
            }
        }
    }
}
