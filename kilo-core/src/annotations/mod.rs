//! The `kilo.squat.ai/*` annotation codec: a Kubernetes Node's annotations, labels and pod CIDRs
//! to a [`Node`] (upstream's `translateNode`), the annotations the agent writes for its own node,
//! and upstream's `nodesAreEqual`.
//!
//! Reading never fails, as upstream's never does: a value that does not parse is ignored exactly
//! as upstream ignores it, and reported as an [`AnnotationIssue`] so that tools can say so.

mod discovered;
pub(crate) mod go;
mod translate;

use std::collections::BTreeMap;
use std::fmt;

use crate::{Endpoint, Node};

pub use translate::node_from_object;

/// The prefix of every Kilo annotation.
pub const PREFIX: &str = "kilo.squat.ai/";

/// The annotation keys.
pub mod key {
    /// The node's WireGuard endpoint as last published (kg).
    pub const ENDPOINT: &str = "kilo.squat.ai/endpoint";
    /// A user-set endpoint that overrides [`ENDPOINT`] when it parses; its port is the listen port.
    pub const FORCE_ENDPOINT: &str = "kilo.squat.ai/force-endpoint";
    /// The node's private IP with its interface mask, or `""` (kg).
    pub const INTERNAL_IP: &str = "kilo.squat.ai/internal-ip";
    /// The node's IPv6 private IP on a dual-stack LAN, or `""` (kg; upstream ignores it).
    /// Only read beside an IPv4 [`INTERNAL_IP`].
    pub const INTERNAL_IP6: &str = "kilo.squat.ai/internal-ip6";
    /// A user-set private IP; `""` or `"-"` means the node has none.
    pub const FORCE_INTERNAL_IP: &str = "kilo.squat.ai/force-internal-ip";
    /// The node's WireGuard public key, base64 (kg).
    pub const KEY: &str = "kilo.squat.ai/key";
    /// The node's last check-in, decimal Unix seconds (kg).
    pub const LAST_SEEN: &str = "kilo.squat.ai/last-seen";
    /// Presence makes the node volunteer as its location's leader (user).
    pub const LEADER: &str = "kilo.squat.ai/leader";
    /// The node's logical location; wins over the topology label when present (user).
    pub const LOCATION: &str = "kilo.squat.ai/location";
    /// The keepalive in whole seconds (user).
    pub const PERSISTENT_KEEPALIVE: &str = "kilo.squat.ai/persistent-keepalive";
    /// The leader's WireGuard address with the Kilo subnet's mask, or `""` (kg).
    pub const WIREGUARD_IP: &str = "kilo.squat.ai/wireguard-ip";
    /// The leader's IPv6 WireGuard address in a dual-stack mesh, with the IPv6 range's mask, or
    /// `""` (kg; upstream ignores it). Only read beside an IPv4 [`WIREGUARD_IP`].
    pub const WIREGUARD_IP6: &str = "kilo.squat.ai/wireguard-ip6";
    /// NAT-discovered endpoints of peers, JSON, or `""` (kg).
    pub const DISCOVERED_ENDPOINTS: &str = "kilo.squat.ai/discovered-endpoints";
    /// Comma-separated extra CIDRs routable in the node's location (user).
    pub const ALLOWED_LOCATION_IPS: &str = "kilo.squat.ai/allowed-location-ips";
    /// The mesh granularity the node's agent runs with (kg).
    pub const GRANULARITY: &str = "kilo.squat.ai/granularity";
    /// Cilium's `cilium_host` address in cilium compatibility mode, or `""` (kg).
    pub const CNI_COMPATIBILITY_IP: &str = "kilo.squat.ai/cni-compatibility-ip";
    /// The node's leader-health verdict (kg; upstream ignores it), or `""` when kg publishes
    /// none (see [`crate::health::LeaderHealth`]).
    pub const LEADER_HEALTH: &str = "kilo.squat.ai/leader-health";
}

/// The label whose value is a node's location when it has no location annotation.
pub const DEFAULT_TOPOLOGY_LABEL: &str = "topology.kubernetes.io/region";

/// Every annotation key the agent writes for its own node, in upstream's order. Clean-up removes
/// all of them, `cni-compatibility-ip` included (contract C13).
pub const AGENT_ANNOTATION_KEYS: &[&str] = &[
    key::ENDPOINT,
    key::INTERNAL_IP,
    key::KEY,
    key::LAST_SEEN,
    key::WIREGUARD_IP,
    key::DISCOVERED_ENDPOINTS,
    key::GRANULARITY,
    key::CNI_COMPATIBILITY_IP,
    key::LEADER_HEALTH,
    key::INTERNAL_IP6,
    key::WIREGUARD_IP6,
];

/// The Kubernetes Node fields Kilo reads.
#[derive(Debug, Clone, Copy)]
pub struct NodeObject<'a> {
    /// `metadata.name`.
    pub name: &'a str,
    /// `metadata.annotations`.
    pub annotations: &'a BTreeMap<String, String>,
    /// `metadata.labels`.
    pub labels: &'a BTreeMap<String, String>,
    /// `spec.podCIDRs` (or `[spec.podCIDR]`).
    pub pod_cidrs: &'a [String],
}

/// One annotation (or field) that did not parse and was ignored, as upstream ignores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotationIssue {
    /// The annotation key, or `spec.podCIDRs` for a pod CIDR.
    pub key: String,
    /// The value as found.
    pub value: String,
    /// What is wrong and what was used instead.
    pub message: String,
}

impl fmt::Display for AnnotationIssue {
    /// `key="value": message`, with a long value shortened.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}: {}", self.key, go::quote_short(&self.value), self.message)
    }
}

/// The annotations kg writes for its own node, in upstream's
/// exact formats: absent values are written as `""`.
pub fn agent_annotations(node: &Node) -> BTreeMap<String, String> {
    let opt = |c: Option<crate::Cidr>| c.map(|c| c.to_string()).unwrap_or_default();
    let values = [
        (key::ENDPOINT, node.endpoint.as_ref().map(Endpoint::to_string).unwrap_or_default()),
        (key::INTERNAL_IP, opt(node.internal_ip)),
        (key::KEY, node.key.to_base64()),
        (key::LAST_SEEN, node.last_seen.to_string()),
        (key::WIREGUARD_IP, opt(node.wireguard_ip)),
        (
            key::DISCOVERED_ENDPOINTS,
            node.discovered_endpoints.as_ref().map(discovered::encode).unwrap_or_default(),
        ),
        (key::GRANULARITY, node.granularity.map(|g| g.as_str().to_string()).unwrap_or_default()),
        (key::CNI_COMPATIBILITY_IP, opt(node.cni_compatibility_ip)),
        (key::LEADER_HEALTH, node.health.as_ref().map(ToString::to_string).unwrap_or_default()),
        (key::INTERNAL_IP6, opt(node.internal_ip6)),
        (key::WIREGUARD_IP6, opt(node.wireguard_ip6)),
    ];
    values.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Upstream's `nodesAreEqual`, readiness of both judged at Unix time `now`:
/// endpoint (DNS first), key, WireGuard IP, internal IP, CNI compatibility IP, leader, location,
/// name, subnets (same networks, every one of them: upstream has a single one), readiness (not last-seen itself), keepalive, discovered
/// endpoints (IP and port per key; `None` differs from empty), allowed location IPs (ordered) and
/// granularity; and the leader-health verdict and the IPv6 internal and WireGuard IPs, which
/// upstream does not have. `no_internal_ip` is not compared, as upstream does not.
pub fn nodes_equal(a: &Node, b: &Node, now: i64) -> bool {
    let subnets_equal = a.subnets.len() == b.subnets.len()
        && a.subnets.iter().zip(&b.subnets).all(|(x, y)| x.network() == y.network());
    let discovered_equal = match (&a.discovered_endpoints, &b.discovered_endpoints) {
        (None, None) => true,
        (Some(x), Some(y)) => {
            x.len() == y.len()
                && x.iter().all(|(k, va)| {
                    y.get(k).is_some_and(|vb| va.ip() == vb.ip() && va.port() == vb.port())
                })
        }
        _ => false,
    };
    Endpoint::equal(a.endpoint.as_ref(), b.endpoint.as_ref(), true)
        && a.key == b.key
        && a.wireguard_ip == b.wireguard_ip
        && a.internal_ip == b.internal_ip
        && a.internal_ip6 == b.internal_ip6
        && a.wireguard_ip6 == b.wireguard_ip6
        && a.cni_compatibility_ip == b.cni_compatibility_ip
        && a.leader == b.leader
        && a.location == b.location
        && a.name == b.name
        && subnets_equal
        && a.is_ready_at(now) == b.is_ready_at(now)
        && a.persistent_keepalive == b.persistent_keepalive
        && discovered_equal
        && a.allowed_location_ips == b.allowed_location_ips
        && a.granularity == b.granularity
        && a.health == b.health
}
