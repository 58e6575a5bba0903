//! What a WireGuard device reports: its interface settings and, per peer, the configuration and
//! the live figures (handshake, traffic), with conversions to kilo-core's [`Config`].

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use kilo_core::wireguard::{Config, InterfaceConfig, PeerConfig};
use kilo_core::{Cidr, Endpoint, Key, PresharedKey, PrivateKey};

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

/// A device's settings as a backend reads them (kernel netlink, gotatun's typed answer, the UAPI
/// text), before [`RawDevice::into_state`] applies the one set of conventions every backend
/// shares: a zero key, fwmark or handshake time means "none".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RawDevice {
    /// The private key as read (all zeros: none).
    pub private_key: Option<PrivateKey>,
    /// The listen port as read (kept as is, 0 included).
    pub listen_port: Option<u16>,
    /// The firewall mark as read (0: none).
    pub fwmark: Option<u32>,
    /// The peers, in the device's order.
    pub peers: Vec<RawPeer>,
}

/// One peer as a backend reads it; see [`RawDevice`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RawPeer {
    /// The peer's public key.
    pub public_key: Key,
    /// The pre-shared key as read (all zeros: none).
    pub preshared_key: Option<PresharedKey>,
    /// The current endpoint.
    pub endpoint: Option<SocketAddr>,
    /// The allowed IPs, in the device's order.
    pub allowed_ips: Vec<Cidr>,
    /// The keepalive interval in seconds (none: 0).
    pub persistent_keepalive: Option<u16>,
    /// The time of the last handshake as read (the epoch: none).
    pub last_handshake: Option<SystemTime>,
    /// Bytes received from this peer.
    pub rx_bytes: u64,
    /// Bytes sent to this peer.
    pub tx_bytes: u64,
}

/// The handshake time `sec` seconds and `nsec` nanoseconds after the epoch, as the UAPI reports
/// it (`last_handshake_time_sec` / `_nsec`; nanoseconds past a second are capped). `(0, 0)` is
/// the epoch itself, which [`RawDevice::into_state`] reads as "no handshake".
pub(crate) fn handshake_at(sec: u64, nsec: u32) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::new(sec, nsec.min(999_999_999))
}

impl RawDevice {
    /// The device `name`'s state: a zero private key is none (and so is the public key derived
    /// from it), a zero fwmark is none, and each peer as [`RawPeer::into_state`] reads it.
    pub(crate) fn into_state(self, name: &str) -> DeviceState {
        let private_key = self.private_key.filter(|k| !k.is_zero());
        DeviceState {
            name: name.to_string(),
            public_key: private_key.as_ref().map(PrivateKey::public_key),
            private_key,
            listen_port: self.listen_port,
            fwmark: self.fwmark.filter(|m| *m != 0),
            peers: self.peers.into_iter().map(RawPeer::into_state).collect(),
        }
    }
}

impl RawPeer {
    /// The peer's state: a zero pre-shared key is none, a handshake at the epoch is none, no
    /// keepalive is 0.
    pub(crate) fn into_state(self) -> PeerState {
        PeerState {
            config: PeerConfig {
                public_key: self.public_key,
                preshared_key: self.preshared_key.filter(|k| !k.is_zero()),
                endpoint: self.endpoint.map(Endpoint::from_addr),
                allowed_ips: self.allowed_ips,
                persistent_keepalive: self.persistent_keepalive.unwrap_or(0),
            },
            last_handshake: self.last_handshake.filter(|t| *t != SystemTime::UNIX_EPOCH),
            rx_bytes: self.rx_bytes,
            tx_bytes: self.tx_bytes,
        }
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

    #[test]
    fn raw_reads_become_state_with_zero_meaning_none() {
        let zero_peer = RawPeer {
            public_key: Key::from_bytes([1; 32]),
            preshared_key: Some(PresharedKey::ZERO),
            last_handshake: Some(handshake_at(0, 0)),
            ..Default::default()
        };
        let live_peer = RawPeer {
            public_key: Key::from_bytes([2; 32]),
            preshared_key: Some(PresharedKey::from_bytes([3; 32])),
            endpoint: Some("10.0.0.1:51820".parse().unwrap()),
            allowed_ips: vec!["10.4.0.0/16".parse().unwrap()],
            persistent_keepalive: Some(25),
            last_handshake: Some(handshake_at(1_700_000_000, 5)),
            rx_bytes: 7,
            tx_bytes: 9,
        };
        let raw = RawDevice {
            private_key: Some(PrivateKey::from_bytes([0; 32])),
            listen_port: Some(0),
            fwmark: Some(0),
            peers: vec![zero_peer, live_peer],
        };
        let state = raw.clone().into_state("kilo0");
        assert_eq!(state.name, "kilo0");
        assert_eq!((state.private_key.as_ref(), state.public_key.as_ref()), (None, None));
        assert_eq!((state.listen_port, state.fwmark), (Some(0), None));
        let zero = &state.peers[0];
        assert_eq!(zero.config.preshared_key, None);
        assert_eq!(zero.last_handshake, None);
        assert_eq!(zero.config.persistent_keepalive, 0);
        assert_eq!((zero.config.endpoint.as_ref(), zero.config.allowed_ips.len()), (None, 0));
        let live = &state.peers[1];
        assert_eq!(live.config.preshared_key, Some(PresharedKey::from_bytes([3; 32])));
        assert_eq!(
            live.config.endpoint,
            Some(Endpoint::from_addr("10.0.0.1:51820".parse().unwrap()))
        );
        assert_eq!(live.config.allowed_ips, vec!["10.4.0.0/16".parse::<Cidr>().unwrap()]);
        assert_eq!(live.config.persistent_keepalive, 25);
        assert_eq!(
            live.last_handshake,
            Some(SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 5))
        );
        assert_eq!((live.rx_bytes, live.tx_bytes), (7, 9));

        let key = PrivateKey::from_bytes([7; 32]);
        let keyed = RawDevice { private_key: Some(key.clone()), fwmark: Some(3), ..raw };
        let state = keyed.into_state("kilo0");
        assert_eq!(state.public_key, Some(key.public_key()));
        assert_eq!((state.private_key, state.fwmark), (Some(key), Some(3)));
    }

    #[test]
    fn handshake_times_count_nanoseconds_alone_and_cap_them() {
        assert_eq!(handshake_at(0, 0), SystemTime::UNIX_EPOCH);
        let only_nanos = RawPeer { last_handshake: Some(handshake_at(0, 1)), ..Default::default() };
        assert_eq!(
            only_nanos.into_state().last_handshake,
            Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(1))
        );
        assert_eq!(
            handshake_at(1, u32::MAX),
            SystemTime::UNIX_EPOCH + Duration::new(1, 999_999_999)
        );
    }
}
