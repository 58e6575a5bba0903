//! The interface between the core and the places cluster state comes from (Kubernetes, files).
//!
//! Backends translate their world into [`Node`]s and [`Peer`]s and back; they never decide
//! topology. The trait uses `async fn` so that no runtime is named here.

use std::future::Future;

use crate::{Cidr, Granularity, Node, Peer};

/// What kind of object a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ObjectKind {
    /// A node.
    Node,
    /// A peer.
    Peer,
    /// Another kind of object (a file backend skips, say, a `Pod` in a Kubernetes YAML file).
    Other,
}

/// An object the backend left out because it does not parse, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Node or peer.
    pub kind: ObjectKind,
    /// The object's name (or its position, when it has no usable name).
    pub name: String,
    /// What is wrong, naming the field.
    pub message: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            ObjectKind::Node => "node",
            ObjectKind::Peer => "peer",
            ObjectKind::Other => "object",
        };
        write!(f, "{kind} {:?}: {}", self.name, self.message)
    }
}

/// Mesh-wide settings a source may carry (the mesh file's `[mesh]` table, or what can be derived
/// from Kubernetes annotations).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MeshSettings {
    /// The granularity, if the source names one.
    pub granularity: Option<Granularity>,
    /// The WireGuard subnet, if the source names one (the IPv4 one of a dual-stack mesh).
    pub subnet: Option<Cidr>,
    /// The IPv6 WireGuard subnet of a dual-stack mesh, if the source names one.
    pub subnet6: Option<Cidr>,
    /// The default listen port, if the source names one.
    pub port: Option<u16>,
    /// Whether this is a static mesh (contract 3), where nodes need only a name and a key:
    /// callers select nodes with [`crate::mesh::Readiness::StaticMesh`].
    pub static_mesh: bool,
}

/// Everything a backend knows at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Mesh-wide settings.
    pub settings: MeshSettings,
    /// All nodes that translated, in source order.
    pub nodes: Vec<Node>,
    /// All peers that translated, in source order.
    pub peers: Vec<Peer>,
    /// Objects left out, with the reason.
    pub invalid: Vec<Invalid>,
    /// Objects kept, but with a field ignored because it does not parse (as upstream ignores it).
    pub ignored: Vec<Invalid>,
}

/// A change reported by a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[expect(
    clippy::large_enum_variant,
    reason = "a node is moved once per event; boxing would allocate for every event"
)]
pub enum Event {
    /// A node was added or changed.
    NodeChanged(Node),
    /// A node was removed.
    NodeRemoved(String),
    /// A peer was added or changed.
    PeerChanged(Peer),
    /// A peer was removed.
    PeerRemoved(String),
    /// Everything was re-read: replace the whole state.
    Reset(Snapshot),
    /// An object was seen but does not parse; it is left out.
    Invalid(Invalid),
}

/// A source of cluster state.
pub trait Backend {
    /// The backend's error type.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The current state.
    fn snapshot(&mut self) -> impl Future<Output = Result<Snapshot, Self::Error>> + Send;

    /// The next change, or `None` when the source has ended.
    fn next_event(&mut self) -> impl Future<Output = Option<Result<Event, Self::Error>>> + Send;

    /// Publishes what the local agent knows about its own node (Kubernetes: the annotations kg
    /// owns). Read-only sources (a mesh file) document that they publish nothing.
    fn publish_local(
        &mut self,
        node: &Node,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Removes what [`Backend::publish_local`] wrote for `name`, tolerating absent data.
    fn clean_up_local(
        &mut self,
        name: &str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}
