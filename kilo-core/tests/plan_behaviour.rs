//! How the agent's options shape a plan and the exact
//! key order of `kgctl plan -o json` (contract 5).

mod routes_common;

use kilo_core::plan::{Plan, PlanOptions};
use kilo_core::routes::Encapsulator;
use kilo_core::wireguard::Config;
use kilo_core::{Compatibility, Encapsulation};
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

fn has_ipip_rules(p: &Plan) -> bool {
    p.firewall.append.iter().any(|e| e.identity() == "filter -N KILO-IPIP")
}

#[test]
fn a_leader_gets_its_wireguard_address_an_up_link_and_its_configuration() {
    let p = Plan::new(&logical_from("a"), Some(Config::default()), &options("a"));
    assert!(p.leader && p.interface.up);
    assert_eq!(p.interface.address, Some(c("10.4.0.1/16")));
    assert_eq!(p.wireguard, Some(Config::default()));
    assert_eq!(p.tunnel_address, Some(c("10.2.1.1/32")));
    assert!(has_ipip_rules(&p));
}

#[test]
fn a_non_leader_keeps_its_link_down_without_address_or_peers() {
    let p = Plan::new(&logical_from("c"), Some(Config::default()), &options("c"));
    assert!(!p.leader && !p.interface.up);
    assert_eq!(p.interface.address, None);
    assert_eq!(p.wireguard, None);
}

#[test]
fn never_encapsulating_adds_no_ipip_rules_and_no_tunnel_address() {
    let mut opts = options("c");
    opts.encapsulation = Encapsulation::Never;
    let p = Plan::new(&logical_from("c"), None, &opts);
    assert!(!has_ipip_rules(&p));
    assert_eq!(p.tunnel_address, None);
    assert!(p.routes.iter().all(|r| r.dev == "eth0"));
}

#[test]
fn without_local_there_are_no_ipip_rules_and_no_tunnel_address() {
    let mut opts = options("c");
    opts.local = false;
    let p = Plan::new(&logical_from("c"), None, &opts);
    assert!(!has_ipip_rules(&p));
    assert_eq!(p.tunnel_address, None);
}

#[test]
fn flannel_compatibility_owns_no_ipip_tunnel() {
    let mut opts = options("b");
    opts.compatibility = Some(Compatibility::Flannel);
    let p = Plan::new(&logical_from("b"), None, &opts);
    assert_eq!(p.encapsulation.encapsulator, Encapsulator::Flannel);
    assert!(!has_ipip_rules(&p));
    assert_eq!(p.tunnel_address, None);
}

#[test]
fn a_node_without_private_ip_uses_no_encapsulator() {
    let p = Plan::new(&logical_from("d"), None, &options("d"));
    assert_eq!(p.encapsulation.encapsulator, Encapsulator::Noop);
    assert!(!has_ipip_rules(&p));
    assert_eq!(p.tunnel_address, None);
    assert!(p.routes.iter().all(|r| r.src.is_none() && r.dev == "kilo0"));
}

#[test]
fn forward_rules_follow_the_option() {
    let mut opts = options("c");
    opts.iptables_forward_rules = true;
    let p = Plan::new(&logical_from("c"), None, &opts);
    assert!(p.firewall.prepend.iter().any(|e| e.identity().starts_with("filter -A FORWARD")));
}

fn keys(v: &serde_json::Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

#[test]
fn json_keys_come_in_the_contracts_order() {
    let mut conf = Config::default();
    conf.peers.push(Default::default());
    let p = Plan::new(&logical_from("b"), Some(conf), &options("b"));
    let v: serde_json::Value = serde_json::from_str(&p.to_json_pretty()).unwrap();
    assert_eq!(
        keys(&v),
        ["node", "segment", "leader", "interface", "wireguard", "routes", "rules", "firewall"]
    );
    assert_eq!(keys(&v["interface"]), ["name", "address", "up"]);
    assert_eq!(keys(&v["wireguard"]), ["listen_port", "peers"]);
    assert_eq!(
        keys(&v["wireguard"]["peers"][0]),
        ["public_key", "endpoint", "allowed_ips", "persistent_keepalive", "preshared_key"]
    );
    assert_eq!(v["wireguard"]["listen_port"], serde_json::Value::Null);
    assert_eq!(keys(&v["routes"][0]), ["dst", "via", "dev", "src", "table", "onlink"]);
    assert_eq!(keys(&v["rules"][0]), ["from", "to", "iif", "table"]);
    assert_eq!(v["rules"][0]["table"], 1107);
    assert_eq!(keys(&v["firewall"]), ["append", "prepend"]);
    assert_eq!(keys(&v["firewall"]["append"][0]), ["family", "rule"]);
    assert_eq!(v["firewall"]["append"][0]["family"], "ipv4");
    assert_eq!(v["firewall"]["append"][1]["family"], "ipv6");
}

#[test]
fn the_text_view_lists_what_was_left_out_and_why() {
    let mut p = Plan::new(&logical_from("a"), Some(Config::default()), &options("a"));
    assert!(p.warnings.is_empty());
    assert!(!p.to_text().contains("Left out"));
    p.warnings = vec!["peer \"evil\": allowed IP left out: ::/0 covers every IPv6 address".into()];
    assert!(p.to_text().ends_with(
        "\nLeft out (not applied)\n  peer \"evil\": allowed IP left out: ::/0 covers every IPv6 address\n"
    ));
    // The JSON shape of the contract is unchanged.
    assert!(!p.to_json_pretty().contains("warnings"));
}
