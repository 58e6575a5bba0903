//! [`KubeBackend`]: the [`Backend`] over a Kubernetes API server. It watches Nodes and Peers
//! (kube-runtime's `watcher`: an initial list, then a watch from the list's resource version with
//! bookmarks, re-listing when the watch expires), decodes and translates each object on its own
//! (one that does not decode is left out as an [`Invalid`]), re-lists when the watches have been
//! silent for too long, and publishes the local node's agent annotations with JSON merge patches.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use k8s_openapi::api::core::v1::Node as KubeNode;
use kilo_core::annotations::{AGENT_ANNOTATION_KEYS, DEFAULT_TOPOLOGY_LABEL, agent_annotations};
use kilo_core::backend::{Backend, Event, Invalid, ObjectKind, Snapshot};
use kilo_core::{Node, Peer as MeshPeer};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::crd::Peer;
use crate::error::KubeError;
use crate::lenient::{Raw, decode};
use crate::translate::{issues_as_ignored, node_from_kube, peer_from_kube};

/// How long the watches may stay silent before the backend re-lists, by default: three missed
/// 30 s check-ins of the agent's own node, whose `last-seen` changes at each one.
pub const DEFAULT_WATCH_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How the backend reads the cluster: [`KubeBackendConfig::default`], then fields set as needed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KubeBackendConfig {
    /// The label whose value is a node's location when it has no `kilo.squat.ai/location`
    /// annotation (`--topology-label`).
    pub topology_label: String,
    /// When neither the Node nor the Peer watch has delivered anything (an event or an error)
    /// for this long, the watch is taken to be stalled: the backend logs it, lists nodes and
    /// peers again and yields an [`Event::Reset`]. Zero disables the check. Default
    /// [`DEFAULT_WATCH_IDLE_TIMEOUT`].
    pub watch_idle_timeout: Duration,
}

impl Default for KubeBackendConfig {
    fn default() -> Self {
        KubeBackendConfig {
            topology_label: DEFAULT_TOPOLOGY_LABEL.to_string(),
            watch_idle_timeout: DEFAULT_WATCH_IDLE_TIMEOUT,
        }
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

type WatchItem<K> = Box<Result<watcher::Event<Raw<K>>, watcher::Error>>;

enum Item {
    Node(WatchItem<KubeNode>),
    Peer(WatchItem<Peer>),
}

/// The Node and Peer watches, merged. Objects are watched as [`Raw`] JSON, so that one object
/// that does not decode cannot fail a whole list (kube's client would then log the list's body,
/// pre-shared keys included, and retry for ever). Bookmarks are on (the watcher's default).
fn watches(client: &Client) -> BoxStream<'static, Item> {
    let config = watcher::Config::default();
    let nodes = watcher(Api::<Raw<KubeNode>>::all(client.clone()), config.clone())
        .default_backoff()
        .map(|e| Item::Node(Box::new(e)));
    let peers = watcher(Api::<Raw<Peer>>::all(client.clone()), config)
        .default_backoff()
        .map(|e| Item::Peer(Box::new(e)));
    futures::stream::select(nodes, peers).boxed()
}

/// The cluster as Kilo sees it through the Kubernetes API.
pub struct KubeBackend {
    client: Client,
    nodes_api: Api<KubeNode>,
    topology_label: String,
    idle_timeout: Duration,
    stream: BoxStream<'static, Item>,
    /// When the watches last delivered something (`None`: not polled yet).
    last_heard: Option<Instant>,
    nodes: BTreeMap<String, Result<KubeNode, Invalid>>,
    peers: BTreeMap<String, Result<MeshPeer, Invalid>>,
    node_buffer: Option<BTreeMap<String, Result<KubeNode, Invalid>>>,
    peer_buffer: Option<BTreeMap<String, Result<MeshPeer, Invalid>>>,
    nodes_listed: bool,
    peers_listed: bool,
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
        KubeBackend {
            nodes_api: Api::all(client.clone()),
            stream: watches(&client),
            client,
            topology_label: config.topology_label,
            idle_timeout: config.watch_idle_timeout,
            last_heard: None,
            nodes: BTreeMap::new(),
            peers: BTreeMap::new(),
            node_buffer: None,
            peer_buffer: None,
            nodes_listed: false,
            peers_listed: false,
            pending: VecDeque::new(),
        }
    }

    /// The next item of the watches. When they stay silent for the idle timeout, the watch is
    /// taken to be stalled (a connection that stays open but delivers nothing: kube-runtime only
    /// notices after its own 295 s) and is started again: a fresh list of both, then a watch.
    async fn next_item(&mut self) -> Option<Item> {
        loop {
            if self.idle_timeout.is_zero() {
                return self.stream.next().await;
            }
            let since = *self.last_heard.get_or_insert_with(Instant::now);
            match tokio::time::timeout_at(since + self.idle_timeout, self.stream.next()).await {
                Ok(item) => {
                    self.last_heard = Some(Instant::now());
                    return item;
                }
                Err(_) => self.restart_watches(),
            }
        }
    }

    fn restart_watches(&mut self) {
        tracing::warn!(
            "no watch events for {} s; re-listing nodes and peers",
            self.idle_timeout.as_secs_f64()
        );
        self.stream = watches(&self.client);
        self.last_heard = Some(Instant::now());
        self.nodes_listed = false;
        self.peers_listed = false;
        self.node_buffer = None;
        self.peer_buffer = None;
    }

    /// Everything the backend has seen so far, translated.
    fn build_snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for object in self.nodes.values() {
            match object {
                Ok(object) => {
                    let (node, issues) = node_from_kube(object, &self.topology_label);
                    snapshot.ignored.extend(issues_as_ignored(&node.name, &issues));
                    snapshot.nodes.push(node);
                }
                Err(invalid) => snapshot.invalid.push(invalid.clone()),
            }
        }
        for peer in self.peers.values() {
            match peer {
                Ok(peer) => snapshot.peers.push(peer.clone()),
                Err(invalid) => snapshot.invalid.push(invalid.clone()),
            }
        }
        snapshot
    }

    /// Translates a node, logging the annotations it ignores unless the previous version of the
    /// object had the same issues (a node changes every check-in; its issues rarely do).
    fn translate_node(&self, object: &KubeNode) -> Node {
        let (node, issues) = node_from_kube(object, &self.topology_label);
        let previous = match self.nodes.get(&node.name) {
            Some(Ok(old)) => node_from_kube(old, &self.topology_label).1,
            _ => Vec::new(),
        };
        for issue in issues.iter().filter(|i| !previous.contains(i)) {
            tracing::warn!(node = %node.name, "ignoring annotation: {issue}");
        }
        node
    }

    /// Decodes a Node, warning (once per change) when it does not decode.
    fn decode_node(&self, raw: &Raw<KubeNode>) -> Result<KubeNode, Invalid> {
        let decoded = decode(raw, ObjectKind::Node);
        if let Err(invalid) = &decoded
            && !matches!(self.nodes.get(raw.name()), Some(Err(old)) if old == invalid)
        {
            tracing::warn!("leaving out {invalid}");
        }
        decoded
    }

    /// Decodes, validates and translates a Peer, warning (once per change) when it is left out.
    fn decode_peer(&self, raw: &Raw<Peer>) -> Result<MeshPeer, Invalid> {
        let translated = decode(raw, ObjectKind::Peer).and_then(|peer| peer_from_kube(&peer));
        if let Err(invalid) = &translated
            && !matches!(self.peers.get(raw.name()), Some(Err(old)) if old == invalid)
        {
            tracing::warn!("leaving out {invalid}");
        }
        translated
    }

    /// After a list: once both are listed, every list yields a [`Event::Reset`] (the first is
    /// dropped by [`Backend::snapshot`], which returns the same state).
    fn after_list(&mut self) {
        if self.nodes_listed && self.peers_listed {
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

    fn node_event(&mut self, event: watcher::Event<Raw<KubeNode>>) {
        match event {
            watcher::Event::Init => self.node_buffer = Some(BTreeMap::new()),
            watcher::Event::InitApply(raw) => {
                let decoded = self.decode_node(&raw);
                let buffer = self.node_buffer.get_or_insert_with(BTreeMap::new);
                buffer.insert(raw.name().to_string(), decoded);
            }
            watcher::Event::InitDone => {
                self.nodes = self.node_buffer.take().unwrap_or_default();
                self.nodes_listed = true;
                self.after_list();
            }
            watcher::Event::Apply(raw) => {
                let name = raw.name().to_string();
                let was_valid = matches!(self.nodes.get(&name), Some(Ok(_)));
                match self.decode_node(&raw) {
                    Ok(object) => {
                        let node = self.translate_node(&object);
                        self.nodes.insert(name, Ok(object));
                        self.pending.push_back(Event::NodeChanged(node));
                    }
                    Err(invalid) => {
                        self.nodes.insert(name.clone(), Err(invalid.clone()));
                        if was_valid {
                            self.pending.push_back(Event::NodeRemoved(name));
                        }
                        self.pending.push_back(Event::Invalid(invalid));
                    }
                }
            }
            watcher::Event::Delete(raw) => {
                let name = raw.name().to_string();
                self.nodes.remove(&name);
                self.pending.push_back(Event::NodeRemoved(name));
            }
        }
    }

    fn peer_event(&mut self, event: watcher::Event<Raw<Peer>>) {
        match event {
            watcher::Event::Init => self.peer_buffer = Some(BTreeMap::new()),
            watcher::Event::InitApply(raw) => {
                let translated = self.decode_peer(&raw);
                let buffer = self.peer_buffer.get_or_insert_with(BTreeMap::new);
                buffer.insert(raw.name().to_string(), translated);
            }
            watcher::Event::InitDone => {
                self.peers = self.peer_buffer.take().unwrap_or_default();
                self.peers_listed = true;
                self.after_list();
            }
            watcher::Event::Apply(raw) => {
                let name = raw.name().to_string();
                let was_valid = matches!(self.peers.get(&name), Some(Ok(_)));
                let translated = self.decode_peer(&raw);
                self.peers.insert(name.clone(), translated.clone());
                match translated {
                    Ok(peer) => self.pending.push_back(Event::PeerChanged(peer)),
                    Err(invalid) => {
                        if was_valid {
                            self.pending.push_back(Event::PeerRemoved(name));
                        }
                        self.pending.push_back(Event::Invalid(invalid));
                    }
                }
            }
            watcher::Event::Delete(raw) => {
                let name = raw.name().to_string();
                let was_valid = matches!(self.peers.remove(&name), Some(Ok(_)));
                let valid =
                    decode(&raw, ObjectKind::Peer).and_then(|peer| peer_from_kube(&peer)).is_ok();
                if was_valid || valid {
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
        self.nodes.insert(name.to_string(), Ok(patched));
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
    /// since. Events queued before the call are dropped: the snapshot contains them. Objects that
    /// do not decode or validate are in [`Snapshot::invalid`].
    async fn snapshot(&mut self) -> Result<Snapshot, KubeError> {
        while !(self.nodes_listed && self.peers_listed) {
            let item = self.next_item().await.ok_or(KubeError::Ended)?;
            self.process(item)?;
        }
        self.pending.clear();
        Ok(self.build_snapshot())
    }

    /// The next change. A re-list (after the watch expired, or after the watches were silent
    /// for [`KubeBackendConfig::watch_idle_timeout`]) yields [`Event::Reset`]; a Node or Peer
    /// that does not decode, or a Peer that does not validate, yields [`Event::Invalid`]
    /// (preceded by [`Event::NodeRemoved`] or [`Event::PeerRemoved`] when its previous version
    /// was valid: an invalid object is left out). Watch errors are returned and retried with
    /// back-off on the next call.
    async fn next_event(&mut self) -> Option<Result<Event, KubeError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            let item = self.next_item().await?;
            if let Err(e) = self.process(item) {
                return Some(Err(e));
            }
        }
    }

    /// Merge-patches the agent annotations of `node` that differ from the last Node object
    /// seen; sends nothing when none differ. User annotations are never touched.
    async fn publish_local(&mut self, node: &Node) -> Result<(), KubeError> {
        let current = self.nodes.get(&node.name).and_then(|n| n.as_ref().ok());
        match publish_patch(node, current) {
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
