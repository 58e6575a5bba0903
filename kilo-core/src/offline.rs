//! The mesh seen from outside, as `kgctl` sees it: which nodes count, which
//! subnet and granularity apply, and the outputs of `graph`, `showconf` and `plan`.

use std::time::Duration;

use crate::backend::Snapshot;
use crate::peer_spec::{PeerSpec, spec_from_peer};
use crate::plan::{Plan, PlanOptions};
use crate::settings::{Explicit, Settings, Source, resolve};
use crate::topology::TopologyError;
use crate::validate::{Finding, ValidationInput, validate};
use crate::wireguard::{Config, PeerConfig};
use crate::{Cidr, Granularity, Node, Peer, PrivateKey, Readiness, Topology, TopologyInput};

/// The default WireGuard subnet, `10.4.0.0/16`.
pub fn default_subnet() -> Cidr {
    crate::settings::default_subnet()
}

/// Why an offline command cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OfflineError {
    /// No node takes part in the mesh.
    #[error("did not find any valid Kilo nodes in the cluster")]
    NoNodes,
    /// The named node is not among the ready nodes.
    #[error("did not find any node named {0:?} in the cluster")]
    UnknownNode(String),
    /// The named peer is not among the ready peers.
    #[error("did not find any peer named {0:?} in the cluster")]
    UnknownPeer(String),
    /// The topology cannot be built.
    #[error(transparent)]
    Topology(#[from] TopologyError),
}

/// Mesh-wide settings given on the command line (`None`: from the source, else the default).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--mesh-granularity` (`None` = `auto`).
    pub granularity: Option<Granularity>,
    /// `--subnet` (the IPv4 one when given once per family).
    pub subnet: Option<Cidr>,
    /// The IPv6 `--subnet` when given once per family.
    pub subnet6: Option<Cidr>,
    /// `--port`.
    pub port: Option<u16>,
}

impl Overrides {
    fn explicit(&self) -> Explicit {
        Explicit {
            granularity: self.granularity,
            subnet: self.subnet,
            subnet6: self.subnet6,
            port: self.port,
        }
    }
}

/// What `showconf` prints.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ShowConf {
    /// WireGuard INI text.
    Text(String),
    /// A Peer object (`--as-peer -o yaml|json`).
    Peer(PeerObject),
    /// The node does not lead its segment: upstream's message, for stderr.
    NotLeader(String),
}

/// A `kilo.squat.ai/v1alpha1` `Peer` object as `kgctl showconf --as-peer -o yaml|json` prints it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerObject {
    /// `kilo.squat.ai/v1alpha1`.
    pub api_version: &'static str,
    /// `Peer`.
    pub kind: &'static str,
    /// The object's name.
    pub metadata: PeerMetadata,
    /// The spec.
    pub spec: PeerSpec,
}

/// A Peer object's metadata.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PeerMetadata {
    /// The name.
    pub name: String,
}

/// The mesh from a snapshot, with the nodes and peers that take part.
#[derive(Debug, Clone)]
pub struct OfflineMesh {
    /// Ready nodes, in source order.
    pub nodes: Vec<Node>,
    /// Ready peers, in source order.
    pub peers: Vec<Peer>,
    /// The granularity in force.
    pub granularity: Granularity,
    /// The WireGuard subnet in force.
    pub subnet: Cidr,
    /// The IPv6 WireGuard subnet of a dual-stack mesh.
    pub subnet6: Option<Cidr>,
    /// The listen port (`--port`, default 51820).
    pub port: u16,
}

impl OfflineMesh {
    /// Selects the ready nodes and peers and settles granularity (flag, else the source's, else
    /// `location`) and subnet (flag, else the source's, else `10.4.0.0/16`), reading the
    /// snapshot's settings as a mesh file's ([`crate::settings::resolve`]).
    pub fn new(
        snapshot: &Snapshot,
        overrides: &Overrides,
        readiness: Readiness,
    ) -> Result<Self, OfflineError> {
        let settings = resolve(&overrides.explicit(), Source::MeshFile(&snapshot.settings));
        Self::with_settings(snapshot, &settings, readiness)
    }

    /// Selects the ready nodes and peers, with settings resolved by the caller.
    pub fn with_settings(
        snapshot: &Snapshot,
        settings: &Settings,
        readiness: Readiness,
    ) -> Result<Self, OfflineError> {
        let nodes: Vec<Node> =
            snapshot.nodes.iter().filter(|n| n.is_ready(readiness)).cloned().collect();
        if nodes.is_empty() {
            return Err(OfflineError::NoNodes);
        }
        Ok(OfflineMesh {
            nodes,
            peers: snapshot.peers.iter().filter(|p| p.is_ready()).cloned().collect(),
            granularity: settings.granularity,
            subnet: settings.subnet,
            subnet6: settings.subnet6,
            port: settings.port,
        })
    }

    fn topology(
        &self,
        hostname: &str,
        port: u16,
        keepalive: Duration,
        service: &[Cidr],
    ) -> Result<Topology, OfflineError> {
        Ok(Topology::new(TopologyInput {
            nodes: &self.nodes,
            peers: &self.peers,
            granularity: self.granularity,
            hostname,
            port,
            key: PrivateKey::from_bytes([0; 32]),
            subnet: self.subnet,
            subnet6: self.subnet6,
            service_cidrs: service,
            persistent_keepalive: keepalive,
        })?)
    }

    fn last_node(&self) -> &Node {
        // `new` guarantees at least one node.
        &self.nodes[self.nodes.len() - 1]
    }

    fn node(&self, name: &str) -> Result<&Node, OfflineError> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| OfflineError::UnknownNode(name.into()))
    }

    fn peer(&self, name: &str) -> Result<&Peer, OfflineError> {
        self.peers
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| OfflineError::UnknownPeer(name.into()))
    }

    /// `kgctl graph`: the DOT text, seen from the last ready node, followed by a newline.
    pub fn graph(&self) -> Result<String, OfflineError> {
        let t = self.topology(&self.last_node().name.clone(), 0, Duration::ZERO, &[])?;
        let mut dot = t.dot();
        dot.push('\n');
        Ok(dot)
    }

    /// `kgctl leaders`: each location's leader, how it was elected and what the location's other
    /// nodes report about it (see [`crate::health`]), as a table, after a line that says whether
    /// the published verdicts are in use.
    pub fn leaders(&self) -> Result<String, OfflineError> {
        let t = self.topology(&self.last_node().name.clone(), 0, Duration::ZERO, &[])?;
        let silent = self.nodes.iter().filter(|n| n.health.is_none()).count();
        let mut text = if self.granularity != Granularity::Location {
            format!(
                "granularity {}: every node is its own segment and leads it\n",
                self.granularity.as_str()
            )
        } else if silent == 0 {
            "leader health: in use (every ready node publishes a verdict)\n".to_string()
        } else {
            format!(
                "leader health: not in use, upstream's election ({silent} of {} ready nodes \
                 publish no verdict: upstream's agent, kg --leader-health=false, or a mesh file)\n",
                self.nodes.len()
            )
        };
        let by_name: std::collections::HashMap<&str, &Node> =
            self.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
        let header = ["LOCATION", "LEADER", "ELECTION", "HEALTHY", "REPORTS", "DOWN", "NODES"];
        let mut rows = vec![header.map(String::from)];
        for s in &t.segments {
            let Some(location) = s.location.strip_prefix(crate::topology::LOCATION_PREFIX) else {
                continue;
            };
            let names: Vec<&str> = s.members.iter().map(|m| m.name.as_str()).collect();
            let group: Vec<&Node> = names.iter().filter_map(|n| by_name.get(n).copied()).collect();
            let down: Vec<&str> = (0..group.len())
                .filter(|&i| crate::health::votes(&group, i).is_down())
                .map(|i| group[i].name.as_str())
                .collect();
            let e = &s.election;
            let (healthy, reports) = if e.rule == crate::health::ElectionRule::Upstream {
                ("-".to_string(), "-".to_string())
            } else {
                let healthy = if e.healthy() { "yes" } else { "no" };
                (healthy.to_string(), format!("{} ok, {} down", e.votes.ok, e.votes.down))
            };
            let location = if location.is_empty() { "\"\"" } else { location };
            rows.push([
                location.to_string(),
                s.leader_member().name.clone(),
                e.to_string(),
                healthy,
                reports,
                if down.is_empty() { "-".to_string() } else { down.join(",") },
                names.join(","),
            ]);
        }
        if rows.len() == 1 {
            return Ok(text);
        }
        let widths: Vec<usize> = (0..header.len())
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        for row in &rows {
            let cells: Vec<String> =
                row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
            text += cells.join("  ").trim_end();
            text.push('\n');
        }
        Ok(text)
    }

    /// `kgctl showconf node NAME`.
    pub fn showconf_node(
        &self,
        name: &str,
        as_peer: Option<AsPeer<'_>>,
    ) -> Result<ShowConf, OfflineError> {
        let node = self.node(name)?;
        let t = self.topology(name, self.port, node.persistent_keepalive, &[])?;
        if !t.peer_conf(None).peers.iter().any(|p| p.public_key == node.key) {
            return Ok(ShowConf::NotLeader(format!("Node {name:?} is not a leader node")));
        }
        let Some(as_peer) = as_peer else { return Ok(ShowConf::Text(t.conf().to_ini())) };
        let Some(mut peer) = t.as_peer() else {
            return Ok(ShowConf::NotLeader(format!("Node {name:?} is not a leader node")));
        };
        append_unique(&mut peer.allowed_ips, as_peer.allowed_ips);
        Ok(render_peer(name, peer, as_peer.object))
    }

    /// `kgctl showconf peer NAME`.
    pub fn showconf_peer(
        &self,
        name: &str,
        as_peer: Option<AsPeer<'_>>,
    ) -> Result<ShowConf, OfflineError> {
        let peer = self.peer(name)?;
        let Some(as_peer) = as_peer else {
            let hostname = self.last_node().name.clone();
            let t = self.topology(&hostname, 51820, peer.persistent_keepalive, &[])?;
            return Ok(ShowConf::Text(t.peer_conf(Some(name)).to_ini()));
        };
        let mut config = PeerConfig {
            public_key: peer.public_key,
            preshared_key: peer.preshared_key,
            endpoint: peer.endpoint.clone(),
            allowed_ips: peer.allowed_ips.clone(),
            persistent_keepalive: u16::try_from(peer.persistent_keepalive.as_secs())
                .unwrap_or(u16::MAX),
        };
        append_unique(&mut config.allowed_ips, as_peer.allowed_ips);
        Ok(render_peer(name, config, as_peer.object))
    }

    /// `kgctl plan node NAME`: everything the agent on NAME would apply.
    pub fn plan(
        &self,
        name: &str,
        options: &PlanOptions,
        service_cidrs: &[Cidr],
    ) -> Result<Plan, OfflineError> {
        let node = self.node(name)?;
        let port = node.endpoint.as_ref().map(|e| e.port()).filter(|p| *p > 0).unwrap_or(self.port);
        let t = self.topology(name, port, node.persistent_keepalive, service_cidrs)?;
        let options = PlanOptions { node: name.to_string(), ..options.clone() };
        Ok(Plan::new(&t, t.leader.then(|| t.conf_for_device()), &options))
    }

    /// `kgctl validate`: every finding for the snapshot the mesh was built from, reading the
    /// snapshot's settings as a mesh file's.
    pub fn validate(snapshot: &Snapshot, overrides: &Overrides) -> Vec<Finding> {
        let settings = resolve(&overrides.explicit(), Source::MeshFile(&snapshot.settings));
        Self::validate_with_settings(snapshot, &settings)
    }

    /// `kgctl validate` with settings resolved by the caller.
    pub fn validate_with_settings(snapshot: &Snapshot, settings: &Settings) -> Vec<Finding> {
        validate(&ValidationInput {
            nodes: &snapshot.nodes,
            peers: &snapshot.peers,
            invalid: &snapshot.invalid,
            ignored: &snapshot.ignored,
            granularity: settings.granularity,
            subnet: settings.subnet,
            subnet6: settings.subnet6,
            service_cidrs: &[],
        })
    }
}

/// `--as-peer` options.
#[derive(Debug, Clone, Copy)]
pub struct AsPeer<'a> {
    /// `--allowed-ips` to append (de-duplicated, first occurrence kept).
    pub allowed_ips: &'a [Cidr],
    /// `-o yaml|json`: a Peer object instead of a `[Peer]` section.
    pub object: bool,
}

fn append_unique(list: &mut Vec<Cidr>, extra: &[Cidr]) {
    for c in extra {
        if !list.contains(c) {
            list.push(*c);
        }
    }
}

fn render_peer(name: &str, config: PeerConfig, object: bool) -> ShowConf {
    if !object {
        return ShowConf::Text(Config { interface: None, peers: vec![config] }.to_ini());
    }
    let peer = Peer {
        name: name.to_string(),
        allowed_ips: config.allowed_ips,
        public_key: config.public_key,
        preshared_key: config.preshared_key,
        persistent_keepalive: Duration::from_secs(config.persistent_keepalive.into()),
        endpoint: config.endpoint,
    };
    ShowConf::Peer(PeerObject {
        api_version: "kilo.squat.ai/v1alpha1",
        kind: "Peer",
        metadata: PeerMetadata { name: name.to_string() },
        spec: spec_from_peer(&peer),
    })
}
