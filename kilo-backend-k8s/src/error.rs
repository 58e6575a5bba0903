//! The errors of the Kubernetes backend and the webhook.

use std::path::PathBuf;

/// What went wrong talking to Kubernetes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KubeError {
    /// The kubeconfig file could not be read or used.
    #[error("cannot use the kubeconfig {}", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Neither a kubeconfig nor the in-cluster configuration was found.
    #[error("cannot find a Kubernetes configuration (kubeconfig or in-cluster)")]
    Infer {
        /// Why.
        #[source]
        source: kube::config::InferConfigError,
    },
    /// The `--master` URL does not parse.
    #[error("the API server URL {url:?} is not a URL")]
    MasterUrl {
        /// The URL as given.
        url: String,
    },
    /// The client could not be built from the configuration.
    #[error("cannot build a Kubernetes client")]
    Client {
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// A list or watch failed (it is retried with back-off on the next call).
    #[error("listing or watching {resource} failed (retried with back-off)")]
    Watch {
        /// `nodes` or `peers`.
        resource: &'static str,
        /// Why.
        #[source]
        source: kube::runtime::watcher::Error,
    },
    /// The watch streams ended.
    #[error("the watch of nodes and peers ended")]
    Ended,
    /// Patching a node's annotations failed.
    #[error("cannot patch the annotations of node {node:?}")]
    Patch {
        /// The node.
        node: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
}
