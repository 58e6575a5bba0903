//! The agent's state machine in a simulated cluster: several agents share an in-memory backend
//! (what one publishes, all receive), time is a number we advance by hand.

use std::collections::BTreeMap;
use std::time::Duration;

use kilo_core::agent::{
    Action, Agent, AgentConfig, HostFacts, Input, ObservedPeer, ReadinessPolicy, Timers,
};
use kilo_core::plan::{Plan, PlanOptions};
use kilo_core::routes::Interfaces;
use kilo_core::{
    Cidr, Encapsulation, Granularity, Invalid, Node, ObjectKind, Peer, PrivateKey, Snapshot,
};

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn config(hostname: &str, seed: u8, readiness: ReadinessPolicy, publishes: bool) -> AgentConfig {
    let interfaces =
        Interfaces { kilo: "kilo0".into(), private: "eth0".into(), tunnel: "tunl0".into() };
    let mut plan = PlanOptions::new(String::new(), interfaces);
    plan.local = true;
    plan.cni = false;
    plan.iptables_forward_rules = false;
    plan.encapsulation = Encapsulation::Never;
    plan.compatibility = None;
    let mut config = AgentConfig::new(plan, PrivateKey::from_random_bytes([seed; 32]));
    config.hostname = hostname.into();
    config.granularity = Granularity::Location;
    config.port = 51820;
    config.subnet = cidr("10.4.0.0/16");
    config.service_cidrs = vec![];
    config.readiness = readiness;
    config.publishes = publishes;
    config.prioritise_private_addresses = false;
    config.timers = Timers::default();
    config.connect = None;
    config
}

/// A cluster as Kubernetes would hold it: nodes by name, with what each agent published.
struct Sim {
    now: i64,
    cluster: BTreeMap<String, Node>,
    agents: Vec<Agent>,
    plans: BTreeMap<String, Plan>,
    warnings: Vec<String>,
    /// The API is unreachable: publications are lost and nothing reaches the agents.
    source_down: bool,
}

impl Sim {
    fn new(nodes: &[(&str, &str, &str, &str)]) -> Sim {
        // (name, location, pod CIDR, private IP)
        let mut sim = Sim {
            now: 1_000_000,
            cluster: BTreeMap::new(),
            agents: vec![],
            plans: BTreeMap::new(),
            warnings: vec![],
            source_down: false,
        };
        for (i, (name, location, pod, _)) in nodes.iter().enumerate() {
            sim.cluster.insert(
                name.to_string(),
                Node {
                    name: name.to_string(),
                    location: location.to_string(),
                    subnets: vec![cidr(pod)],
                    ..Node::default()
                },
            );
            sim.agents.push(Agent::new(config(name, i as u8 + 1, ReadinessPolicy::Live, true)));
        }
        for (i, (_, _, _, private)) in nodes.iter().enumerate() {
            // A reset lists the cluster as it is now, with what earlier agents published.
            let snapshot =
                Snapshot { nodes: sim.cluster.values().cloned().collect(), ..Snapshot::default() };
            let public = format!("203.0.113.{}", i + 1).parse().unwrap();
            let facts = HostFacts {
                private_ip: Some(cidr(private)),
                private_ip6: None,
                public_ip: Some(public),
                cni_compatibility_ip: None,
            };
            sim.deliver(i, Input::HostFacts(facts));
            sim.deliver(i, Input::Reset(snapshot.clone()));
        }
        sim
    }

    /// Hands `input` to agent `i` and carries out what it asks, delivering publications to all.
    fn deliver(&mut self, i: usize, input: Input) {
        let mut queue = vec![(i, input)];
        while let Some((i, input)) = queue.pop() {
            for action in self.agents[i].handle(self.now, input) {
                match action {
                    Action::Publish(_) if self.source_down => {}
                    Action::Publish(node) => {
                        if self.cluster.get(&node.name) != Some(&node) {
                            self.cluster.insert(node.name.clone(), (*node).clone());
                            for j in 0..self.agents.len() {
                                queue.push((j, Input::NodeChanged((*node).clone())));
                            }
                        }
                    }
                    Action::Apply(plan) => {
                        self.plans.insert(plan.node.clone(), *plan);
                    }
                    Action::Blocked(why) | Action::Warn(why) => self.warnings.push(why),
                    // Requests to a host; this simulation has none (kilo-agent's driver runs
                    // them: see kilo-agent/tests/sim.rs).
                    Action::ObserveDevice
                    | Action::DetectHost
                    | Action::UpdateCni(_)
                    | Action::ReconcileFirewall
                    | Action::Probe(_)
                    | Action::LeaderChanged(_) => {}
                }
            }
        }
    }

    fn broadcast(&mut self, input: Input) {
        for i in 0..self.agents.len() {
            self.deliver(i, input.clone());
        }
    }
}

fn three_nodes() -> Sim {
    Sim::new(&[
        ("a", "x", "10.2.1.0/24", "192.168.1.1/24"),
        ("b", "x", "10.2.2.0/24", "192.168.1.2/24"),
        ("c", "y", "10.2.3.0/24", "192.168.2.1/24"),
    ])
}

#[test]
fn agents_publish_their_nodes_and_converge_on_one_topology() {
    let sim = three_nodes();
    assert_eq!(sim.plans.len(), 3, "every agent applied a plan; warnings: {:?}", sim.warnings);
    let a = &sim.cluster["a"];
    assert_eq!(a.endpoint.as_ref().unwrap().to_string(), "203.0.113.1:51820");
    assert_eq!(a.internal_ip, Some(cidr("192.168.1.1/24")));
    assert!(!a.key.is_zero());
    // a leads location x (first name, public endpoint), b does not, c leads y.
    let leaders: Vec<_> =
        sim.plans.values().map(|p| (p.node.as_str(), p.leader, p.segment.as_str())).collect();
    assert_eq!(
        leaders,
        [("a", true, "location:x"), ("b", false, "location:x"), ("c", true, "location:y")]
    );
    assert_eq!(sim.plans["a"].interface.address, Some(cidr("10.4.0.1/16")));
    assert_eq!(sim.plans["c"].interface.address, Some(cidr("10.4.0.2/16")));
    // Leaders publish their WireGuard IP.
    assert_eq!(sim.cluster["a"].wireguard_ip, Some(cidr("10.4.0.1/16")));
    assert_eq!(sim.cluster["b"].wireguard_ip, None);
    // a's WireGuard peer is c's segment, with c's pod subnet.
    let wg = sim.plans["a"].wireguard.as_ref().unwrap();
    assert_eq!(wg.peers.len(), 1);
    assert!(wg.peers[0].allowed_ips.contains(&cidr("10.2.3.0/24")));
    // The non-leader b routes c's pod subnet through its leader a.
    assert!(
        sim.plans["b"]
            .routes
            .iter()
            .any(|r| r.dst == cidr("10.2.3.0/24") && r.via == Some("192.168.1.1".parse().unwrap()))
    );
}

#[test]
fn a_quiet_resync_changes_nothing_and_publishes_nothing() {
    let mut sim = three_nodes();
    let before = (sim.cluster.clone(), sim.plans.clone());
    sim.now += 5;
    sim.broadcast(Input::Resync);
    assert_eq!((sim.cluster.clone(), sim.plans.clone()), before);
}

#[test]
fn a_node_that_stops_checking_in_drops_out_after_sixty_seconds() {
    let mut sim = three_nodes();
    // Only a and b check in for 90 s; c is silent.
    for _ in 0..3 {
        sim.now += 30;
        sim.deliver(0, Input::CheckIn);
        sim.deliver(1, Input::CheckIn);
    }
    sim.deliver(0, Input::Resync);
    let wg = sim.plans["a"].wireguard.as_ref().unwrap();
    assert!(wg.peers.is_empty(), "c is no longer ready");
    assert_eq!(sim.agents[0].status().nodes, 2);
}

#[test]
fn a_garbage_peer_is_left_out_and_everything_else_stays_applied() {
    let mut sim = three_nodes();
    let peer = Peer {
        name: "laptop".into(),
        allowed_ips: vec![cidr("10.5.0.1/32")],
        public_key: kilo_core::Key::from_bytes([9; 32]),
        ..Peer::default()
    };
    sim.broadcast(Input::PeerChanged(peer));
    let with_peer = sim.plans["a"].clone();
    assert_eq!(with_peer.wireguard.as_ref().unwrap().peers.len(), 2);
    sim.broadcast(Input::Invalid(Invalid {
        kind: ObjectKind::Peer,
        name: "evil".into(),
        message: "publicKey: not base64".into(),
    }));
    assert_eq!(sim.plans["a"], with_peer, "the plan is unchanged");
    assert_eq!(sim.agents[0].status().invalid, 1);
    assert!(sim.warnings.iter().any(|w| w.contains("evil") && w.contains("not base64")));
}

#[test]
fn handshakes_from_natted_nodes_are_published_as_discovered_endpoints() {
    let mut sim = three_nodes();
    // c is behind NAT: it sets a keepalive; a sees it arrive from another address.
    let mut c = sim.cluster["c"].clone();
    c.persistent_keepalive = Duration::from_secs(25);
    sim.cluster.insert("c".into(), c.clone());
    sim.broadcast(Input::NodeChanged(c.clone()));
    let seen = "198.51.100.7:40000".parse().unwrap();
    sim.deliver(
        0,
        Input::Device(vec![ObservedPeer {
            public_key: c.key,
            endpoint: Some(seen),
            last_handshake: Some(sim.now),
        }]),
    );
    let published = sim.cluster["a"].discovered_endpoints.clone().unwrap();
    assert_eq!(published.get(&c.key), Some(&seen));
    // a now dials c at the discovered address.
    let peer = &sim.plans["a"].wireguard.as_ref().unwrap().peers[0];
    assert_eq!(peer.endpoint.as_ref().unwrap().to_string(), "198.51.100.7:40000");
}

#[test]
fn a_static_mesh_agent_uses_its_entry_as_written_and_publishes_nothing() {
    let key = PrivateKey::from_random_bytes([1; 32]);
    let mut cfg = config("a", 1, ReadinessPolicy::StaticMesh, false);
    cfg.private_key = key.clone();
    let mut agent = Agent::new(cfg);
    let nodes = vec![
        Node {
            name: "a".into(),
            key: key.public_key(),
            endpoint: Some("203.0.113.1:51820".parse().unwrap()),
            subnets: vec![cidr("10.2.1.0/24")],
            ..Node::default()
        },
        // b is behind NAT: no endpoint, a keepalive.
        Node {
            name: "b".into(),
            key: kilo_core::Key::from_bytes([2; 32]),
            persistent_keepalive: Duration::from_secs(25),
            subnets: vec![cidr("10.2.2.0/24")],
            location: "b".into(),
            ..Node::default()
        },
    ];
    let actions = agent.handle(0, Input::Reset(Snapshot { nodes, ..Snapshot::default() }));
    assert!(!actions.iter().any(|a| matches!(a, Action::Publish(_))));
    let plan = actions
        .iter()
        .find_map(|a| match a {
            Action::Apply(p) => Some(p),
            _ => None,
        })
        .unwrap();
    let peer = &plan.wireguard.as_ref().unwrap().peers[0];
    assert_eq!(peer.endpoint, None, "b dials in");
    assert!(peer.allowed_ips.contains(&cidr("10.2.2.0/24")));
}

#[test]
fn the_agent_waits_until_its_own_node_exists() {
    let mut agent = Agent::new(config("ghost", 1, ReadinessPolicy::Live, true));
    let actions = agent.handle(0, Input::Reset(Snapshot::default()));
    assert!(matches!(&actions[..], [Action::Blocked(why)] if why.contains("\"ghost\"")));
}

#[test]
fn a_changed_address_is_republished_but_a_forced_endpoint_never_is() {
    let mut sim = three_nodes();
    // a's public address changes (a new lease): its published endpoint follows (contract C9).
    let facts = HostFacts {
        private_ip: Some(cidr("192.168.1.1/24")),
        private_ip6: None,
        public_ip: Some("203.0.113.99".parse().unwrap()),
        cni_compatibility_ip: None,
    };
    sim.deliver(0, Input::HostFacts(facts.clone()));
    assert_eq!(sim.cluster["a"].endpoint.as_ref().unwrap().to_string(), "203.0.113.99:51820");
    // c has a force-endpoint: detection never replaces it.
    let mut c = sim.cluster["c"].clone();
    c.endpoint = Some("198.51.100.3:51820".parse().unwrap());
    c.endpoint_forced = true;
    sim.cluster.insert("c".into(), c.clone());
    sim.broadcast(Input::NodeChanged(c));
    let facts = HostFacts { public_ip: Some("203.0.113.77".parse().unwrap()), ..facts };
    sim.deliver(2, Input::HostFacts(facts));
    assert_eq!(sim.cluster["c"].endpoint.as_ref().unwrap().to_string(), "198.51.100.3:51820");
}

/// Every route a plan holds has a source and a next hop of its destination's family.
fn assert_families_agree(plan: &Plan) {
    for r in &plan.routes {
        let v4 = r.dst.is_ipv4();
        assert!(r.src.is_none_or(|s| s.is_ipv4() == v4), "{}: {r}", plan.node);
        assert!(r.via.is_none_or(|v| v.is_ipv4() == v4), "{}: {r}", plan.node);
    }
}

#[test]
fn an_api_outage_keeps_every_node_for_as_long_as_it_lasts() {
    let mut sim = three_nodes();
    let before = sim.plans.clone();
    // The API goes away for 10 minutes: nothing is heard, publications are lost; the agents'
    // own timers go on.
    sim.source_down = true;
    for _ in 0..20 {
        sim.now += 30;
        for i in 0..3 {
            sim.deliver(i, Input::CheckIn);
            sim.deliver(i, Input::Resync);
        }
    }
    assert_eq!(sim.plans, before, "no node turned stale for lack of news");
    let quiet = "nothing heard from the mesh source for";
    assert_eq!(
        sim.warnings.iter().filter(|w| w.starts_with(quiet)).count(),
        3,
        "{:?}",
        sim.warnings
    );
    assert!(sim.agents.iter().all(|a| a.status().source_quiet));
    // The API comes back, and c really had stopped: a re-list shows every node as it is.
    sim.source_down = false;
    let mut nodes: Vec<Node> = sim.cluster.values().cloned().collect();
    for n in nodes.iter_mut().filter(|n| n.name != "c") {
        n.last_seen = sim.now;
    }
    sim.broadcast(Input::Reset(Snapshot { nodes, ..Snapshot::default() }));
    assert!(sim.agents.iter().all(|a| !a.status().source_quiet));
    // Every agent gets a check-in period to check in again before it is judged: c stays for now.
    assert_eq!(sim.plans, before);
    for _ in 0..2 {
        sim.now += 30;
        sim.deliver(0, Input::CheckIn);
        sim.deliver(1, Input::CheckIn);
    }
    sim.deliver(0, Input::Resync);
    assert!(sim.plans["a"].wireguard.as_ref().unwrap().peers.is_empty(), "c is stale now");
    assert_eq!(sim.agents[0].status().nodes, 2);
}

#[test]
fn a_live_source_still_drops_a_node_that_stopped_checking_in() {
    let mut sim = three_nodes();
    // Events keep coming (a and b check in), c is gone: judged against now, as upstream.
    for _ in 0..3 {
        sim.now += 30;
        sim.deliver(0, Input::CheckIn);
        sim.deliver(1, Input::CheckIn);
    }
    assert!(sim.agents.iter().all(|a| !a.status().source_quiet));
    assert_eq!(sim.agents[0].status().nodes, 2);
    assert!(!sim.warnings.iter().any(|w| w.starts_with("nothing heard")));
}

#[test]
fn a_cloned_host_publishing_the_same_node_is_reported_once() {
    let mut sim = three_nodes();
    // A clone of a (same name, same key) on another machine publishes its own endpoint.
    let mut clone = sim.cluster["a"].clone();
    clone.endpoint = Some("203.0.113.50:51820".parse().unwrap());
    clone.last_seen = sim.now + 5;
    sim.now += 5;
    for _ in 0..3 {
        sim.deliver(0, Input::NodeChanged(clone.clone()));
    }
    let reports: Vec<_> = sim.warnings.iter().filter(|w| w.contains("clone")).collect();
    assert_eq!(reports.len(), 1, "{:?}", sim.warnings);
    assert!(reports[0].contains("203.0.113.50:51820") && reports[0].contains("203.0.113.1:51820"));
    // Its own echo is no conflict.
    let warnings = sim.warnings.len();
    sim.now += 30;
    sim.deliver(1, Input::CheckIn);
    assert_eq!(sim.warnings.len(), warnings);
}

#[test]
fn peer_routes_that_would_take_over_a_node_are_refused_in_every_family() {
    let mut sim = three_nodes();
    let peer = Peer {
        name: "evil".into(),
        allowed_ips: vec![
            cidr("::/0"),
            cidr("192.168.2.1/32"),
            cidr("10.5.0.1/32"),
            cidr("fd05::/64"),
        ],
        public_key: kilo_core::Key::from_bytes([9; 32]),
        ..Peer::default()
    };
    sim.broadcast(Input::PeerChanged(peer));
    let a = &sim.plans["a"];
    let wg = a.wireguard.as_ref().unwrap();
    let evil =
        wg.peers.iter().find(|p| p.public_key == kilo_core::Key::from_bytes([9; 32])).unwrap();
    assert_eq!(evil.allowed_ips, vec![cidr("10.5.0.1/32"), cidr("fd05::/64")]);
    let dsts: Vec<String> =
        a.routes.iter().filter(|r| r.via.is_none()).map(|r| r.to_string()).collect();
    // The IPv6 route on the leader has no IPv4 source.
    assert_eq!(dsts, ["10.5.0.1/32 dev kilo0 src 192.168.1.1", "fd05::/64 dev kilo0"]);
    // The non-leader b cannot reach IPv6 through its IPv4 leader: that route is left out.
    assert!(!sim.plans["b"].routes.iter().any(|r| !r.dst.is_ipv4()));
    assert!(sim.plans["b"].routes.iter().any(|r| r.dst == cidr("10.5.0.1/32")));
    for plan in sim.plans.values() {
        assert_families_agree(plan);
    }
    // Each agent warns once about each refused allowed IP, however often it reconciles.
    sim.broadcast(Input::Resync);
    let refused = |s: &str| sim.warnings.iter().filter(|w| w.contains(s)).count();
    assert_eq!(refused("allowed IP ::/0 is a default route"), 3);
    assert_eq!(
        refused("allowed IP 192.168.2.1/32 covers the internal IP 192.168.2.1 of node \"c\""),
        3
    );
    assert_eq!(
        refused("1 IPv6 routes through the location's leader left out: the leader has no IPv6"),
        1,
        "{:?}",
        sim.warnings
    );
}

#[test]
fn the_timers_fire_each_at_its_period_and_a_resync_completes_once_the_host_is_detected() {
    let mut agent = Agent::new(config("a", 1, ReadinessPolicy::Live, true));
    assert_eq!(agent.poll_timeout(), None, "no timer before the first input");
    let start = 1_000_000;
    agent.handle(start, Input::Reset(Snapshot::default()));
    // Device poll every 5 s, check-in and resync every 30 s.
    assert_eq!(agent.poll_timeout(), Some(start + 5));
    assert!(agent.handle_timeout(start + 4).is_empty(), "nothing is due yet");
    // The device poll finds nothing to discover (the agent leads nothing): it reads nothing.
    assert!(agent.handle_timeout(start + 5).is_empty());
    assert_eq!(agent.poll_timeout(), Some(start + 10));
    for t in (10..30).step_by(5) {
        assert!(agent.handle_timeout(start + t).is_empty());
    }
    // At 30 s: the check-in (the local node is not in the mesh: nothing to publish) and the
    // resync, which first asks for the host's addresses.
    assert_eq!(agent.handle_timeout(start + 30), [Action::DetectHost]);
    let actions = agent.handle(start + 30, Input::HostDetected(None));
    assert_eq!(
        actions,
        [
            Action::Blocked("the local node \"a\" is not in the mesh yet".into()),
            Action::ReconcileFirewall
        ]
    );
    // A detection nobody asked for does not reconcile the firewall.
    assert!(agent.handle(start + 31, Input::HostDetected(None)).is_empty());
}

#[test]
fn a_clock_set_back_never_stops_the_timers() {
    let mut agent = Agent::new(config("a", 1, ReadinessPolicy::Live, true));
    let start = 1_000_000;
    agent.handle(start, Input::Reset(Snapshot::default()));
    // The clock goes back an hour: the deadlines come back to one period from then.
    assert!(agent.handle_timeout(start - 3600).is_empty());
    assert_eq!(agent.poll_timeout(), Some(start - 3600 + 5));
    assert_eq!(agent.handle_timeout(start - 3600 + 30), [Action::DetectHost]);
}

#[test]
fn the_device_is_polled_only_while_a_leader_has_something_to_discover() {
    let mut sim = three_nodes();
    let a = 0;
    let due = |sim: &mut Sim, t: i64| sim.agents[a].handle_timeout(sim.now + t);
    // a leads x, but no node has a keepalive and there is no peer: nothing to learn.
    assert!(!due(&mut sim, 5).contains(&Action::ObserveDevice));
    // A node behind NAT (keepalive) makes a poll worth it.
    let mut c = sim.cluster["c"].clone();
    c.persistent_keepalive = Duration::from_secs(25);
    sim.broadcast(Input::NodeChanged(c));
    assert!(due(&mut sim, 10).contains(&Action::ObserveDevice));
    // b does not lead: its device has no peers to learn from.
    assert!(!sim.agents[1].handle_timeout(sim.now + 10).contains(&Action::ObserveDevice));
}

/// Upstream's agent, given a peer with IPv6 allowed IPs in an IPv4 cluster, installed a different
/// subset of routes on each reconcile. Here every resync plans exactly the same routes, rules and
/// firewall rules on every node, and logs the left-out IPv6 routes once.
#[test]
fn ipv6_peer_allowed_ips_in_an_ipv4_cluster_plan_the_same_routes_at_every_resync() {
    let mut sim = three_nodes();
    let peer = Peer {
        name: "v6".into(),
        allowed_ips: vec![cidr("10.5.0.2/32"), cidr("fd05::2/128"), cidr("fd06::/64")],
        public_key: kilo_core::Key::from_bytes([8; 32]),
        ..Peer::default()
    };
    sim.broadcast(Input::PeerChanged(peer));
    let first = sim.plans.clone();
    assert!(first["a"].routes.iter().any(|r| r.dst == cidr("fd06::/64") && r.dev == "kilo0"));
    for _ in 0..5 {
        sim.now += 30;
        sim.broadcast(Input::Resync);
        for (name, plan) in &sim.plans {
            let before = &first[name];
            assert_eq!(
                (&plan.routes, &plan.rules, &plan.firewall),
                (&before.routes, &before.rules, &before.firewall),
                "{name}"
            );
        }
    }
    let left_out = sim.warnings.iter().filter(|w| w.contains("2 IPv6 routes through")).count();
    assert_eq!(left_out, 1, "{:?}", sim.warnings);
}
