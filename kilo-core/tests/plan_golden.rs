//! Golden files for `kgctl plan` (contract 5): JSON and text for the 13.2 fixture from leader a
//! and from non-leader c, with `kg`'s defaults (`--local`, `--cni`, `--encapsulate=always`).
//! `UPDATE_GOLDEN=1 cargo test -p kilo-core --test plan_golden` rewrites the files.

mod routes_common;

use std::path::PathBuf;

use kilo_core::fixtures::{self, key};
use kilo_core::plan::{Plan, PlanOptions};
use kilo_core::wireguard::{Config, InterfaceConfig, PeerConfig};
use kilo_core::{Encapsulation, Topology};
use routes_common::{c, ifaces, logical_from};

fn options(node: &str) -> PlanOptions {
    let mut options = PlanOptions::new(node, ifaces());
    options.local = true;
    options.cni = true;
    options.iptables_forward_rules = false;
    options.encapsulation = Encapsulation::Always;
    options.compatibility = None;
    options
}

fn peer(n: u8, endpoint: Option<&str>, ips: &[&str]) -> PeerConfig {
    PeerConfig {
        public_key: key(n),
        preshared_key: None,
        endpoint: endpoint.map(|e| e.parse().unwrap()),
        allowed_ips: ips.iter().map(|s| c(s)).collect(),
        persistent_keepalive: 0,
    }
}

/// Leader a's WireGuard configuration as upstream 6.2 builds it (peer allowed IPs masked,
/// contract C17), written out by hand.
fn conf_from_a() -> Config {
    Config {
        interface: Some(InterfaceConfig {
            private_key: Some(fixtures::private_key()),
            listen_port: Some(fixtures::PORT),
        }),
        peers: vec![
            peer(
                2,
                Some("10.1.0.2:51820"),
                &[
                    "10.2.2.0/24",
                    "192.168.0.1/32",
                    "10.2.3.0/24",
                    "192.168.0.2/32",
                    "10.4.0.2/32",
                    "192.168.178.3/32",
                ],
            ),
            peer(4, Some("10.1.0.4:51820"), &["10.2.4.0/24", "10.4.0.3/32"]),
            peer(4, None, &["10.5.0.0/24"]),
            peer(5, Some("192.168.0.1:51820"), &["10.5.0.0/24"]),
        ],
    }
}

fn golden(name: &str, got: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(got, want, "{} differs", path.display());
}

fn plan(t: &Topology, node: &str, conf: Option<Config>) -> Plan {
    Plan::new(t, conf, &options(node))
}

#[test]
fn plan_of_leader_a_matches_the_json_golden_file() {
    let p = plan(&logical_from("a"), "a", Some(conf_from_a()));
    golden("plan_logical_from_a.json", &(p.to_json_pretty() + "\n"));
}

#[test]
fn plan_of_leader_a_matches_the_text_golden_file() {
    let p = plan(&logical_from("a"), "a", Some(conf_from_a()));
    golden("plan_logical_from_a.txt", &p.to_text());
}

#[test]
fn plan_of_non_leader_c_matches_the_json_golden_file() {
    let p = plan(&logical_from("c"), "c", None);
    golden("plan_logical_from_c.json", &(p.to_json_pretty() + "\n"));
}

#[test]
fn plan_of_non_leader_c_matches_the_text_golden_file() {
    let p = plan(&logical_from("c"), "c", None);
    golden("plan_logical_from_c.txt", &p.to_text());
}
