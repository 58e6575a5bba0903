//! The normal form in which two WireGuard configurations are compared (contract 6,
//! "Reconciling").

use std::collections::BTreeMap;

use super::{Config, InterfaceConfig, PeerConfig};
use crate::cidr::sort_upstream;
use crate::{Endpoint, Key};

impl Config {
    /// The configuration in normal form, as the kernel would hold it:
    ///
    /// - an all-zero private key is no private key;
    /// - peers are keyed by public key and sorted by it; sections that share a public key merge
    ///   as wg(8) merges them (allowed IPs append, later endpoint, pre-shared key and non-zero
    ///   keepalive win);
    /// - each peer is [`PeerConfig::normalized`].
    pub fn normalized(&self) -> Config {
        let interface = self.interface.as_ref().map(|i| InterfaceConfig {
            private_key: i.private_key.clone().filter(|k| !k.is_zero()),
            listen_port: i.listen_port,
        });
        let mut peers: BTreeMap<Key, PeerConfig> = BTreeMap::new();
        for peer in &self.peers {
            match peers.get_mut(&peer.public_key) {
                Some(merged) => {
                    merged.allowed_ips.extend_from_slice(&peer.allowed_ips);
                    if peer.endpoint.is_some() {
                        merged.endpoint.clone_from(&peer.endpoint);
                    }
                    if peer.preshared_key.is_some() {
                        merged.preshared_key = peer.preshared_key;
                    }
                    if peer.persistent_keepalive != 0 {
                        merged.persistent_keepalive = peer.persistent_keepalive;
                    }
                }
                None => {
                    peers.insert(peer.public_key, peer.clone());
                }
            }
        }
        Config { interface, peers: peers.into_values().map(|p| p.normalized()).collect() }
    }
}

impl PeerConfig {
    /// The peer in normal form: allowed IPs masked to their networks (`10.5.0.1/24` →
    /// `10.5.0.0/24`, contract C17), sorted in upstream's order and de-duplicated; an all-zero
    /// pre-shared key is none; a resolved DNS endpoint is its resolved address (what the kernel
    /// holds). An unresolved DNS endpoint stays as it is. A keepalive of 0 already means none.
    pub fn normalized(&self) -> PeerConfig {
        let mut allowed_ips: Vec<_> = self.allowed_ips.iter().map(|c| c.network()).collect();
        sort_upstream(&mut allowed_ips);
        allowed_ips.dedup();
        PeerConfig {
            public_key: self.public_key,
            preshared_key: self.preshared_key.filter(|k| !k.is_zero()),
            endpoint: self
                .endpoint
                .as_ref()
                .map(|e| e.addr().map_or_else(|| e.clone(), Endpoint::from_addr)),
            allowed_ips,
            persistent_keepalive: self.persistent_keepalive,
        }
    }
}
