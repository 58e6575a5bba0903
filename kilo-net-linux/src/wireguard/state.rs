//! What a WireGuard device reports: its interface settings and, per peer, the configuration and
//! the live figures (handshake, traffic), with conversions to kilo-core's [`Config`].

use std::time::SystemTime;

use kilo_core::wireguard::{Config, InterfaceConfig, PeerConfig};
use kilo_core::{Key, PrivateKey};

/// The state of a WireGuard device as read from it (`wg show <iface> dump`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceState {
    /// The interface name.
    pub name: String,
    /// The private key, if set.
    pub private_key: Option<PrivateKey>,
    /// The public key derived from the private key, if set.
    pub public_key: Option<Key>,
    /// The UDP listen port (0 or `None` when unset).
    pub listen_port: Option<u16>,
    /// The firewall mark of outgoing packets, if set.
    pub fwmark: Option<u32>,
    /// The peers, in the device's order.
    pub peers: Vec<PeerState>,
}

/// One peer of a device: its configuration and live figures.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerState {
    /// The peer's configuration as the device holds it (endpoint: the current, possibly roamed,
    /// address; pre-shared key: `None` when unset).
    pub config: PeerConfig,
    /// The time of the last completed handshake, if any.
    pub last_handshake: Option<SystemTime>,
    /// Bytes received from this peer.
    pub rx_bytes: u64,
    /// Bytes sent to this peer.
    pub tx_bytes: u64,
}

impl PeerState {
    /// The peer's public key.
    pub fn public_key(&self) -> &Key {
        &self.config.public_key
    }

    /// Whether a pre-shared key is set.
    pub fn has_preshared_key(&self) -> bool {
        self.config.preshared_key.is_some_and(|k| !k.is_zero())
    }
}

impl DeviceState {
    /// The peer with this public key, if the device has it.
    pub fn peer(&self, key: &Key) -> Option<&PeerState> {
        self.peers.iter().find(|p| &p.config.public_key == key)
    }

    /// The device's configuration as kilo-core models it: the interface section (when a private
    /// key is set) and every peer in the device's order.
    pub fn to_config(&self) -> Config {
        let interface = self.private_key.as_ref().map(|k| InterfaceConfig {
            private_key: Some(k.clone()),
            listen_port: self.listen_port.filter(|p| *p != 0),
        });
        Config { interface, peers: self.peers.iter().map(|p| p.config.clone()).collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_config_keeps_peers_in_order_and_omits_the_interface_without_a_key() {
        let peer = |b: u8| PeerState {
            config: PeerConfig { public_key: Key::from_bytes([b; 32]), ..Default::default() },
            ..Default::default()
        };
        let mut state = DeviceState { peers: vec![peer(2), peer(1)], ..Default::default() };
        let config = state.to_config();
        assert_eq!(config.interface, None);
        assert_eq!(config.peers[0].public_key, Key::from_bytes([2; 32]));
        state.private_key = Some(PrivateKey::from_bytes([7; 32]));
        state.listen_port = Some(51820);
        let iface = state.to_config().interface.unwrap();
        assert_eq!(iface.listen_port, Some(51820));
        assert_eq!(iface.private_key, Some(PrivateKey::from_bytes([7; 32])));
    }

    #[test]
    fn a_zero_preshared_key_counts_as_none() {
        let mut p = PeerState::default();
        assert!(!p.has_preshared_key());
        p.config.preshared_key = Some(kilo_core::PresharedKey::ZERO);
        assert!(!p.has_preshared_key());
        p.config.preshared_key = Some(kilo_core::PresharedKey::from_bytes([1; 32]));
        assert!(p.has_preshared_key());
        assert!(state_lookup_finds(&p));
    }

    fn state_lookup_finds(p: &PeerState) -> bool {
        let s = DeviceState { peers: vec![p.clone()], ..Default::default() };
        s.peer(p.public_key()).is_some()
    }
}
