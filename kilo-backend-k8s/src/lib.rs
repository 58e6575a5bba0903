//! Cluster state from Kubernetes: Nodes with `kilo.squat.ai/*` annotations and the `Peer` CRD,
//! via kube-rs; and the Peer admission webhook (`kg webhook`).
//!
//! - [`crd`]: the `Peer` custom resource and its CRD manifest ([`crd_yaml`]).
//! - [`KubeBackend`]: the [`kilo_core::Backend`] over the Kubernetes API (watch Nodes and Peers,
//!   publish the local node's annotations, clean them up).
//! - [`webhook`]: the admission webhook ([`webhook::serve_webhook`]).
//! - [`yaml`]: Kubernetes objects as YAML ([`yaml::to_yaml`]).
//!
//! ```no_run
//! use kilo_backend_k8s::{KubeBackend, KubeBackendConfig, client};
//! use kilo_core::Backend;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = client(None, None).await?; // $KUBECONFIG, ~/.kube/config or in-cluster
//! let mut backend = KubeBackend::new(client, KubeBackendConfig::default());
//! let snapshot = backend.snapshot().await?;
//! println!("{} nodes, {} peers", snapshot.nodes.len(), snapshot.peers.len());
//! while let Some(event) = backend.next_event().await {
//!     println!("{:?}", event?);
//! }
//! # Ok(())
//! # }
//! ```

mod backend;
pub mod connect;
pub mod crd;
mod error;
mod kubeconfig;
mod lenient;
pub mod snapshot;
#[cfg(feature = "test-support")]
#[allow(missing_docs)]
pub mod testing;
pub mod translate;
pub mod webhook;
pub mod yaml;

pub use backend::{
    DEFAULT_WATCH_IDLE_TIMEOUT, KubeBackend, KubeBackendConfig, clean_up_patch, client,
    publish_patch,
};
pub use crd::{Peer, PeerSpec, crd_yaml, peer_crd};
pub use error::KubeError;
