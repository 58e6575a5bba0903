//! End-to-end, dual stack: the `e2e_mesh` cluster with IPv6 beside IPv4 on the LANs (location
//! `a`'s two nodes share a dual-stack LAN; `a2` is not its leader and has no endpoint: it dials
//! out, with a keepalive), on the pods and on the external peer (configured from `kgctl showconf
//! peer`), over an IPv4 WAN; then the same cluster IPv6-only, its WAN included. Every pod reaches every other pod in every family, pinging from
//! the pod addresses, in location and in full granularity. Needs root.

mod support;

use std::time::Duration;

use support::{Cluster, Family, MeshSpec, route_line};

const ALL: [&str; 3] = ["a1", "a2", "b1"];

fn spec(granularity: &'static str, family: Family) -> MeshSpec {
    let mut spec = MeshSpec::new(granularity);
    spec.family = family;
    spec.dial_out = vec!["a2"];
    spec
}

#[test]
fn dual_stack_location_granularity_connects_every_pod_in_both_families() {
    if support::skip_unless_root() {
        return;
    }
    let cluster = Cluster::start(&spec("location", Family::Dual)).unwrap();
    let mesh = std::fs::read_to_string(&cluster.mesh).unwrap();
    assert!(mesh.contains("subnet = [\"10.4.0.0/16\", \"fd04::/64\"]"), "{mesh}");
    assert!(mesh.contains("internal-ip = [\"192.168.1.12/24\", \"fd00:1::12/64\"]"), "{mesh}");
    // The peer's configuration, from `kgctl showconf peer laptop`, routes both families.
    let peer = std::fs::read_to_string(cluster.dir.path().join("laptop.conf")).unwrap();
    assert!(peer.contains("10.2.3.0/24") && peer.contains("fd02:3::/64"), "{peer}");
    assert!(peer.contains("10.4.0.1/32") && peer.contains("fd04::1/128"), "{peer}");
    cluster.ping_pods(&ALL, Duration::from_secs(15)).unwrap();

    // a2 reaches location b through its leader a1 over the LAN, each family through the
    // leader's address of that family.
    let v4 = cluster.ns("a2").ip(&["route"]).unwrap();
    let line = route_line(&v4, "10.2.3.0/24").expect("a2 routes b1's IPv4 pods");
    assert!(line.contains("via 192.168.1.11 dev lan0"), "{v4}");
    let v6 = cluster.ns("a2").ip(&["-6", "route"]).unwrap();
    let line = route_line(&v6, "fd02:3::/64").expect("a2 routes b1's IPv6 pods");
    assert!(line.contains("via fd00:1::11 dev lan0"), "{v6}");
    // The leader holds an address of each range and routes each family over WireGuard, with a
    // source of that family.
    let addresses = cluster.ns("a1").ip(&["address", "show", "kilo0"]).unwrap();
    assert!(addresses.contains("inet 10.4.0.1/16"), "{addresses}");
    assert!(addresses.contains("inet6 fd04::1/64"), "{addresses}");
    let v6 = cluster.ns("a1").ip(&["-6", "route"]).unwrap();
    let line = route_line(&v6, "fd02:3::/64").expect("a1 routes b1's IPv6 pods");
    assert!(line.contains("via fd04::2 dev kilo0") && line.contains("src fd00:1::11"), "{v6}");
    // Both families' firewall rules are in place.
    let rules = cluster.ns("a1").exec_ok(&["ip6tables-save", "-t", "nat"]).unwrap();
    assert!(rules.contains("-A KILO-NAT -d fd02:3::/64"), "{rules}");
    // Nothing was left out of any plan.
    for node in ALL {
        let log = cluster.log(node);
        assert!(!log.contains("left out"), "{node}: {log}");
    }
}

#[test]
fn dual_stack_full_granularity_connects_every_pod_in_both_families() {
    if support::skip_unless_root() {
        return;
    }
    let cluster = Cluster::start(&spec("full", Family::Dual)).unwrap();
    cluster.ping_pods(&ALL, Duration::from_secs(15)).unwrap();
    // Every node leads its own segment: a2 reaches b1 over its own WireGuard interface.
    let v6 = cluster.ns("a2").ip(&["-6", "route"]).unwrap();
    let line = route_line(&v6, "fd02:3::/64").expect("a2 routes b1's IPv6 pods");
    assert!(line.contains("dev kilo0"), "{v6}");
}

#[test]
fn ipv6_only_meshes_keep_working_in_both_granularities() {
    if support::skip_unless_root() {
        return;
    }
    for granularity in ["location", "full"] {
        let cluster = Cluster::start(&spec(granularity, Family::Ipv6)).unwrap();
        cluster.ping_pods(&ALL, Duration::from_secs(15)).unwrap();
        let addresses = cluster.ns("a1").ip(&["address", "show", "kilo0"]).unwrap();
        assert!(addresses.contains("inet6 fd04::1/64"), "{granularity}: {addresses}");
        assert!(!addresses.contains("inet "), "{granularity}: {addresses}");
    }
}
