//! Watched objects decoded one at a time. The watcher lists and watches [`Raw`] objects, which
//! accept any JSON (so a list, or a watch event, never fails to decode because of one object);
//! the backend then decodes each into its type with [`decode`], and an object that does not
//! decode becomes an [`Invalid`] naming the object and the field, without the field's value (a
//! Peer's `presharedKey` is a secret, and a wrong value may be one pasted in the wrong field).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kilo_core::backend::{Invalid, ObjectKind};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// The most decode attempts spent finding the field that does not decode.
const MAX_PROBES: usize = 256;

/// An object of kind `K` as the API server sent it (its JSON), with the metadata the watcher
/// needs (name, resource version), read leniently. Its `Debug` output names the object only.
pub(crate) struct Raw<K> {
    meta: ObjectMeta,
    value: Value,
    kind: PhantomData<fn() -> K>,
}

impl<K> Raw<K> {
    /// The object's name (empty when it has none).
    pub(crate) fn name(&self) -> &str {
        self.meta.name.as_deref().unwrap_or_default()
    }
}

impl<K> Clone for Raw<K> {
    fn clone(&self) -> Self {
        Raw { meta: self.meta.clone(), value: self.value.clone(), kind: PhantomData }
    }
}

impl<K: Resource<DynamicType = ()>> fmt::Debug for Raw<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Raw")
            .field("kind", &K::kind(&()))
            .field("name", &self.meta.name)
            .field("resource_version", &self.meta.resource_version)
            .finish_non_exhaustive()
    }
}

impl<'de, K> Deserialize<'de> for Raw<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        let meta = lenient_meta(&value["metadata"]);
        Ok(Raw { meta, value, kind: PhantomData })
    }
}

/// The metadata, or when it does not decode, what the watcher needs of it.
fn lenient_meta(metadata: &Value) -> ObjectMeta {
    ObjectMeta::deserialize(metadata).unwrap_or_else(|_| {
        let text = |key: &str| metadata[key].as_str().map(str::to_string);
        ObjectMeta {
            name: text("name"),
            resource_version: text("resourceVersion"),
            uid: text("uid"),
            ..ObjectMeta::default()
        }
    })
}

impl<K: Resource<DynamicType = ()>> Resource for Raw<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }

    fn api_version(dt: &()) -> Cow<'_, str> {
        K::api_version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

/// Decodes `raw` as a `K`; an object that does not decode is an [`Invalid`] of `kind` whose
/// message names the field (`spec.persistentKeepalive: invalid type: string, expected i64`) and
/// never its value.
pub(crate) fn decode<K: DeserializeOwned>(raw: &Raw<K>, kind: ObjectKind) -> Result<K, Invalid> {
    K::deserialize(&raw.value).map_err(|error| {
        let error = error.to_string();
        let path = locate::<K>(&raw.value, &error);
        let what = without_values(&error);
        Invalid {
            kind,
            name: raw.name().to_string(),
            message: match path.as_str() {
                "" => format!("does not decode: {what}"),
                path => format!("does not decode: {path}: {what}"),
            },
        }
    })
}

/// One step of a path into a JSON document.
#[derive(Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// The path of the deepest field whose removal changes how `root` fails to decode as a `K`
/// (the decoder stops at the first bad field, so removing any other leaves the error as it
/// was): `spec.allowedIPs[1]`; empty when no field is singled out.
fn locate<K: DeserializeOwned>(root: &Value, error: &str) -> String {
    let mut path: Vec<Step> = Vec::new();
    let mut probes = 0;
    'descend: while let Some(node) = at(root, &path) {
        let children: Vec<Step> = match node {
            Value::Object(map) => map.keys().cloned().map(Step::Key).collect(),
            Value::Array(items) => (0..items.len()).map(Step::Index).collect(),
            _ => break,
        };
        for child in children {
            if probes == MAX_PROBES {
                break 'descend;
            }
            probes += 1;
            let mut candidate = root.clone();
            let mut inner = path.clone();
            inner.push(child.clone());
            remove(&mut candidate, &inner);
            let changed = match K::deserialize(&candidate) {
                Ok(_) => true,
                Err(e) => e.to_string() != error,
            };
            if changed {
                path = inner;
                continue 'descend;
            }
        }
        break;
    }
    let mut text = String::new();
    for step in &path {
        match step {
            Step::Key(key) if is_plain(key) => {
                if !text.is_empty() {
                    text.push('.');
                }
                text.push_str(key);
            }
            Step::Key(key) => text.push_str(&format!("[{key:?}]")),
            Step::Index(i) => text.push_str(&format!("[{i}]")),
        }
    }
    text
}

fn is_plain(key: &str) -> bool {
    !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn at<'a>(root: &'a Value, path: &[Step]) -> Option<&'a Value> {
    path.iter().try_fold(root, |node, step| match step {
        Step::Key(key) => node.get(key),
        Step::Index(i) => node.get(*i),
    })
}

fn remove(root: &mut Value, path: &[Step]) {
    let Some((last, parent)) = path.split_last() else { return };
    let mut node = root;
    for step in parent {
        let next = match step {
            Step::Key(key) => node.get_mut(key),
            Step::Index(i) => node.get_mut(*i),
        };
        match next {
            Some(next) => node = next,
            None => return,
        }
    }
    match (last, node) {
        (Step::Key(key), Value::Object(map)) => {
            map.remove(key);
        }
        (Step::Index(i), Value::Array(items)) if *i < items.len() => {
            items.remove(*i);
        }
        _ => {}
    }
}

/// A serde error message without the input values it quotes: serde writes a string it did not
/// expect as `string "…"` and an unknown enum variant as `` unknown variant `…` ``.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    match (escaped, c) {
                        (true, _) => escaped = false,
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => {}
                    }
                }
                if out.ends_with(' ') {
                    out.pop();
                }
            }
            '`' if out.ends_with("unknown variant ") => {
                chars.by_ref().take_while(|c| *c != '`').for_each(drop);
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Peer;
    use k8s_openapi::api::core::v1::Node;
    use serde_json::json;

    fn raw<K>(value: Value) -> Raw<K> {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn messages_lose_the_values_they_quote() {
        assert_eq!(
            without_values(r#"invalid type: string "s3cr\"et", expected i64"#),
            "invalid type: string, expected i64"
        );
        assert_eq!(
            without_values("unknown variant `s3cret`, expected `A` or `B`"),
            "unknown variant, expected `A` or `B`"
        );
        assert_eq!(without_values("missing field `spec`"), "missing field `spec`");
    }

    #[test]
    fn any_json_is_a_raw_object_and_its_name_survives_bad_metadata() {
        let r: Raw<Node> =
            raw(json!({"metadata": {"name": "a", "labels": 7, "resourceVersion": "9"}}));
        assert_eq!(r.name(), "a");
        assert_eq!(r.meta().resource_version.as_deref(), Some("9"));
        let r: Raw<Node> = raw(json!(["not", "an", "object"]));
        assert_eq!(r.name(), "");
        assert_eq!(
            format!("{r:?}"),
            "Raw { kind: \"Node\", name: None, resource_version: None, .. }"
        );
    }

    #[test]
    fn a_bad_field_is_named_by_its_path_without_its_value() {
        let peer = json!({"apiVersion": "kilo.squat.ai/v1alpha1", "kind": "Peer",
            "metadata": {"name": "p"},
            "spec": {"allowedIPs": ["10.5.0.1/32", 7], "publicKey": "x", "presharedKey": "s3cret"}});
        let invalid = decode(&raw::<Peer>(peer), ObjectKind::Peer).unwrap_err();
        assert_eq!(
            invalid,
            Invalid {
                kind: ObjectKind::Peer,
                name: "p".into(),
                message: "does not decode: spec.allowedIPs[1]: invalid type: integer `7`, \
                          expected a string"
                    .into(),
            }
        );
        let node = json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n", "labels": {"kilo.squat.ai/x": 1}}});
        let invalid = decode(&raw::<Node>(node), ObjectKind::Node).unwrap_err();
        assert_eq!(
            invalid.message,
            "does not decode: metadata.labels[\"kilo.squat.ai/x\"]: invalid type: integer `1`, \
             expected a string"
        );
    }

    #[test]
    fn a_good_object_decodes() {
        let peer = json!({"apiVersion": "kilo.squat.ai/v1alpha1", "kind": "Peer",
            "metadata": {"name": "p"}, "spec": {"allowedIPs": [], "publicKey": "x"}});
        let decoded = decode(&raw::<Peer>(peer), ObjectKind::Peer).unwrap();
        assert_eq!(decoded.metadata.name.as_deref(), Some("p"));
    }
}
