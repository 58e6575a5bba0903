//! One read of the cluster, for command-line tools (`kgctl`): a client from the kubeconfig
//! `kubectl` would use, and the Nodes and Peers listed once through [`KubeBackend`], with a
//! time limit. Settings and readiness are the caller's ([`kilo_core::settings::resolve`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use kilo_core::Snapshot;
use kilo_core::backend::Backend;

use crate::{KubeBackend, KubeBackendConfig, KubeError};

/// How long listing nodes and peers may take before [`list`] gives up.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the cluster could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// No client: the kubeconfig or the in-cluster configuration is unusable.
    #[error(transparent)]
    Client(#[from] KubeError),
    /// Listing failed.
    #[error("cannot list nodes and peers from the Kubernetes API at {url}")]
    List {
        /// The API server.
        url: String,
        /// Why.
        #[source]
        source: KubeError,
    },
    /// Listing took longer than [`LIST_TIMEOUT`].
    #[error(
        "listing nodes and peers from the Kubernetes API at {url} took longer than {}s",
        LIST_TIMEOUT.as_secs()
    )]
    TimedOut {
        /// The API server.
        url: String,
    },
    /// No async runtime for the blocking [`load`].
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

/// The kubeconfig to use: `flag` (`--kubeconfig`), else `env` (`$KUBECONFIG`) if that file
/// exists, else `home`'s `.kube/config` if it exists; `None` means the in-cluster
/// configuration.
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

/// A client from the kubeconfig [`kubeconfig_path`] picks with this process's `$KUBECONFIG`
/// and `$HOME` (or in-cluster), with the API server's URL for messages (`(unknown)` when the
/// configuration does not say).
pub async fn client(flag: Option<&str>) -> Result<(kube::Client, String), SnapshotError> {
    let env = std::env::var("KUBECONFIG").ok();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let path = kubeconfig_path(flag, env.as_deref(), home.as_deref());
    let client = crate::client(path.as_deref(), None).await?;
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

/// Lists the cluster's nodes and peers once, as the backend reports them; `url` names the API
/// server in errors.
pub async fn list(
    client: kube::Client,
    url: &str,
    topology_label: &str,
) -> Result<Snapshot, SnapshotError> {
    let config = KubeBackendConfig {
        topology_label: topology_label.to_string(),
        ..KubeBackendConfig::default()
    };
    let mut backend = KubeBackend::new(client, config);
    tokio::time::timeout(LIST_TIMEOUT, backend.snapshot())
        .await
        .map_err(|_| SnapshotError::TimedOut { url: url.to_string() })?
        .map_err(|source| SnapshotError::List { url: url.to_string(), source })
}

/// [`client`] then [`list`], blocking (on a runtime of its own): the cluster for a read-only
/// command.
pub fn load(kubeconfig: Option<&str>, topology_label: &str) -> Result<Snapshot, SnapshotError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(SnapshotError::Runtime)?
        .block_on(async {
            let (client, url) = client(kubeconfig).await?;
            list(client, &url, topology_label).await
        })
}

/// Now, in Unix seconds (readiness checks a node's last-seen against it, upstream 12.1).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
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
        let home = std::env::temp_dir().join(format!("kilo-k8s-home-{}", std::process::id()));
        assert_eq!(kubeconfig_path(None, None, Some(&home)), None);
        std::fs::create_dir_all(home.join(".kube")).unwrap();
        std::fs::write(home.join(".kube/config"), "").unwrap();
        assert_eq!(kubeconfig_path(None, None, Some(&home)), Some(home.join(".kube/config")));
        std::fs::remove_dir_all(&home).unwrap();
    }

    #[test]
    fn errors_name_the_api_server() {
        let timed_out = SnapshotError::TimedOut { url: "https://k:6443/".into() };
        assert_eq!(
            timed_out.to_string(),
            "listing nodes and peers from the Kubernetes API at https://k:6443/ took longer than 30s"
        );
    }
}
