//! The small fixed dual-stack mesh of the dual-stack golden and route tests, built through
//! `Topology::new` (not by hand), and the plan options of `kg`'s defaults.
//!
//! - location "a": a1 (leader volunteer, endpoint 198.51.100.1:51820) and a2 (no endpoint) on a
//!   dual-stack LAN 192.168.10.0/24 + fd00:10::/64;
//! - location "b": b1 alone (endpoint [2001:db8::3]:51820) on 192.168.20.0/24 + fd00:20::/64;
//! - pod subnets 10.2.N.0/24 + fd02:N::/64 (a1 N=1, a2 N=2, b1 N=3);
//! - peer "p" (no endpoint) with allowed IPs 10.5.0.1/32 and fd05::1/128;
//! - WireGuard ranges 10.4.0.0/16 and fd04::/64.

#![allow(dead_code)]

use std::time::Duration;

use kilo_core::fixtures::{self, key};
use kilo_core::plan::{Plan, PlanOptions};
use kilo_core::routes::Interfaces;
use kilo_core::{Cidr, Encapsulation, Granularity, Node, Peer, Topology, TopologyInput};

pub fn c(s: &str) -> Cidr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

pub fn subnet() -> Cidr {
    c("10.4.0.0/16")
}

pub fn subnet6() -> Cidr {
    c("fd04::/64")
}

pub fn ifaces() -> Interfaces {
    Interfaces { kilo: "kilo0".into(), private: "eth0".into(), tunnel: "tunl0".into() }
}

/// A node of the fixed mesh: `lan` is `(IPv4 private IP, IPv6 private IP)`.
pub fn node(
    name: &str,
    key_n: u8,
    location: &str,
    endpoint: Option<&str>,
    lan: (Option<&str>, Option<&str>),
    subnets: &[&str],
    leader: bool,
) -> Node {
    Node {
        name: name.into(),
        endpoint: endpoint.map(|e| e.parse().unwrap()),
        key: key(key_n),
        internal_ip: lan.0.map(c),
        internal_ip6: lan.1.map(c),
        leader,
        location: location.into(),
        subnets: subnets.iter().map(|s| c(s)).collect(),
        ..Node::default()
    }
}

/// The fixed dual-stack mesh's nodes.
pub fn nodes() -> Vec<Node> {
    vec![
        node(
            "a1",
            1,
            "a",
            Some("198.51.100.1:51820"),
            (Some("192.168.10.1/24"), Some("fd00:10::1/64")),
            &["10.2.1.0/24", "fd02:1::/64"],
            true,
        ),
        node(
            "a2",
            2,
            "a",
            None,
            (Some("192.168.10.2/24"), Some("fd00:10::2/64")),
            &["10.2.2.0/24", "fd02:2::/64"],
            false,
        ),
        node(
            "b1",
            3,
            "b",
            Some("[2001:db8::3]:51820"),
            (Some("192.168.20.1/24"), Some("fd00:20::1/64")),
            &["10.2.3.0/24", "fd02:3::/64"],
            false,
        ),
    ]
}

/// The fixed dual-stack mesh's peer.
pub fn peers() -> Vec<Peer> {
    vec![Peer {
        name: "p".into(),
        allowed_ips: vec![c("10.5.0.1/32"), c("fd05::1/128")],
        public_key: key(5),
        ..Peer::default()
    }]
}

pub fn topology_of(
    nodes: &[Node],
    peers: &[Peer],
    granularity: Granularity,
    hostname: &str,
    subnet: Cidr,
    subnet6: Option<Cidr>,
) -> Topology {
    Topology::new(TopologyInput {
        nodes,
        peers,
        granularity,
        hostname,
        port: fixtures::PORT,
        key: fixtures::private_key(),
        subnet,
        subnet6,
        service_cidrs: &[],
        persistent_keepalive: Duration::ZERO,
    })
    .unwrap_or_else(|e| panic!("{hostname}: {e}"))
}

/// The fixed mesh seen from `hostname`.
pub fn topology(granularity: Granularity, hostname: &str) -> Topology {
    topology_of(&nodes(), &peers(), granularity, hostname, subnet(), Some(subnet6()))
}

/// `kg`'s defaults: `--local`, `--cni`, `--encapsulate=always`, no compatibility mode.
pub fn options(node: &str) -> PlanOptions {
    let mut o = PlanOptions::new(node, ifaces());
    o.local = true;
    o.cni = true;
    o.iptables_forward_rules = false;
    o.encapsulation = Encapsulation::Always;
    o.compatibility = None;
    o
}

/// The plan of `hostname` as the agent computes it: the device configuration for leaders.
pub fn plan(t: &Topology, hostname: &str) -> Plan {
    Plan::new(t, Some(t.conf_for_device()), &options(hostname))
}
