//! Cluster state from files: the static mesh TOML and Kubernetes YAML snapshots.
