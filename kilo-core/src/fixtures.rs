//! Upstream Kilo's shared test fixture (`setup()` in `topology_test.go`), public so that every
//! crate's tests, benchmarks and examples can use the same mesh.
//!
//! Only built with the `fixtures` feature (and in this crate's own unit tests): enable it in a
//! dev-dependency, `kilo-core = { ..., features = ["fixtures"] }`.

use std::time::Duration;

use crate::{Cidr, Endpoint, Key, Node, Peer, PrivateKey};

/// Upstream's test key `keyN`: ASCII `keyN` followed by zeros.
pub fn key(n: u8) -> Key {
    let mut b = [0u8; 32];
    b[..3].copy_from_slice(b"key");
    b[3] = b'0' + n;
    Key::from_bytes(b)
}

/// Upstream's test private key `priv`.
pub fn private_key() -> PrivateKey {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(b"priv");
    PrivateKey::from_bytes(b)
}

fn cidr(s: &str) -> Cidr {
    s.parse().expect("fixture CIDR")
}

fn endpoint(s: &str) -> Option<Endpoint> {
    Some(s.parse().expect("fixture endpoint"))
}

/// The fixture's Kilo subnet, `10.4.0.0/16`.
pub fn subnet() -> Cidr {
    cidr("10.4.0.0/16")
}

/// The fixture's listen port, 51820.
pub const PORT: u16 = 51820;

/// Nodes a, b, c, d of upstream's fixture (a and b share 192.168.0.1; d has no internal IP;
/// a's keepalive is 25 nanoseconds, as upstream's test has it).
pub fn nodes() -> Vec<Node> {
    vec![
        Node {
            name: "a".into(),
            endpoint: endpoint("10.1.0.1:51820"),
            internal_ip: Some(cidr("192.168.0.1/32")),
            location: "1".into(),
            subnets: vec![cidr("10.2.1.0/24")],
            key: key(1),
            persistent_keepalive: Duration::from_nanos(25),
            ..Node::default()
        },
        Node {
            name: "b".into(),
            endpoint: endpoint("10.1.0.2:51820"),
            internal_ip: Some(cidr("192.168.0.1/32")),
            location: "2".into(),
            subnets: vec![cidr("10.2.2.0/24")],
            key: key(2),
            allowed_location_ips: vec![cidr("192.168.178.3/32")],
            ..Node::default()
        },
        Node {
            name: "c".into(),
            endpoint: endpoint("10.1.0.3:51820"),
            internal_ip: Some(cidr("192.168.0.2/32")),
            location: "2".into(),
            subnets: vec![cidr("10.2.3.0/24")],
            key: key(3),
            ..Node::default()
        },
        Node {
            name: "d".into(),
            endpoint: endpoint("10.1.0.4:51820"),
            location: "1".into(),
            subnets: vec![cidr("10.2.4.0/24")],
            key: key(4),
            ..Node::default()
        },
    ]
}

/// Peers a (key4, like node d; no endpoint) and b (key5, endpoint 192.168.0.1:51820).
pub fn peers() -> Vec<Peer> {
    vec![
        Peer {
            name: "a".into(),
            allowed_ips: vec![cidr("10.5.0.1/24"), cidr("10.5.0.2/24")],
            public_key: key(4),
            ..Peer::default()
        },
        Peer {
            name: "b".into(),
            allowed_ips: vec![cidr("10.5.0.3/24")],
            public_key: key(5),
            endpoint: endpoint("192.168.0.1:51820"),
            ..Peer::default()
        },
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn fixture_keys_match_upstream_base64() {
        assert_eq!(super::key(1).to_string(), "a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
        assert_eq!(super::key(5).to_string(), "a2V5NQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
        assert_eq!(
            super::private_key().expose_base64(),
            "cHJpdgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
        );
    }
}
