//! A normalised, per-peer diff between two WireGuard configurations (contract C12 and 6,
//! "Reconciling"): what must change on a device so that it matches the desired configuration.

use std::collections::BTreeMap;
use std::fmt;

use super::{Config, InterfaceConfig, PeerConfig};
use crate::{Cidr, Endpoint, Key, PresharedKey, PrivateKey};

/// A change to the `[Interface]` section. Neither `Debug` nor `Display` shows a private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceChange {
    /// The current configuration has no interface section; the desired one has this one.
    Add(InterfaceConfig),
    /// The desired configuration has no interface section.
    Remove,
    /// The private key changes to this one (`None`: removed).
    PrivateKey(Option<PrivateKey>),
    /// The listen port changes.
    ListenPort {
        /// The current port.
        from: Option<u16>,
        /// The desired port.
        to: Option<u16>,
    },
}

/// One typed change to a peer that exists on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerField {
    /// The endpoint must be set. Only produced when the desired endpoint has an address (an IP
    /// endpoint, or a resolved DNS one) that differs from the current endpoint's address.
    Endpoint {
        /// The current endpoint, if any.
        from: Option<Endpoint>,
        /// The desired endpoint.
        to: Endpoint,
    },
    /// The allowed IPs (network-masked) change.
    AllowedIps {
        /// Networks to add, in upstream's order.
        added: Vec<Cidr>,
        /// Networks to remove, in upstream's order.
        removed: Vec<Cidr>,
    },
    /// The persistent keepalive changes (seconds, 0: off).
    Keepalive {
        /// The current interval.
        from: u16,
        /// The desired interval.
        to: u16,
    },
    /// The pre-shared key changes (the key is never printed).
    PresharedKey {
        /// Whether the current peer has one.
        had: bool,
        /// The desired key (`None`: removed).
        to: Option<PresharedKey>,
    },
}

/// What happens to one peer, identified by its public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerChange {
    /// A desired peer the current configuration lacks (normalised).
    Add(PeerConfig),
    /// A current peer the desired configuration lacks.
    Remove(Key),
    /// A peer on both sides whose fields differ; `changes` is never empty.
    Update {
        /// The peer's public key.
        key: Key,
        /// The fields that change, in the order endpoint, allowed IPs, keepalive, pre-shared key.
        changes: Vec<PeerField>,
    },
}

impl PeerChange {
    /// The public key of the peer this change is about.
    pub fn key(&self) -> &Key {
        match self {
            PeerChange::Add(peer) => &peer.public_key,
            PeerChange::Remove(key) | PeerChange::Update { key, .. } => key,
        }
    }
}

/// The difference between a current and a desired configuration, both normalised (see
/// [`Config::normalized`]). Built by [`diff`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigDiff {
    /// Changes to the `[Interface]` section.
    pub interface: Vec<InterfaceChange>,
    /// Per-peer changes, sorted by public key; at most one per peer.
    pub peers: Vec<PeerChange>,
}

/// The changes that turn `current` into `desired`, after normalising both.
///
/// Peers are matched by public key. Endpoints follow the reconciling rules: a desired peer
/// without an endpoint never produces an endpoint change (the peer dials in, or roamed and the
/// device knows better); a desired endpoint with an address (an IP, or a resolved DNS name)
/// is compared by address; an unresolved DNS endpoint is not compared. So `diff(a, b)` can be
/// empty while `a != b` in those endpoints, and [`ConfigDiff::apply`] keeps `a`'s endpoint there.
pub fn diff(current: &Config, desired: &Config) -> ConfigDiff {
    let current = current.normalized();
    let desired = desired.normalized();
    let interface = diff_interface(current.interface.as_ref(), desired.interface.as_ref());
    let mut theirs: BTreeMap<Key, &PeerConfig> =
        current.peers.iter().map(|p| (p.public_key, p)).collect();
    let mut peers = Vec::new();
    for want in &desired.peers {
        match theirs.remove(&want.public_key) {
            None => peers.push(PeerChange::Add(want.clone())),
            Some(have) => {
                let changes = diff_peer(have, want);
                if !changes.is_empty() {
                    peers.push(PeerChange::Update { key: want.public_key, changes });
                }
            }
        }
    }
    peers.extend(theirs.into_keys().map(PeerChange::Remove));
    peers.sort_by(|a, b| a.key().cmp(b.key()));
    ConfigDiff { interface, peers }
}

fn diff_interface(
    have: Option<&InterfaceConfig>,
    want: Option<&InterfaceConfig>,
) -> Vec<InterfaceChange> {
    match (have, want) {
        (None, None) => Vec::new(),
        (Some(_), None) => vec![InterfaceChange::Remove],
        (None, Some(want)) => vec![InterfaceChange::Add(want.clone())],
        (Some(have), Some(want)) => {
            let mut changes = Vec::new();
            if have.private_key != want.private_key {
                changes.push(InterfaceChange::PrivateKey(want.private_key.clone()));
            }
            if have.listen_port != want.listen_port {
                changes.push(InterfaceChange::ListenPort {
                    from: have.listen_port,
                    to: want.listen_port,
                });
            }
            changes
        }
    }
}

fn diff_peer(have: &PeerConfig, want: &PeerConfig) -> Vec<PeerField> {
    let mut changes = Vec::new();
    if let Some(to) = &want.endpoint
        && let Some(addr) = to.addr()
        && have.endpoint.as_ref().and_then(Endpoint::addr) != Some(addr)
    {
        changes.push(PeerField::Endpoint { from: have.endpoint.clone(), to: to.clone() });
    }
    let added: Vec<Cidr> =
        want.allowed_ips.iter().filter(|c| !have.allowed_ips.contains(c)).copied().collect();
    let removed: Vec<Cidr> =
        have.allowed_ips.iter().filter(|c| !want.allowed_ips.contains(c)).copied().collect();
    if !added.is_empty() || !removed.is_empty() {
        changes.push(PeerField::AllowedIps { added, removed });
    }
    if have.persistent_keepalive != want.persistent_keepalive {
        changes.push(PeerField::Keepalive {
            from: have.persistent_keepalive,
            to: want.persistent_keepalive,
        });
    }
    if have.preshared_key != want.preshared_key {
        changes.push(PeerField::PresharedKey {
            had: have.preshared_key.is_some(),
            to: want.preshared_key,
        });
    }
    changes
}

impl ConfigDiff {
    /// Whether nothing needs to change.
    pub fn is_empty(&self) -> bool {
        self.interface.is_empty() && self.peers.is_empty()
    }

    /// `current` with these changes applied, in normal form. For any `a` and `b`,
    /// `diff(&a, &b).apply(&a)` equals `b.normalized()` except for the endpoints [`diff`]
    /// deliberately does not compare, which keep `a`'s value; `diff` of the result and `b` is
    /// empty.
    pub fn apply(&self, current: &Config) -> Config {
        let mut config = current.normalized();
        for change in &self.interface {
            match change {
                InterfaceChange::Add(interface) => config.interface = Some(interface.clone()),
                InterfaceChange::Remove => config.interface = None,
                InterfaceChange::PrivateKey(key) => {
                    config.interface.get_or_insert_with(Default::default).private_key = key.clone();
                }
                InterfaceChange::ListenPort { to, .. } => {
                    config.interface.get_or_insert_with(Default::default).listen_port = *to;
                }
            }
        }
        let mut peers: BTreeMap<Key, PeerConfig> =
            config.peers.into_iter().map(|p| (p.public_key, p)).collect();
        for change in &self.peers {
            match change {
                PeerChange::Add(peer) => {
                    peers.insert(peer.public_key, peer.clone());
                }
                PeerChange::Remove(key) => {
                    peers.remove(key);
                }
                PeerChange::Update { key, changes } => {
                    if let Some(peer) = peers.get_mut(key) {
                        changes.iter().for_each(|field| field.apply_to(peer));
                    }
                }
            }
        }
        config.peers = peers.into_values().collect();
        config.normalized()
    }
}

impl PeerField {
    fn apply_to(&self, peer: &mut PeerConfig) {
        match self {
            PeerField::Endpoint { to, .. } => peer.endpoint = Some(to.clone()),
            PeerField::AllowedIps { added, removed } => {
                peer.allowed_ips.retain(|c| !removed.contains(&c.network()));
                peer.allowed_ips.extend_from_slice(added);
            }
            PeerField::Keepalive { to, .. } => peer.persistent_keepalive = *to,
            PeerField::PresharedKey { to, .. } => peer.preshared_key = *to,
        }
    }
}

fn opt<T: fmt::Display>(value: Option<&T>) -> String {
    value.map_or_else(|| "none".to_string(), ToString::to_string)
}

fn list(cidrs: &[Cidr]) -> String {
    cidrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

impl fmt::Display for InterfaceChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InterfaceChange::Add(i) => write!(
                f,
                "interface: add (private key {}, listen port {})",
                if i.private_key.is_some() { "set" } else { "none" },
                opt(i.listen_port.as_ref()),
            ),
            InterfaceChange::Remove => f.write_str("interface: remove"),
            InterfaceChange::PrivateKey(Some(_)) => f.write_str("interface: private key changed"),
            InterfaceChange::PrivateKey(None) => f.write_str("interface: private key removed"),
            InterfaceChange::ListenPort { from, to } => {
                write!(f, "interface: listen port {} → {}", opt(from.as_ref()), opt(to.as_ref()))
            }
        }
    }
}

impl fmt::Display for PeerField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerField::Endpoint { from, to } => {
                write!(f, "endpoint {} → {}", opt(from.as_ref()), to)
            }
            PeerField::AllowedIps { added, removed } => {
                f.write_str("allowed IPs")?;
                if !added.is_empty() {
                    write!(f, " +{}", list(added))?;
                }
                if !removed.is_empty() {
                    write!(f, " -{}", list(removed))?;
                }
                Ok(())
            }
            PeerField::Keepalive { from, to } => write!(f, "keepalive {from}s → {to}s"),
            PeerField::PresharedKey { had, to } => f.write_str(match (had, to) {
                (false, _) => "preshared key added",
                (true, Some(_)) => "preshared key changed",
                (true, None) => "preshared key removed",
            }),
        }
    }
}

impl fmt::Display for PeerChange {
    /// One line per change; an update with several fields prints one line per field.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerChange::Add(p) => write!(
                f,
                "peer {}: add (allowed IPs {}; endpoint {}; keepalive {}s; preshared key {})",
                p.public_key,
                if p.allowed_ips.is_empty() { "none".to_string() } else { list(&p.allowed_ips) },
                opt(p.endpoint.as_ref()),
                p.persistent_keepalive,
                if p.preshared_key.is_some() { "set" } else { "none" },
            ),
            PeerChange::Remove(key) => write!(f, "peer {key}: remove"),
            PeerChange::Update { key, changes } => {
                for (i, change) in changes.iter().enumerate() {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    write!(f, "peer {key}: {change}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for ConfigDiff {
    /// One line per change, each ending in a newline; nothing when the diff is empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for change in &self.interface {
            writeln!(f, "{change}")?;
        }
        for change in &self.peers {
            writeln!(f, "{change}")?;
        }
        Ok(())
    }
}
