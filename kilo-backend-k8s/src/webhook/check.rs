//! What the webhook decides about a Peer: nothing until it has read the cluster (it fails closed),
//! then the admission rules of [`kilo_core::admission`] against its view of the cluster.

use kilo_core::admission::{Cluster, Refusal, check_spec};
use kilo_core::peer_spec::PeerSpec;

use super::ClusterView;

/// Why the webhook refuses a Peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerRejection {
    /// The webhook has not (yet) listed the cluster's nodes and peers, so it cannot tell whether
    /// the Peer would hijack traffic: it refuses every Peer until it has.
    #[error(
        "the webhook has not yet read the cluster's nodes and peers; retry in a few seconds{}",
        reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default()
    )]
    ClusterUnknown {
        /// Why, when known (the last listing error, or no client).
        reason: Option<String>,
    },
    /// The Peer breaks an admission rule.
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// Whether the Peer `name` with `spec` may be admitted into the cluster as `view` sees it:
/// refused while the view has not been listed; then upstream's `Validate()` (its message wins)
/// and every rule of [`kilo_core::admission`] against the view's nodes, peers, WireGuard
/// subnet(s) and service CIDRs. The Peer's own current version (same name, an UPDATE) is not
/// "another Peer".
pub fn check_peer(spec: &PeerSpec, name: &str, view: &ClusterView) -> Result<(), PeerRejection> {
    if !view.listed {
        return Err(PeerRejection::ClusterUnknown { reason: view.not_listed_reason.clone() });
    }
    let subnets = view.subnets();
    let cluster = Cluster {
        nodes: &view.nodes,
        peers: &view.peers,
        wireguard_subnets: &subnets,
        service_cidrs: &view.service_cidrs,
    };
    Ok(check_spec(name, spec, &cluster)?)
}
