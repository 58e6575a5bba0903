//! A simulated cluster for the driver: an in-memory mesh source shared by several agents (what
//! one publishes, all receive), recording hosts, and tokio's paused clock, so that minutes of
//! agent time run in milliseconds through the same loop `kg` runs.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kilo_agent::{Recorder, RecordingHost, RunOptions, Shared, TokioClock};
use kilo_core::agent::{Agent, AgentConfig, HostFacts, ReadinessPolicy, Timers};
use kilo_core::plan::{Plan, PlanOptions};
use kilo_core::routes::Interfaces;
use kilo_core::{
    Backend, Cidr, Encapsulation, Event, Granularity, Node, Peer, PrivateKey, Snapshot,
};
use tokio::sync::{mpsc, oneshot};

/// The simulation's start, in Unix seconds.
pub const START: i64 = 1_000_000;

pub fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

/// The cluster as the API server holds it.
#[derive(Default)]
struct State {
    nodes: BTreeMap<String, Node>,
    peers: BTreeMap<String, Peer>,
    /// The API is unreachable: publications fail and nothing reaches the agents.
    down: bool,
    watchers: Vec<mpsc::UnboundedSender<Event>>,
}

impl State {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            nodes: self.nodes.values().cloned().collect(),
            peers: self.peers.values().cloned().collect(),
            ..Snapshot::default()
        }
    }

    fn broadcast(&mut self, event: Event) {
        if !self.down {
            self.watchers.retain(|w| w.send(event.clone()).is_ok());
        }
    }
}

/// The shared in-memory mesh source.
#[derive(Clone, Default)]
pub struct Cluster(Arc<Mutex<State>>);

/// Why the in-memory source failed.
#[derive(Debug, thiserror::Error)]
#[error("the API server is unreachable")]
pub struct Unreachable;

/// One agent's connection to the cluster.
pub struct MemoryBackend {
    cluster: Cluster,
    events: mpsc::UnboundedReceiver<Event>,
}

impl Cluster {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    /// A new watcher.
    pub fn backend(&self) -> MemoryBackend {
        let (tx, events) = mpsc::unbounded_channel();
        self.state().watchers.push(tx);
        MemoryBackend { cluster: self.clone(), events }
    }

    /// Adds or changes a node, telling every watcher.
    pub fn put_node(&self, node: Node) {
        let mut s = self.state();
        s.nodes.insert(node.name.clone(), node.clone());
        s.broadcast(Event::NodeChanged(node));
    }

    /// Adds or changes a peer, telling every watcher.
    pub fn put_peer(&self, peer: Peer) {
        let mut s = self.state();
        s.peers.insert(peer.name.clone(), peer.clone());
        s.broadcast(Event::PeerChanged(peer));
    }

    /// A node as the cluster holds it.
    pub fn node(&self, name: &str) -> Node {
        self.state().nodes[name].clone()
    }

    /// Takes the API away (`true`) or brings it back: watchers then list the cluster again.
    pub fn set_down(&self, down: bool) {
        let mut s = self.state();
        s.down = down;
        if !down {
            let snapshot = s.snapshot();
            s.broadcast(Event::Reset(snapshot));
        }
    }
}

impl Backend for MemoryBackend {
    type Error = Unreachable;

    async fn snapshot(&mut self) -> Result<Snapshot, Unreachable> {
        let s = self.cluster.state();
        if s.down { Err(Unreachable) } else { Ok(s.snapshot()) }
    }

    async fn next_event(&mut self) -> Option<Result<Event, Unreachable>> {
        self.events.recv().await.map(Ok)
    }

    async fn publish_local(&mut self, node: &Node) -> Result<(), Unreachable> {
        let mut s = self.cluster.state();
        if s.down {
            return Err(Unreachable);
        }
        if s.nodes.get(&node.name) != Some(node) {
            s.nodes.insert(node.name.clone(), node.clone());
            s.broadcast(Event::NodeChanged(node.clone()));
        }
        Ok(())
    }

    async fn clean_up_local(&mut self, _name: &str) -> Result<(), Unreachable> {
        Ok(())
    }
}

pub fn config(hostname: &str, seed: u8) -> AgentConfig {
    let interfaces =
        Interfaces { kilo: "kilo0".into(), private: "eth0".into(), tunnel: "tunl0".into() };
    let mut plan = PlanOptions::new(String::new(), interfaces);
    plan.local = true;
    plan.cni = true;
    plan.iptables_forward_rules = false;
    plan.encapsulation = Encapsulation::Never;
    plan.compatibility = None;
    let mut config = AgentConfig::new(plan, PrivateKey::from_random_bytes([seed; 32]));
    config.hostname = hostname.into();
    config.granularity = Granularity::Location;
    config.port = 51820;
    config.subnet = cidr("10.4.0.0/16");
    config.service_cidrs = vec![];
    config.readiness = ReadinessPolicy::Live;
    config.publishes = true;
    config.prioritise_private_addresses = false;
    config.timers = Timers::default();
    config.connect = None;
    config
}

/// One running agent.
pub struct Running {
    pub recorder: Recorder,
    pub shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// The last plan this agent applied.
    pub fn plan(&self) -> Plan {
        self.recorder.last_plan().expect("the agent applied a plan")
    }

    /// Stops the agent as SIGTERM would (clean-up as `options` said) and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap();
    }

    /// Kills the agent: it stops checking in, nothing is cleaned up.
    pub fn kill(&self) {
        self.task.abort();
    }
}

/// Starts an agent on the real driver with a recording host.
pub fn spawn(
    cluster: &Cluster,
    config: AgentConfig,
    facts: HostFacts,
    options: RunOptions,
) -> Running {
    let (host, recorder) = RecordingHost::new(Some(facts));
    let shared = Shared::new();
    let (stop, stopped) = oneshot::channel::<()>();
    let backend = cluster.backend();
    let task = tokio::spawn({
        let shared = shared.clone();
        async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            kilo_agent::run(
                Agent::new(config),
                backend,
                host,
                TokioClock::starting_at(START),
                options,
                shared,
                shutdown,
            )
            .await
            .unwrap();
        }
    });
    Running { recorder, shared, stop: Some(stop), task }
}

/// Three nodes: a and b in location x, c in y; the cluster holds them before the agents start.
pub async fn three_nodes(cluster: &Cluster) -> Vec<Running> {
    let nodes = [
        ("a", "x", "10.2.1.0/24", "192.168.1.1/24"),
        ("b", "x", "10.2.2.0/24", "192.168.1.2/24"),
        ("c", "y", "10.2.3.0/24", "192.168.2.1/24"),
    ];
    let mut running = Vec::new();
    for (i, (name, location, pod, private)) in nodes.into_iter().enumerate() {
        cluster.put_node(Node {
            name: name.into(),
            location: location.into(),
            subnets: vec![cidr(pod)],
            ..Node::default()
        });
        let facts = HostFacts {
            private_ip: Some(cidr(private)),
            private_ip6: None,
            public_ip: Some(format!("203.0.113.{}", i + 1).parse().unwrap()),
            cni_compatibility_ip: None,
        };
        running.push(spawn(cluster, config(name, i as u8 + 1), facts, RunOptions::default()));
    }
    // Let the agents publish and converge (paused time moves only when every task waits).
    tokio::time::sleep(Duration::from_millis(100)).await;
    running
}

/// The WireGuard peers of a plan.
pub fn wireguard_peers(plan: &Plan) -> usize {
    plan.wireguard.as_ref().map_or(0, |w| w.peers.len())
}
