//! Applying a kilo-core [`ConfigDiff`] to a device: one operation per changed peer, never
//! `replace_peers`, so peers that did not change keep their sessions.
//!
//! Order: the interface first (a userspace device needs its private key before any peer), then
//! removals, then additions and updates. The peer operations go to the device in as few calls as
//! it takes: up to [`PEERS_PER_CALL`] in one `set=1` request of the UAPI protocol, or one
//! `WG_CMD_SET_DEVICE` of the kernel's (split across netlink messages as `wg(8)` splits them). When
//! such a call fails, its operations are made again one by one, so that an operation that fails
//! does not stop the others; the result reports how many failed.

use kilo_core::wireguard::{
    Config, ConfigDiff, InterfaceChange, PeerChange, PeerConfig, PeerField,
};
use kilo_core::{Key, PrivateKey};

use super::Device;
use super::error::WireGuardError;

/// How many peer operations one device call carries at most (a 1,000-peer mesh is configured in
/// four calls instead of a thousand).
pub const PEERS_PER_CALL: usize = 256;

/// One device operation, planned from a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// Set these interface fields (`None`: leave alone; an all-zero key removes the key).
    Interface {
        /// The private key to set.
        private_key: Option<PrivateKey>,
        /// The listen port to set (0: any).
        listen_port: Option<u16>,
    },
    /// Create or update this peer (allowed IPs replaced; `endpoint: None` leaves it alone).
    SetPeer(PeerConfig),
    /// Update this peer if the device still has it (same fields as `SetPeer`).
    UpdatePeer(PeerConfig),
    /// Remove the peer with this key.
    RemovePeer(Key),
}

/// The operations that carry out `diff` on a device whose current configuration is `current`
/// (needed only for peer updates: the protocols replace a peer's whole allowed-IP list, so the
/// new list is the current one with the diff's additions and removals).
pub fn plan(diff: &ConfigDiff, current: &Config) -> Vec<Operation> {
    let mut ops = Vec::new();
    let (mut private_key, mut listen_port) = (None, None);
    let zero = || PrivateKey::from_bytes([0; 32]);
    for change in &diff.interface {
        match change {
            InterfaceChange::Add(i) => {
                private_key = Some(i.private_key.clone().unwrap_or_else(zero));
                listen_port = i.listen_port.or(listen_port);
            }
            InterfaceChange::Remove => private_key = Some(zero()),
            InterfaceChange::PrivateKey(k) => private_key = Some(k.clone().unwrap_or_else(zero)),
            InterfaceChange::ListenPort { to, .. } => listen_port = Some(to.unwrap_or(0)),
        }
    }
    if private_key.is_some() || listen_port.is_some() {
        ops.push(Operation::Interface { private_key, listen_port });
    }
    let removals = diff.peers.iter().filter_map(|c| match c {
        PeerChange::Remove(key) => Some(Operation::RemovePeer(*key)),
        _ => None,
    });
    ops.extend(removals);
    for change in &diff.peers {
        match change {
            PeerChange::Add(peer) => ops.push(Operation::SetPeer(peer.clone())),
            PeerChange::Update { key, changes } => ops.push(Operation::UpdatePeer(updated(
                current.peers.iter().find(|p| &p.public_key == key),
                *key,
                changes,
            ))),
            PeerChange::Remove(_) => {}
        }
    }
    ops
}

/// The full peer to send for an update: the current peer with the changed fields applied; the
/// endpoint only when it changes.
fn updated(current: Option<&PeerConfig>, key: Key, changes: &[PeerField]) -> PeerConfig {
    let mut peer =
        current.cloned().unwrap_or_else(|| PeerConfig { public_key: key, ..Default::default() });
    peer.endpoint = None;
    for field in changes {
        match field {
            PeerField::Endpoint { to, .. } => peer.endpoint = Some(to.clone()),
            PeerField::AllowedIps { added, removed } => {
                peer.allowed_ips.retain(|c| !removed.contains(&c.network()));
                for cidr in added {
                    if !peer.allowed_ips.iter().any(|c| c.network() == cidr.network()) {
                        peer.allowed_ips.push(*cidr);
                    }
                }
            }
            PeerField::Keepalive { to, .. } => peer.persistent_keepalive = *to,
            PeerField::PresharedKey { to, .. } => peer.preshared_key = *to,
        }
    }
    peer
}

impl Device {
    /// Applies a diff (from [`kilo_core::wireguard::diff`] of [`Device::read`]'s
    /// [`to_config`](super::DeviceState::to_config) against the desired configuration): one
    /// `wg set` per changed peer, nothing for unchanged ones. Returns the number of operations
    /// performed (0 for an empty diff: a no-op resync touches nothing).
    pub async fn apply(&self, diff: &ConfigDiff) -> Result<usize, WireGuardError> {
        if diff.is_empty() {
            return Ok(0);
        }
        let needs_current = diff.peers.iter().any(|c| matches!(c, PeerChange::Update { .. }));
        let current =
            if needs_current { self.read().await?.to_config() } else { Config::default() };
        let ops = plan(diff, &current);
        let total = ops.len();
        let mut failures = Vec::new();
        let (interface, peers): (Vec<Operation>, Vec<Operation>) =
            ops.into_iter().partition(|op| matches!(op, Operation::Interface { .. }));
        for op in &interface {
            if let Err(e) = self.operate(op).await {
                failures.push(e);
            }
        }
        for chunk in peers.chunks(PEERS_PER_CALL) {
            if chunk.len() > 1 {
                match self.set_peers(chunk).await {
                    Ok(()) => continue,
                    Err(e) => tracing::debug!(
                        interface = self.name(),
                        error = %e,
                        changes = chunk.len(),
                        "a call of several WireGuard changes failed; making them one by one"
                    ),
                }
            }
            for op in chunk {
                if let Err(e) = self.operate(op).await {
                    failures.push(e);
                }
            }
        }
        match failures.len() {
            0 => Ok(total),
            failed => Err(WireGuardError::Apply {
                name: self.name().to_string(),
                failed,
                total,
                first: Box::new(failures.swap_remove(0)),
            }),
        }
    }
}

impl Device {
    /// Makes one operation, logging its failure.
    async fn operate(&self, op: &Operation) -> Result<(), WireGuardError> {
        let result = match op {
            Operation::Interface { private_key, listen_port } => {
                self.configure_interface(private_key.as_ref(), *listen_port).await
            }
            Operation::SetPeer(peer) => self.set_peer(peer).await,
            Operation::UpdatePeer(peer) => self.update_peer(peer).await,
            Operation::RemovePeer(key) => self.remove_peer(key).await,
        };
        if let Err(e) = &result {
            tracing::warn!(interface = self.name(), error = %e, "WireGuard change failed");
        }
        result
    }

    /// Makes several peer operations in one device call, in order (interface operations are
    /// [`Device::apply`]'s to make on their own, first: none may be among `ops`). On an error
    /// some of them may have been made.
    async fn set_peers(&self, ops: &[Operation]) -> Result<(), WireGuardError> {
        match self {
            Device::Kernel(d) => d.set_peers(ops).await,
            Device::Userspace(d) => d.set_peers(ops).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kilo_core::wireguard::{InterfaceConfig, diff};

    fn key(b: u8) -> Key {
        Key::from_bytes([b; 32])
    }

    fn peer(b: u8, endpoint: Option<&str>, allowed: &[&str]) -> PeerConfig {
        PeerConfig {
            public_key: key(b),
            endpoint: endpoint.map(|e| e.parse().unwrap()),
            allowed_ips: allowed.iter().map(|a| a.parse().unwrap()).collect(),
            ..Default::default()
        }
    }

    fn config(peers: Vec<PeerConfig>) -> Config {
        Config {
            interface: Some(InterfaceConfig {
                private_key: Some(PrivateKey::from_bytes([9; 32])),
                listen_port: Some(51820),
            }),
            peers,
        }
    }

    #[test]
    fn an_empty_diff_plans_nothing() {
        let c = config(vec![peer(1, Some("10.0.0.1:51820"), &["10.4.0.1/32"])]);
        assert!(plan(&diff(&c, &c), &c).is_empty());
    }

    #[test]
    fn only_the_changed_peer_is_sent_with_its_full_allowed_ips_and_no_endpoint() {
        let current = config(vec![
            peer(1, Some("10.0.0.1:51820"), &["10.4.0.1/32", "10.2.1.0/24"]),
            peer(2, Some("10.0.0.2:51820"), &["10.4.0.2/32"]),
        ]);
        let mut desired = current.clone();
        desired.peers[0].allowed_ips =
            vec!["10.4.0.1/32".parse().unwrap(), "10.2.9.0/24".parse().unwrap()];
        let ops = plan(&diff(&current, &desired), &current);
        assert_eq!(
            ops,
            vec![Operation::UpdatePeer(PeerConfig { endpoint: None, ..desired.peers[0].clone() })]
        );
    }

    #[test]
    fn interface_goes_first_then_removals_then_additions() {
        let current = config(vec![peer(1, None, &["10.4.0.1/32"])]);
        let mut desired = config(vec![peer(3, Some("10.0.0.3:51820"), &["10.4.0.3/32"])]);
        desired.interface.as_mut().unwrap().listen_port = Some(51821);
        let ops = plan(&diff(&current, &desired), &current);
        assert_eq!(
            ops,
            vec![
                Operation::Interface { private_key: None, listen_port: Some(51821) },
                Operation::RemovePeer(key(1)),
                Operation::SetPeer(desired.peers[0].clone()),
            ]
        );
    }

    #[test]
    fn endpoint_and_keepalive_changes_keep_the_current_allowed_ips() {
        let current = config(vec![peer(1, Some("10.0.0.1:51820"), &["10.4.0.1/32"])]);
        let mut desired = current.clone();
        desired.peers[0].endpoint = Some("10.0.0.9:51820".parse().unwrap());
        desired.peers[0].persistent_keepalive = 25;
        desired.peers[0].preshared_key = Some(kilo_core::PresharedKey::from_bytes([7; 32]));
        let ops = plan(&diff(&current, &desired), &current);
        assert_eq!(ops, vec![Operation::UpdatePeer(desired.peers[0].clone())]);
    }

    #[test]
    fn a_new_interface_sets_key_and_port_and_a_removed_one_clears_the_key() {
        let empty = Config::default();
        let desired = config(vec![]);
        assert_eq!(
            plan(&diff(&empty, &desired), &empty),
            vec![Operation::Interface {
                private_key: Some(PrivateKey::from_bytes([9; 32])),
                listen_port: Some(51820),
            }]
        );
        assert_eq!(
            plan(&diff(&desired, &empty), &desired),
            vec![Operation::Interface {
                private_key: Some(PrivateKey::from_bytes([0; 32])),
                listen_port: None,
            }]
        );
    }
}
