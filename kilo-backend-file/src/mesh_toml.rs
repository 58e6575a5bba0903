//! The static mesh file (contract 3): TOML with an optional `[mesh]` table, `[[node]]` and
//! `[[peer]]` arrays of tables, every key kebab-case.
//!
//! The document is parsed into TOML's spanned value tree and walked by hand, so that every error
//! names the file, the line, the object and the key.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use kilo_core::cidr::parse_network;
use kilo_core::key::KeyError;
use kilo_core::{Cidr, Endpoint, Granularity, Key, MeshSettings, Node, Peer, Snapshot};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::error::{FileError, UniqueKey, line_of};

const TOP_KEYS: &str = "mesh, node, peer";
const MESH_KEYS: &str = "granularity, subnet, port";
const NODE_KEYS: &str = "name, public-key, endpoint, location, internal-ip, subnet, leader, \
                         persistent-keepalive, allowed-location-ips";
const PEER_KEYS: &str =
    "name, public-key, allowed-ips, endpoint, persistent-keepalive, preshared-key";

type Value<'i> = Spanned<DeValue<'i>>;

/// Parses a static mesh file (contract 3) into a [`Snapshot`].
///
/// `file` names the input in error messages. Nodes get [`crate::SNAPSHOT_LAST_SEEN`] as their
/// last check-in. Duplicate node names, duplicate peer names and public keys used twice (by
/// any two nodes or peers) are errors naming both lines.
pub fn parse_mesh_toml(text: &str, file: &str) -> Result<Snapshot, FileError> {
    let cx = Cx { file, text };
    let doc = DeTable::parse(text).map_err(|e| {
        let mut message = e.message().trim_end().replace('\n', "; ");
        let at = e.span().and_then(|s| text.get(s)).unwrap_or("").trim();
        if !at.is_empty() && at.len() <= 40 && !at.contains('\n') {
            message = format!("{message} (at {at:?})");
        }
        FileError::Syntax {
            file: file.to_string(),
            line: e.span().map_or(1, |s| line_of(text, s.start)),
            message,
        }
    })?;
    let mut snapshot = Snapshot::default();
    let mut names = Names::default();
    let mut keys: HashMap<Key, (String, usize)> = HashMap::new();
    for (key, value) in ordered(doc.get_ref()) {
        match key.get_ref().as_ref() {
            "mesh" => snapshot.settings = cx.mesh(value)?,
            "node" => {
                for (i, (item, table)) in cx.tables("node", value)?.into_iter().enumerate() {
                    let parsed = cx.node(i + 1, item, table)?;
                    names.check(&cx, "node", &parsed.object, &parsed.name, parsed.name_at)?;
                    cx.unique_key(&mut keys, &parsed.object, parsed.key, parsed.key_at)?;
                    snapshot.nodes.push(parsed.value);
                }
            }
            "peer" => {
                for (i, (item, table)) in cx.tables("peer", value)?.into_iter().enumerate() {
                    let parsed = cx.peer(i + 1, item, table)?;
                    names.check(&cx, "peer", &parsed.object, &parsed.name, parsed.name_at)?;
                    cx.unique_key(&mut keys, &parsed.object, parsed.key, parsed.key_at)?;
                    snapshot.peers.push(parsed.value);
                }
            }
            other => return Err(cx.unknown(key, "top level", other, TOP_KEYS)),
        }
    }
    // Contract 3: in a mesh file a node needs only a name and a key.
    snapshot.settings.static_mesh = true;
    Ok(snapshot)
}

/// A table's entries in the order they appear in the file.
fn ordered<'t, 'i>(
    table: &'t DeTable<'i>,
) -> Vec<(&'t Spanned<toml::de::DeString<'i>>, &'t Value<'i>)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    entries
}

/// A parsed node or peer with the byte offsets its uniqueness errors name (lines are counted
/// only when an error is reported: counting them for every object is quadratic).
struct Parsed<T> {
    value: T,
    object: String,
    name: String,
    name_at: usize,
    key: Key,
    key_at: usize,
}

/// Names seen so far, per kind, with their byte offsets.
#[derive(Default)]
struct Names {
    seen: HashMap<(&'static str, String), usize>,
}

impl Names {
    fn check(
        &mut self,
        cx: &Cx<'_>,
        kind: &'static str,
        object: &str,
        name: &str,
        at: usize,
    ) -> Result<(), FileError> {
        if let Some(&other_at) = self.seen.get(&(kind, name.to_string())) {
            return Err(FileError::Duplicate {
                file: cx.file.to_string(),
                line: line_of(cx.text, at),
                object: object.to_string(),
                key: UniqueKey::Name,
                value: format!("{name:?}"),
                other: format!("{kind} {name:?}"),
                other_line: line_of(cx.text, other_at),
            });
        }
        self.seen.insert((kind, name.to_string()), at);
        Ok(())
    }
}

/// The parsing context: the file's name and text, for error lines.
struct Cx<'a> {
    file: &'a str,
    text: &'a str,
}

impl Cx<'_> {
    fn line(&self, span: Range<usize>) -> usize {
        line_of(self.text, span.start)
    }

    fn value_err(
        &self,
        span: Range<usize>,
        object: &str,
        key: &str,
        message: impl Into<String>,
    ) -> FileError {
        FileError::Value {
            file: self.file.to_string(),
            line: self.line(span),
            object: object.to_string(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn unknown<K>(
        &self,
        key: &Spanned<K>,
        object: &str,
        name: &str,
        known: &'static str,
    ) -> FileError {
        FileError::UnknownKey {
            file: self.file.to_string(),
            line: self.line(key.span()),
            object: object.to_string(),
            key: name.to_string(),
            known,
        }
    }

    fn unique_key(
        &self,
        keys: &mut HashMap<Key, (String, usize)>,
        object: &str,
        key: Key,
        at: usize,
    ) -> Result<(), FileError> {
        if let Some((other, other_at)) = keys.get(&key) {
            return Err(FileError::Duplicate {
                file: self.file.to_string(),
                line: line_of(self.text, at),
                object: object.to_string(),
                key: UniqueKey::PublicKey,
                value: key.to_string(),
                other: other.clone(),
                other_line: line_of(self.text, *other_at),
            });
        }
        keys.insert(key, (object.to_string(), at));
        Ok(())
    }

    /// The `[[name]]` array of tables, each item with its table.
    fn tables<'v, 'i>(
        &self,
        name: &str,
        value: &'v Value<'i>,
    ) -> Result<Vec<(&'v Value<'i>, &'v DeTable<'i>)>, FileError> {
        let wrong = |found: &DeValue<'_>| {
            self.value_err(
                value.span(),
                "top level",
                name,
                format!("want [[{name}]] tables, found {}", describe(found)),
            )
        };
        let DeValue::Array(items) = value.get_ref() else {
            return Err(wrong(value.get_ref()));
        };
        items
            .iter()
            .map(|item| match item.get_ref() {
                DeValue::Table(t) => Ok((item, t)),
                other => Err(wrong(other)),
            })
            .collect()
    }

    fn mesh(&self, value: &Value<'_>) -> Result<MeshSettings, FileError> {
        let DeValue::Table(table) = value.get_ref() else {
            return Err(self.value_err(
                value.span(),
                "top level",
                "mesh",
                format!("want a [mesh] table, found {}", describe(value.get_ref())),
            ));
        };
        let object = "[mesh]";
        let mut settings = MeshSettings::default();
        for (key, v) in ordered(table) {
            let name = key.get_ref().as_ref();
            let f = Field { cx: self, object, key: name, value: v };
            match name {
                "granularity" => {
                    let s = f.string()?;
                    let g = s.parse::<Granularity>().map_err(|e| f.err(e.to_string()))?;
                    settings.granularity = Some(g);
                }
                "subnet" => {
                    let ranges = f.per_family(true)?;
                    let (first, ipv6) = kilo_core::cidr::per_family(&ranges).unwrap_or_default();
                    (settings.subnet, settings.subnet6) = (first, ipv6);
                }
                "port" => settings.port = Some(f.port()?),
                other => return Err(self.unknown(key, object, other, MESH_KEYS)),
            }
        }
        Ok(settings)
    }

    /// The object's display name: `node "a"`, or `node #2` when it has no usable name.
    fn object_and_name(
        &self,
        kind: &str,
        index: usize,
        value: &Value<'_>,
        table: &DeTable<'_>,
    ) -> Result<(String, String, usize), FileError> {
        let numbered = format!("{kind} #{index}");
        let Some(v) = table.get("name") else {
            return Err(FileError::Missing {
                file: self.file.to_string(),
                line: self.line(value.span()),
                object: numbered,
                key: "name",
            });
        };
        let f = Field { cx: self, object: &numbered, key: "name", value: v };
        let name = f.string()?;
        if name.is_empty() {
            return Err(f.err("must not be empty"));
        }
        if name.chars().any(char::is_control) {
            return Err(f.err("must not contain control characters"));
        }
        Ok((format!("{kind} {name:?}"), name.to_string(), v.span().start))
    }

    fn require<'v, 'i>(
        &self,
        table: &'v DeTable<'i>,
        value: &Value<'_>,
        object: &str,
        key: &'static str,
    ) -> Result<&'v Value<'i>, FileError> {
        table.get(key).ok_or_else(|| FileError::Missing {
            file: self.file.to_string(),
            line: self.line(value.span()),
            object: object.to_string(),
            key,
        })
    }

    fn node(
        &self,
        index: usize,
        value: &Value<'_>,
        table: &DeTable<'_>,
    ) -> Result<Parsed<Node>, FileError> {
        let (object, name, name_at) = self.object_and_name("node", index, value, table)?;
        let key_value = self.require(table, value, &object, "public-key")?;
        let mut node =
            Node { name: name.clone(), last_seen: crate::SNAPSHOT_LAST_SEEN, ..Node::default() };
        for (key, v) in ordered(table) {
            let f = Field { cx: self, object: &object, key: key.get_ref().as_ref(), value: v };
            match f.key {
                "name" => {}
                "public-key" => node.key = f.public_key()?,
                "endpoint" => node.endpoint = Some(f.endpoint()?),
                "location" => node.location = f.string()?.to_string(),
                "internal-ip" => {
                    let ips = f.per_family(false)?;
                    let (first, ipv6) = kilo_core::cidr::per_family(&ips).unwrap_or_default();
                    (node.internal_ip, node.internal_ip6) = (first, ipv6);
                }
                "subnet" => node.subnets = f.per_family(true)?,
                "leader" => node.leader = f.boolean()?,
                "persistent-keepalive" => node.persistent_keepalive = f.keepalive()?,
                "allowed-location-ips" => node.allowed_location_ips = f.cidrs()?,
                other => return Err(self.unknown(key, &object, other, NODE_KEYS)),
            }
        }
        Ok(Parsed {
            key: node.key,
            key_at: key_value.span().start,
            value: node,
            object,
            name,
            name_at,
        })
    }

    fn peer(
        &self,
        index: usize,
        value: &Value<'_>,
        table: &DeTable<'_>,
    ) -> Result<Parsed<Peer>, FileError> {
        let (object, name, name_at) = self.object_and_name("peer", index, value, table)?;
        let key_value = self.require(table, value, &object, "public-key")?;
        self.require(table, value, &object, "allowed-ips")?;
        let mut peer = Peer { name: name.clone(), ..Peer::default() };
        for (key, v) in ordered(table) {
            let f = Field { cx: self, object: &object, key: key.get_ref().as_ref(), value: v };
            match f.key {
                "name" => {}
                "public-key" => peer.public_key = f.public_key()?,
                "allowed-ips" => {
                    peer.allowed_ips = f.cidrs()?;
                    if peer.allowed_ips.is_empty() {
                        return Err(f.err("want at least one CIDR"));
                    }
                }
                "endpoint" => peer.endpoint = Some(f.endpoint()?),
                "persistent-keepalive" => peer.persistent_keepalive = f.keepalive()?,
                "preshared-key" => {
                    let s = f.string()?;
                    peer.preshared_key = Some(s.parse().map_err(|e| f.err(key_message(&e)))?);
                }
                other => return Err(self.unknown(key, &object, other, PEER_KEYS)),
            }
        }
        Ok(Parsed {
            key: peer.public_key,
            key_at: key_value.span().start,
            value: peer,
            object,
            name,
            name_at,
        })
    }
}

/// One key's value, with what error messages need.
struct Field<'a, 'i> {
    cx: &'a Cx<'a>,
    object: &'a str,
    key: &'a str,
    value: &'a Value<'i>,
}

impl<'a, 'i> Field<'a, 'i> {
    fn err(&self, message: impl Into<String>) -> FileError {
        self.cx.value_err(self.value.span(), self.object, self.key, message)
    }

    fn wrong(&self, want: &str) -> FileError {
        self.err(format!("want {want}, found {}", describe(self.value.get_ref())))
    }

    fn string(&self) -> Result<&'a str, FileError> {
        self.value.get_ref().as_str().ok_or_else(|| self.wrong("a string"))
    }

    fn boolean(&self) -> Result<bool, FileError> {
        self.value.get_ref().as_bool().ok_or_else(|| self.wrong("true or false"))
    }

    fn integer(&self, min: i64, max: i64, unit: &str) -> Result<i64, FileError> {
        let i = self.value.get_ref().as_integer().ok_or_else(|| self.wrong("an integer"))?;
        match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(self.err(format!("want {unit} from {min} to {max}, found {i}"))),
        }
    }

    fn port(&self) -> Result<u16, FileError> {
        let n = self.integer(1, 65535, "a port")?;
        Ok(u16::try_from(n).unwrap_or(u16::MAX))
    }

    fn keepalive(&self) -> Result<Duration, FileError> {
        let n = self.integer(0, 65535, "seconds")?;
        Ok(Duration::from_secs(n.unsigned_abs()))
    }

    fn public_key(&self) -> Result<Key, FileError> {
        let key: Key = self.string()?.parse().map_err(|e| self.err(key_message(&e)))?;
        if key.is_zero() {
            return Err(self.err("the all-zero key is not a public key"));
        }
        Ok(key)
    }

    fn endpoint(&self) -> Result<Endpoint, FileError> {
        let s = self.string()?;
        s.parse::<Endpoint>().map_err(|e| {
            self.err(format!(
                "invalid endpoint {s:?}: {} (want IPv4:port, [IPv6]:port or dns-name:port)",
                e.reason
            ))
        })
    }

    fn cidr(&self) -> Result<Cidr, FileError> {
        self.string()?.parse::<Cidr>().map_err(|e| self.err(e.to_string()))
    }

    /// A CIDR string, or an array of at most one CIDR per address family (dual stack), in the
    /// order written; masked to the network when `network`.
    fn per_family(&self, network: bool) -> Result<Vec<Cidr>, FileError> {
        let parse = |f: &Field<'_, '_>| -> Result<Cidr, FileError> {
            let s = f.string()?;
            let c = if network { parse_network(s) } else { s.parse::<Cidr>() };
            c.map_err(|e| f.err(e.to_string()))
        };
        let cidrs = match self.value.get_ref() {
            DeValue::Array(items) => items
                .iter()
                .map(|item| {
                    parse(&Field { cx: self.cx, object: self.object, key: self.key, value: item })
                })
                .collect::<Result<Vec<_>, _>>()?,
            DeValue::String(_) => vec![parse(self)?],
            _ => {
                return Err(self.wrong("a CIDR string, or an array of one CIDR per address family"));
            }
        };
        if cidrs.is_empty() {
            return Err(self.err("want one CIDR, or one per address family; found an empty array"));
        }
        kilo_core::cidr::per_family(&cidrs).map_err(|e| self.err(e.to_string()))?;
        Ok(cidrs)
    }

    fn cidrs(&self) -> Result<Vec<Cidr>, FileError> {
        let DeValue::Array(items) = self.value.get_ref() else {
            return Err(self.wrong("an array of CIDR strings"));
        };
        items
            .iter()
            .map(|item| {
                Field { cx: self.cx, object: self.object, key: self.key, value: item }.cidr()
            })
            .collect()
    }
}

fn key_message(e: &KeyError) -> String {
    match e {
        KeyError::NotBase64 => "invalid base64".to_string(),
        KeyError::InvalidLength(n) => format!("invalid length: decodes to {n} bytes, want 32"),
        other => other.to_string(),
    }
}

/// A TOML value's type, for "want X, found Y" messages.
fn describe(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}
