//! [`KubeBackend`]: the [`Backend`] over a Kubernetes API server. It watches Nodes and Peers
//! (kube-runtime's `watcher`: an initial list, then a watch from the list's resource version with
//! bookmarks, re-listing when the watch expires), translates them with the core's codecs, and
//! publishes the local node's agent annotations with JSON merge patches.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use futures::stream::{BoxStream, StreamExt};
use k8s_openapi::api::core::v1::Node as KubeNode;
use kilo_core::Node;
use kilo_core::annotations::{AGENT_ANNOTATION_KEYS, DEFAULT_TOPOLOGY_LABEL, agent_annotations};
use kilo_core::backend::{Backend, Event, Snapshot};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use serde_json::{Map, Value, json};

use crate::crd::Peer;
use crate::error::KubeError;
use crate::translate::{issues_as_ignored, node_from_kube, peer_from_kube};

/// How the backend reads the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeBackendConfig {
    /// The label whose value is a node's location when it has no `kilo.squat.ai/location`
    /// annotation (`--topology-label`).
    pub topology_label: String,
}

impl Default for KubeBackendConfig {
    fn default() -> Self {
        KubeBackendConfig { topology_label: DEFAULT_TOPOLOGY_LABEL.to_string() }
    }
}

/// A Kubernetes client from a kubeconfig file (`--kubeconfig`), or else from the usual places
/// (`$KUBECONFIG`, `~/.kube/config`, the in-cluster service account); `master` (`--master`)
/// overrides the API server URL.
pub async fn client(kubeconfig: Option<&Path>, master: Option<&str>) -> Result<Client, KubeError> {
    let mut config = match kubeconfig {
        Some(path) => match crate::kubeconfig::load(path).await? {
            crate::kubeconfig::Loaded::Config(config) => *config,
            // As upstream's client-go does (its k3s manifests rely on it): see crate::kubeconfig.
            crate::kubeconfig::Loaded::NoCluster { cluster } => {
                tracing::warn!(
                    kubeconfig = %path.display(),
                    cluster,
                    "the kubeconfig's context names a cluster it does not define; using the default configuration (in a pod: its ServiceAccount), as upstream Kilo does"
                );
                kube::Config::infer().await.map_err(|source| KubeError::Infer { source })?
            }
        },
        None => kube::Config::infer().await.map_err(|source| KubeError::Infer { source })?,
    };
    if let Some(url) = master.filter(|m| !m.is_empty()) {
        config.cluster_url =
            url.parse().map_err(|_| KubeError::MasterUrl { url: url.to_string() })?;
    }
    Client::try_from(config).map_err(|source| KubeError::Client { source })
}

enum Item {
    Node(Box<Result<watcher::Event<KubeNode>, watcher::Error>>),
    Peer(Box<Result<watcher::Event<Peer>, watcher::Error>>),
}

/// The cluster as Kilo sees it through the Kubernetes API.
pub struct KubeBackend {
    nodes_api: Api<KubeNode>,
    topology_label: String,
    stream: BoxStream<'static, Item>,
    nodes: BTreeMap<String, KubeNode>,
    peers: BTreeMap<String, Peer>,
    node_buffer: Option<BTreeMap<String, KubeNode>>,
    peer_buffer: Option<BTreeMap<String, Peer>>,
    nodes_listed: bool,
    peers_listed: bool,
    snapshot_taken: bool,
    pending: VecDeque<Event>,
}

impl std::fmt::Debug for KubeBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeBackend")
            .field("topology_label", &self.topology_label)
            .field("nodes", &self.nodes.len())
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl KubeBackend {
    /// A backend over `client`. Nothing is requested until [`Backend::snapshot`] or
    /// [`Backend::next_event`] is called.
    pub fn new(client: Client, config: KubeBackendConfig) -> KubeBackend {
        let nodes_api: Api<KubeNode> = Api::all(client.clone());
        let peers_api: Api<Peer> = Api::all(client);
        let nodes = watcher(nodes_api.clone(), watcher::Config::default())
            .default_backoff()
            .map(|e| Item::Node(Box::new(e)));
        let peers = watcher(peers_api, watcher::Config::default())
            .default_backoff()
            .map(|e| Item::Peer(Box::new(e)));
        KubeBackend {
            nodes_api,
            topology_label: config.topology_label,
            stream: futures::stream::select(nodes, peers).boxed(),
            nodes: BTreeMap::new(),
            peers: BTreeMap::new(),
            node_buffer: None,
            peer_buffer: None,
            nodes_listed: false,
            peers_listed: false,
            snapshot_taken: false,
            pending: VecDeque::new(),
        }
    }

    /// Everything the backend has seen so far, translated.
    fn build_snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for object in self.nodes.values() {
            let (node, issues) = node_from_kube(object, &self.topology_label);
            snapshot.ignored.extend(issues_as_ignored(&node.name, &issues));
            snapshot.nodes.push(node);
        }
        for object in self.peers.values() {
            match peer_from_kube(object) {
                Ok(peer) => snapshot.peers.push(peer),
                Err(invalid) => snapshot.invalid.push(invalid),
            }
        }
        snapshot
    }

    /// Translates a node, logging the annotations it ignores unless the previous version of the
    /// object had the same issues (a node changes every check-in; its issues rarely do).
    fn translate_node(&self, object: &KubeNode) -> Node {
        let (node, issues) = node_from_kube(object, &self.topology_label);
        let previous = self
            .nodes
            .get(&node.name)
            .map(|old| node_from_kube(old, &self.topology_label).1)
            .unwrap_or_default();
        for issue in issues.iter().filter(|i| !previous.contains(i)) {
            tracing::warn!(node = %node.name, "ignoring annotation: {issue}");
        }
        node
    }

    fn after_list(&mut self, first: bool) {
        let both = self.nodes_listed && self.peers_listed;
        if both && (!first || !self.snapshot_taken) {
            self.snapshot_taken = true;
            self.pending.push_back(Event::Reset(self.build_snapshot()));
        }
    }

    fn process(&mut self, item: Item) -> Result<(), KubeError> {
        match item {
            Item::Node(event) => match *event {
                Err(source) => Err(KubeError::Watch { resource: "nodes", source }),
                Ok(event) => {
                    self.node_event(event);
                    Ok(())
                }
            },
            Item::Peer(event) => match *event {
                Err(source) => Err(KubeError::Watch { resource: "peers", source }),
                Ok(event) => {
                    self.peer_event(event);
                    Ok(())
                }
            },
        }
    }

    fn node_event(&mut self, event: watcher::Event<KubeNode>) {
        match event {
            watcher::Event::Init => self.node_buffer = Some(BTreeMap::new()),
            watcher::Event::InitApply(object) => {
                let name = object.metadata.name.clone().unwrap_or_default();
                self.node_buffer.get_or_insert_with(BTreeMap::new).insert(name, object);
            }
            watcher::Event::InitDone => {
                self.nodes = self.node_buffer.take().unwrap_or_default();
                let first = !self.nodes_listed;
                self.nodes_listed = true;
                self.after_list(first);
            }
            watcher::Event::Apply(object) => {
                let node = self.translate_node(&object);
                self.nodes.insert(node.name.clone(), object);
                self.pending.push_back(Event::NodeChanged(node));
            }
            watcher::Event::Delete(object) => {
                let name = object.metadata.name.clone().unwrap_or_default();
                self.nodes.remove(&name);
                self.pending.push_back(Event::NodeRemoved(name));
            }
        }
    }

    fn peer_event(&mut self, event: watcher::Event<Peer>) {
        match event {
            watcher::Event::Init => self.peer_buffer = Some(BTreeMap::new()),
            watcher::Event::InitApply(object) => {
                let name = object.metadata.name.clone().unwrap_or_default();
                self.peer_buffer.get_or_insert_with(BTreeMap::new).insert(name, object);
            }
            watcher::Event::InitDone => {
                self.peers = self.peer_buffer.take().unwrap_or_default();
                let first = !self.peers_listed;
                self.peers_listed = true;
                self.after_list(first);
            }
            watcher::Event::Apply(object) => {
                let name = object.metadata.name.clone().unwrap_or_default();
                let was_valid = self.peers.get(&name).is_some_and(|p| peer_from_kube(p).is_ok());
                let translated = peer_from_kube(&object);
                self.peers.insert(name.clone(), object);
                match translated {
                    Ok(peer) => self.pending.push_back(Event::PeerChanged(peer)),
                    Err(invalid) => {
                        tracing::warn!("leaving out {invalid}");
                        if was_valid {
                            self.pending.push_back(Event::PeerRemoved(name));
                        }
                        self.pending.push_back(Event::Invalid(invalid));
                    }
                }
            }
            watcher::Event::Delete(object) => {
                let name = object.metadata.name.clone().unwrap_or_default();
                let was_valid =
                    self.peers.remove(&name).is_some_and(|p| peer_from_kube(&p).is_ok());
                if was_valid || peer_from_kube(&object).is_ok() {
                    self.pending.push_back(Event::PeerRemoved(name));
                }
            }
        }
    }

    async fn patch_annotations(&mut self, name: &str, annotations: Value) -> Result<(), KubeError> {
        let body = json!({ "metadata": { "annotations": annotations } });
        let patched = self
            .nodes_api
            .patch(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
            .map_err(|source| KubeError::Patch { node: name.to_string(), source })?;
        self.nodes.insert(name.to_string(), patched);
        Ok(())
    }
}

/// The agent annotations of `node` that differ from those of `current` (the last object seen),
/// as the `metadata.annotations` of a merge patch; `None` when nothing changed.
pub fn publish_patch(node: &Node, current: Option<&KubeNode>) -> Option<Value> {
    let seen = current.and_then(|n| n.metadata.annotations.as_ref());
    let changed: Map<String, Value> = agent_annotations(node)
        .into_iter()
        .filter(|(key, value)| seen.and_then(|a| a.get(key)) != Some(value))
        .map(|(key, value)| (key, Value::String(value)))
        .collect();
    (!changed.is_empty()).then_some(Value::Object(changed))
}

/// The `metadata.annotations` of the clean-up merge patch: every annotation the agent writes set
/// to `null`, which removes it and is a no-op when it is absent (contract C13).
pub fn clean_up_patch() -> Value {
    Value::Object(AGENT_ANNOTATION_KEYS.iter().map(|k| (k.to_string(), Value::Null)).collect())
}

impl Backend for KubeBackend {
    type Error = KubeError;

    /// The nodes and peers of the initial lists (waiting for both), with every change seen
    /// since. Events queued before the call are dropped: the snapshot contains them.
    async fn snapshot(&mut self) -> Result<Snapshot, KubeError> {
        while !(self.nodes_listed && self.peers_listed) {
            let item = self.stream.next().await.ok_or(KubeError::Ended)?;
            self.process(item)?;
        }
        self.pending.clear();
        self.snapshot_taken = true;
        Ok(self.build_snapshot())
    }

    /// The next change. A re-list (after the watch expired) yields [`Event::Reset`]; a Peer that
    /// does not validate yields [`Event::Invalid`] (preceded by [`Event::PeerRemoved`] when its
    /// previous version was valid: an invalid Peer is left out). Watch errors are returned and
    /// retried with back-off on the next call.
    async fn next_event(&mut self) -> Option<Result<Event, KubeError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            let item = self.stream.next().await?;
            if let Err(e) = self.process(item) {
                return Some(Err(e));
            }
        }
    }

    /// Merge-patches the agent annotations of `node` that differ from the last Node object
    /// seen; sends nothing when none differ. User annotations are never touched.
    async fn publish_local(&mut self, node: &Node) -> Result<(), KubeError> {
        match publish_patch(node, self.nodes.get(&node.name)) {
            Some(annotations) => self.patch_annotations(&node.name, annotations).await,
            None => Ok(()),
        }
    }

    /// Removes every annotation the agent writes (a merge patch of `null`s). A node that no
    /// longer exists has nothing to clean up.
    async fn clean_up_local(&mut self, name: &str) -> Result<(), KubeError> {
        match self.patch_annotations(name, clean_up_patch()).await {
            Err(KubeError::Patch { source: kube::Error::Api(status), .. })
                if status.code == 404 =>
            {
                self.nodes.remove(name);
                Ok(())
            }
            other => other,
        }
    }
}
