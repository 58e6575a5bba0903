//! `kg` on Kubernetes: the kube-rs backend, host address detection (upstream 9.1, re-run on every
//! resync: contract C9), `kg webhook` and `kg crds`.

use std::path::Path;

use anyhow::{Context, Result};
use kilo_backend_k8s::webhook::{ServeLimits, WebhookConfig, serve_webhook};
use kilo_backend_k8s::{KubeBackend, KubeBackendConfig, client};
use kilo_core::Cidr;
use kilo_core::agent::HostFacts;
use kilo_net_linux::Netlink;
use kilo_agent::Detect;
use kilo_net_linux::discovery::discover_ips;

/// The CNI bridge, whose addresses are never the node's IP (upstream 1.6).
const CNI_BRIDGE: &str = "kube-bridge";

/// A Kubernetes client from `--kubeconfig` and `--master` (empty: in-cluster or the usual places).
pub async fn kube_client(kubeconfig: &str, master: &str) -> Result<kube::Client> {
    let path = (!kubeconfig.is_empty()).then(|| Path::new(kubeconfig));
    client(path, (!master.is_empty()).then_some(master))
        .await
        .context("cannot reach the Kubernetes API (--kubeconfig, --master)")
}

/// The Nodes-and-Peers backend.
pub async fn backend(kubeconfig: &str, master: &str, topology_label: &str) -> Result<KubeBackend> {
    let client = kube_client(kubeconfig, master).await?;
    Ok(KubeBackend::new(
        client,
        KubeBackendConfig {
            topology_label: topology_label.to_string(),
            ..KubeBackendConfig::default()
        },
    ))
}

/// Detects the host's private and public IP once (`getIP`).
pub async fn detect_once(
    netlink: &Netlink,
    hostname: &str,
    ignored: &[String],
    internal_cidrs: &[Cidr],
) -> Result<HostFacts> {
    let found = discover_ips(netlink, hostname, ignored, internal_cidrs)
        .await
        .context("cannot detect this host's IP addresses")?;
    Ok(HostFacts {
        private_ip: found.private,
        public_ip: found.public.map(|c| c.addr()),
        cni_compatibility_ip: None,
    })
}

/// Re-detection on every resync; a failure keeps the last facts.
pub fn detector(hostname: String, interface: String, internal_cidrs: Vec<Cidr>) -> Result<Detect> {
    let netlink = Netlink::connect().context("netlink")?;
    let ignored = vec![interface, "tunl0".to_string(), CNI_BRIDGE.to_string()];
    Ok(Box::new(move || {
        let (netlink, hostname, ignored, cidrs) =
            (netlink.clone(), hostname.clone(), ignored.clone(), internal_cidrs.clone());
        Box::pin(async move {
            match detect_once(&netlink, &hostname, &ignored, &cidrs).await {
                Ok(facts) => Some(facts),
                Err(e) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "address detection failed; keeping the last result"
                    );
                    None
                }
            }
        })
    }))
}

/// `kg webhook`: the Peer admission webhook over HTTPS. Flags are checked before anything
/// else; without a Kubernetes client the webhook still serves, refusing every Peer with why.
pub async fn webhook(
    args: &crate::cli::WebhookArgs,
    kubeconfig: &str,
    master: &str,
    topology_label: &str,
) -> Result<()> {
    let listen = crate::http::listen_address(&args.listen)
        .parse()
        .with_context(|| format!("--listen {}", args.listen))?;
    let listen_metrics = if args.listen_metrics.is_empty() {
        None
    } else {
        Some(
            crate::http::listen_address(&args.listen_metrics)
                .parse()
                .with_context(|| format!("--listen-metrics {}", args.listen_metrics))?,
        )
    };
    let subnet = args.subnet.as_deref().map(str::parse).transpose().context("--subnet")?;
    let service_cidrs = args
        .service_cidr
        .iter()
        .map(|v| v.parse::<Cidr>().map(|c| c.network()))
        .collect::<Result<Vec<_>, _>>()
        .context("--service-cidr")?;
    let client = kube_client(kubeconfig, master).await.map_err(|e| format!("{e:#}"));
    serve_webhook(WebhookConfig {
        listen,
        listen_metrics,
        cert_file: args.cert_file.clone().into(),
        key_file: args.key_file.clone().into(),
        subnet,
        service_cidrs,
        limits: ServeLimits::default(),
        backend: KubeBackendConfig {
            topology_label: topology_label.to_string(),
            ..KubeBackendConfig::default()
        },
        client,
    })
    .await?;
    Ok(())
}

/// `kg crds`: the Peer CRD (`manifests/crds.yaml`).
pub fn crds() -> String {
    kilo_backend_k8s::crd::crd_yaml()
}
