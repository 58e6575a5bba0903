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
    let mut builder = Builder::new(options);
    if fast_yaml::read_objects(text, &mut builder).is_err() {
        // What the fast reader built is dropped before the full parser builds its own.
        builder = Builder::new(options);
        for object in objects_full(text, file)? {
            builder.object(object);
        }
    }
    Ok(builder.finish())
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

/// One object that is not a list, as either reader read it.
struct Leaf<'x> {
    /// `kind`, `""` when absent.
    kind: &'x str,
    api_version: Option<&'x str>,
    name: Option<&'x str>,
    annotations: &'x BTreeMap<String, String>,
    labels: &'x BTreeMap<String, String>,
    spec: Spec<'x>,
}

/// `spec` (`None`: absent or `null`), as the full parser or the fast reader read it.
enum Spec<'x> {
    Json(Option<&'x serde_json::Value>),
    Yaml(Option<&'x Yaml<'x>>),
}

impl Spec<'_> {
    /// `spec.podCIDRs`, else `[spec.podCIDR]`, as text (entries that are not strings left out).
    fn pod_cidrs(&self) -> Vec<String> {
        let list: Vec<String> = match self {
            Spec::Json(spec) => spec
                .and_then(|s| s.get("podCIDRs"))
                .and_then(serde_json::Value::as_array)
                .map(|s| s.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default(),
            Spec::Yaml(spec) => match spec.and_then(|s| s.get("podCIDRs")) {
                Some(Yaml::Seq(items)) => {
                    items.iter().filter_map(Yaml::json_str).map(str::to_string).collect()
                }
                _ => Vec::new(),
            },
        };
        if !list.is_empty() {
            return list;
        }
        let single = match self {
            Spec::Json(spec) => {
                spec.and_then(|s| s.get("podCIDR")).and_then(serde_json::Value::as_str)
            }
            Spec::Yaml(spec) => spec.and_then(|s| s.get("podCIDR")).and_then(Yaml::json_str),
        };
        single.map(str::to_string).into_iter().collect()
    }

    /// The Peer spec: `None` when absent, else as serde reads it from JSON.
    fn peer_spec(&self) -> Option<Result<PeerSpec, serde_json::Error>> {
        let json = match self {
            Spec::Json(spec) => (*spec)?.clone(),
            Spec::Yaml(spec) => (*spec)?.to_json(),
        };
        Some(serde_json::from_value(json))
    }
}

/// Where the objects of a list are, before its end says whether it is one
/// ([`fast_yaml::Sink::rollback`]).
struct Mark {
    objects: usize,
    issues: usize,
    position: usize,
}

struct Builder<'a> {
    options: &'a Options,
    issues: Vec<NodeIssue>,
    objects: Vec<Listed>,
    /// The indices in `objects` of the entries whose names went into `node_names` (a node) or
    /// `peer_names` (a peer, or a peer that does not translate), for [`Builder::rollback`].
    named: Vec<usize>,
    node_names: HashSet<String>,
    peer_names: HashSet<String>,
    position: usize,
}

impl<'a> Builder<'a> {
    fn new(options: &'a Options) -> Self {
        Builder {
            options,
            issues: Vec::new(),
            objects: Vec::new(),
            named: Vec::new(),
            node_names: HashSet::new(),
            peer_names: HashSet::new(),
            position: 0,
        }
    }

    /// The objects and the ignored annotations.
    fn finish(self) -> (KubernetesDump, Vec<NodeIssue>) {
        let ignored = self
            .issues
            .iter()
            .map(|i| Invalid {
                kind: ObjectKind::Node,
                name: i.node.clone(),
                message: i.issue.to_string(),
            })
            .collect();
        (KubernetesDump { objects: self.objects, ignored }, self.issues)
    }

    fn invalid(&mut self, kind: ObjectKind, name: String, message: String) {
        self.objects.push(Listed::Unread(Invalid { kind, name, message }));
    }

    /// An object from the full parser (a list's items in its place).
    fn object(&mut self, object: Object) {
        let Object { api_version, kind, metadata, spec, items } = object;
        let kind = kind.unwrap_or_default();
        if fast_yaml::is_list(&kind) {
            for item in items.into_iter().flatten().flatten() {
                self.object(item);
            }
            return;
        }
        let metadata = metadata.unwrap_or_default();
        self.leaf(&Leaf {
            kind: &kind,
            api_version: api_version.as_deref(),
            name: metadata.name.as_deref(),
            annotations: &metadata.annotations,
            labels: &metadata.labels,
            spec: Spec::Json(spec.as_ref()),
        });
    }

    fn leaf(&mut self, object: &Leaf<'_>) {
        self.position += 1;
        match (object.kind, object.api_version) {
            ("Node", None | Some("v1")) => self.node(object),
            ("Peer", None | Some(PEER_API_VERSION)) => self.peer(object),
            (kind, api) => {
                let name = object.name.unwrap_or_default();
                let message = format!(
                    "kind {kind:?} (apiVersion {:?}) is neither a v1 Node nor a {PEER_API_VERSION} \
                     Peer; skipped",
                    api.unwrap_or("")
                );
                let name =
                    if name.is_empty() { format!("#{}", self.position) } else { name.to_string() };
                self.invalid(ObjectKind::Other, name, message);
            }
        }
    }

    fn name(&mut self, kind: ObjectKind, name: Option<&str>) -> Option<String> {
        match name {
            Some(name) if !name.is_empty() => Some(name.to_string()),
            _ => {
                let position = format!("#{}", self.position);
                self.invalid(kind, position, "metadata.name is missing; skipped".to_string());
                None
            }
        }
    }

    fn node(&mut self, object: &Leaf<'_>) {
        let Some(name) = self.name(ObjectKind::Node, object.name) else { return };
        let pod_cidrs = object.spec.pod_cidrs();
        let obj = NodeObject {
            name: &name,
            annotations: object.annotations,
            labels: object.labels,
            pod_cidrs: &pod_cidrs,
        };
        let (mut node, issues) = node_from_object(&obj, &self.options.topology_label);
        node.last_seen = crate::SNAPSHOT_LAST_SEEN;
        self.issues.extend(issues.into_iter().map(|issue| NodeIssue { node: name.clone(), issue }));
        if self.node_names.contains(&name) {
            let message = "a node of this name was listed before; skipped".to_string();
            return self.invalid(ObjectKind::Node, name, message);
        }
        self.node_names.insert(name);
        self.named.push(self.objects.len());
        self.objects.push(Listed::Node(node));
    }

    fn peer(&mut self, object: &Leaf<'_>) {
        let Some(name) = self.name(ObjectKind::Peer, object.name) else { return };
        if !self.peer_names.insert(name.clone()) {
            let message = "a peer of this name was listed before; skipped".to_string();
            return self.invalid(ObjectKind::Peer, name, message);
        }
        // The entry pushed next, whatever it is, carries the name.
        self.named.push(self.objects.len());
        let spec: PeerSpec = match object.spec.peer_spec() {
            None => return self.invalid(ObjectKind::Peer, name, "spec is missing".to_string()),
            Some(Ok(spec)) => spec,
            Some(Err(e)) => return self.invalid(ObjectKind::Peer, name, format!("spec: {e}")),
        };
        if let Err(e) = validate(&spec) {
            return self.invalid(ObjectKind::Peer, name, e.to_string());
        }
        self.objects.push(Listed::Peer(peer_from_spec(&name, &spec)));
    }
}

/// The fast reader's objects. Only the annotations with Kilo's prefix and the topology label
/// are kept: the only ones [`node_from_object`] reads (peers and other kinds read neither).
impl<'t> fast_yaml::Sink<'t> for Builder<'_> {
    type Mark = Mark;

    fn keep_label(&self, key: &str) -> bool {
        key == self.options.topology_label
    }

    fn keep_annotation(&self, key: &str) -> bool {
        key.starts_with(kilo_core::annotations::PREFIX)
    }

    fn object(&mut self, item: &fast_yaml::Item<'t>) {
        let map = |entries: &[(Cow<'t, str>, Cow<'t, str>)]| -> BTreeMap<String, String> {
            entries.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let (annotations, labels) = (map(&item.annotations), map(&item.labels));
        self.leaf(&Leaf {
            kind: item.kind.as_deref().unwrap_or(""),
            api_version: item.api_version.as_deref(),
            name: item.name.as_deref(),
            annotations: &annotations,
            labels: &labels,
            spec: Spec::Yaml(item.spec.as_ref()),
        });
    }

    fn mark(&self) -> Mark {
        Mark { objects: self.objects.len(), issues: self.issues.len(), position: self.position }
    }

    fn rollback(&mut self, mark: Mark) {
        while let Some(&i) = self.named.last()
            && i >= mark.objects
        {
            self.named.pop();
            match &self.objects[i] {
                Listed::Node(node) => self.node_names.remove(&node.name),
                Listed::Peer(peer) => self.peer_names.remove(&peer.name),
                Listed::Unread(invalid) => self.peer_names.remove(&invalid.name),
                _ => false,
            };
        }
        self.objects.truncate(mark.objects);
        self.issues.truncate(mark.issues);
        self.position = mark.position;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Read = (KubernetesDump, Vec<NodeIssue>);

    /// What the fast reader reads; `None` when it leaves the text to the full parser.
    fn fast(text: &str) -> Option<Read> {
        let options = Options::default();
        let mut builder = Builder::new(&options);
        fast_yaml::read_objects(text, &mut builder).ok()?;
        Some(builder.finish())
    }

    /// What the full parser reads.
    fn full(text: &str) -> Result<Read, FileError> {
        let options = Options::default();
        let mut builder = Builder::new(&options);
        for object in objects_full(text, "f")? {
            builder.object(object);
        }
        Ok(builder.finish())
    }

    fn build((dump, _): Read) -> Snapshot {
        dump.settle()
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
            if let (Some(fast), Ok(full)) = (fast(&text), full(&text)) {
                proptest::prop_assert_eq!(fast, full, "{}", text);
            }
        }
    }

    #[test]
    fn the_fast_reader_reads_kubectl_output_as_the_full_parser_does() {
        let text = include_str!("../tests/data/upstream-fixture.yaml");
        let fast = fast(text).expect("kubectl output is read by the fast reader");
        let full = full(text).unwrap();
        assert_eq!(fast, full);
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
        let (fast, full) = (fast(text).expect("read by the fast reader"), full(text).unwrap());
        assert_eq!(fast, full);
        let (fast, full) = (build(fast), build(full));
        assert_eq!(fast, full);
        assert_eq!(fast.nodes.len(), 1, "{:?}", fast.invalid);
        assert!(fast.nodes[0].leader);
        assert_eq!(fast.peers[0].endpoint.as_ref().unwrap().to_string(), "example.com:51820");
    }

    #[test]
    fn objects_read_as_items_of_an_object_that_is_no_list_are_taken_back() {
        let node = |name: &str| {
            format!(
                "- kind: Node\n  metadata:\n    name: {name}\n    annotations:\n      \
                 kilo.squat.ai/persistent-keepalive: x\n"
            )
        };
        let peer = "- kind: Peer\n  metadata:\n    name: p\n";
        let thing = format!("kind: Thing\nitems:\n{}{}{peer}", node("a"), node("a"));
        let text = format!("{thing}---\nitems:\n{}{peer}kind: List\n", node("a"));
        let (fast, full) = (fast(&text).expect("read by the fast reader"), full(&text).unwrap());
        assert_eq!(fast, full);
        let names: Vec<String> = fast.0.objects.iter().map(|o| format!("{o:?}")).collect();
        assert_eq!(fast.0.objects.len(), 3, "{names:#?}");
        assert!(matches!(&fast.0.objects[1], Listed::Node(n) if n.name == "a"), "{names:#?}");
        assert!(names[2].contains("spec is missing"), "{names:#?}");
        assert_eq!(fast.1.len(), 1, "the issues of the items taken back are gone");
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
