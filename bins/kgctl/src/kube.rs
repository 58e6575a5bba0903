//! `--backend kubernetes`: the cluster's Nodes and Peers through `kilo-backend-k8s`, with
//! upstream's readiness (last-seen checked, upstream 12.1).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use kilo_backend_k8s::{KubeBackend, KubeBackendConfig};
use kilo_core::Snapshot;
use kilo_core::backend::Backend;

/// How long listing nodes and peers may take before kgctl gives up.
const LIST_TIMEOUT: Duration = Duration::from_secs(30);

/// The kubeconfig to use: `--kubeconfig`, else `$KUBECONFIG` if that file exists, else
/// `~/.kube/config` if it exists; `None` means the in-cluster configuration.
pub fn kubeconfig_path(
    flag: Option<&str>,
    env: Option<&str>,
    home: Option<&Path>,
) -> Option<PathBuf> {
    if let Some(path) = flag.filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    if let Some(path) = env.filter(|p| !p.is_empty()).map(PathBuf::from).filter(|p| p.exists()) {
        return Some(path);
    }
    home.map(|h| h.join(".kube/config")).filter(|p| p.exists())
}

/// A runtime for the Kubernetes client.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A client from the kubeconfig `kubeconfig_path` picks (or in-cluster), with the API
/// server's URL for messages.
pub async fn client(flag: Option<&str>) -> Result<(kube::Client, String)> {
    let env = std::env::var("KUBECONFIG").ok();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let path = kubeconfig_path(flag, env.as_deref(), home.as_deref());
    let client = kilo_backend_k8s::client(path.as_deref(), None).await?;
    let url = server_url(path.as_deref()).await.unwrap_or_else(|| "(unknown)".into());
    Ok((client, url))
}

/// The API server URL the configuration names.
async fn server_url(path: Option<&Path>) -> Option<String> {
    let config = match path {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).ok()?;
            kube::Config::from_custom_kubeconfig(file, &Default::default()).await.ok()?
        }
        None => kube::Config::infer().await.ok()?,
    };
    Some(config.cluster_url.to_string())
}

/// Lists the cluster's nodes and peers once, as the backend reports them (settings are
/// resolved by the caller with [`kilo_core::settings::resolve`]).
pub async fn snapshot(client: kube::Client, url: &str, topology_label: &str) -> Result<Snapshot> {
    let config = KubeBackendConfig {
        topology_label: topology_label.to_string(),
        ..KubeBackendConfig::default()
    };
    let mut backend = KubeBackend::new(client, config);
    let snapshot = tokio::time::timeout(LIST_TIMEOUT, backend.snapshot())
        .await
        .map_err(|_| {
            anyhow!(
                "listing nodes and peers from the Kubernetes API at {url} took longer than {}s",
                LIST_TIMEOUT.as_secs()
            )
        })?
        .with_context(|| format!("cannot list nodes and peers from the Kubernetes API at {url}"))?;
    Ok(snapshot)
}

/// Now, in Unix seconds (readiness checks last-seen against it, upstream 12.1).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Loads the cluster for the read-only commands.
pub fn load(kubeconfig: Option<&str>, topology_label: &str) -> Result<Snapshot> {
    runtime()?.block_on(async {
        let (client, url) = client(kubeconfig).await?;
        snapshot(client, &url, topology_label).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubeconfig_flag_wins_even_when_the_file_does_not_exist() {
        let path = kubeconfig_path(Some("/nowhere/config"), Some("/etc/hostname"), None);
        assert_eq!(path, Some(PathBuf::from("/nowhere/config")));
    }

    #[test]
    fn kubeconfig_from_the_environment_is_used_only_when_the_file_exists() {
        let existing = std::env::temp_dir();
        assert_eq!(kubeconfig_path(None, existing.to_str(), None), Some(existing.clone()));
        assert_eq!(kubeconfig_path(None, Some("/nowhere/config"), None), None);
    }

    #[test]
    fn the_home_kubeconfig_is_used_when_it_exists_else_in_cluster() {
        let home = std::env::temp_dir().join(format!("kgctl-home-{}", std::process::id()));
        assert_eq!(kubeconfig_path(None, None, Some(&home)), None);
        std::fs::create_dir_all(home.join(".kube")).unwrap();
        std::fs::write(home.join(".kube/config"), "").unwrap();
        assert_eq!(kubeconfig_path(None, None, Some(&home)), Some(home.join(".kube/config")));
    }
}
