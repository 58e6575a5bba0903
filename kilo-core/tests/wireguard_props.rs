//! Invariants of the WireGuard INI text and diff: render then parse is the identity, a config's
//! diff with itself is empty, applying `diff(a, b)` to `a` gives `b`, and the diff is per-peer
//! minimal.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use kilo_core::wireguard::{Config, InterfaceConfig, PeerChange, PeerConfig, diff};
use kilo_core::{Cidr, Endpoint, Key, PresharedKey, PrivateKey};
use proptest::prelude::*;

fn nonzero_bytes() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>().prop_map(|mut b| {
        b[0] |= 1;
        b
    })
}

/// A public key from a small pool, so that two generated configs share peers.
fn pool_key() -> impl Strategy<Value = Key> {
    (1u8..=8).prop_map(|n| Key::from_bytes([n; 32]))
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|v| IpAddr::V4(Ipv4Addr::from(v))),
        // Keep clear of IPv4-mapped addresses, which fold to IPv4 by design.
        any::<u128>().prop_map(|v| IpAddr::V6(Ipv6Addr::from(v | (1 << 127)))),
    ]
}

/// CIDRs with host bits set or not.
fn cidr() -> impl Strategy<Value = Cidr> {
    (ip(), any::<u8>(), any::<bool>()).prop_map(|(ip, p, masked)| {
        let max = if ip.is_ipv4() { 33 } else { 129 };
        let c = Cidr::new(ip, p % max).expect("prefix in range");
        if masked { c.network() } else { c }
    })
}

/// Endpoints as text can carry them: IP literals and unresolved DNS names.
fn text_endpoint() -> impl Strategy<Value = Endpoint> {
    prop_oneof![
        (ip(), 1u16..).prop_map(|(ip, port)| Endpoint::from_addr(SocketAddr::new(ip, port))),
        (prop::sample::select(vec!["gw.example.com", "a", "node-1.kilo.svc"]), 1u16..)
            .prop_map(|(host, port)| format!("{host}:{port}").parse().expect("valid DNS endpoint")),
    ]
}

/// Any endpoint, including resolved DNS names.
fn endpoint() -> impl Strategy<Value = Endpoint> {
    prop_oneof![
        3 => text_endpoint(),
        1 => (text_endpoint(), ip(), 1u16..).prop_map(|(e, ip, port)| {
            if e.needs_resolution() { e.with_resolved(SocketAddr::new(ip, port)) } else { e }
        }),
    ]
}

fn text_peer() -> impl Strategy<Value = PeerConfig> {
    (
        nonzero_bytes(),
        prop::option::of(nonzero_bytes()),
        prop::option::of(text_endpoint()),
        prop::collection::vec(cidr(), 0..4),
        any::<u16>(),
    )
        .prop_map(|(k, psk, endpoint, allowed_ips, persistent_keepalive)| PeerConfig {
            public_key: Key::from_bytes(k),
            preshared_key: psk.map(PresharedKey::from_bytes),
            endpoint,
            allowed_ips,
            persistent_keepalive,
        })
}

fn interface() -> impl Strategy<Value = InterfaceConfig> {
    (prop::option::of(nonzero_bytes()), prop::option::of(any::<u16>())).prop_map(|(k, port)| {
        InterfaceConfig { private_key: k.map(PrivateKey::from_bytes), listen_port: port }
    })
}

/// Configurations whose text is faithful: no all-zero keys (they are not written).
fn text_config() -> impl Strategy<Value = Config> {
    (prop::option::of(interface()), prop::collection::vec(text_peer(), 0..5))
        .prop_map(|(interface, peers)| Config { interface, peers })
}

/// Any peer from the key pool, zero pre-shared keys and resolved endpoints included.
fn pool_peer() -> impl Strategy<Value = PeerConfig> {
    (
        pool_key(),
        prop::option::of(prop_oneof![Just([0u8; 32]), nonzero_bytes(), Just([9u8; 32])]),
        prop::option::of(endpoint()),
        prop::collection::vec(cidr(), 0..4),
        prop_oneof![Just(0u16), Just(25u16), any::<u16>()],
    )
        .prop_map(|(public_key, psk, endpoint, allowed_ips, persistent_keepalive)| {
            PeerConfig {
                public_key,
                preshared_key: psk.map(PresharedKey::from_bytes),
                endpoint,
                allowed_ips,
                persistent_keepalive,
            }
        })
}

fn pool_config() -> impl Strategy<Value = Config> {
    let small_interface = (
        prop::option::of(prop_oneof![Just([0u8; 32]), Just([1u8; 32]), Just([2u8; 32])]),
        prop::option::of(prop_oneof![Just(51820u16), Just(51821u16)]),
    )
        .prop_map(|(k, port)| InterfaceConfig {
            private_key: k.map(PrivateKey::from_bytes),
            listen_port: port,
        });
    (prop::option::of(small_interface), prop::collection::vec(pool_peer(), 0..6))
        .prop_map(|(interface, peers)| Config { interface, peers })
}

/// `b` normalised, except for the endpoints the diff does not compare (desired none, or an
/// unresolved DNS name) of peers that `a` has: those keep `a`'s endpoint.
fn expected_after_apply(a: &Config, b: &Config) -> Config {
    let a = a.normalized();
    let mut want = b.normalized();
    for peer in &mut want.peers {
        let uncompared = peer.endpoint.as_ref().is_none_or(|e| e.addr().is_none());
        if uncompared && let Some(have) = a.peers.iter().find(|p| p.public_key == peer.public_key) {
            peer.endpoint.clone_from(&have.endpoint);
        }
    }
    want
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn rendering_then_parsing_gives_back_the_same_config(config in text_config()) {
        let text = config.to_ini();
        let parsed = Config::from_ini(&text);
        prop_assert_eq!(parsed, Ok(config), "text:\n{}", text);
    }

    #[test]
    fn a_config_diffed_with_itself_is_empty(a in pool_config()) {
        let d = diff(&a, &a);
        prop_assert!(d.is_empty(), "{}", d);
        prop_assert_eq!(d.to_string(), "");
    }

    #[test]
    fn applying_the_diff_of_a_and_b_to_a_gives_b(a in pool_config(), b in pool_config()) {
        let d = diff(&a, &b);
        let applied = d.apply(&a);
        prop_assert_eq!(&applied, &expected_after_apply(&a, &b), "diff:\n{}", d);
        let rest = diff(&applied, &b);
        prop_assert!(rest.is_empty(), "left over:\n{}", rest);
    }

    #[test]
    fn applying_the_diff_gives_b_exactly_when_all_its_endpoints_are_addresses(
        a in pool_config(),
        b in pool_config(),
        port in 1u16..,
    ) {
        let mut b = b;
        for (i, peer) in b.peers.iter_mut().enumerate() {
            let octet = u8::try_from(i).unwrap_or(0);
            peer.endpoint = Some(Endpoint::from_addr(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, octet)),
                port,
            )));
        }
        prop_assert_eq!(diff(&a, &b).apply(&a), b.normalized());
    }

    #[test]
    fn a_config_differing_in_one_peer_yields_exactly_one_peer_change(
        a in pool_config(),
        pick in any::<prop::sample::Index>(),
        mutation in 0u8..5,
        extra in cidr(),
    ) {
        let base = a.normalized();
        prop_assume!(!base.peers.is_empty());
        let i = pick.index(base.peers.len());
        let key = base.peers[i].public_key;
        let mut changed = base.clone();
        match mutation {
            0 => {
                changed.peers.remove(i);
            }
            1 => {
                let p = &mut changed.peers[i];
                p.persistent_keepalive = p.persistent_keepalive.wrapping_add(1);
            }
            2 => {
                let net = extra.network();
                prop_assume!(!changed.peers[i].allowed_ips.contains(&net));
                changed.peers[i].allowed_ips.push(net);
            }
            3 => {
                let p = &mut changed.peers[i];
                let mut addr: SocketAddr = "198.51.100.1:51820".parse().unwrap();
                if p.endpoint.as_ref().and_then(Endpoint::addr) == Some(addr) {
                    addr.set_port(51821);
                }
                p.endpoint = Some(Endpoint::from_addr(addr));
            }
            _ => {
                let p = &mut changed.peers[i];
                p.preshared_key = match p.preshared_key {
                    Some(_) => None,
                    None => Some(PresharedKey::from_bytes([42; 32])),
                };
            }
        }
        let d = diff(&base, &changed);
        prop_assert!(d.interface.is_empty());
        prop_assert_eq!(d.peers.len(), 1, "diff:\n{}", d);
        prop_assert_eq!(d.peers[0].key(), &key);
        if mutation == 0 {
            prop_assert_eq!(&d.peers[0], &PeerChange::Remove(key));
        }
        // Adding a peer the config lacks is one change too.
        let fresh = PeerConfig { public_key: Key::from_bytes([200; 32]), ..PeerConfig::default() };
        let mut grown = base.clone();
        grown.peers.push(fresh.clone());
        prop_assert_eq!(diff(&base, &grown).peers, vec![PeerChange::Add(fresh)]);
    }
}
