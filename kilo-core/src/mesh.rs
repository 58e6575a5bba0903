//! The mesh's objects: [`Node`]s (machines running the agent) and [`Peer`]s (external WireGuard
//! peers such as laptops or other clusters), with upstream's readiness rules.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::health::LeaderHealth;
use crate::{Cidr, Endpoint, Granularity, Key, PresharedKey};

/// How long a node's check-in stays fresh: upstream's two check-in periods of 30 s.
pub const READINESS_WINDOW_SECS: i64 = 60;

/// A node of the mesh (upstream `mesh.Node`).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    /// The node's name (Kubernetes node name, or the mesh file's `name`).
    pub name: String,
    /// The WireGuard endpoint others dial.
    pub endpoint: Option<Endpoint>,
    /// Whether the endpoint was set by the administrator (`force-endpoint`), so that the agent
    /// never replaces it with a detected one (contract C9).
    pub endpoint_forced: bool,
    /// The WireGuard public key; the zero key means unknown.
    pub key: Key,
    /// Set by `force-internal-ip: ""` or `"-"`: treat the node as having no private IP.
    pub no_internal_ip: bool,
    /// The private IP with its interface mask (`10.0.0.5/24`).
    pub internal_ip: Option<Cidr>,
    /// Whether the private IP was set by the administrator (`force-internal-ip`).
    pub internal_ip_forced: bool,
    /// The node's IPv6 private IP on a dual-stack LAN, with its interface mask, when
    /// `internal_ip` is IPv4 (`None` otherwise: a single-stack LAN keeps its one address in
    /// `internal_ip`, whatever its family).
    pub internal_ip6: Option<Cidr>,
    /// Cilium's `cilium_host` address in cilium compatibility mode.
    pub cni_compatibility_ip: Option<Cidr>,
    /// Unix seconds of the node's last check-in.
    pub last_seen: i64,
    /// Whether the node volunteers to lead its location.
    pub leader: bool,
    /// The logical location; `""` is the default location.
    pub location: String,
    /// The node's `persistent-keepalive` (zero: none).
    pub persistent_keepalive: Duration,
    /// The pod CIDRs (Kubernetes `spec.podCIDRs`, network-masked), or site subnets. Upstream uses
    /// only the first; single-stack meshes have exactly one.
    pub subnets: Vec<Cidr>,
    /// The WireGuard address the node published as leader (`10.4.0.1/16`).
    pub wireguard_ip: Option<Cidr>,
    /// The IPv6 WireGuard address the node published as leader of a dual-stack mesh
    /// (`fd04::1/64`); `wireguard_ip` then holds the IPv4 one.
    pub wireguard_ip6: Option<Cidr>,
    /// Endpoints the node observed for NAT-ed peers, by public key.
    pub discovered_endpoints: Option<BTreeMap<Key, SocketAddr>>,
    /// Extra CIDRs routable through this node's location.
    pub allowed_location_ips: Vec<Cidr>,
    /// The granularity the node's agent runs with, if published.
    pub granularity: Option<Granularity>,
    /// The node's leader-health verdict (see [`crate::health`]); `None` when its agent publishes
    /// none (upstream's agent, a mesh file).
    pub health: Option<LeaderHealth>,
}

impl Node {
    /// The node's private IPs: `internal_ip`, then `internal_ip6`.
    pub fn internal_ips(&self) -> impl Iterator<Item = Cidr> + '_ {
        self.internal_ip.iter().chain(&self.internal_ip6).copied()
    }

    /// The first pod CIDR (upstream's single `Subnet`).
    pub fn subnet(&self) -> Option<Cidr> {
        self.subnets.first().copied()
    }

    /// Upstream's `Ready()` minus the last-seen check: a ready endpoint, a non-zero key and a
    /// pod CIDR. Used for snapshots (files), where last-seen means nothing.
    pub fn is_ready_ignoring_last_seen(&self) -> bool {
        self.endpoint.as_ref().is_some_and(Endpoint::is_ready)
            && !self.key.is_zero()
            && !self.subnets.is_empty()
    }

    /// Upstream's `Ready()` at Unix time `now`: as [`Node::is_ready_ignoring_last_seen`] and a
    /// check-in younger than 60 s.
    pub fn is_ready_at(&self, now: i64) -> bool {
        self.is_ready_ignoring_last_seen()
            && now.saturating_sub(self.last_seen) < READINESS_WINDOW_SECS
    }
}

/// Which nodes take part in a mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Readiness {
    /// Upstream's rule at Unix time `now`: endpoint, key, pod CIDR and a fresh check-in.
    At(i64),
    /// Upstream's rule without the check-in (a Kubernetes snapshot read from a file).
    IgnoringLastSeen,
    /// A static mesh file: every node with a key takes part; a node without an endpoint dials
    /// out, a node without a subnet routes only its own addresses (contract 3).
    StaticMesh,
}

impl Node {
    /// Whether the node takes part in the mesh under `readiness`.
    pub fn is_ready(&self, readiness: Readiness) -> bool {
        match readiness {
            Readiness::At(now) => self.is_ready_at(now),
            Readiness::IgnoringLastSeen => self.is_ready_ignoring_last_seen(),
            Readiness::StaticMesh => !self.key.is_zero(),
        }
    }
}

/// An external WireGuard peer (upstream `mesh.Peer`, the `Peer` CRD).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Peer {
    /// The peer's name.
    pub name: String,
    /// The addresses routed to the peer, host bits kept as written.
    pub allowed_ips: Vec<Cidr>,
    /// The peer's WireGuard public key.
    pub public_key: Key,
    /// An optional pre-shared key.
    pub preshared_key: Option<PresharedKey>,
    /// The peer's keepalive (zero: none). Non-zero enables NAT endpoint substitution.
    pub persistent_keepalive: Duration,
    /// Where to dial the peer, if it can be dialed.
    pub endpoint: Option<Endpoint>,
}

impl Peer {
    /// Upstream's readiness: at least one allowed IP and a non-zero key.
    pub fn is_ready(&self) -> bool {
        !self.allowed_ips.is_empty() && !self.public_key.is_zero()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upstream's `TestReady` table.
    #[test]
    fn node_readiness_matches_upstream_table() {
        let internal: Cidr = "1.1.1.1/32".parse().unwrap();
        let subnet: Cidr = "10.2.0.0/16".parse().unwrap();
        let key = Key::from_bytes([7; 32]);
        let ep = |s: &str| s.parse::<Endpoint>().ok();
        let now = 1_700_000_000;
        let cases = [
            ("empty fields", Node::default(), false),
            (
                "empty endpoint",
                Node { internal_ip: Some(internal), key, subnets: vec![subnet], ..Node::default() },
                false,
            ),
            (
                "empty endpoint port",
                Node {
                    endpoint: ep("2.2.2.2:0"),
                    internal_ip: Some(internal),
                    subnets: vec![subnet],
                    ..Node::default()
                },
                false,
            ),
            (
                "empty internal IP",
                Node { endpoint: ep("2.2.2.2:51820"), subnets: vec![subnet], ..Node::default() },
                false,
            ),
            (
                "empty key",
                Node {
                    endpoint: ep("2.2.2.2:51820"),
                    internal_ip: Some(internal),
                    subnets: vec![subnet],
                    ..Node::default()
                },
                false,
            ),
            (
                "empty subnet",
                Node {
                    endpoint: ep("2.2.2.2:51820"),
                    internal_ip: Some(internal),
                    key,
                    ..Node::default()
                },
                false,
            ),
            (
                "valid",
                Node {
                    endpoint: ep("2.2.2.2:51820"),
                    internal_ip: Some(internal),
                    key,
                    last_seen: now,
                    subnets: vec![subnet],
                    ..Node::default()
                },
                true,
            ),
        ];
        for (name, node, want) in cases {
            assert_eq!(node.is_ready_at(now), want, "{name}");
        }
        let stale = Node {
            endpoint: ep("2.2.2.2:51820"),
            key,
            last_seen: now - 60,
            subnets: vec![subnet],
            ..Node::default()
        };
        assert!(!stale.is_ready_at(now));
        assert!(stale.is_ready_ignoring_last_seen());
    }
}
