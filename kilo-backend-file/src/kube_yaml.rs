//! Kubernetes objects as a file (contract 4): a `v1` `List`, or `---`-separated documents, of
//! `Node` and `kilo.squat.ai/v1alpha1` `Peer` objects, as `kubectl get nodes,peers -o yaml`
//! prints them. JSON (`-o json`) is YAML too.
//!
//! Text in the block style kubectl prints is read by a fast reader ([`crate::fast_yaml`]);
//! anything else by the full YAML parser (`serde-saphyr`).
//!
//! Only the fields Kilo reads are deserialized (names, labels, annotations, `spec`); the rest,
//! `status` included, is skipped. An object that does not translate is left out with an
//! [`Invalid`] entry; only text that is not YAML, or objects not shaped like Kubernetes objects,
//! fail the whole file.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::fmt;

use kilo_core::annotations::{AnnotationIssue, NodeObject, node_from_object};
use kilo_core::peer_spec::{PeerSpec, peer_from_spec, validate};
use kilo_core::settings::{KubernetesDump, Listed};
use kilo_core::{Invalid, ObjectKind, Snapshot};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_saphyr::budget::BudgetBreach;

use crate::Options;
use crate::error::FileError;
use crate::fast_yaml::{self, Yaml};

const PEER_API_VERSION: &str = "kilo.squat.ai/v1alpha1";

/// Parses Kubernetes YAML (or JSON) into the [`Snapshot`] every command reads; `file` names the
/// input in errors: the objects as [`read_kube_yaml`] reads them, settled by
/// [`KubernetesDump::settle`] (settings derived from the nodes as `kgctl` derives them, upstream
/// 12.1; nodes and peers that are not ready left out with an [`Invalid`] entry; last-seen is not
/// checked).
pub fn parse_kube_yaml(text: &str, file: &str, options: &Options) -> Result<Snapshot, FileError> {
    parse_kube_yaml_with_issues(text, file, options).map(|(snapshot, _)| snapshot)
}

/// Reads Kubernetes YAML (or JSON) as it is, deciding nothing ([`KubernetesDump`]).
///
/// Nodes translate as upstream's `translateNode` (annotations, `force-*`, the topology label of
/// `options`) and get [`crate::SNAPSHOT_LAST_SEEN`]; peers that pass upstream's `Validate()`
/// translate. Every node and peer that translates is listed, ready or not; objects of other
/// kinds, objects without a name and objects whose name was seen before are listed as
/// [`Listed::Unread`] with the reason. The annotations that were ignored are listed in
/// [`KubernetesDump::ignored`] (node kept).
pub fn read_kube_yaml(
    text: &str,
    file: &str,
    options: &Options,
) -> Result<KubernetesDump, FileError> {
    read_with_issues(text, file, options).map(|(dump, _)| dump)
}

/// One annotation of a node that did not parse and was ignored (the node may still be in the
/// snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIssue {
    /// The node's name.
    pub node: String,
    /// The annotation and what is wrong with it.
    pub issue: AnnotationIssue,
}

impl fmt::Display for NodeIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {:?}: {}", self.node, self.issue)
    }
}

/// As [`parse_kube_yaml`], with every annotation that was ignored because it does not parse, for
/// every node in file order (for `kgctl validate`).
pub fn parse_kube_yaml_with_issues(
    text: &str,
    file: &str,
    options: &Options,
) -> Result<(Snapshot, Vec<NodeIssue>), FileError> {
    let (dump, issues) = read_with_issues(text, file, options)?;
    Ok((dump.settle(), issues))
}

/// [`read_kube_yaml`], with the ignored annotations as [`NodeIssue`]s too.
fn read_with_issues(
    text: &str,
    file: &str,
    options: &Options,
) -> Result<(KubernetesDump, Vec<NodeIssue>), FileError> {
    let mut builder = Builder {
        options,
        issues: Vec::new(),
        objects: Vec::new(),
        node_names: HashSet::new(),
        peer_names: HashSet::new(),
        position: 0,
    };
    let objects = match objects_fast(text) {
        Some(objects) => objects,
        None => objects_full(text, file)?,
    };
    for object in objects {
        builder.object(object);
    }
    let ignored = builder
        .issues
        .iter()
        .map(|i| Invalid {
            kind: ObjectKind::Node,
            name: i.node.clone(),
            message: i.issue.to_string(),
        })
        .collect();
    Ok((KubernetesDump { objects: builder.objects, ignored }, builder.issues))
}

/// The objects, read by the fast reader; `None` when it cannot read the text.
fn objects_fast(text: &str) -> Option<Vec<Object>> {
    let docs = fast_yaml::parse(text, fast_yaml::Part::Object).ok()?;
    docs.into_iter().map(object_from_yaml).collect()
}

/// Flow collections nested deeper than this are refused before the YAML parser sees them (it
/// refuses anything nested deeper than [`MAX_DEPTH`] anyway, but only once it gets there).
const MAX_FLOW_DEPTH: usize = 1000;

/// Collections nested deeper than this are refused. Kubernetes objects nest about 15 levels
/// (`managedFields`); the limit bounds the stack the parser uses (about 20 KiB a level in debug
/// builds, where threads may have 2 MiB).
const MAX_DEPTH: usize = 32;

/// How the full parser reads: no limit on the number of documents, nodes or events (the text is
/// in memory already, at most [`crate::MAX_FILE_SIZE`] bytes, and the work is linear in it); the
/// parser's defaults against alias bombs; errors without a rendered snippet; YAML 1.2 booleans.
fn read_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            max_documents: usize::MAX,
            max_events: usize::MAX,
            max_nodes: usize::MAX,
        },
        with_snippet: false,
        // YAML 1.2's booleans only (as serde_yaml and the fast reader): `no`, `yes`, `on` and
        // `off` are strings, not YAML 1.1 booleans.
        strict_booleans: true,
    }
}

/// The objects, read by the full YAML parser (`serde-saphyr`).
fn objects_full(text: &str, file: &str) -> Result<Vec<Object>, FileError> {
    let mut depth = 0usize;
    for (i, b) in text.bytes().enumerate() {
        match b {
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => continue,
        }
        if depth > MAX_FLOW_DEPTH {
            return Err(FileError::Syntax {
                file: file.to_string(),
                line: crate::error::line_of(text, i),
                message: format!("collections nested deeper than {MAX_FLOW_DEPTH} levels"),
            });
        }
    }
    serde_saphyr::from_multiple_with_options::<Object>(text, read_options())
        .map_err(|e| syntax(file, &e))
}

/// An [`Object`] from the fast reader's tree; `None` where the full parser would fail or
/// might read the text differently (it then reads it and reports the error).
fn object_from_yaml(y: Yaml<'_>) -> Option<Object> {
    let Yaml::Map(entries) = y else { return None };
    let mut object =
        Object { api_version: None, kind: None, metadata: None, spec: None, items: None };
    let mut seen: Vec<Cow<'_, str>> = Vec::new();
    for (key, value) in entries {
        if seen.contains(&key) {
            return None;
        }
        match key.as_ref() {
            "apiVersion" => object.api_version = opt_string(value)?,
            "kind" => object.kind = opt_string(value)?,
            "metadata" => {
                object.metadata = match value {
                    Yaml::Null => None,
                    value => Some(metadata_from_yaml(value)?),
                }
            }
            "spec" => {
                object.spec = match value {
                    Yaml::Null => None,
                    value => Some(value.to_json()),
                }
            }
            "items" => {
                object.items = match value {
                    Yaml::Null => None,
                    Yaml::Seq(items) => Some(
                        items
                            .into_iter()
                            .map(|item| match item {
                                Yaml::Null => Some(None),
                                item => object_from_yaml(item).map(Some),
                            })
                            .collect::<Option<Vec<_>>>()?,
                    ),
                    _ => return None,
                }
            }
            _ => continue,
        }
        seen.push(key);
    }
    Some(object)
}

fn opt_string(y: Yaml<'_>) -> Option<Option<String>> {
    match y {
        Yaml::Null => Some(None),
        Yaml::Str { text, .. } => Some(Some(text.into_owned())),
        _ => None,
    }
}

fn metadata_from_yaml(y: Yaml<'_>) -> Option<Metadata> {
    let Yaml::Map(entries) = y else { return None };
    let mut metadata = Metadata::default();
    let mut seen: Vec<Cow<'_, str>> = Vec::new();
    for (key, value) in entries {
        if seen.contains(&key) {
            return None;
        }
        match key.as_ref() {
            "name" => metadata.name = opt_string(value)?,
            "labels" => metadata.labels = string_map_from_yaml(value)?,
            "annotations" => metadata.annotations = string_map_from_yaml(value)?,
            _ => continue,
        }
        seen.push(key);
    }
    Some(metadata)
}

fn string_map_from_yaml(y: Yaml<'_>) -> Option<BTreeMap<String, String>> {
    match y {
        Yaml::Null => Some(BTreeMap::new()),
        Yaml::Map(entries) => entries
            .into_iter()
            .map(|(k, v)| Some((k.into_owned(), opt_string(v)?.unwrap_or_default())))
            .collect(),
        _ => None,
    }
}

fn syntax(file: &str, e: &serde_saphyr::Error) -> FileError {
    let message = match e {
        serde_saphyr::Error::Budget { breach: BudgetBreach::Depth { .. }, .. } => {
            format!("collections nested deeper than {MAX_DEPTH} levels")
        }
        e => {
            let message = e.to_string();
            match message.rfind(" at line ") {
                Some(i) => message[..i].to_string(),
                None => message,
            }
        }
    };
    FileError::Syntax {
        file: file.to_string(),
        line: e.location().and_then(|l| usize::try_from(l.line()).ok()).unwrap_or(1),
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
    spec: Option<serde_json::Value>,
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
    issues: Vec<NodeIssue>,
    objects: Vec<Listed>,
    node_names: HashSet<String>,
    peer_names: HashSet<String>,
    position: usize,
}

impl Builder<'_> {
    fn invalid(&mut self, kind: ObjectKind, name: String, message: String) {
        self.objects.push(Listed::Unread(Invalid { kind, name, message }));
    }

    fn object(&mut self, object: Object) {
        let kind = object.kind.as_deref().unwrap_or("");
        let api = object.api_version.as_deref();
        if matches!(kind, "List" | "NodeList" | "PeerList") {
            for item in object.items.into_iter().flatten().flatten() {
                self.object(item);
            }
            return;
        }
        self.position += 1;
        match (kind, api) {
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
        self.issues.extend(issues.into_iter().map(|issue| NodeIssue { node: name.clone(), issue }));
        if !self.node_names.insert(name.clone()) {
            let message = "a node of this name was listed before; skipped".to_string();
            return self.invalid(ObjectKind::Node, name, message);
        }
        self.objects.push(Listed::Node(node));
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
        let spec: PeerSpec = match serde_json::from_value(spec) {
            Ok(spec) => spec,
            Err(e) => return self.invalid(ObjectKind::Peer, name, format!("spec: {e}")),
        };
        if let Err(e) = validate(&spec) {
            return self.invalid(ObjectKind::Peer, name, e.to_string());
        }
        self.objects.push(Listed::Peer(peer_from_spec(&name, &spec)));
    }
}

/// `spec.podCIDRs`, else `[spec.podCIDR]`, as text.
fn pod_cidrs(spec: Option<&serde_json::Value>) -> Vec<String> {
    let Some(spec) = spec else { return Vec::new() };
    let list: Vec<String> = spec
        .get("podCIDRs")
        .and_then(serde_json::Value::as_array)
        .map(|s| s.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    if !list.is_empty() {
        return list;
    }
    spec.get("podCIDR")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(objects: Vec<Object>) -> Snapshot {
        let options = Options::default();
        let mut builder = Builder {
            options: &options,
            issues: Vec::new(),
            objects: Vec::new(),
            node_names: HashSet::new(),
            peer_names: HashSet::new(),
            position: 0,
        };
        for object in objects {
            builder.object(object);
        }
        KubernetesDump { objects: builder.objects, ignored: Vec::new() }.settle()
    }

    fn scalar_piece() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let piece = prop::sample::select(vec![
            "a",
            "1",
            "-1",
            "0x1F",
            "1.5",
            "true",
            "no",
            "~",
            "null",
            " ",
            ": ",
            ":",
            "#",
            " #",
            "'",
            "''",
            "\"",
            "\\",
            "\\n",
            "\\u00e9",
            "\\x41",
            "\\t",
            "é",
            "[",
            "]",
            "{",
            "}",
            "{}",
            "[]",
            ",",
            "-",
            "- ",
            "|",
            "|-",
            ">",
            "&a",
            "*a",
            "!",
            "?",
            "%",
            "@",
            "`",
            "10.0.0.1/24",
            "10.1.0.1:51820",
            "\n",
            "\n  ",
            "\n    ",
            "\n      ",
            "\n- ",
        ]);
        prop::collection::vec(piece, 0..12).prop_map(|p| p.concat())
    }

    proptest::proptest! {
        /// Whenever both readers accept a text, they read the same objects.
        #[test]
        fn the_fast_reader_agrees_with_the_full_parser_whenever_both_read_a_text(
            a in scalar_piece(), b in scalar_piece(), c in scalar_piece(),
        ) {
            let text = format!(
                "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Node\n  metadata:\n    \
                 name: {a}\n    annotations:\n      kilo.squat.ai/key: {b}\n      x: {c}\n  spec:\n    \
                 podCIDR: {c}\n    other: {a}\n- apiVersion: kilo.squat.ai/v1alpha1\n  kind: Peer\n  \
                 metadata:\n    name: p\n  spec:\n    allowedIPs:\n    - 10.5.0.1/32\n    \
                 persistentKeepalive: {b}\n    publicKey: a2V5NQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
            );
            if let (Some(fast), Ok(full)) = (objects_fast(&text), objects_full(&text, "f")) {
                proptest::prop_assert_eq!(build(fast), build(full), "{}", text);
            }
        }
    }

    #[test]
    fn the_fast_reader_reads_kubectl_output_as_the_full_parser_does() {
        let text = include_str!("../tests/data/upstream-fixture.yaml");
        let fast = objects_fast(text).expect("kubectl output is read by the fast reader");
        let full = objects_full(text, "f").unwrap();
        let (fast, full) = (build(fast), build(full));
        assert_eq!(fast, full);
        assert_eq!(fast.nodes.len(), 4);
        assert_eq!(fast.peers.len(), 2);
    }

    #[test]
    fn the_fast_reader_agrees_on_documents_comments_and_quoting() {
        let text = "# nodes\n---\napiVersion: v1\nkind: Node\nmetadata:\n  name: 'a' # the first\n  \
                    labels: {}\n  annotations:\n    kilo.squat.ai/key: \"a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n    \
                    kilo.squat.ai/endpoint: 10.1.0.1:51820\n    kilo.squat.ai/persistent-keepalive: 10\n    \
                    kilo.squat.ai/leader:\n    note: |\n      line one\n      status: not a key\n\
                    spec:\n  podCIDRs:\n  - 10.2.1.0/24\n---\napiVersion: kilo.squat.ai/v1alpha1\n\
                    kind: Peer\nmetadata:\n  name: p\nspec:\n  allowedIPs:\n  - 10.5.0.1/32\n  \
                    endpoint:\n    dnsOrIP:\n      dns: example.com\n    port: 51820\n  \
                    persistentKeepalive: 25\n  publicKey: a2V5NQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
        let fast = build(objects_fast(text).expect("read by the fast reader"));
        let full = build(objects_full(text, "f").unwrap());
        assert_eq!(fast, full);
        assert_eq!(fast.nodes.len(), 1, "{:?}", fast.invalid);
        assert!(fast.nodes[0].leader);
        assert_eq!(fast.peers[0].endpoint.as_ref().unwrap().to_string(), "example.com:51820");
    }

    #[test]
    fn the_reader_lists_every_object_ready_or_not_in_order_and_derives_no_settings() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: kilo.squat.ai/v1alpha1\n  \
                    kind: Peer\n  metadata:\n    name: q\n  spec:\n    allowedIPs: []\n    \
                    publicKey: a2V5NQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n- apiVersion: v1\n  \
                    kind: Pod\n  metadata:\n    name: web\n- apiVersion: v1\n  kind: Node\n  \
                    metadata:\n    name: a\n    annotations:\n      \
                    kilo.squat.ai/wireguard-ip: 10.9.0.7/24\n      \
                    kilo.squat.ai/persistent-keepalive: x\n";
        let dump = read_kube_yaml(text, "f", &Options::default()).unwrap();
        let kinds: Vec<String> = dump
            .objects
            .iter()
            .map(|o| match o {
                Listed::Node(n) => format!("node {}", n.name),
                Listed::Peer(p) => format!("peer {}", p.name),
                Listed::Unread(i) => i.to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "peer q".to_string(),
                "object \"web\": kind \"Pod\" (apiVersion \"v1\") is neither a v1 Node nor a \
                 kilo.squat.ai/v1alpha1 Peer; skipped"
                    .to_string(),
                "node a".to_string(),
            ]
        );
        assert_eq!(dump.ignored.len(), 1, "{:?}", dump.ignored);
        assert_eq!(dump.ignored[0].name, "a");
        // Settled, neither the peer nor the node is ready; the subnet comes from the node.
        let settled = dump.settle();
        assert!(settled.nodes.is_empty() && settled.peers.is_empty());
        assert_eq!(settled.settings.subnet, Some("10.9.0.0/24".parse().unwrap()));
        assert_eq!(settled.invalid.len(), 3);
    }
}
