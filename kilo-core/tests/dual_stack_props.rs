//! Property tests of dual-stack meshes (`--subnet 10.4.0.0/16 --subnet fd04::/64`).
//!
//! Meshes: 1-4 locations of 1-4 nodes each, in random input order; every node has an IPv4 and an
//! IPv6 pod subnet (in random order, as Kubernetes lists an IPv6-primary cluster's `podCIDRs`),
//! a dual-stack or an IPv4-only private IP on its location's LAN or none at all, a public IPv4 or
//! IPv6 endpoint and a random leader flag; 0-3 peers with IPv4 and/or IPv6 allowed IPs (networks
//! or hosts) that overlap nothing; `location` or `full` granularity (c and e: `cross` too);
//! `--local`, IPIP as the agent picks it, `--encapsulate` never or always,
//! `--iptables-forward-rules` on or off. Every address derives from an index, so nothing
//! collides.
//!
//! For every node as the local node:
//! - a. every segment has an IPv4 and an IPv6 WireGuard IP, the same index in both ranges,
//!   distinct across segments, and every node sees the same ones;
//! - b. no two WireGuard peers' allowed IPs overlap within a family;
//! - c. routes and rules never cross families, IPv6 routes never use the IPIP tunnel, firewall
//!   rules carry their address's family and both WireGuard IPs are kept from NAT;
//! - d. every other node's pod subnets of both families are reached through exactly one route,
//!   to the right next hop, except where a LAN lacks IPv6 (then no route at all, the left-out
//!   warning when the missing next hop is the leader's, and `validate` names exactly those
//!   nodes);
//! - e. the mesh without anything IPv6 and with `subnet6: None` plans exactly the IPv4 part of
//!   the dual-stack plan (topology, WireGuard configuration, routes, rules, firewall, interface,
//!   warnings), with no `address6`, and a same-family `subnet6` is ignored.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use kilo_core::firewall::{Address, Entry, Family, Spec};
use kilo_core::plan::{Plan, PlanOptions};
use kilo_core::routes::{Interfaces, MAIN_TABLE, Route, Rule};
use kilo_core::topology::Member;
use kilo_core::validate::{Severity, ValidationInput, validate};
use kilo_core::wireguard::Config;
use kilo_core::{
    Cidr, Encapsulation, Endpoint, Granularity, Key, Node, Peer, Topology, TopologyInput, fixtures,
};
use proptest::prelude::*;

/// How a node sits on its location's LAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lan {
    None,
    Ipv4,
    Dual,
}

#[derive(Debug, Clone)]
struct NodeSpec {
    lan: Lan,
    leader: bool,
    ipv6_endpoint: bool,
    ipv6_pods_first: bool,
}

#[derive(Debug, Clone)]
struct PeerSpec {
    ipv4: Option<bool>,
    ipv6: Option<bool>,
    endpoint: bool,
}

#[derive(Debug, Clone)]
struct Mesh {
    nodes: Vec<Node>,
    peers: Vec<Peer>,
    granularity: Granularity,
    strategy: Encapsulation,
    forward: bool,
}

fn c(s: &str) -> Cidr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn subnet() -> Cidr {
    c("10.4.0.0/16")
}

fn subnet6() -> Cidr {
    c("fd04::/64")
}

fn test_key(tag: u8, i: usize) -> Key {
    let mut b = [0u8; 32];
    b[0] = tag;
    b[1..9].copy_from_slice(&(i as u64).to_be_bytes());
    Key::from_bytes(b)
}

fn make_node(i: usize, location: usize, s: &NodeSpec) -> Node {
    let endpoint = if s.ipv6_endpoint {
        format!("[2001:db8::{:x}]:51820", i + 1)
    } else {
        format!("203.0.113.{}:51820", i + 1)
    };
    let mut subnets = vec![c(&format!("10.2.{i}.0/24")), c(&format!("fd02:{i:x}::/64"))];
    if s.ipv6_pods_first {
        subnets.reverse();
    }
    let v4 = c(&format!("192.168.{location}.{}/24", i + 1));
    let v6 = c(&format!("fd00:{location:x}::{:x}/64", i + 1));
    Node {
        name: format!("n{i:02}"),
        endpoint: Some(endpoint.parse::<Endpoint>().unwrap()),
        key: test_key(1, i),
        internal_ip: (s.lan != Lan::None).then_some(v4),
        internal_ip6: (s.lan == Lan::Dual).then_some(v6),
        leader: s.leader,
        location: format!("loc{location}"),
        subnets,
        ..Node::default()
    }
}

/// Peer `j`'s allowed IPs: `Some(true)` a network, `Some(false)` a host, per family.
fn make_peer(j: usize, s: &PeerSpec) -> Peer {
    let mut allowed_ips = Vec::new();
    match s.ipv4 {
        Some(true) => allowed_ips.push(c(&format!("10.5.{j}.0/24"))),
        Some(false) => allowed_ips.push(c(&format!("10.5.{j}.7/32"))),
        None => {}
    }
    match s.ipv6 {
        Some(true) => allowed_ips.push(c(&format!("fd05:{j:x}::/64"))),
        Some(false) => allowed_ips.push(c(&format!("fd05:{j:x}::7/128"))),
        None => {}
    }
    Peer {
        name: format!("p{j}"),
        allowed_ips,
        public_key: test_key(2, j),
        endpoint: s.endpoint.then(|| format!("198.51.100.{}:51820", j + 1).parse().unwrap()),
        ..Peer::default()
    }
}

fn node_spec() -> impl Strategy<Value = NodeSpec> {
    let lan = prop_oneof![1 => Just(Lan::None), 2 => Just(Lan::Ipv4), 4 => Just(Lan::Dual)];
    (lan, any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(lan, leader, ipv6_endpoint, ipv6_pods_first)| NodeSpec {
            lan,
            leader,
            ipv6_endpoint,
            ipv6_pods_first,
        },
    )
}

fn peer_spec() -> impl Strategy<Value = PeerSpec> {
    let family = prop::option::of(any::<bool>());
    ((family.clone(), family), any::<bool>())
        .prop_filter("a peer has an allowed IP", |((a, b), _)| a.is_some() || b.is_some())
        .prop_map(|((ipv4, ipv6), endpoint)| PeerSpec { ipv4, ipv6, endpoint })
}

/// Meshes in `location` or `full` granularity.
fn mesh() -> impl Strategy<Value = Mesh> {
    mesh_in(&[Granularity::Location, Granularity::Full])
}

/// Meshes in one of `granularities`.
fn mesh_in(granularities: &[Granularity]) -> impl Strategy<Value = Mesh> {
    (
        prop::collection::vec(prop::collection::vec(node_spec(), 1..=4), 1..=4),
        prop::collection::vec(peer_spec(), 0..=3),
        prop::sample::select(granularities.to_vec()),
        prop_oneof![Just(Encapsulation::Never), Just(Encapsulation::Always)],
        any::<bool>(),
    )
        .prop_flat_map(|(locations, peers, granularity, strategy, forward)| {
            let mut nodes = Vec::new();
            for (l, specs) in locations.iter().enumerate() {
                for s in specs {
                    nodes.push(make_node(nodes.len(), l, s));
                }
            }
            let peers: Vec<Peer> = peers.iter().enumerate().map(|(j, s)| make_peer(j, s)).collect();
            (Just(nodes).prop_shuffle(), Just(peers), Just((granularity, strategy, forward)))
        })
        .prop_map(|(nodes, peers, (granularity, strategy, forward))| Mesh {
            nodes,
            peers,
            granularity,
            strategy,
            forward,
        })
}

fn ifaces() -> Interfaces {
    Interfaces { kilo: "kilo0".into(), private: "eth0".into(), tunnel: "tunl0".into() }
}

fn topology(
    nodes: &[Node],
    peers: &[Peer],
    g: Granularity,
    host: &str,
    subnet6: Option<Cidr>,
) -> Topology {
    Topology::new(TopologyInput {
        nodes,
        peers,
        granularity: g,
        hostname: host,
        port: fixtures::PORT,
        key: fixtures::private_key(),
        subnet: subnet(),
        subnet6,
        service_cidrs: &[],
        persistent_keepalive: Duration::ZERO,
    })
    .unwrap_or_else(|e| panic!("{host}: {e}"))
}

fn options(mesh: &Mesh, host: &str) -> PlanOptions {
    let mut o = PlanOptions::new(host, ifaces());
    o.local = true;
    o.cni = true;
    o.iptables_forward_rules = mesh.forward;
    o.encapsulation = mesh.strategy;
    o.compatibility = None;
    o
}

fn plan(mesh: &Mesh, t: &Topology, host: &str) -> Plan {
    Plan::new(t, Some(t.conf_for_device()), &options(mesh, host))
}

/// The dual-stack topology and plan of every node.
fn views(mesh: &Mesh) -> Vec<(&Node, Topology, Plan)> {
    mesh.nodes
        .iter()
        .map(|x| {
            let t = topology(&mesh.nodes, &mesh.peers, mesh.granularity, &x.name, Some(subnet6()));
            let p = plan(mesh, &t, &x.name);
            (x, t, p)
        })
        .collect()
}

fn segment_of<'t>(t: &'t Topology, name: &str) -> &'t kilo_core::Segment {
    t.segments.iter().find(|s| s.members.iter().any(|m| m.name == name)).unwrap()
}

fn member_ip(m: &Member, v4: bool) -> Option<IpAddr> {
    m.internal_ip.iter().chain(&m.internal_ip6).map(|c| c.addr()).find(|a| a.is_ipv4() == v4)
}

fn family_name(v4: bool) -> &'static str {
    if v4 { "IPv4" } else { "IPv6" }
}

fn offset(ip: IpAddr, base: IpAddr) -> u128 {
    match (ip, base) {
        (IpAddr::V4(a), IpAddr::V4(b)) => u128::from(u32::from(a) - u32::from(b)),
        (IpAddr::V6(a), IpAddr::V6(b)) => u128::from(a) - u128::from(b),
        _ => panic!("{ip} and {base} are of different families"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// a and b.
    #[test]
    fn segments_have_both_wireguard_ips_at_one_index_and_peers_never_overlap(mesh in mesh()) {
        let views = views(&mesh);
        let first = &views[0].1;
        for (x, t, p) in &views {
            prop_assert_eq!(t.segments.len(), first.segments.len());
            let mut seen4 = BTreeSet::new();
            let mut seen6 = BTreeSet::new();
            for (i, (s, s0)) in t.segments.iter().zip(&first.segments).enumerate() {
                let (Some(w4), Some(w6)) = (s.wireguard_ip, s.wireguard_ip6) else {
                    return Err(TestCaseError::fail(format!("{}: {} lacks a WireGuard IP", x.name, s.location)));
                };
                prop_assert!(w4.is_ipv4() && subnet().contains(w4), "{}", w4);
                prop_assert!(!w6.is_ipv4() && subnet6().contains(w6), "{}", w6);
                prop_assert_eq!(offset(w4, subnet().addr()), (i + 1) as u128);
                prop_assert_eq!(offset(w6, subnet6().addr()), (i + 1) as u128);
                prop_assert!(seen4.insert(w4) && seen6.insert(w6));
                // Every node sees the same segments with the same addresses.
                prop_assert_eq!(&s.location, &s0.location);
                prop_assert_eq!((s.wireguard_ip, s.wireguard_ip6), (s0.wireguard_ip, s0.wireguard_ip6));
                // The WireGuard hosts end the segment's allowed IPs, IPv4 then IPv6.
                let n = s.allowed_ips.len();
                prop_assert!(n >= 2);
                prop_assert_eq!(&s.allowed_ips[n - 2..], &[Cidr::host(w4), Cidr::host(w6)]);
            }
            // The local interface's addresses.
            let own = segment_of(t, &x.name);
            if t.leader {
                prop_assert_eq!(t.wireguard_cidr, Cidr::new(own.wireguard_ip.unwrap(), 16).unwrap());
                prop_assert_eq!(t.wireguard_cidr6, Cidr::new(own.wireguard_ip6.unwrap(), 64));
                prop_assert_eq!(p.interface.addresses(), vec![t.wireguard_cidr, t.wireguard_cidr6.unwrap()]);
            } else {
                prop_assert_eq!(t.wireguard_cidr, subnet());
                prop_assert_eq!(t.wireguard_cidr6, Some(subnet6()));
                prop_assert!(p.interface.addresses().is_empty());
            }
            // b: the device's peers never share an address within a family.
            let conf = t.conf_for_device();
            for (i, a) in conf.peers.iter().enumerate() {
                for b in &conf.peers[i + 1..] {
                    for x4 in &a.allowed_ips {
                        for y4 in b.allowed_ips.iter().filter(|y| y.is_ipv4() == x4.is_ipv4()) {
                            prop_assert!(!x4.overlaps(y4), "{} and {} overlap", x4, y4);
                        }
                    }
                }
            }
            // Every other segment is one peer holding both of its WireGuard hosts.
            for s in t.segments.iter().filter(|s| s.location != t.location) {
                let peer: Vec<_> = conf.peers.iter().filter(|c| c.public_key == s.key).collect();
                prop_assert_eq!(peer.len(), 1);
                for w in [s.wireguard_ip.unwrap(), s.wireguard_ip6.unwrap()] {
                    prop_assert!(peer[0].allowed_ips.contains(&Cidr::host(w)));
                }
            }
        }
    }

    /// c (in `cross` granularity too).
    #[test]
    fn routes_rules_and_firewall_rules_stay_within_their_family(
        mesh in mesh_in(&[Granularity::Location, Granularity::Full, Granularity::Cross]),
    ) {
        for (x, t, p) in views(&mesh) {
            for r in &p.routes {
                let v4 = r.dst.is_ipv4();
                prop_assert!(r.via.is_none_or(|a| a.is_ipv4() == v4), "{}: {}", x.name, r);
                prop_assert!(r.src.is_none_or(|a| a.is_ipv4() == v4), "{}: {}", x.name, r);
                if !v4 {
                    prop_assert_ne!(&r.dev, "tunl0", "{}: {}", x.name, r);
                }
                if r.dev == "kilo0" {
                    prop_assert_eq!(r.src, t.private_ip_of(v4), "{}: {}", x.name, r);
                }
            }
            for r in &p.rules {
                let fams: BTreeSet<bool> = r.from.iter().chain(&r.to).map(Cidr::is_ipv4).collect();
                prop_assert!(fams.len() <= 1, "{}: {}", x.name, r);
            }
            let entries: Vec<&Entry> = p.firewall.append.iter().chain(&p.firewall.prepend).collect();
            for e in &entries {
                if let Entry::Rule { spec: Spec::Typed(m), .. } = e
                    && let Some(a) = m.address
                {
                    prop_assert_eq!(e.family(), Family::of(a.cidr().addr()), "{}: {:?}", x.name, e);
                }
            }
            let returns = |w: IpAddr| {
                entries.iter().any(|e| matches!(e, Entry::Rule { spec: Spec::Typed(m), chain, .. }
                    if chain == "KILO-NAT" && m.target == "RETURN"
                        && m.address == Some(Address::Destination(Cidr::host(w)))
                        && m.comment.contains("WireGuared IPs")))
            };
            for s in &t.segments {
                for w in [s.wireguard_ip.unwrap(), s.wireguard_ip6.unwrap()] {
                    prop_assert!(returns(w), "{}: no NAT RETURN for {}", x.name, w);
                }
            }
            // Both pod subnets jump into KILO-NAT, each in its own family.
            for s in &x.subnets {
                let jump = entries.iter().any(|e| matches!(e, Entry::Rule { spec: Spec::Typed(m), chain, .. }
                    if chain == "POSTROUTING" && m.address == Some(Address::Source(*s))));
                prop_assert!(jump, "{}: no NAT jump for {}", x.name, s);
            }
        }
    }

    /// d.
    #[test]
    fn every_pod_subnet_of_both_families_is_reached_through_exactly_one_next_hop(mesh in mesh()) {
        let always = mesh.strategy == Encapsulation::Always;
        // Nodes whose LAN lacks the IPv6 next hop some route needs.
        let mut gaps: BTreeSet<String> = BTreeSet::new();
        for (x, t, p) in views(&mesh) {
            let own = segment_of(&t, &x.name);
            let leader = &own.members[own.leader];
            let conf = t.conf_for_device();
            for y in mesh.nodes.iter().filter(|y| y.name != x.name) {
                let seg = segment_of(&t, &y.name);
                let ym = seg.members.iter().find(|m| m.name == y.name).unwrap();
                for s in &y.subnets {
                    let v4 = s.is_ipv4();
                    let covering: Vec<&Route> =
                        p.routes.iter().filter(|r| r.table == MAIN_TABLE && r.dst.covers(s)).collect();
                    let ctx = format!("from {} to {} ({s}): {covering:?}", x.name, y.name);
                    // Through the LAN: the tunnel for IPv4 under --encapsulate=always, with the
                    // local IPv4 private IP as source; else the private interface, no source.
                    let lan_route = |gw: IpAddr| Route {
                        dst: *s,
                        via: Some(gw),
                        dev: if v4 && always { "tunl0" } else { "eth0" }.into(),
                        src: if v4 && always { t.private_ip_of(true) } else { None },
                        table: MAIN_TABLE,
                        onlink: true,
                    };
                    if seg.location == t.location {
                        // Same location: straight to y over the LAN, if y has an address of
                        // the family there.
                        let Some(gw) = member_ip(ym, v4) else {
                            prop_assert!(covering.is_empty(), "{}", ctx);
                            gaps.insert(y.name.clone());
                            continue;
                        };
                        prop_assert_eq!(covering.len(), 1, "{}", ctx);
                        prop_assert_eq!(covering[0], &lan_route(gw), "{}", ctx);
                    } else if t.leader {
                        // Another segment: through its WireGuard IP of the family.
                        prop_assert_eq!(covering.len(), 1, "{}", ctx);
                        let want = Route {
                            dst: *s,
                            via: if v4 { seg.wireguard_ip } else { seg.wireguard_ip6 },
                            dev: "kilo0".into(),
                            src: t.private_ip_of(v4),
                            table: MAIN_TABLE,
                            onlink: true,
                        };
                        prop_assert_eq!(covering[0], &want, "{}", ctx);
                        let peers: Vec<_> = conf
                            .peers
                            .iter()
                            .filter(|c| c.allowed_ips.iter().any(|a| a.covers(s)))
                            .collect();
                        prop_assert_eq!(peers.len(), 1, "{}", ctx);
                        prop_assert_eq!(peers[0].public_key, seg.key);
                    } else if let Some(gw) = member_ip(leader, v4) {
                        // A non-leader: through the leader's private IP of the family.
                        prop_assert_eq!(covering.len(), 1, "{}", ctx);
                        prop_assert_eq!(covering[0], &lan_route(gw), "{}", ctx);
                    } else {
                        // The documented gap: the leader has no private IP of the family.
                        prop_assert!(covering.is_empty(), "{}", ctx);
                        let warning = format!(
                            " {} routes through the location's leader left out: the leader has no {} private IP",
                            family_name(v4), family_name(v4)
                        );
                        prop_assert!(
                            p.warnings.iter().filter(|w| w.contains(&warning)).count() == 1,
                            "{}: {:?}", ctx, p.warnings
                        );
                        gaps.insert(leader.name.clone());
                    }
                }
            }
            // The left-out warning only where a gap is.
            if t.leader || member_ip(leader, false).is_some() {
                prop_assert!(!p.warnings.iter().any(|w| w.contains("left out")), "{}: {:?}", x.name, p.warnings);
            }
        }
        // validate names exactly the nodes whose LAN lacks IPv6, as errors (every node has
        // IPv6 pods).
        let found = validate(&ValidationInput {
            nodes: &mesh.nodes,
            peers: &mesh.peers,
            invalid: &[],
            ignored: &[],
            granularity: mesh.granularity,
            subnet: subnet(),
            subnet6: Some(subnet6()),
            service_cidrs: &[],
        });
        let lan: Vec<_> = found.iter().filter(|f| f.message.contains("shares a LAN without")).collect();
        prop_assert!(lan.iter().all(|f| f.severity == Severity::Error && f.message.contains("without IPv6")), "{:#?}", lan);
        let named: BTreeSet<String> = lan.iter().flat_map(|f| f.objects.iter().map(|o| o.name.clone())).collect();
        prop_assert_eq!(named, gaps);
    }

    /// e (in `cross` granularity too).
    #[test]
    fn without_ipv6_the_plan_is_the_ipv4_part_of_the_dual_stack_plan(
        mesh in mesh_in(&[Granularity::Location, Granularity::Full, Granularity::Cross]),
    ) {
        let nodes4: Vec<Node> = mesh
            .nodes
            .iter()
            .map(|n| Node {
                subnets: n.subnets.iter().copied().filter(Cidr::is_ipv4).collect(),
                internal_ip6: None,
                ..n.clone()
            })
            .collect();
        // A peer without IPv4 allowed IPs is not ready in an IPv4 mesh.
        let ipv6_only: BTreeSet<Key> = mesh
            .peers
            .iter()
            .filter(|p| !p.allowed_ips.iter().any(Cidr::is_ipv4))
            .map(|p| p.public_key)
            .collect();
        let peers4: Vec<Peer> = mesh
            .peers
            .iter()
            .filter(|p| !ipv6_only.contains(&p.public_key))
            .map(|p| Peer { allowed_ips: p.allowed_ips.iter().copied().filter(Cidr::is_ipv4).collect(), ..p.clone() })
            .collect();
        let ipv4_conf = |c: &Config| Config {
            interface: c.interface.clone(),
            peers: c
                .peers
                .iter()
                .filter(|p| !ipv6_only.contains(&p.public_key))
                .map(|p| kilo_core::wireguard::PeerConfig {
                    allowed_ips: p.allowed_ips.iter().copied().filter(Cidr::is_ipv4).collect(),
                    ..p.clone()
                })
                .collect(),
        };
        let ipv4_rule = |r: &&Rule| r.from.iter().chain(&r.to).all(Cidr::is_ipv4);
        let addressed = |e: &Entry| matches!(e, Entry::Rule { spec: Spec::Typed(m), .. } if m.address.is_some());
        let ipv6_unaddressed = |es: &[Entry]| -> Vec<Entry> {
            es.iter().filter(|e| e.family() == Family::Ipv6 && !addressed(e)).cloned().collect()
        };
        let ipv4_entries = |es: &[Entry]| -> Vec<Entry> {
            es.iter().filter(|e| e.family() == Family::Ipv4).cloned().collect()
        };
        for (x, t, p) in views(&mesh) {
            let t4 = topology(&nodes4, &peers4, mesh.granularity, &x.name, None);
            // A second range of the first range's family is no second range.
            let same = topology(&nodes4, &peers4, mesh.granularity, &x.name, Some(c("10.9.0.0/16")));
            prop_assert_eq!(&same, &t4);
            let p4 = plan(&mesh, &t4, &x.name);
            // Topology.
            prop_assert_eq!((&t4.location, t4.leader, t4.wireguard_cidr), (&t.location, t.leader, t.wireguard_cidr));
            prop_assert_eq!(t4.wireguard_cidr6, None);
            prop_assert_eq!(t4.private_ip6, None);
            prop_assert_eq!(t4.segments.len(), t.segments.len());
            for (s4, s) in t4.segments.iter().zip(&t.segments) {
                prop_assert_eq!(
                    (&s4.location, s4.leader, s4.key, &s4.endpoint, s4.wireguard_ip),
                    (&s.location, s.leader, s.key, &s.endpoint, s.wireguard_ip)
                );
                prop_assert_eq!(s4.wireguard_ip6, None);
                let ipv4: Vec<Cidr> = s.allowed_ips.iter().copied().filter(Cidr::is_ipv4).collect();
                prop_assert_eq!(&s4.allowed_ips, &ipv4);
            }
            // Plan.
            prop_assert_eq!((&p4.node, &p4.segment, p4.leader), (&p.node, &p.segment, p.leader));
            prop_assert_eq!(p4.interface.address, p.interface.address);
            prop_assert_eq!(p4.interface.address6, None);
            prop_assert!(!p4.to_json_pretty().contains("address6"));
            prop_assert_eq!(p4.interface.up, p.interface.up);
            prop_assert_eq!(&p4.interface.wireguard, &ipv4_conf(&p.interface.wireguard));
            prop_assert_eq!(&p4.wireguard, &p.wireguard.as_ref().map(ipv4_conf));
            let routes: Vec<Route> = p.routes.iter().filter(|r| r.dst.is_ipv4()).cloned().collect();
            prop_assert_eq!(&p4.routes, &routes);
            let rules: Vec<Rule> = p.rules.iter().filter(ipv4_rule).cloned().collect();
            prop_assert_eq!(&p4.rules, &rules);
            prop_assert_eq!(rules.len(), p.rules.len(), "IPv6 policy rules: {:?}", p.rules);
            prop_assert_eq!(ipv4_entries(&p4.firewall.append), ipv4_entries(&p.firewall.append));
            prop_assert_eq!(ipv4_entries(&p4.firewall.prepend), ipv4_entries(&p.firewall.prepend));
            // IPv6: only the chains, the IPIP jumps and MASQUERADE, as in the dual-stack plan.
            prop_assert!(!p4.firewall.append.iter().chain(&p4.firewall.prepend).any(|e| e.family() == Family::Ipv6 && addressed(e)));
            prop_assert_eq!(ipv6_unaddressed(&p4.firewall.append), ipv6_unaddressed(&p.firewall.append));
            prop_assert_eq!(ipv6_unaddressed(&p4.firewall.prepend), ipv6_unaddressed(&p.firewall.prepend));
            prop_assert_eq!(p4.encapsulation, p.encapsulation);
            prop_assert_eq!(p4.tunnel_address, p.tunnel_address);
            let warnings: Vec<&String> = p.warnings.iter().filter(|w| !w.contains("IPv6 routes through the location's leader left out")).collect();
            prop_assert_eq!(p4.warnings.iter().collect::<Vec<_>>(), warnings);
        }
    }
}
