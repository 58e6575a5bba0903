//! The agent on Kubernetes: the kube-rs backend, host address detection (upstream 9.1, re-run on
//! every resync: contract C9), the Peer admission webhook and the Peer CRD.

use std::net::SocketAddr;
use std::path::PathBuf;

use kilo_backend_k8s::webhook::{ServeLimits, WebhookConfig, WebhookError, serve_webhook};
use kilo_backend_k8s::{KubeBackend, KubeBackendConfig, client};
use kilo_core::Cidr;
use kilo_core::agent::HostFacts;
use kilo_net_linux::discovery::{DiscoveryError, discover_ips};
use kilo_net_linux::{Netlink, NetlinkError};

use crate::chain::chain;
use crate::linux::Detect;

/// Why the agent or the webhook cannot work with the cluster or the host.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KubeError {
    /// No Kubernetes client could be built.
    #[error("cannot reach the Kubernetes API (--kubeconfig, --master)")]
    Client(#[source] kilo_backend_k8s::KubeError),
    /// The host's addresses cannot be read.
    #[error("cannot detect this host's IP addresses")]
    Detect(#[source] DiscoveryError),
    /// No netlink socket for the detection on every resync.
    #[error("netlink")]
    Netlink(#[source] NetlinkError),
    /// The webhook stopped or could not start.
    #[error(transparent)]
    Webhook(#[from] WebhookError),
}

/// How to reach the cluster: `--kubeconfig`, `--master` and `--topology-label`.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    /// The kubeconfig file; `None`: in-cluster or the usual places.
    pub kubeconfig: Option<PathBuf>,
    /// The API server address, overriding the kubeconfig's.
    pub master: Option<String>,
    /// The node label that gives a node's location when it has no location annotation.
    pub topology_label: String,
}

impl Cluster {
    async fn client(&self) -> Result<kube::Client, KubeError> {
        client(self.kubeconfig.as_deref(), self.master.as_deref()).await.map_err(KubeError::Client)
    }

    fn backend_config(&self) -> KubeBackendConfig {
        let mut config = KubeBackendConfig::default();
        config.topology_label = self.topology_label.clone();
        config
    }

    /// The Nodes-and-Peers backend.
    pub async fn backend(&self) -> Result<KubeBackend, KubeError> {
        Ok(KubeBackend::new(self.client().await?, self.backend_config()))
    }
}

/// Detects the host's private and public IP once (`getIP`), ignoring the addresses of
/// `ignored` interfaces.
pub async fn detect_once(
    netlink: &Netlink,
    hostname: &str,
    ignored: &[String],
    internal_cidrs: &[Cidr],
) -> Result<HostFacts, KubeError> {
    let found = discover_ips(netlink, hostname, ignored, internal_cidrs)
        .await
        .map_err(KubeError::Detect)?;
    Ok(HostFacts {
        private_ip: found.private,
        private_ip6: found.private6,
        public_ip: found.public.map(|c| c.addr()),
        cni_compatibility_ip: None,
    })
}

/// The interfaces whose addresses are never the node's: Kilo's own (`interface` and the
/// encapsulation tunnel) and the CNI bridge.
pub fn ignored_interfaces(interface: &str) -> Vec<String> {
    kilo_core::routes::Interfaces::ignored_by_discovery(interface)
}

/// Re-detection on every resync; a failure keeps the last facts.
pub fn detector(
    hostname: String,
    interface: &str,
    internal_cidrs: Vec<Cidr>,
) -> Result<Detect, KubeError> {
    let netlink = Netlink::connect().map_err(KubeError::Netlink)?;
    let ignored = ignored_interfaces(interface);
    Ok(Box::new(move || {
        let (netlink, hostname, ignored, cidrs) =
            (netlink.clone(), hostname.clone(), ignored.clone(), internal_cidrs.clone());
        Box::pin(async move {
            match detect_once(&netlink, &hostname, &ignored, &cidrs).await {
                Ok(facts) => Some(facts),
                Err(e) => {
                    tracing::warn!(
                        error = chain(&e),
                        "address detection failed; keeping the last result"
                    );
                    None
                }
            }
        })
    }))
}

/// `kg webhook`'s checked flags.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    /// The HTTPS address.
    pub listen: SocketAddr,
    /// The plain HTTP address of `/metrics`, if any.
    pub listen_metrics: Option<SocketAddr>,
    /// The PEM certificate chain to serve.
    pub cert_file: PathBuf,
    /// The PEM private key of the certificate.
    pub key_file: PathBuf,
    /// The WireGuard subnet for the overlap check (`None`: from the nodes, else 10.4.0.0/16).
    pub subnet: Option<Cidr>,
    /// The IPv6 WireGuard subnet of a dual-stack mesh (`None`: from the nodes, if any).
    pub subnet6: Option<Cidr>,
    /// Service CIDRs no Peer may route.
    pub service_cidrs: Vec<Cidr>,
    /// The cluster whose nodes and Peers are checked.
    pub cluster: Cluster,
}

/// The Peer admission webhook over HTTPS. Without a Kubernetes client the webhook still serves,
/// refusing every Peer with why.
pub async fn webhook(options: WebhookOptions) -> Result<(), KubeError> {
    let client = options.cluster.client().await.map_err(|e| chain(&e));
    serve_webhook(WebhookConfig {
        listen: options.listen,
        listen_metrics: options.listen_metrics,
        cert_file: options.cert_file,
        key_file: options.key_file,
        subnet: options.subnet,
        subnet6: options.subnet6,
        service_cidrs: options.service_cidrs,
        limits: ServeLimits::default(),
        backend: options.cluster.backend_config(),
        client,
    })
    .await?;
    Ok(())
}

/// The Peer CustomResourceDefinition (`manifests/crds.yaml`).
pub fn crds() -> String {
    kilo_backend_k8s::crd::crd_yaml()
}
