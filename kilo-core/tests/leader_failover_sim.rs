//! Leader failover on data-path health, simulated: several agents share an in-memory cluster
//! (what one publishes, all receive), time is a number advanced by hand, and the network is a
//! model that answers the agents' probes. Every scenario ends by checking that every agent sees
//! the same leaders.

use std::collections::{BTreeMap, BTreeSet};

use kilo_core::agent::{Action, Agent, AgentConfig, HostFacts, Input, ReadinessPolicy};
use kilo_core::health::{ElectionRule, HOLD_SECS, LeaderHealth};
use kilo_core::plan::{Plan, PlanOptions};
use kilo_core::routes::Interfaces;
use kilo_core::{Cidr, Encapsulation, Granularity, Node, PrivateKey, Snapshot};

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn config(hostname: &str, seed: u8, leader_health: bool) -> AgentConfig {
    let interfaces =
        Interfaces { kilo: "kilo0".into(), private: "eth0".into(), tunnel: "tunl0".into() };
    let mut plan = PlanOptions::new(String::new(), interfaces);
    plan.cni = false;
    plan.encapsulation = Encapsulation::Never;
    plan.compatibility = None;
    let mut config = AgentConfig::new(plan, PrivateKey::from_random_bytes([seed; 32]));
    config.hostname = hostname.into();
    config.granularity = Granularity::Location;
    config.subnet = cidr("10.4.0.0/16");
    config.readiness = ReadinessPolicy::Live;
    config.leader_health = leader_health;
    config
}

/// The network as the probes see it.
#[derive(Debug, Default)]
struct Network {
    /// Leaders that do not forward (their agents keep running and checking in).
    not_forwarding: BTreeSet<String>,
    /// Nodes whose WireGuard is dead: nothing reaches them or leaves them through the tunnel.
    dead_tunnel: BTreeSet<String>,
    /// (node, leader) pairs that cannot reach each other on their LAN.
    lan_cut: BTreeSet<(String, String)>,
    /// Probe rounds that fail anyway, by (node, round number) — flapping observations.
    lost: BTreeSet<(String, u64)>,
    /// Nodes that cannot probe at all (no permission to open the sockets): no answer comes back.
    cannot_probe: BTreeSet<String>,
}

/// A cluster as Kubernetes would hold it, with one agent per node.
struct Sim {
    now: i64,
    cluster: BTreeMap<String, Node>,
    names: Vec<String>,
    agents: Vec<Agent>,
    plans: BTreeMap<String, Plan>,
    network: Network,
    /// Probe rounds run per node.
    rounds: BTreeMap<String, u64>,
    /// Every leader change an agent reported: (agent, location, from, to, reason).
    changes: Vec<(String, String, String, String, String)>,
}

impl Sim {
    /// Nodes as (name, location, private IP); `upstream` names nodes that run an agent without
    /// leader health (upstream's agent publishes no verdict).
    fn new(nodes: &[(&str, &str, &str)], upstream: &[&str]) -> Sim {
        let mut sim = Sim {
            now: 1_000_000,
            cluster: BTreeMap::new(),
            names: vec![],
            agents: vec![],
            plans: BTreeMap::new(),
            network: Network::default(),
            rounds: BTreeMap::new(),
            changes: vec![],
        };
        for (i, (name, location, _)) in nodes.iter().enumerate() {
            sim.cluster.insert(
                name.to_string(),
                Node {
                    name: name.to_string(),
                    location: location.to_string(),
                    subnets: vec![cidr(&format!("10.2.{}.0/24", i + 1))],
                    ..Node::default()
                },
            );
            sim.names.push(name.to_string());
            let health = !upstream.contains(name);
            sim.agents.push(Agent::new(config(name, i as u8 + 1, health)));
        }
        for (i, (_, _, private)) in nodes.iter().enumerate() {
            sim.start(i, private);
        }
        sim
    }

    /// Starts (or restarts) agent `i` as kg does: host facts, then the cluster's snapshot.
    fn start(&mut self, i: usize, private: &str) {
        let snapshot =
            Snapshot { nodes: self.cluster.values().cloned().collect(), ..Snapshot::default() };
        let facts = HostFacts {
            private_ip: Some(cidr(private)),
            private_ip6: None,
            public_ip: Some(format!("203.0.113.{}", i + 1).parse().unwrap()),
            cni_compatibility_ip: None,
        };
        self.deliver(i, Input::HostFacts(facts));
        self.deliver(i, Input::Reset(snapshot));
    }

    fn index(&self, name: &str) -> usize {
        self.names.iter().position(|n| n == name).unwrap()
    }

    /// Whether a probe from `node` through `via` to the WireGuard addresses `targets` is
    /// answered, in the model.
    fn answer(&mut self, node: &str, via: &str, targets: &[std::net::IpAddr]) -> bool {
        let round = self.rounds.entry(node.to_string()).or_default();
        *round += 1;
        let n = &self.network;
        if n.lost.contains(&(node.to_string(), *round))
            || n.not_forwarding.contains(via)
            || n.dead_tunnel.contains(via)
            || n.lan_cut.contains(&(node.to_string(), via.to_string()))
        {
            return false;
        }
        // Some target's segment leader is reachable through its tunnel.
        targets.iter().any(|t| {
            self.plans.values().any(|p| {
                p.leader
                    && p.interface.address.is_some_and(|a| a.addr() == *t)
                    && !self.network.dead_tunnel.contains(&p.node)
            })
        })
    }

    /// Hands `input` to agent `i` and carries out what it asks: publications reach every agent,
    /// probes are answered by the network model.
    fn deliver(&mut self, i: usize, input: Input) {
        let mut queue = vec![(i, input)];
        while let Some((i, input)) = queue.pop() {
            let actions = self.agents[i].handle(self.now, input);
            self.carry_out(i, actions, &mut queue);
        }
    }

    fn carry_out(&mut self, i: usize, actions: Vec<Action>, queue: &mut Vec<(usize, Input)>) {
        for action in actions {
            match action {
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
                Action::Probe(_) if self.network.cannot_probe.contains(&self.names[i]) => {}
                Action::Probe(probe) => {
                    let name = self.names[i].clone();
                    let ok = self.answer(&name, &probe.via, &probe.targets);
                    queue.push((i, Input::Probed { via: probe.via, ok }));
                }
                Action::LeaderChanged(c) => {
                    self.changes.push((self.names[i].clone(), c.location, c.from, c.to, c.reason))
                }
                Action::Blocked(_)
                | Action::Warn(_)
                | Action::ObserveDevice
                | Action::DetectHost
                | Action::UpdateCni(_)
                | Action::ReconcileFirewall => {}
            }
        }
    }

    /// Advances the clock second by second for `secs`, firing every agent's due timers.
    fn run(&mut self, secs: i64) {
        for _ in 0..secs {
            self.now += 1;
            for i in 0..self.agents.len() {
                if self.agents[i].poll_timeout().is_some_and(|t| t <= self.now) {
                    let actions = self.agents[i].handle_timeout(self.now);
                    let mut queue = Vec::new();
                    self.carry_out(i, actions, &mut queue);
                    while let Some((j, input)) = queue.pop() {
                        let actions = self.agents[j].handle(self.now, input);
                        self.carry_out(j, actions, &mut queue);
                    }
                }
            }
        }
    }

    /// Runs until every agent sees `leader` leading `location`, for at most `limit` seconds;
    /// returns how many seconds it took.
    fn run_until(&mut self, location: &str, leader: &str, limit: i64) -> Option<i64> {
        let start = self.now;
        while self.now - start < limit {
            if self.agents.iter().all(|a| self.leader_of(a, location) == Some(leader)) {
                return Some(self.now - start);
            }
            self.run(1);
        }
        None
    }

    fn leader_of<'a>(&self, agent: &'a Agent, location: &str) -> Option<&'a str> {
        agent.status().leaders.get(&format!("location:{location}")).map(|v| v.node.as_str())
    }

    /// Every agent's leaders; asserts that they all agree and returns them.
    fn agreed_leaders(&self) -> BTreeMap<String, String> {
        let views: Vec<BTreeMap<String, String>> = self
            .agents
            .iter()
            .map(|a| a.status().leaders.iter().map(|(k, v)| (k.clone(), v.node.clone())).collect())
            .collect();
        for (name, view) in self.names.iter().zip(&views) {
            assert_eq!(view, &views[0], "{name} disagrees with {}", self.names[0]);
        }
        views[0].clone()
    }

    /// Leader changes reported by agent `name`.
    fn changes_seen_by(&self, name: &str) -> Vec<(String, String, String)> {
        self.changes
            .iter()
            .filter(|c| c.0 == name)
            .map(|c| (c.1.clone(), c.2.clone(), c.3.clone()))
            .collect()
    }

    /// The WireGuard peer `node` (a leader) has for `location`: its public key.
    fn peer_key_for(&self, node: &str, location_leader: &str) -> bool {
        let key = self.cluster[location_leader].key;
        self.plans[node].wireguard.as_ref().unwrap().peers.iter().any(|p| p.public_key == key)
    }
}

/// Location x: a, b, c (a leads by upstream's order); location y: d alone.
fn mesh() -> Sim {
    Sim::new(
        &[
            ("a", "x", "192.168.1.1/24"),
            ("b", "x", "192.168.1.2/24"),
            ("c", "x", "192.168.1.3/24"),
            ("d", "y", "192.168.2.1/24"),
        ],
        &[],
    )
}

fn leaders(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(l, n)| (format!("location:{l}"), n.to_string())).collect()
}

#[test]
fn every_node_publishes_a_verdict_and_the_first_leader_is_upstreams() {
    let mut sim = mesh();
    sim.run(10);
    assert_eq!(sim.agreed_leaders(), leaders(&[("x", "a")]));
    let health = |n: &str| sim.cluster[n].health.clone().unwrap();
    // a leads by upstream's order: it claims nothing.
    assert_eq!(health("a"), LeaderHealth::default());
    assert_eq!(health("b").via.as_deref(), Some("a"));
    assert_eq!(health("c").via.as_deref(), Some("a"));
    assert_eq!(health("d").lead, None, "d is alone in its location: nothing to claim");
    assert!(sim.changes.is_empty());
    let x = &sim.agents[3].status().leaders["location:x"];
    assert_eq!(x.election.rule, ElectionRule::Elected);
    assert!(x.election.passed_over.is_empty());
    assert!(x.election.healthy());
}

#[test]
fn a_leader_that_stops_forwarding_is_replaced_within_fifteen_seconds_once() {
    let mut sim = mesh();
    sim.run(60);
    sim.network.not_forwarding.insert("a".into());
    let took = sim.run_until("x", "b", 60).expect("b takes over");
    assert!(took <= 15, "took {took} s of simulated time");
    assert_eq!(sim.agreed_leaders(), leaders(&[("x", "b")]));
    // The remote leader d now dials b for location x; the other non-leader c routes through b.
    assert!(sim.peer_key_for("d", "b"));
    assert!(!sim.peer_key_for("d", "a"));
    let via_b = "192.168.1.2".parse().unwrap();
    assert!(
        sim.plans["c"].routes.iter().any(|r| r.dst == cidr("10.2.4.0/24") && r.via == Some(via_b))
    );
    assert!(sim.plans["b"].leader && !sim.plans["a"].leader);
    // Each agent saw one change, with its reason.
    for name in ["a", "b", "c", "d"] {
        assert_eq!(
            sim.changes_seen_by(name),
            [("location:x".to_string(), "a".to_string(), "b".to_string())],
            "{name}"
        );
    }
    let reason = &sim.changes.iter().find(|c| c.0 == "d").unwrap().4;
    assert!(reason.contains("a is reported not to carry traffic by 2"), "{reason}");
    // a stays broken: still no second change over ten minutes.
    sim.run(600);
    assert_eq!(sim.agreed_leaders(), leaders(&[("x", "b")]));
    assert_eq!(sim.changes.len(), 4);
}

#[test]
fn a_recovered_leader_does_not_take_leadership_back() {
    let mut sim = mesh();
    sim.run(60);
    sim.network.not_forwarding.insert("a".into());
    sim.run_until("x", "b", 60).expect("b takes over");
    sim.network.not_forwarding.clear();
    // Past the hold time, a is no longer reported down, and still b leads.
    sim.run(HOLD_SECS + 120);
    assert_eq!(sim.agreed_leaders(), leaders(&[("x", "b")]));
    assert_eq!(sim.changes.len(), 4, "one change per agent: {:?}", sim.changes);
    assert!(sim.cluster["b"].health.as_ref().unwrap().down.is_empty(), "a's report expired");
}

#[test]
fn a_healthy_mesh_with_flapping_probes_keeps_its_leaders_for_ten_minutes() {
    let mut sim = mesh();
    // Every node loses two probe rounds out of three, but never three in a row; and from time
    // to time one node loses many in a row (one report of down is outvoted by the others).
    for node in ["b", "c"] {
        for round in 1..400u64 {
            if round % 3 != 0 {
                sim.network.lost.insert((node.to_string(), round));
            }
        }
    }
    for round in 100..110 {
        sim.network.lost.insert(("c".to_string(), round));
    }
    sim.run(600);
    assert_eq!(sim.agreed_leaders(), leaders(&[("x", "a")]));
    assert!(sim.changes.is_empty(), "{:?}", sim.changes);
}

#[test]
fn a_node_cut_off_from_its_leader_does_not_move_the_location() {
    let mut sim = mesh();
    sim.run(60);
    sim.network.lan_cut.insert(("c".into(), "a".into()));
    sim.run(120);
    // c reports a down, b reports it working: a stays.
    assert_eq!(sim.cluster["c"].health.as_ref().unwrap().down.keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!(sim.agreed_leaders(), leaders(&[("x", "a")]));
    assert!(sim.changes.is_empty());
    let view = &sim.agents[3].status().leaders["location:x"];
    assert_eq!((view.election.votes.ok, view.election.votes.down), (1, 1));
}

#[test]
fn when_the_other_location_is_unreachable_leadership_settles_and_everyone_agrees() {
    let mut sim = mesh();
    sim.run(60);
    // d's tunnel dies: every probe of location x fails, whoever leads.
    sim.network.dead_tunnel.insert("d".into());
    sim.run(300);
    let during = sim.agreed_leaders();
    let changes = sim.changes.len();
    sim.run(300);
    assert_eq!(sim.agreed_leaders(), during, "no more moves while everything is down");
    assert_eq!(sim.changes.len(), changes);
    // d comes back: the leader of that moment keeps leading.
    sim.network.dead_tunnel.clear();
    sim.run(HOLD_SECS + 60);
    assert_eq!(sim.agreed_leaders(), during);
    assert_eq!(sim.changes.len(), changes);
}

#[test]
fn a_location_with_an_upstream_agent_keeps_upstreams_election() {
    // b runs upstream's agent: it publishes no verdict, so nobody uses verdicts.
    let mut sim = Sim::new(
        &[("a", "x", "192.168.1.1/24"), ("b", "x", "192.168.1.2/24"), ("d", "y", "192.168.2.1/24")],
        &["b"],
    );
    sim.run(30);
    assert_eq!(sim.cluster["b"].health, None);
    sim.network.not_forwarding.insert("a".into());
    sim.run(120);
    assert_eq!(sim.agreed_leaders(), leaders(&[("x", "a")]));
    assert!(sim.changes.is_empty());
    assert_eq!(sim.rounds.get("b"), None, "nobody probes");
    let view = &sim.agents[2].status().leaders["location:x"];
    assert_eq!(view.election.rule, ElectionRule::Upstream);
}

#[test]
fn a_restarted_leader_keeps_leading_and_a_restarted_node_remembers_a_broken_leader() {
    let mut sim = mesh();
    sim.run(60);
    sim.network.not_forwarding.insert("a".into());
    sim.run_until("x", "b", 60).expect("b takes over");
    // b and c restart (fresh agents, same keys): the published verdicts carry over.
    for (name, private) in [("b", "192.168.1.2/24"), ("c", "192.168.1.3/24")] {
        let i = sim.index(name);
        sim.agents[i] = Agent::new(config(name, i as u8 + 1, true));
        sim.start(i, private);
    }
    sim.run(60);
    assert_eq!(sim.agreed_leaders(), leaders(&[("x", "b")]));
    assert_eq!(sim.changes.len(), 4);
    let c = sim.cluster["c"].health.clone().unwrap();
    assert!(c.down.contains_key("a"), "{c:?}");
}

#[test]
fn the_leader_annotation_moves_leadership_to_a_healthy_volunteer() {
    let mut sim = mesh();
    sim.run(60);
    let mut c = sim.cluster["c"].clone();
    c.leader = true;
    sim.cluster.insert("c".into(), c.clone());
    for i in 0..sim.agents.len() {
        sim.deliver(i, Input::NodeChanged(c.clone()));
    }
    sim.run_until("x", "c", 30).expect("c takes over");
    sim.run(120);
    assert_eq!(sim.agreed_leaders(), leaders(&[("x", "c")]));
    assert_eq!(sim.changes.len(), 4);
    assert!(sim.cluster["a"].health.as_ref().unwrap().lead.is_none(), "a stepped down");
}

#[test]
fn verdicts_round_trip_through_the_cluster() {
    let mut sim = mesh();
    sim.run(10);
    for node in sim.cluster.values() {
        let h = node.health.clone().unwrap();
        assert_eq!(h.to_string().parse::<LeaderHealth>().unwrap(), h);
    }
}

#[test]
fn a_re_election_changes_one_wireguard_peer_remotely_and_only_the_gateway_locally() {
    let mut sim = mesh();
    sim.run(60);
    let before = sim.plans.clone();
    sim.network.not_forwarding.insert("a".into());
    sim.run_until("x", "b", 60).expect("b takes over");
    // The remote leader d: one WireGuard peer replaced (x's, now b's key and endpoint, with the
    // same allowed IPs); routes, rules, firewall and interface unchanged.
    let (old, new) = (&before["d"], &sim.plans["d"]);
    let (old_wg, new_wg) = (old.wireguard.as_ref().unwrap(), new.wireguard.as_ref().unwrap());
    assert_eq!(old_wg.peers.len(), 1);
    assert_eq!(new_wg.peers.len(), 1);
    assert_eq!(old_wg.peers[0].allowed_ips, new_wg.peers[0].allowed_ips);
    assert_eq!(new_wg.peers[0].public_key, sim.cluster["b"].key);
    assert_eq!(new_wg.peers[0].endpoint, sim.cluster["b"].endpoint);
    assert_eq!(old_wg.interface, new_wg.interface);
    assert_eq!((&old.routes, &old.rules, &old.firewall), (&new.routes, &new.rules, &new.firewall));
    assert_eq!(
        (&old.interface.name, old.interface.address, old.interface.up),
        (&new.interface.name, new.interface.address, new.interface.up)
    );
    // The other node of the location, c: the same routes, those to other locations through b
    // instead of a.
    let (old, new) = (&before["c"], &sim.plans["c"]);
    let a_ip = "192.168.1.1".parse().unwrap();
    let b_ip = "192.168.1.2".parse().unwrap();
    let rerouted: Vec<_> = old
        .routes
        .iter()
        .map(|r| {
            let mut r = r.clone();
            // a's own pod subnet stays routed to a (`--local`); the rest went through a as
            // the leader.
            if r.via == Some(a_ip) && !sim.cluster["a"].subnets.contains(&r.dst) {
                r.via = Some(b_ip);
            }
            r
        })
        .collect();
    assert_eq!(new.routes, rerouted);
    assert!(old.routes.iter().any(|r| r.via == Some(a_ip)));
    assert_eq!((&old.rules, &old.firewall), (&new.rules, &new.firewall));
}

#[test]
fn a_cold_start_elects_upstreams_leader_whatever_order_the_agents_start_in() {
    // The agents start in reverse order: c first sees itself alone in location x, then b and c.
    let mut sim = Sim::new(
        &[
            ("d", "y", "192.168.2.1/24"),
            ("c", "x", "192.168.1.3/24"),
            ("b", "x", "192.168.1.2/24"),
            ("a", "x", "192.168.1.1/24"),
        ],
        &[],
    );
    sim.run(60);
    assert_eq!(sim.agreed_leaders(), leaders(&[("x", "a")]));
    // c and then b led location x for a moment, before a was listed; nobody claimed.
    assert!(sim.cluster.values().all(|n| n.health.as_ref().unwrap().lead.is_none()));
}

#[test]
fn a_node_that_cannot_probe_does_not_vouch_for_its_leader() {
    let mut sim = mesh();
    sim.network.cannot_probe.insert("c".into());
    sim.run(60);
    // c names no leader: it has not seen a carry its traffic.
    assert_eq!(sim.cluster["c"].health, Some(LeaderHealth::default()));
    sim.network.not_forwarding.insert("a".into());
    // b alone reports a down, and nobody reports it working: b takes over.
    sim.run_until("x", "b", 60).expect("b takes over");
    assert_eq!(sim.agreed_leaders(), leaders(&[("x", "b")]));
}
