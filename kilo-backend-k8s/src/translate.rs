//! Kubernetes objects to mesh objects: a `v1` Node through the annotation codec
//! ([`kilo_core::annotations::node_from_object`]), a `Peer` through upstream's `Validate()` and
//! `translatePeer` ([`kilo_core::peer_spec`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node as KubeNode;
use kilo_core::annotations::{AnnotationIssue, NodeObject, node_from_object};
use kilo_core::backend::{Invalid, ObjectKind};
use kilo_core::peer_spec::{self, validate};
use kilo_core::{Node, Peer as MeshPeer};

use crate::crd::Peer;

/// The pod CIDRs of a Node: `spec.podCIDRs`, or `[spec.podCIDR]` when the list is empty.
pub fn pod_cidrs(node: &KubeNode) -> Vec<String> {
    let Some(spec) = node.spec.as_ref() else { return Vec::new() };
    match spec.pod_cidrs.as_ref().filter(|l| !l.is_empty()) {
        Some(list) => list.clone(),
        None => spec.pod_cidr.iter().cloned().collect(),
    }
}

/// Upstream's `translateNode` over a Kubernetes Node: the mesh node and the annotations that were
/// ignored because they do not parse. `topology_label` is the location fallback label.
pub fn node_from_kube(node: &KubeNode, topology_label: &str) -> (Node, Vec<AnnotationIssue>) {
    let empty = BTreeMap::new();
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let annotations = node.metadata.annotations.as_ref().unwrap_or(&empty);
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let cidrs = pod_cidrs(node);
    let object = NodeObject { name, annotations, labels, pod_cidrs: &cidrs };
    node_from_object(&object, topology_label)
}

/// The annotation issues of a node as [`Invalid`] records (the node is kept; the fields ignored).
pub fn issues_as_ignored(name: &str, issues: &[AnnotationIssue]) -> Vec<Invalid> {
    issues
        .iter()
        .map(|issue| Invalid {
            kind: ObjectKind::Node,
            name: name.to_string(),
            message: issue.to_string(),
        })
        .collect()
}

/// A `Peer` object as a mesh peer: upstream's `Validate()` then `translatePeer`. An invalid Peer
/// is an [`Invalid`] naming the peer and carrying upstream's message.
pub fn peer_from_kube(peer: &Peer) -> Result<MeshPeer, Invalid> {
    let name = peer.metadata.name.as_deref().unwrap_or_default();
    let spec: peer_spec::PeerSpec = (&peer.spec).into();
    validate(&spec).map_err(|e| Invalid {
        kind: ObjectKind::Peer,
        name: name.to_string(),
        message: e.to_string(),
    })?;
    Ok(peer_spec::peer_from_spec(name, &spec))
}
