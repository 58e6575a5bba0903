//! The agent's decisions as a sans-IO state machine.
//!
//! The agent binary feeds [`Input`]s (backend events, ticks, the observed WireGuard device, host
//! facts) with the current time, and carries out the [`Action`]s that come back (publish the local
//! node, apply a plan). Nothing here sleeps, reads a clock, resolves a name or touches the kernel,
//! so the same machine runs in property tests and multi-node simulations with a manual clock.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use crate::backend::{Event, Invalid, ObjectKind, Snapshot};
use crate::health::{Election, Monitor, Probe};
use crate::plan::{Plan, PlanOptions};
use crate::topology::TopologyError;
use crate::{
    Cidr, Endpoint, Granularity, Key, Node, Peer, PrivateKey, Readiness, Topology, TopologyInput,
};

/// Upstream's check-in period: the local node's last-seen is refreshed this often (seconds).
pub const CHECK_IN_PERIOD_SECS: i64 = 30;

/// A silence of the mesh source longer than this (seconds) may have kept the other agents from
/// checking in too (an API outage hits every agent).
///
/// Other nodes' `last-seen` is judged against the agent's own view of the mesh, not against the
/// wall clock: as of the last time the agent heard from its source ([`Agent::view_time`]). While
/// the source is quiet (an API outage, a watch that went silent) that moment does not advance,
/// so nobody turns stale for lack of news and the mesh is kept as it was. When news comes back
/// after a silence longer than `SILENCE_SECS`, the others may have been unable to check in as
/// well: check-ins are still judged as of the silence's start for [`RECOVERY_SECS`], long
/// enough for every live agent to check in again; then a node that did not is dropped.
///
/// Every agent checks in every [`CHECK_IN_PERIOD_SECS`], the local one included, so a live
/// source yields an event at least that often; a node that really stopped is dropped up to one
/// such gap later than upstream would drop it.
pub const SILENCE_SECS: i64 = CHECK_IN_PERIOD_SECS + 5;

/// How long check-ins stay judged as of a silence's start once news is back (seconds): a
/// check-in period and a margin.
pub const RECOVERY_SECS: i64 = CHECK_IN_PERIOD_SECS + 15;

/// After how long without news from a live source the agent says so (seconds).
pub const QUIET_AFTER_SECS: i64 = CHECK_IN_PERIOD_SECS + 15;

/// The agent's periods, in seconds (each at least 1): the state machine owns its timers and says
/// when it next wants to be woken ([`Agent::poll_timeout`]); the driver sleeps until then and
/// calls [`Agent::handle_timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timers {
    /// How often the local node checks in (its last-seen is refreshed; upstream: 30 s).
    pub check_in: i64,
    /// How often everything is reconciled (`--resync-period`): the host's addresses are
    /// re-detected, the CNI configuration updated, the plan applied and the firewall repaired.
    pub resync: i64,
    /// How often the WireGuard device is read for NAT endpoint discovery, while there is
    /// something to discover (a node with a keepalive, a peer); per-peer metrics are read when
    /// scraped.
    pub device_poll: i64,
}

impl Default for Timers {
    fn default() -> Timers {
        Timers { check_in: CHECK_IN_PERIOD_SECS, resync: 30, device_poll: 5 }
    }
}

impl Timers {
    /// These periods with `resync` (`--resync-period`) as the resync period, rounded up to
    /// whole seconds (at least 1).
    pub fn with_resync(self, resync: std::time::Duration) -> Timers {
        let whole = resync.as_secs().saturating_add(u64::from(resync.subsec_nanos() > 0));
        Timers { resync: i64::try_from(whole.max(1)).unwrap_or(i64::MAX), ..self }
    }
}

/// When each timer fires next (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Deadlines {
    check_in: i64,
    resync: i64,
    device_poll: i64,
    /// The next probe round, while the local node goes through a leader (see
    /// [`crate::health`]).
    probe: Option<i64>,
}

/// How the agent selects the nodes that take part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadinessPolicy {
    /// Kubernetes: upstream's readiness, with last-seen checked against `now`.
    Live,
    /// A Kubernetes snapshot: upstream's readiness without last-seen.
    Snapshot,
    /// A static mesh file: every node with a key.
    StaticMesh,
}

impl ReadinessPolicy {
    fn at(self, now: i64) -> Readiness {
        match self {
            ReadinessPolicy::Live => Readiness::At(now),
            ReadinessPolicy::Snapshot => Readiness::IgnoringLastSeen,
            ReadinessPolicy::StaticMesh => Readiness::StaticMesh,
        }
    }
}

/// The agent's fixed settings (its flags).
///
/// Built with [`AgentConfig::new`], then fields set as needed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AgentConfig {
    /// The local node's name (`--hostname`).
    pub hostname: String,
    /// `--mesh-granularity`.
    pub granularity: Granularity,
    /// `--port`: the listen port unless the local endpoint names another.
    pub port: u16,
    /// `--subnet`: the WireGuard subnet (the IPv4 one when given once per family).
    pub subnet: Cidr,
    /// The IPv6 `--subnet` of a dual-stack mesh.
    pub subnet6: Option<Cidr>,
    /// `--service-cidr`.
    pub service_cidrs: Vec<Cidr>,
    /// The private key from the key file.
    pub private_key: PrivateKey,
    /// Which nodes take part.
    pub readiness: ReadinessPolicy,
    /// Whether the backend accepts what the agent publishes about its own node (Kubernetes does;
    /// a mesh file is read-only, so its local entry is used as written).
    pub publishes: bool,
    /// `--prioritise-private-addresses`.
    pub prioritise_private_addresses: bool,
    /// Options that shape the plan (interfaces, `--local`, `--cni`, encapsulation, …). With
    /// `plan.cni`, the agent asks for the CNI configuration to follow the local pod subnet
    /// ([`Action::UpdateCni`]).
    pub plan: PlanOptions,
    /// The agent's periods.
    pub timers: Timers,
    /// `Some` when this machine joins the mesh as a Kilo Peer (`kgctl connect`) rather than as a
    /// node: `hostname` is then the Peer's name and each plan is the peer's
    /// ([`crate::connect::peer_plan`]).
    pub connect: Option<ConnectRole>,
    /// `--leader-health`: publish a leader-health verdict and probe the leader's data path, so
    /// that leaders fail over on data-path health (see [`crate::health`]). Off, the node
    /// publishes no verdict, which keeps upstream's election for the whole mesh.
    pub leader_health: bool,
}

impl AgentConfig {
    /// The settings of the node `plan.node` with this key, and the rest as `kg`'s flags default:
    /// granularity `location`, port [`DEFAULT_PORT`](crate::settings::DEFAULT_PORT), subnet
    /// [`default_subnet`](crate::settings::default_subnet), no service CIDRs, Kubernetes
    /// readiness ([`ReadinessPolicy::Live`]) with publication, private addresses not
    /// prioritised, the default [`Timers`], not a Peer, and leader health on.
    pub fn new(plan: PlanOptions, private_key: PrivateKey) -> AgentConfig {
        AgentConfig {
            hostname: plan.node.clone(),
            granularity: Granularity::Location,
            port: crate::settings::DEFAULT_PORT,
            subnet: crate::settings::default_subnet(),
            subnet6: None,
            service_cidrs: Vec::new(),
            private_key,
            readiness: ReadinessPolicy::Live,
            publishes: true,
            prioritise_private_addresses: false,
            plan,
            timers: Timers::default(),
            connect: None,
            leader_health: true,
        }
    }
}

/// What a machine that joins the mesh as a Peer (`kgctl connect`) needs besides the agent's
/// settings.
///
/// Built with [`ConnectRole::new`], then fields set as needed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectRole {
    /// `--allowed-ip`: the peer's own address, the interface's only address.
    pub address: Cidr,
    /// `--allowed-ips`: further ranges routed to the mesh through it.
    pub allowed_ips: Vec<Cidr>,
    /// The mesh settings given on the command line (the rest comes from the nodes).
    pub flags: crate::settings::Explicit,
}

impl ConnectRole {
    /// The role of a peer at `address`, routing nothing else to the mesh, with no mesh settings
    /// given.
    pub fn new(address: Cidr) -> ConnectRole {
        ConnectRole {
            address,
            allowed_ips: Vec::new(),
            flags: crate::settings::Explicit::default(),
        }
    }
}

/// What the agent found out about its host (upstream 9.1), re-detected by the binary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// The private IP with its interface mask, if any.
    pub private_ip: Option<Cidr>,
    /// On a dual-stack LAN, the IPv6 private IP beside an IPv4 `private_ip`.
    pub private_ip6: Option<Cidr>,
    /// The public IP (or, lacking one, the first private IP).
    pub public_ip: Option<IpAddr>,
    /// Cilium's `cilium_host` address in cilium compatibility mode.
    pub cni_compatibility_ip: Option<Cidr>,
}

/// One WireGuard peer as the device reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedPeer {
    /// The peer's public key.
    pub public_key: Key,
    /// The endpoint the device currently sends to (roamed or configured).
    pub endpoint: Option<SocketAddr>,
    /// Unix seconds of the last handshake; `None` or 0 when there was none.
    pub last_handshake: Option<i64>,
}

/// Something that happened.
///
/// Exhaustive on purpose: a new input is a change every driver must make, so it breaks them at
/// compile time.
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "a node is moved once per event; boxing would allocate for every event"
)]
pub enum Input {
    /// The backend's whole state (start-up, or a re-read file).
    Reset(Snapshot),
    /// A node was added or changed.
    NodeChanged(Node),
    /// A node was removed.
    NodeRemoved(String),
    /// A peer was added or changed.
    PeerChanged(Peer),
    /// A peer was removed.
    PeerRemoved(String),
    /// An object the backend could not translate.
    Invalid(Invalid),
    /// The host's addresses, (re-)detected.
    HostFacts(HostFacts),
    /// The WireGuard device's peers, as observed (for NAT endpoint discovery).
    Device(Vec<ObservedPeer>),
    /// Check in now (publish the local node with a fresh last-seen), as the check-in timer
    /// does.
    CheckIn,
    /// Reconcile now (apply the plan again), e.g. because the WireGuard interface was deleted.
    Resync,
    /// The answer to [`Action::DetectHost`]: the host's addresses, or `None` when detection is
    /// not wanted (a mesh file is the truth about every node) or failed (the last facts stay in
    /// force). Completes the resync that asked for it.
    HostDetected(Option<HostFacts>),
    /// The answer to [`Action::Probe`]: whether any target answered through the leader `via`.
    /// A probe that could not be sent at all (no permission) is not an answer: report none.
    Probed {
        /// The leader the probe went through ([`Probe::via`]).
        via: String,
        /// Whether any target answered.
        ok: bool,
    },
}

impl From<Event> for Input {
    /// The input a backend's event is.
    fn from(event: Event) -> Input {
        match event {
            Event::NodeChanged(n) => Input::NodeChanged(n),
            Event::NodeRemoved(n) => Input::NodeRemoved(n),
            Event::PeerChanged(p) => Input::PeerChanged(p),
            Event::PeerRemoved(p) => Input::PeerRemoved(p),
            Event::Reset(s) => Input::Reset(s),
            Event::Invalid(i) => Input::Invalid(i),
        }
    }
}

impl Input {
    /// Whether the input comes from the mesh source (the backend), which tells the agent its view
    /// of the mesh is current.
    pub fn is_from_source(&self) -> bool {
        matches!(
            self,
            Input::Reset(_)
                | Input::NodeChanged(_)
                | Input::NodeRemoved(_)
                | Input::PeerChanged(_)
                | Input::PeerRemoved(_)
                | Input::Invalid(_)
        )
    }
}

/// Something the agent must do.
///
/// Exhaustive on purpose: a driver must carry out every action, so a new one breaks it at
/// compile time.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Publish the local node (Kubernetes: patch the annotations kg owns).
    Publish(Box<Node>),
    /// Make the host match this plan (the applier diffs it against the kernel).
    Apply(Box<Plan>),
    /// Nothing can be applied: the reason, for logs and metrics.
    Blocked(String),
    /// A warning about one object (left out, field ignored).
    Warn(String),
    /// Read the WireGuard device and report its peers as [`Input::Device`].
    ObserveDevice,
    /// Re-detect the host's addresses (upstream 9.1) and report them as
    /// [`Input::HostDetected`]; the resync continues then.
    DetectHost,
    /// Make the CNI configuration's pod ranges these subnets (upstream 9.5, which has one; a
    /// dual-stack node has one per family, in the node's order), if they differ.
    UpdateCni(Vec<Cidr>),
    /// Restore firewall rules someone deleted (upstream's periodic iptables reconcile).
    ReconcileFirewall,
    /// Ping the targets (other segments' WireGuard addresses, reached through the leader), wait
    /// at most [`PROBE_TIMEOUT_MS`](crate::health::PROBE_TIMEOUT_MS), and report
    /// [`Input::Probed`]. It may run while the agent handles other inputs.
    Probe(Probe),
    /// A location's leader changed: log it with its reason and count it.
    LeaderChanged(LeaderChange),
}

/// A change of a location's leader, as the local agent sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderChange {
    /// The segment key (`location:<name>`).
    pub location: String,
    /// The former leader.
    pub from: String,
    /// The new leader.
    pub to: String,
    /// How the new leader was chosen, and why the former one no longer leads.
    pub reason: String,
}

/// A location's leader as the local agent sees it (for metrics, `kgctl` and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderView {
    /// The leading node.
    pub node: String,
    /// How it was chosen; [`Election::healthy`] tells whether it is reported down.
    pub election: Election,
}

/// Counters and gauges the agent exports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Ready nodes at the last reconcile.
    pub nodes: usize,
    /// Ready peers at the last reconcile.
    pub peers: usize,
    /// Whether the local node leads its segment.
    pub leader: bool,
    /// Reconciles computed.
    pub reconciles: u64,
    /// Invalid objects currently known, by name.
    pub invalid: usize,
    /// Plans that could not be computed.
    pub errors: u64,
    /// Whether the mesh source has been quiet for longer than [`QUIET_AFTER_SECS`] (check-ins
    /// are judged as of the last time the agent heard from it: see [`SILENCE_SECS`]).
    pub source_quiet: bool,
    /// Each location's leader (segments of more than one node), by segment key.
    pub leaders: BTreeMap<String, LeaderView>,
    /// Leader changes seen, by segment key.
    pub leader_changes: BTreeMap<String, u64>,
}

/// The agent.
#[derive(Debug, Clone)]
pub struct Agent {
    config: AgentConfig,
    nodes: BTreeMap<String, Node>,
    peers: BTreeMap<String, Peer>,
    invalid: BTreeMap<(ObjectKind, String), Invalid>,
    host: HostFacts,
    discovered: BTreeMap<Key, SocketAddr>,
    wireguard_ip: Option<Cidr>,
    wireguard_ip6: Option<Cidr>,
    last_published: Option<Node>,
    /// When the agent last heard from its mesh source (any backend input).
    heard_at: Option<i64>,
    /// After a silence: check-ins are judged as of `.0` until `.1` (see [`SILENCE_SECS`]).
    recovery: Option<(i64, i64)>,
    /// The warnings of the last plan (topology and routes), so that each is logged once.
    plan_warnings: Vec<String>,
    /// A conflicting publication of the local node already warned about (see
    /// [`Agent::handle`]), so that a cloned host is reported once per conflicting value.
    conflict: Option<(Option<Endpoint>, Option<Cidr>, Key)>,
    /// When each timer fires next; set at the first input.
    deadlines: Option<Deadlines>,
    /// A resync waits for [`Input::HostDetected`].
    resync_pending: bool,
    /// The local node's leader-health verdict and probe results.
    monitor: Monitor,
    /// The verdict the local node published before a restart has been taken over.
    resumed: bool,
    status: Status,
}

impl Agent {
    /// A new agent with no knowledge of the mesh yet.
    pub fn new(mut config: AgentConfig) -> Agent {
        config.plan.node = config.hostname.clone();
        Agent {
            config,
            nodes: BTreeMap::new(),
            peers: BTreeMap::new(),
            invalid: BTreeMap::new(),
            host: HostFacts::default(),
            discovered: BTreeMap::new(),
            wireguard_ip: None,
            wireguard_ip6: None,
            last_published: None,
            heard_at: None,
            recovery: None,
            plan_warnings: Vec::new(),
            conflict: None,
            deadlines: None,
            resync_pending: false,
            monitor: Monitor::default(),
            resumed: false,
            status: Status::default(),
        }
    }

    /// The agent's settings.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// Gauges and counters for metrics.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// The nodes the agent knows, by name.
    pub fn nodes(&self) -> &BTreeMap<String, Node> {
        &self.nodes
    }

    /// The peers the agent knows, by name.
    pub fn peers(&self) -> &BTreeMap<String, Peer> {
        &self.peers
    }

    /// The mesh as upstream's `/graph` draws it (upstream 11): ready nodes and peers, seen from
    /// the local node, zero key, port 0. `None` when the local node is not ready (contract C18:
    /// the HTTP handler answers 503 instead of panicking).
    pub fn graph(&self, now: i64) -> Option<String> {
        let readiness = self.readiness(now);
        let local = self.local_node(now)?;
        if !local.is_ready(readiness) {
            return None;
        }
        let mut nodes: Vec<Node> = self
            .nodes
            .values()
            .filter(|n| n.name != local.name && n.is_ready(readiness))
            .cloned()
            .collect();
        nodes.push(local.clone());
        let peers: Vec<Peer> = self.peers.values().filter(|p| p.is_ready()).cloned().collect();
        let topology = Topology::new(TopologyInput {
            nodes: &nodes,
            peers: &peers,
            granularity: self.config.granularity,
            hostname: &self.config.hostname,
            port: 0,
            key: PrivateKey::from_bytes([0; 32]),
            subnet: self.config.subnet,
            subnet6: self.config.subnet6,
            service_cidrs: &self.config.service_cidrs,
            persistent_keepalive: local.persistent_keepalive,
        })
        .ok()?;
        Some(topology.dot())
    }

    /// The moment as of which other nodes' check-ins are judged: when the agent last heard from
    /// its source, or the start of a silence it is recovering from (see [`SILENCE_SECS`]); never
    /// later than `now`.
    pub fn view_time(&self, now: i64) -> i64 {
        let view = match self.recovery {
            Some((since, until)) if now < until => since,
            _ => self.heard_at.unwrap_or(now),
        };
        view.min(now)
    }

    fn readiness(&self, now: i64) -> Readiness {
        self.config.readiness.at(self.view_time(now))
    }

    /// When the agent next wants [`Agent::handle_timeout`] called (Unix seconds); `None` until
    /// it has handled its first input.
    pub fn poll_timeout(&self) -> Option<i64> {
        self.deadlines.map(|d| {
            let next = d.check_in.min(d.resync).min(d.device_poll);
            d.probe.map_or(next, |p| next.min(p))
        })
    }

    /// Starts the timers at `now` if they have not started: each fires one period later.
    fn start_timers(&mut self, now: i64) {
        let t = self.config.timers;
        self.deadlines.get_or_insert(Deadlines {
            check_in: now.saturating_add(t.check_in.max(1)),
            resync: now.saturating_add(t.resync.max(1)),
            device_poll: now.saturating_add(t.device_poll.max(1)),
            probe: None,
        });
    }

    /// Fires the timers due at `now` and returns what to do: a check-in, [`Action::ObserveDevice`],
    /// and for a resync [`Action::DetectHost`] (the resync completes when the answer comes back
    /// as [`Input::HostDetected`]: CNI update, plan, firewall repair). Each timer fires again one
    /// period after `now`. A deadline more than one period ahead (the clock was set back) is
    /// brought back to one period from `now`, so that a clock change never stops a timer.
    pub fn handle_timeout(&mut self, now: i64) -> Vec<Action> {
        self.start_timers(now);
        let t = self.config.timers;
        let Some(d) = self.deadlines.as_mut() else { return Vec::new() };
        let mut due = [false; 3];
        for (i, (deadline, period)) in [
            (&mut d.check_in, t.check_in.max(1)),
            (&mut d.device_poll, t.device_poll.max(1)),
            (&mut d.resync, t.resync.max(1)),
        ]
        .into_iter()
        .enumerate()
        {
            let next = now.saturating_add(period);
            if *deadline <= now {
                due[i] = true;
                *deadline = next;
            } else if *deadline > next {
                *deadline = next;
            }
        }
        let probe_due = match d.probe.as_mut() {
            Some(p) if *p <= now => {
                *p = now.saturating_add(crate::health::PROBE_SECS);
                true
            }
            Some(p) => {
                *p = (*p).min(now.saturating_add(crate::health::PROBE_SECS));
                false
            }
            None => false,
        };
        let mut actions = Vec::new();
        if due[0] {
            actions.extend(self.handle(now, Input::CheckIn));
        }
        if probe_due && let Some(probe) = self.monitor.next_probe() {
            actions.push(Action::Probe(probe));
        }
        if due[1] && self.discovers() {
            actions.push(Action::ObserveDevice);
        }
        if due[2] {
            self.resync_pending = true;
            actions.push(Action::DetectHost);
        }
        actions
    }

    /// Whether NAT endpoint discovery has anything to learn from the device (upstream 10.3 step
    /// 6): a leader with a node of keepalive (behind NAT) or a peer among its WireGuard peers.
    /// Without one, the device poll is skipped: an idle mesh reads nothing (per-peer metrics are
    /// read when they are scraped).
    fn discovers(&self) -> bool {
        self.status.leader
            && (self.peers.values().any(Peer::is_ready)
                || self
                    .nodes
                    .values()
                    .any(|n| n.name != self.config.hostname && !n.persistent_keepalive.is_zero()))
    }

    /// The local node's pod subnets for the CNI configuration, when the agent manages it and
    /// the node has one.
    fn cni_subnets(&self) -> Option<Vec<Cidr>> {
        if !self.config.plan.cni {
            return None;
        }
        let node = self.nodes.get(&self.config.hostname)?;
        (!node.subnets.is_empty()).then(|| node.subnets.clone())
    }

    /// Handles one input at Unix time `now`.
    pub fn handle(&mut self, now: i64, input: Input) -> Vec<Action> {
        self.start_timers(now);
        let mut actions = Vec::new();
        let mut resync = false;
        let reset = matches!(input, Input::Reset(_));
        if input.is_from_source() {
            if let Some(heard) = self.heard_at.filter(|h| now.saturating_sub(*h) > SILENCE_SECS) {
                let since = match self.recovery {
                    Some((since, until)) if now < until => since,
                    _ => heard,
                };
                self.recovery = Some((since, now.saturating_add(RECOVERY_SECS)));
            }
            self.heard_at = Some(self.heard_at.map_or(now, |h| h.max(now)));
        }
        if let Input::NodeChanged(node) = &input
            && let Some(warning) = self.publication_conflict(node)
        {
            actions.push(Action::Warn(warning));
        }
        self.resume_health(&input);
        let changed = match input {
            Input::Reset(snapshot) => {
                self.nodes = snapshot.nodes.into_iter().map(|n| (n.name.clone(), n)).collect();
                self.peers = snapshot.peers.into_iter().map(|p| (p.name.clone(), p)).collect();
                self.invalid.clear();
                for inv in snapshot.invalid {
                    actions.push(Action::Warn(format!("left out {inv}")));
                    self.invalid.insert((inv.kind, inv.name.clone()), inv);
                }
                for inv in snapshot.ignored {
                    actions.push(Action::Warn(format!("ignored a field of {inv}")));
                }
                true
            }
            Input::NodeChanged(node) => {
                self.invalid.remove(&(ObjectKind::Node, node.name.clone()));
                self.nodes.insert(node.name.clone(), node.clone()) != Some(node)
            }
            Input::NodeRemoved(name) => {
                self.invalid.remove(&(ObjectKind::Node, name.clone()));
                self.nodes.remove(&name).is_some()
            }
            Input::PeerChanged(peer) => {
                self.invalid.remove(&(ObjectKind::Peer, peer.name.clone()));
                self.peers.insert(peer.name.clone(), peer.clone()) != Some(peer)
            }
            Input::PeerRemoved(name) => {
                self.invalid.remove(&(ObjectKind::Peer, name.clone()));
                self.peers.remove(&name).is_some()
            }
            Input::Invalid(inv) => {
                actions.push(Action::Warn(format!("left out {inv}")));
                // The object is left out; whatever was known of it before goes too.
                let removed = match inv.kind {
                    ObjectKind::Node => self.nodes.remove(&inv.name).is_some(),
                    ObjectKind::Peer => self.peers.remove(&inv.name).is_some(),
                    ObjectKind::Other => false,
                };
                self.invalid.insert((inv.kind, inv.name.clone()), inv);
                removed
            }
            Input::HostFacts(facts) => {
                let changed = facts != self.host;
                self.host = facts;
                changed
            }
            Input::Device(observed) => self.discover(&observed),
            Input::CheckIn => {
                // Former leaders found down are forgotten after the hold time; the election
                // changes with the verdict, so the mesh is planned again before publishing.
                let expired = self.monitor.expire(now);
                if !expired && let Some(local) = self.local_for_publishing(now) {
                    actions.push(Action::Publish(Box::new(local.clone())));
                    self.last_published = Some(local);
                }
                expired
            }
            Input::Probed { via, ok } => self.monitor.observe(now, &via, ok),
            Input::Resync => true,
            Input::HostDetected(facts) => {
                let changed = facts.as_ref().is_some_and(|f| *f != self.host);
                if let Some(facts) = facts {
                    self.host = facts;
                }
                resync = std::mem::take(&mut self.resync_pending);
                changed || resync
            }
        };
        if resync || reset {
            // The CNI configuration follows the local pod subnet: at start (and every time the
            // source lists the whole mesh again) and at every resync.
            if let Some(subnets) = self.cni_subnets() {
                actions.push(Action::UpdateCni(subnets));
            }
        }
        self.status.invalid = self.invalid.len();
        let quiet = self.config.readiness == ReadinessPolicy::Live
            && self.heard_at.is_some_and(|h| now.saturating_sub(h) > QUIET_AFTER_SECS);
        if quiet != self.status.source_quiet {
            self.status.source_quiet = quiet;
            if let (true, Some(heard)) = (quiet, self.heard_at) {
                actions.push(Action::Warn(format!(
                    "nothing heard from the mesh source for {} s: keeping the mesh as it was, \
                     judging other nodes' check-ins as of then",
                    now - heard,
                )));
            }
        }
        if changed {
            let (action, leaders) = self.reconcile(now);
            if let Action::Apply(plan) = &action {
                self.warn_once(&plan.warnings, &mut actions);
            }
            actions.extend(leaders);
            actions.push(action);
        }
        if resync {
            actions.push(Action::ReconcileFirewall);
        }
        // Publish after reconciling, so that what the node publishes (its WireGuard IP above
        // all: a demoted leader must stop advertising its old one) matches the plan just made.
        let local = self.local_for_publishing(now);
        if let Some(local) =
            local.filter(|l| self.last_published.as_ref().is_none_or(|p| !same_published(p, l)))
        {
            actions.push(Action::Publish(Box::new(local.clone())));
            self.last_published = Some(local);
        }
        actions
    }

    /// Takes over the verdict the local node published before a restart, the first time the
    /// source reports the local node.
    fn resume_health(&mut self, input: &Input) {
        if self.resumed || !self.config.leader_health || !self.config.publishes {
            return;
        }
        let hostname = &self.config.hostname;
        let local = match input {
            Input::Reset(snapshot) => snapshot.nodes.iter().find(|n| &n.name == hostname),
            Input::NodeChanged(node) if &node.name == hostname => Some(node),
            _ => None,
        };
        if let Some(local) = local {
            self.resumed = true;
            if let Some(health) = &local.health {
                self.monitor.resume(health);
            }
        }
    }

    /// After a plan: the local node's part in leader health (claim, leader to probe through,
    /// targets) and each location's leader, with a [`Action::LeaderChanged`] for each change.
    fn follow_leaders(&mut self, now: i64, topology: &Topology, nodes: &[Node]) -> Vec<Action> {
        let local = topology.segments.iter().find(|s| s.location == topology.location);
        let location = self.config.granularity == Granularity::Location;
        let probes = location
            && self.config.leader_health
            && self.config.publishes
            && crate::health::in_use(nodes);
        let via = local
            .filter(|s| probes && !topology.leader && s.members.len() > 1)
            .map(|s| s.leader_member().name.as_str());
        let targets: Vec<IpAddr> = topology
            .segments
            .iter()
            .filter(|s| s.location != topology.location)
            .filter_map(|s| s.wireguard_ip)
            .collect();
        // A leader claims leadership (so that it keeps it while healthy) once it took over from
        // a leader reported down, and for as long as it leads. A leader of upstream's order needs
        // no claim; claiming at every election would let the order in which the agents started
        // (a node that sees itself alone at first) decide who leads.
        let took_over = local.is_some_and(|s| !s.election.passed_over.is_empty());
        let leads = location && topology.leader && (took_over || self.monitor.claims());
        self.monitor.follow(now, leads, via, if via.is_some() { targets } else { Vec::new() });
        if let Some(d) = self.deadlines.as_mut() {
            d.probe = match (self.monitor.probing(), d.probe) {
                (false, _) => None,
                (true, Some(p)) => Some(p),
                (true, None) => Some(now.saturating_add(crate::health::PROBE_SECS)),
            };
        }
        let leaders: BTreeMap<String, LeaderView> = topology
            .segments
            .iter()
            .filter(|s| s.members.len() > 1)
            .map(|s| {
                let view = LeaderView {
                    node: s.leader_member().name.clone(),
                    election: s.election.clone(),
                };
                (s.location.clone(), view)
            })
            .collect();
        let mut actions = Vec::new();
        let mut by_name: Option<HashMap<&str, &Node>> = None;
        for (key, view) in &leaders {
            let Some(old) = self.status.leaders.get(key).filter(|o| o.node != view.node) else {
                continue;
            };
            let segment = topology.segments.iter().find(|s| &s.location == key);
            let former = segment.and_then(|s| s.members.iter().position(|m| m.name == old.node));
            let why = match (segment, former) {
                (Some(s), Some(i)) => {
                    let by_name = by_name.get_or_insert_with(|| {
                        nodes.iter().map(|n| (n.name.as_str(), n)).collect()
                    });
                    let group: Vec<&Node> = s
                        .members
                        .iter()
                        .filter_map(|m| by_name.get(m.name.as_str()).copied())
                        .collect();
                    let votes = crate::health::votes(&group, i.min(group.len().saturating_sub(1)));
                    if votes.is_down() {
                        format!(
                            "{} is reported not to carry traffic by {} of the location's other \
                             nodes ({} report it working)",
                            old.node, votes.down, votes.ok
                        )
                    } else {
                        format!("{} ranks after {} now", old.node, view.node)
                    }
                }
                _ => format!("{} is no longer a ready node of the location", old.node),
            };
            *self.status.leader_changes.entry(key.clone()).or_default() += 1;
            actions.push(Action::LeaderChanged(LeaderChange {
                location: key.clone(),
                from: old.node.clone(),
                to: view.node.clone(),
                reason: format!("{why}; {} leads ({})", view.node, view.election),
            }));
        }
        self.status.leaders = leaders;
        actions
    }

    /// Logs each plan warning (refused routes, dropped allowed-location IPs) when it first
    /// appears, not on every reconcile.
    fn warn_once(&mut self, warnings: &[String], actions: &mut Vec<Action>) {
        for w in warnings.iter().filter(|w| !self.plan_warnings.contains(w)) {
            actions.push(Action::Warn(w.clone()));
        }
        self.plan_warnings = warnings.to_vec();
    }

    /// A cloned host (same name and key on two machines) makes two agents publish one node in
    /// turn, each overwriting the other's endpoint. The agent notices when the source reports its
    /// own node, checked in after its own last publication, with an endpoint, internal IP or key
    /// that it did not publish, and warns once per conflicting value.
    fn publication_conflict(&mut self, node: &Node) -> Option<String> {
        let ours = self.last_published.as_ref().filter(|_| node.name == self.config.hostname)?;
        if node.last_seen <= ours.last_seen {
            return None;
        }
        let endpoint = (!node.endpoint_forced).then(|| node.endpoint.clone()).flatten();
        let internal_ip = (!node.internal_ip_forced).then_some(node.internal_ip).flatten();
        let endpoint_differs = !node.endpoint_forced && node.endpoint != ours.endpoint;
        let internal_differs = !node.internal_ip_forced && node.internal_ip != ours.internal_ip;
        if !(endpoint_differs || internal_differs || node.key != ours.key) {
            return None;
        }
        let seen = (endpoint.clone(), internal_ip, node.key);
        if self.conflict.as_ref() == Some(&seen) {
            return None;
        }
        self.conflict = Some(seen);
        let show =
            |e: &Option<Endpoint>| e.as_ref().map_or("none".to_string(), Endpoint::to_string);
        Some(format!(
            "another agent publishes node {:?} (endpoint {}, key {}), while this agent publishes \
             endpoint {}, key {}: is this host a clone of another one (same name and key)? Two \
             agents with one name take turns to overwrite each other's endpoint",
            node.name,
            show(&node.endpoint),
            node.key,
            show(&ours.endpoint),
            ours.key,
        ))
    }

    /// NAT endpoint discovery (upstream 10.3 step 6): for nodes with a keepalive and for peers,
    /// a device peer with a handshake tells where that key really is.
    fn discover(&mut self, observed: &[ObservedPeer]) -> bool {
        let keepalive_keys: HashMap<Key, ()> = self
            .nodes
            .values()
            .filter(|n| !n.persistent_keepalive.is_zero())
            .map(|n| (n.key, ()))
            .chain(self.peers.values().map(|p| (p.public_key, ())))
            .collect();
        let discovered: BTreeMap<Key, SocketAddr> = observed
            .iter()
            .filter(|o| o.last_handshake.is_some_and(|t| t > 0))
            .filter(|o| keepalive_keys.contains_key(&o.public_key))
            .filter_map(|o| o.endpoint.map(|e| (o.public_key, e)))
            .collect();
        let changed = discovered != self.discovered;
        self.discovered = discovered;
        changed
    }

    /// The local node as the agent publishes it (upstream `handleLocal`), if the backend has it.
    fn local_for_publishing(&self, now: i64) -> Option<Node> {
        if !self.config.publishes {
            return None;
        }
        let mut local = self.nodes.get(&self.config.hostname)?.clone();
        // Contract C9: what was detected is re-detected and republished when it changes;
        // `force-endpoint` and `force-internal-ip` still win. (Upstream kept the first value it
        // published for as long as it parsed.)
        let ip = if self.config.prioritise_private_addresses {
            self.host.private_ip.map(|c| c.addr()).or(self.host.public_ip)
        } else {
            self.host.public_ip
        };
        let detected = ip.map(|ip| Endpoint::from_addr(SocketAddr::new(ip, self.config.port)));
        let ready = local.endpoint.as_ref().is_some_and(Endpoint::is_ready);
        if !local.endpoint_forced && (detected.is_some() || !ready) {
            local.endpoint = detected;
        }
        if !local.internal_ip_forced
            && (self.host.private_ip.is_some() || local.internal_ip.is_none())
        {
            local.internal_ip = self.host.private_ip;
        }
        local.internal_ip6 = if local.internal_ip.is_some_and(|c| c.is_ipv4()) {
            self.host.private_ip6.filter(|c| !c.is_ipv4())
        } else {
            None
        };
        local.key = self.config.private_key.public_key();
        local.cni_compatibility_ip = self.host.cni_compatibility_ip;
        local.last_seen = now;
        local.wireguard_ip = self.wireguard_ip;
        local.wireguard_ip6 = self.wireguard_ip6;
        local.discovered_endpoints = Some(self.discovered.clone());
        local.granularity = Some(self.config.granularity);
        local.health = self.config.leader_health.then(|| self.monitor.published());
        Some(local)
    }

    /// The local node as the topology should see it.
    fn local_node(&self, now: i64) -> Option<Node> {
        match self.local_for_publishing(now) {
            Some(local) => Some(local),
            None => {
                let mut local = self.nodes.get(&self.config.hostname)?.clone();
                local.discovered_endpoints = Some(self.discovered.clone());
                Some(local)
            }
        }
    }

    /// Computes the plan of a machine that joined as a Peer (upstream 12.4's resync step).
    fn reconcile_peer(&mut self, now: i64, role: &ConnectRole) -> Action {
        let readiness = self.readiness(now);
        let snapshot = crate::Snapshot {
            nodes: self.nodes.values().cloned().collect(),
            peers: self.peers.values().cloned().collect(),
            ..crate::Snapshot::default()
        };
        self.status.nodes = snapshot.nodes.iter().filter(|n| n.is_ready(readiness)).count();
        self.status.peers = snapshot.peers.iter().filter(|p| p.is_ready()).count();
        let interface = self.config.plan.interfaces.kilo.clone();
        let input = crate::connect::ConnectInput {
            peer: &self.config.hostname,
            flags: role.flags,
            private_key: &self.config.private_key,
            interface: &interface,
            allowed_ips: &role.allowed_ips,
        };
        match crate::connect::peer_plan(&snapshot, readiness, &input) {
            Ok(plan) => Action::Apply(Box::new(plan.into_plan(
                &self.config.hostname,
                &interface,
                role.address,
            ))),
            Err(e) => {
                self.status.errors += 1;
                Action::Blocked(e.to_string())
            }
        }
    }

    /// Computes the plan (upstream `applyTopology`), and the leader changes it brings.
    fn reconcile(&mut self, now: i64) -> (Action, Vec<Action>) {
        self.status.reconciles += 1;
        if let Some(role) = self.config.connect.clone() {
            return (self.reconcile_peer(now, &role), Vec::new());
        }
        match self.reconcile_node(now) {
            Ok((plan, leaders)) => (plan, leaders),
            Err(blocked) => (blocked, Vec::new()),
        }
    }

    /// The plan of a node, or why there is none.
    fn reconcile_node(&mut self, now: i64) -> Result<(Action, Vec<Action>), Action> {
        let readiness = self.readiness(now);
        let Some(local) = self.local_node(now) else {
            return Err(Action::Blocked(format!(
                "the local node {:?} is not in the mesh yet",
                self.config.hostname
            )));
        };
        let mut nodes: Vec<Node> = self
            .nodes
            .values()
            .filter(|n| n.name != local.name)
            .filter(|n| n.is_ready(readiness))
            .cloned()
            .collect();
        let peers: Vec<Peer> = self.peers.values().filter(|p| p.is_ready()).cloned().collect();
        self.status.peers = peers.len();
        if !local.is_ready(readiness) {
            self.status.nodes = nodes.len();
            return Err(Action::Blocked(format!(
                "the local node {:?} is not ready (it needs a key, an endpoint and a pod subnet)",
                local.name
            )));
        }
        nodes.push(local.clone());
        self.status.nodes = nodes.len();
        let port = local
            .endpoint
            .as_ref()
            .map(Endpoint::port)
            .filter(|p| *p > 0)
            .unwrap_or(self.config.port);
        let topology = match Topology::new(TopologyInput {
            nodes: &nodes,
            peers: &peers,
            granularity: self.config.granularity,
            hostname: &self.config.hostname,
            port,
            key: self.config.private_key.clone(),
            subnet: self.config.subnet,
            subnet6: self.config.subnet6,
            service_cidrs: &self.config.service_cidrs,
            persistent_keepalive: local.persistent_keepalive,
        }) {
            Ok(t) => t,
            Err(e) => {
                self.status.errors += 1;
                return Err(Action::Blocked(blocked_message(&e)));
            }
        };
        self.status.leader = topology.leader;
        self.wireguard_ip = topology.leader.then_some(topology.wireguard_cidr);
        self.wireguard_ip6 = topology.wireguard_cidr6.filter(|_| topology.leader);
        // A non-leader's plan has no WireGuard config: link down, no peers (contract C8).
        let wireguard = topology.leader.then(|| topology.conf_for_device());
        let leaders = self.follow_leaders(now, &topology, &nodes);
        Ok((Action::Apply(Box::new(Plan::new(&topology, wireguard, &self.config.plan))), leaders))
    }
}

fn blocked_message(e: &TopologyError) -> String {
    format!("cannot compute the topology: {e}")
}

/// Whether two published nodes differ in anything the backend stores, apart from last-seen.
fn same_published(a: &Node, b: &Node) -> bool {
    let mut a = a.clone();
    a.last_seen = b.last_seen;
    &a == b
}
