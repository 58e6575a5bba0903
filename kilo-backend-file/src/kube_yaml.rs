//! Kubernetes objects as a file (contract 4): a `v1` `List`, or `---`-separated documents, of
//! `Node` and `kilo.squat.ai/v1alpha1` `Peer` objects, as `kubectl get nodes,peers -o yaml`
//! prints them. JSON (`-o json`) is YAML too.
//!
//! Only the fields Kilo reads are deserialized (names, labels, annotations, `spec`); the rest,
//! `status` included, is skipped. An object that does not translate is left out with an
//! [`Invalid`] entry; only text that is not YAML, or objects not shaped like Kubernetes objects,
//! fail the whole file.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use kilo_core::annotations::{AnnotationIssue, NodeObject, node_from_object};
use kilo_core::peer_spec::{PeerSpec, peer_from_spec, validate};
use kilo_core::{Invalid, Node, ObjectKind, Snapshot};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::Options;
use crate::error::FileError;

const PEER_API_VERSION: &str = "kilo.squat.ai/v1alpha1";

/// Parses Kubernetes YAML (or JSON) into a [`Snapshot`]; `file` names the input in errors.
///
/// Nodes translate as upstream's `translateNode` (annotations, `force-*`, the topology label of
/// `options`); a node that is not ready (no endpoint, key or pod CIDR; last-seen is not checked,
/// and nodes get [`crate::SNAPSHOT_LAST_SEEN`]) is left out with an [`Invalid`] entry, as are
/// peers that fail upstream's `Validate()` or are not ready, objects of other kinds, and objects
/// whose name was seen before.
///
/// Settings as `kgctl` derives them (upstream 12.1): `subnet` is the `wireguard-ip` annotation,
/// masked to its network, of the last listed node that has one, translated or not; `granularity`
/// is the first listed node's `granularity` annotation; `port` is never set.
pub fn parse_kube_yaml(text: &str, file: &str, options: &Options) -> Result<Snapshot, FileError> {
    let mut builder = Builder {
        options,
        snapshot: Snapshot::default(),
        node_names: HashSet::new(),
        peer_names: HashSet::new(),
        seen_first_node: false,
        position: 0,
    };
    for document in serde_yaml::Deserializer::from_str(text) {
        let object = Option::<Object>::deserialize(document).map_err(|e| syntax(file, &e))?;
        if let Some(object) = object {
            builder.object(object);
        }
    }
    Ok(builder.snapshot)
}

fn syntax(file: &str, e: &serde_yaml::Error) -> FileError {
    let message = e.to_string();
    let message = match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message,
    };
    FileError::Syntax {
        file: file.to_string(),
        line: e.location().map_or(1, |l| l.line()),
        message,
    }
}

/// A Kubernetes object, or a `List` of them: only the fields read.
#[derive(Deserialize)]
struct Object {
    #[serde(rename = "apiVersion", default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    spec: Option<serde_yaml::Value>,
    #[serde(default)]
    items: Option<Vec<Option<Object>>>,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "string_map")]
    labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "string_map")]
    annotations: BTreeMap<String, String>,
}

/// A map of strings that also takes `null` (empty) and unquoted scalars (`25`, `true`) as their
/// text, as a hand-written file may hold them.
fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct MapVisitor;
    impl<'de> Visitor<'de> for MapVisitor {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of strings")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_map(self)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, v)) = map.next_entry::<Scalar, Scalar>()? {
                out.insert(k.0, v.0);
            }
            Ok(out)
        }
    }
    d.deserialize_option(MapVisitor)
}

/// A scalar read as its text (`null` as `""`).
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar(String::new()))
            }
        }
        d.deserialize_any(ScalarVisitor)
    }
}

struct Builder<'a> {
    options: &'a Options,
    snapshot: Snapshot,
    node_names: HashSet<String>,
    peer_names: HashSet<String>,
    seen_first_node: bool,
    position: usize,
}

impl Builder<'_> {
    fn invalid(&mut self, kind: ObjectKind, name: String, message: String) {
        self.snapshot.invalid.push(Invalid { kind, name, message });
    }

    fn object(&mut self, object: Object) {
        self.position += 1;
        let kind = object.kind.as_deref().unwrap_or("");
        let api = object.api_version.as_deref();
        match (kind, api) {
            ("List" | "NodeList" | "PeerList", _) => {
                for item in object.items.into_iter().flatten().flatten() {
                    self.object(item);
                }
            }
            ("Node", None | Some("v1")) => self.node(object),
            ("Peer", None | Some(PEER_API_VERSION)) => self.peer(object),
            _ => {
                let name = object.metadata.and_then(|m| m.name).unwrap_or_default();
                let message = format!(
                    "kind {kind:?} (apiVersion {:?}) is neither a v1 Node nor a {PEER_API_VERSION} \
                     Peer; skipped",
                    api.unwrap_or("")
                );
                let name = if name.is_empty() { format!("#{}", self.position) } else { name };
                self.invalid(ObjectKind::Other, name, message);
            }
        }
    }

    fn name(&mut self, kind: ObjectKind, metadata: &Metadata) -> Option<String> {
        match metadata.name.as_deref() {
            Some(name) if !name.is_empty() => Some(name.to_string()),
            _ => {
                let position = format!("#{}", self.position);
                self.invalid(kind, position, "metadata.name is missing; skipped".to_string());
                None
            }
        }
    }

    fn node(&mut self, object: Object) {
        let metadata = object.metadata.unwrap_or_default();
        let Some(name) = self.name(ObjectKind::Node, &metadata) else { return };
        let pod_cidrs = pod_cidrs(object.spec.as_ref());
        let obj = NodeObject {
            name: &name,
            annotations: &metadata.annotations,
            labels: &metadata.labels,
            pod_cidrs: &pod_cidrs,
        };
        let (mut node, issues) = node_from_object(&obj, &self.options.topology_label);
        node.last_seen = crate::SNAPSHOT_LAST_SEEN;
        if let Some(ip) = node.wireguard_ip {
            self.snapshot.settings.subnet = Some(ip.network());
        }
        if !self.seen_first_node {
            self.seen_first_node = true;
            self.snapshot.settings.granularity = node.granularity;
        }
        if !self.node_names.insert(name.clone()) {
            let message = "a node of this name was listed before; skipped".to_string();
            return self.invalid(ObjectKind::Node, name, message);
        }
        if !node.is_ready_ignoring_last_seen() {
            let message = not_ready(&node, &issues);
            return self.invalid(ObjectKind::Node, name, message);
        }
        self.snapshot.nodes.push(node);
    }

    fn peer(&mut self, object: Object) {
        let metadata = object.metadata.unwrap_or_default();
        let Some(name) = self.name(ObjectKind::Peer, &metadata) else { return };
        if !self.peer_names.insert(name.clone()) {
            let message = "a peer of this name was listed before; skipped".to_string();
            return self.invalid(ObjectKind::Peer, name, message);
        }
        let Some(spec) = object.spec else {
            return self.invalid(ObjectKind::Peer, name, "spec is missing".to_string());
        };
        let spec: PeerSpec = match serde_yaml::from_value(spec) {
            Ok(spec) => spec,
            Err(e) => return self.invalid(ObjectKind::Peer, name, format!("spec: {e}")),
        };
        if let Err(e) = validate(&spec) {
            return self.invalid(ObjectKind::Peer, name, e.to_string());
        }
        let peer = peer_from_spec(&name, &spec);
        if !peer.is_ready() {
            let message = if peer.public_key.is_zero() {
                "not ready: publicKey is the all-zero key"
            } else {
                "not ready: allowedIPs is empty"
            };
            return self.invalid(ObjectKind::Peer, name, message.to_string());
        }
        self.snapshot.peers.push(peer);
    }
}

/// `spec.podCIDRs`, else `[spec.podCIDR]`, as text.
fn pod_cidrs(spec: Option<&serde_yaml::Value>) -> Vec<String> {
    let Some(spec) = spec else { return Vec::new() };
    let list: Vec<String> = spec
        .get("podCIDRs")
        .and_then(serde_yaml::Value::as_sequence)
        .map(|s| s.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    if !list.is_empty() {
        return list;
    }
    spec.get("podCIDR")
        .and_then(serde_yaml::Value::as_str)
        .map(str::to_string)
        .into_iter()
        .collect()
}

/// Why a translated node is not ready, with the annotations that were ignored.
fn not_ready(node: &Node, issues: &[AnnotationIssue]) -> String {
    let mut missing = Vec::new();
    if !node.endpoint.as_ref().is_some_and(kilo_core::Endpoint::is_ready) {
        missing.push("an endpoint (kilo.squat.ai/endpoint or force-endpoint)");
    }
    if node.key.is_zero() {
        missing.push("a WireGuard key (kilo.squat.ai/key)");
    }
    if node.subnets.is_empty() {
        missing.push("a pod CIDR (spec.podCIDR)");
    }
    let mut message = format!("not ready: no {}", missing.join(", no "));
    for issue in issues {
        message.push_str(&format!("; {issue}"));
    }
    message
}
