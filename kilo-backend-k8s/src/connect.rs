//! The Peer object `kgctl connect` creates for this machine when none of its name exists.

use kilo_core::{Cidr, PrivateKey};

use crate::{Peer, PeerSpec};

/// A Peer named `name` routing `allowed_ip` to `key`'s public key, with a persistent keepalive
/// of `keepalive` seconds.
pub fn new_peer_object(name: &str, allowed_ip: Cidr, keepalive: u64, key: &PrivateKey) -> Peer {
    let mut peer = Peer::new(
        name,
        PeerSpec {
            allowed_ips: vec![allowed_ip.to_string()],
            endpoint: None,
            persistent_keepalive: Some(i64::try_from(keepalive).unwrap_or(i64::MAX)),
            preshared_key: None,
            public_key: key.public_key().to_base64(),
        },
    );
    peer.metadata.name = Some(name.to_string());
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_peer_has_the_allowed_ip_keepalive_and_public_key() {
        let key = kilo_core::fixtures::private_key();
        let object = new_peer_object("laptop", "10.10.10.10/32".parse().unwrap(), 10, &key);
        assert_eq!(
            serde_json::to_value(&object).unwrap(),
            serde_json::json!({
                "apiVersion": "kilo.squat.ai/v1alpha1",
                "kind": "Peer",
                "metadata": { "name": "laptop" },
                "spec": {
                    "allowedIPs": ["10.10.10.10/32"],
                    "persistentKeepalive": 10,
                    "publicKey": key.public_key().to_base64(),
                },
            })
        );
    }
}
