//! What `kgctl` does with a parsed snapshot, for the file-backend targets.

use std::collections::HashSet;

use kilo_core::offline::{OfflineMesh, Overrides};
use kilo_core::{Readiness, Snapshot};

/// Names are unique per kind; `validate` and, when some node is ready, `graph` and one node's
/// `showconf` answer without a panic.
pub fn exercise(snapshot: &Snapshot) {
    let mut names = HashSet::new();
    for node in &snapshot.nodes {
        assert!(names.insert(node.name.as_str()), "node {:?} kept twice", node.name);
    }
    let mut names = HashSet::new();
    for peer in &snapshot.peers {
        assert!(names.insert(peer.name.as_str()), "peer {:?} kept twice", peer.name);
    }
    // Bound the work per input: the topology is quadratic in the number of nodes.
    if snapshot.nodes.len() + snapshot.peers.len() > 64 {
        return;
    }
    let overrides = Overrides::default();
    for finding in OfflineMesh::validate(snapshot, &overrides) {
        let _ = finding.to_string();
    }
    let readiness = if snapshot.settings.static_mesh {
        Readiness::StaticMesh
    } else {
        Readiness::IgnoringLastSeen
    };
    if let Ok(mesh) = OfflineMesh::new(snapshot, &overrides, readiness) {
        let _ = mesh.graph();
        if let Some(node) = mesh.nodes.first() {
            let _ = mesh.showconf_node(&node.name.clone(), None);
        }
    }
}
