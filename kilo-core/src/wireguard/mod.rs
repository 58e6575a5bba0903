//! WireGuard configuration: the model, upstream's INI text (render and parse), and a normalised
//! per-peer diff (contract C12).
//!
//! ```
//! use kilo_core::wireguard::{Config, diff};
//!
//! let device = Config::from_ini(
//!     "[Interface]\nListenPort = 51820\n\n[Peer]\nAllowedIPs = 10.4.0.1/32\n\
//!      Endpoint = 10.1.0.1:51820\nPersistentKeepalive = 0\n\
//!      PublicKey = a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
//! )?;
//! let mut desired = device.clone();
//! desired.peers[0].endpoint = Some("10.1.0.9:51820".parse()?);
//! assert_eq!(Config::from_ini(&desired.to_ini())?, desired);
//!
//! let changes = diff(&device, &desired);
//! assert_eq!(
//!     changes.to_string(),
//!     "peer a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=: endpoint 10.1.0.1:51820 → 10.1.0.9:51820\n",
//! );
//! assert_eq!(changes.apply(&device), desired.normalized());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod diff;
mod normalize;
mod parse;
mod render;

pub use diff::{ConfigDiff, InterfaceChange, PeerChange, PeerField, diff};
pub use parse::{IGNORED_INTERFACE_KEYS, IniError};

use crate::{Cidr, Endpoint, Key, PresharedKey, PrivateKey};

/// The `[Interface]` section.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InterfaceConfig {
    /// The private key; omitted from text when zero.
    pub private_key: Option<PrivateKey>,
    /// The UDP listen port.
    pub listen_port: Option<u16>,
}

/// One `[Peer]` section.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerConfig {
    /// The peer's public key.
    pub public_key: Key,
    /// The pre-shared key, if any.
    pub preshared_key: Option<PresharedKey>,
    /// Where to send packets; `None` when the peer dials in.
    pub endpoint: Option<Endpoint>,
    /// Addresses routed to this peer, in order.
    pub allowed_ips: Vec<Cidr>,
    /// Keepalive interval in seconds; 0 disables it.
    pub persistent_keepalive: u16,
}

/// A WireGuard device configuration.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// The `[Interface]` section, if any (a peer's config from `showconf peer` has none).
    pub interface: Option<InterfaceConfig>,
    /// The peers in order.
    pub peers: Vec<PeerConfig>,
}
