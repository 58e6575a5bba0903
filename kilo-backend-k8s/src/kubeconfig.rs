//! Reading a `--kubeconfig` file as upstream Kilo's client (client-go) reads it, where kube-rs is
//! stricter. Upstream's k3s manifests generate a kubeconfig whose cluster entry has no `name` and
//! whose context names a cluster that is not in the file. client-go fills a missing name with `""`,
//! finds no cluster for the context, treats the file as empty and uses the in-cluster
//! configuration; kube-rs refuses the file. Here: missing names become `""`, and a context whose
//! cluster is not in the file yields [`Loaded::NoCluster`], for the caller to use the in-cluster
//! configuration as client-go does.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use serde_json::Value;

use crate::error::KubeError;

/// What a kubeconfig file yields.
#[derive(Debug)]
pub(crate) enum Loaded {
    /// A usable configuration.
    Config(Box<kube::Config>),
    /// The current context's cluster is not in the file: client-go's "empty configuration".
    NoCluster {
        /// The cluster the context names.
        cluster: String,
    },
}

/// Reads and resolves the kubeconfig at `path`.
pub(crate) async fn load(path: &Path) -> Result<Loaded, KubeError> {
    let error = |source| KubeError::Kubeconfig { path: path.into(), source };
    let text = std::fs::read_to_string(path)
        .map_err(|e| error(KubeconfigError::ReadConfig(e, path.into())))?;
    let text = with_default_names(&text).unwrap_or(text);
    let kubeconfig = Kubeconfig::from_yaml(&text).map_err(error)?;
    if let Some(cluster) = missing_cluster(&kubeconfig) {
        return Ok(Loaded::NoCluster { cluster });
    }
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map(|c| Loaded::Config(Box::new(c)))
        .map_err(error)
}

/// The text with `name: ""` added to every cluster, user and context entry that has no name
/// (client-go's default), or `None` when nothing is missing or the text is not a YAML mapping
/// (kube-rs then reports what is wrong with it).
fn with_default_names(text: &str) -> Option<String> {
    let mut doc: Value = serde_saphyr::from_str(text).ok()?;
    let mut changed = false;
    for key in ["clusters", "users", "contexts"] {
        if let Some(Value::Array(items)) = doc.as_object_mut()?.get_mut(key) {
            for entry in items.iter_mut().filter_map(Value::as_object_mut) {
                if !entry.contains_key("name") {
                    entry.insert("name".into(), Value::String(String::new()));
                    changed = true;
                }
            }
        }
    }
    changed.then(|| serde_saphyr::to_string(&doc).ok()).flatten()
}

/// The cluster the current context names when the file has no cluster of that name.
fn missing_cluster(kubeconfig: &Kubeconfig) -> Option<String> {
    let current = kubeconfig.current_context.as_deref()?;
    let context = kubeconfig.contexts.iter().find(|c| c.name == current)?.context.as_ref()?;
    let known = kubeconfig.clusters.iter().any(|c| c.name == context.cluster);
    (!known).then(|| context.cluster.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kubeconfig file removed when dropped.
    struct File(std::path::PathBuf);

    impl File {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for File {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn write(text: &str) -> File {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let name =
            format!("kilo-kubeconfig-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, text).unwrap();
        File(path)
    }

    /// The shape upstream's k3s init script writes: indented, the cluster entry without a name,
    /// the context naming cluster "kilo".
    const UPSTREAM_K3S_SHAPE: &str = "    apiVersion: v1
    kind: Config
    name: kilo
    clusters:
    - cluster:
        server: https://127.0.0.1:6444
    users:
    - name: kilo
      user:
        token: abc
    contexts:
    - name: kilo
      context:
        cluster: kilo
        namespace: kube-system
        user: kilo
    current-context: kilo
";

    #[tokio::test]
    async fn a_context_whose_cluster_is_not_in_the_file_falls_back_like_client_go() {
        let file = write(UPSTREAM_K3S_SHAPE);
        match load(file.path()).await.unwrap() {
            Loaded::NoCluster { cluster } => assert_eq!(cluster, "kilo"),
            other => panic!("expected NoCluster, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn entries_without_a_name_are_read_with_an_empty_name() {
        let text = UPSTREAM_K3S_SHAPE.replace("cluster: kilo\n", "cluster: \"\"\n");
        let file = write(&text);
        match load(file.path()).await.unwrap() {
            Loaded::Config(config) => {
                assert_eq!(config.cluster_url.to_string(), "https://127.0.0.1:6444/")
            }
            other => panic!("expected a configuration, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_complete_kubeconfig_is_used_as_it_is() {
        let text = "apiVersion: v1
kind: Config
clusters:
- name: k3s
  cluster:
    server: https://10.0.0.1:6443
users:
- name: kilo
  user:
    token: abc
contexts:
- name: kilo
  context:
    cluster: k3s
    user: kilo
current-context: kilo
";
        let file = write(text);
        match load(file.path()).await.unwrap() {
            Loaded::Config(config) => {
                assert_eq!(config.cluster_url.to_string(), "https://10.0.0.1:6443/")
            }
            other => panic!("expected a configuration, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_kubeconfig_is_an_error_naming_it() {
        let file = write("clusters: [1, 2\n");
        let err = load(file.path()).await.unwrap_err();
        assert!(err.to_string().contains(&file.path().display().to_string()), "{err}");
    }
}
