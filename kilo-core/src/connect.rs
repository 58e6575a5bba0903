//! `kgctl connect` (upstream 12.4), the pure part: what this machine, joining the mesh as a
//! Kilo Peer, configures on every resync: its WireGuard configuration and its routes, computed
//! from the cluster's nodes and peers. The runtime (the Peer object, the device, the loop) is
//! `kilo-agent`'s.

use crate::firewall::RuleSet;
use crate::plan::{Plan, PlanInterface};
use crate::routes::{Encapsulator, EncapsulatorConfig, Route};
use crate::settings::{self, Explicit, Origin, Source};
use crate::wireguard::{Config, InterfaceConfig};
use crate::{
    Cidr, Encapsulation, Node, Peer, PrivateKey, Readiness, Snapshot, Topology, TopologyInput,
};

/// Why the peer's configuration cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// No node takes part in the mesh.
    #[error("did not find any valid Kilo nodes in the cluster")]
    NoNodes,
    /// No node carries a `wireguard-ip` annotation (and no `--subnet` was given).
    #[error("did not find a valid Kilo subnet on any node")]
    NoSubnet,
    /// The peer is missing or not valid.
    #[error("did not find any valid peer named {0:?} in the cluster")]
    PeerNotReady(String),
    /// The topology cannot be built.
    #[error(transparent)]
    Topology(#[from] crate::topology::TopologyError),
}

/// What the peer's configuration depends on besides the cluster.
#[derive(Debug, Clone)]
pub struct ConnectInput<'a> {
    /// The peer's name.
    pub peer: &'a str,
    /// `--mesh-granularity`, `--subnet` and `--port` (the local listen port), resolved with
    /// the nodes by [`crate::settings::resolve`].
    pub flags: Explicit,
    /// This machine's private key.
    pub private_key: &'a PrivateKey,
    /// `--interface`.
    pub interface: &'a str,
    /// `--allowed-ips`: extra CIDRs reached through the mesh.
    pub allowed_ips: &'a [Cidr],
}

/// The WireGuard configuration and routes this machine applies.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectPlan {
    /// `PeerConf(peer)` with this machine's private key and listen port.
    pub config: Config,
    /// `PeerRoutes(peer, interface, allowed IPs)`.
    pub routes: Vec<Route>,
}

impl ConnectPlan {
    /// The plan as the agent's driver applies it on this machine: the WireGuard configuration
    /// on `interface` (up, with `address`, the peer's own allowed IP, as its only address) and
    /// the routes; no policy rules, no firewall rules, no tunnel (a peer is not a node).
    pub fn into_plan(self, peer: &str, interface: &str, address: Cidr) -> Plan {
        Plan {
            node: peer.to_string(),
            segment: format!("peer:{peer}"),
            leader: false,
            interface: PlanInterface {
                name: interface.to_string(),
                address: Some(address),
                address6: None,
                up: true,
                wireguard: self.config.clone(),
            },
            wireguard: Some(self.config),
            routes: self.routes,
            rules: Vec::new(),
            firewall: RuleSet::default(),
            encapsulation: EncapsulatorConfig {
                encapsulator: Encapsulator::Noop,
                strategy: Encapsulation::Never,
            },
            tunnel_address: None,
            warnings: Vec::new(),
        }
    }
}

/// Upstream's resync step (12.4): ready nodes; settings from the flags and the nodes as every
/// kgctl command resolves them ([`crate::settings`]: the subnet of the last node with a
/// `wireguard-ip`, where upstream's connect takes the first), an error when no subnet is given
/// or found; `--allowed-ips` appended to the allowed-location IPs of the alphabetically
/// first ready node; the peer must be ready; topology seen from the last ready node with the
/// peer's keepalive.
pub fn peer_plan(
    snapshot: &Snapshot,
    readiness: Readiness,
    input: &ConnectInput<'_>,
) -> Result<ConnectPlan, ConnectError> {
    let settings = settings::resolve(
        &input.flags,
        Source::KubernetesNodes { nodes: &snapshot.nodes, live: true },
    );
    if settings.subnet_origin == Origin::Default {
        return Err(ConnectError::NoSubnet);
    }
    let mut nodes: Vec<Node> =
        snapshot.nodes.iter().filter(|n| n.is_ready(readiness)).cloned().collect();
    let hostname = nodes.last().ok_or(ConnectError::NoNodes)?.name.clone();
    if let Some(first) = nodes.iter_mut().min_by(|a, b| a.name.cmp(&b.name)) {
        first.allowed_location_ips.extend_from_slice(input.allowed_ips);
    }
    let peers: Vec<Peer> = snapshot.peers.iter().filter(|p| p.is_ready()).cloned().collect();
    let me = peers
        .iter()
        .find(|p| p.name == input.peer)
        .ok_or_else(|| ConnectError::PeerNotReady(input.peer.to_string()))?;
    let topology = Topology::new(TopologyInput {
        nodes: &nodes,
        peers: &peers,
        granularity: settings.granularity,
        hostname: &hostname,
        port: settings.port,
        key: input.private_key.clone(),
        subnet: settings.subnet,
        subnet6: settings.subnet6,
        service_cidrs: &[],
        persistent_keepalive: me.persistent_keepalive,
    })?;
    let mut config = topology.peer_conf(Some(input.peer));
    config.interface = Some(InterfaceConfig {
        private_key: Some(input.private_key.clone()),
        listen_port: Some(settings.port),
    });
    let routes = topology.peer_routes(input.peer, input.interface, input.allowed_ips);
    Ok(ConnectPlan { config, routes })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::fixtures;

    /// `examples/upstream-fixture.yaml` as the Kubernetes backend reads it: upstream's fixture
    /// with the wireguard-ip annotations of nodes a and b, every node checked in at 1700000000,
    /// and node a's keepalive 0 (an annotation holds whole seconds).
    fn fixture() -> Snapshot {
        let mut nodes = fixtures::nodes();
        for node in &mut nodes {
            node.last_seen = 1_700_000_000;
            node.granularity = Some(crate::Granularity::Location);
        }
        nodes[0].persistent_keepalive = Duration::ZERO;
        nodes[0].wireguard_ip = Some("10.4.0.1/16".parse().unwrap());
        nodes[1].wireguard_ip = Some("10.4.0.2/16".parse().unwrap());
        Snapshot { nodes, peers: fixtures::peers(), ..Snapshot::default() }
    }

    fn input<'a>(peer: &'a str, key: &'a PrivateKey, extra: &'a [Cidr]) -> ConnectInput<'a> {
        ConnectInput {
            peer,
            flags: Explicit { port: Some(51821), ..Explicit::default() },
            private_key: key,
            interface: "kilo0",
            allowed_ips: extra,
        }
    }

    #[test]
    fn the_peer_gets_every_segment_then_the_other_peers_with_its_own_interface() {
        let key = fixtures::private_key();
        let plan =
            peer_plan(&fixture(), Readiness::IgnoringLastSeen, &input("b", &key, &[])).unwrap();
        let interface = plan.config.interface.clone().unwrap();
        assert_eq!(interface.private_key, Some(key.clone()));
        assert_eq!(interface.listen_port, Some(51821));
        let ini = plan.config.to_ini();
        assert!(ini.starts_with("[Interface]\nPrivateKey = cHJpdg"), "{ini}");
        let keys: Vec<String> =
            plan.config.peers.iter().map(|p| p.public_key.to_base64()).collect();
        assert_eq!(
            keys,
            [
                "a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                "a2V5MgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                "a2V5NAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                "a2V5NAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            ]
        );
    }

    #[test]
    fn the_peers_routes_go_through_each_segments_wireguard_ip() {
        let key = fixtures::private_key();
        let plan =
            peer_plan(&fixture(), Readiness::IgnoringLastSeen, &input("b", &key, &[])).unwrap();
        let text: Vec<String> = plan.routes.iter().map(|r| r.to_string()).collect();
        let first = &text[0];
        assert!(first.contains("10.2.1.0/24") && first.contains("10.4.0.1"), "{text:?}");
        assert!(text.iter().any(|r| r.contains("10.4.0.3/32") && r.contains("kilo0")), "{text:?}");
        assert!(text.iter().any(|r| r.contains("10.5.0.0/24")), "{text:?}");
    }

    #[test]
    fn extra_allowed_ips_go_to_the_alphabetically_first_node_and_get_a_route() {
        let key = fixtures::private_key();
        let extra: Vec<Cidr> = vec!["10.96.0.0/12".parse().unwrap()];
        let plan =
            peer_plan(&fixture(), Readiness::IgnoringLastSeen, &input("b", &key, &extra)).unwrap();
        let segment_a = &plan.config.peers[0];
        assert!(segment_a.allowed_ips.contains(&extra[0]), "{segment_a:?}");
        assert!(plan.routes.iter().any(|r| r.to_string().contains("10.96.0.0/12")));
    }

    #[test]
    fn a_missing_peer_or_subnet_or_node_is_an_error() {
        let key = fixtures::private_key();
        let snapshot = fixture();
        assert_eq!(
            peer_plan(&snapshot, Readiness::IgnoringLastSeen, &input("zz", &key, &[])),
            Err(ConnectError::PeerNotReady("zz".into()))
        );
        let mut stale = snapshot.clone();
        for node in &mut stale.nodes {
            node.last_seen = 1;
        }
        assert_eq!(
            peer_plan(&stale, Readiness::At(1_000_000), &input("b", &key, &[])),
            Err(ConnectError::NoNodes)
        );
        let mut no_subnet = snapshot.clone();
        for node in &mut no_subnet.nodes {
            node.wireguard_ip = None;
        }
        assert_eq!(
            peer_plan(&no_subnet, Readiness::IgnoringLastSeen, &input("b", &key, &[])),
            Err(ConnectError::NoSubnet)
        );
    }
}
