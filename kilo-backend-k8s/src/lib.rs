//! Cluster state from Kubernetes: Nodes with kilo.squat.ai annotations and the Peer CRD, via kube-rs.
