//! WireGuard configurations from upstream's fixture,
//! expected values derived by hand and written out.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use kilo_core::fixtures::{self, key};
use kilo_core::wireguard::{Config, InterfaceConfig, PeerConfig};
use kilo_core::{Cidr, Endpoint, Granularity, Node, Peer, PresharedKey, Topology, TopologyInput};

fn cs(list: &[&str]) -> Vec<Cidr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn ep(s: &str) -> Option<Endpoint> {
    Some(s.parse().unwrap())
}

fn build(
    nodes: &[Node],
    peers: &[Peer],
    granularity: Granularity,
    hostname: &str,
    keepalive: Duration,
) -> Topology {
    Topology::new(TopologyInput {
        nodes,
        peers,
        granularity,
        hostname,
        port: fixtures::PORT,
        key: fixtures::private_key(),
        subnet: fixtures::subnet(),
        subnet6: None,
        service_cidrs: &[],
        persistent_keepalive: keepalive,
    })
    .unwrap()
}

fn fixture(granularity: Granularity, hostname: &str) -> Topology {
    build(&fixtures::nodes(), &fixtures::peers(), granularity, hostname, Duration::ZERO)
}

fn peer(k: u8, endpoint: Option<&str>, ips: &[&str], keepalive: u16) -> PeerConfig {
    PeerConfig {
        public_key: key(k),
        preshared_key: None,
        endpoint: endpoint.and_then(ep),
        allowed_ips: cs(ips),
        persistent_keepalive: keepalive,
    }
}

fn interface() -> Option<InterfaceConfig> {
    Some(InterfaceConfig { private_key: Some(fixtures::private_key()), listen_port: Some(51820) })
}

const LOCATION_2: &[&str] = &[
    "10.2.2.0/24",
    "192.168.0.1/32",
    "10.2.3.0/24",
    "192.168.0.2/32",
    "10.4.0.2/32",
    "192.168.178.3/32",
];

#[test]
fn conf_from_logical_a_has_the_other_segments_then_the_peers() {
    let want = Config {
        interface: interface(),
        peers: vec![
            peer(2, Some("10.1.0.2:51820"), LOCATION_2, 0),
            peer(4, Some("10.1.0.4:51820"), &["10.2.4.0/24", "10.4.0.3/32"], 0),
            peer(4, None, &["10.5.0.1/24", "10.5.0.2/24"], 0),
            peer(5, Some("192.168.0.1:51820"), &["10.5.0.3/24"], 0),
        ],
    };
    assert_eq!(fixture(Granularity::Location, "a").conf(), want);
}

#[test]
fn conf_from_logical_d_has_both_locations() {
    let want = Config {
        interface: interface(),
        peers: vec![
            peer(1, Some("10.1.0.1:51820"), &["10.2.1.0/24", "192.168.0.1/32", "10.4.0.1/32"], 0),
            peer(2, Some("10.1.0.2:51820"), LOCATION_2, 0),
            peer(4, None, &["10.5.0.1/24", "10.5.0.2/24"], 0),
            peer(5, Some("192.168.0.1:51820"), &["10.5.0.3/24"], 0),
        ],
    };
    assert_eq!(fixture(Granularity::Location, "d").conf(), want);
}

#[test]
fn the_local_keepalive_applies_to_every_peer_in_whole_seconds() {
    let t = build(
        &fixtures::nodes(),
        &fixtures::peers(),
        Granularity::Location,
        "a",
        Duration::from_millis(25_900),
    );
    assert!(t.conf().peers.iter().all(|p| p.persistent_keepalive == 25));
    let t = build(
        &fixtures::nodes(),
        &fixtures::peers(),
        Granularity::Location,
        "a",
        Duration::from_secs(1 << 20),
    );
    assert!(t.conf().peers.iter().all(|p| p.persistent_keepalive == u16::MAX));
}

#[test]
fn discovered_endpoints_replace_endpoints_only_of_nat_ed_leaders_and_peers() {
    let mut nodes = fixtures::nodes();
    let addr = |s: &str| s.parse().unwrap();
    // b has seen a (keepalive 25 ns: non-zero), d and peer b (no keepalive) behind NAT.
    nodes[1].discovered_endpoints = Some(BTreeMap::from([
        (key(1), addr("203.0.113.1:4000")),
        (key(4), addr("203.0.113.4:4000")),
        (key(5), addr("203.0.113.5:4000")),
    ]));
    let mut peers = fixtures::peers();
    let t = build(&nodes, &peers, Granularity::Location, "b", Duration::ZERO);
    let endpoints: Vec<_> = t.conf().peers.into_iter().map(|p| p.endpoint).collect();
    assert_eq!(
        endpoints,
        vec![ep("203.0.113.1:4000"), ep("10.1.0.4:51820"), None, ep("192.168.0.1:51820")]
    );
    peers[1].persistent_keepalive = Duration::from_secs(10);
    peers[0].persistent_keepalive = Duration::from_secs(10);
    let t = build(&nodes, &peers, Granularity::Location, "b", Duration::ZERO);
    let endpoints: Vec<_> = t.conf().peers.into_iter().map(|p| p.endpoint).collect();
    // Peer a shares key4 with node d, so it gets d's discovered endpoint.
    assert_eq!(
        endpoints,
        vec![
            ep("203.0.113.1:4000"),
            ep("10.1.0.4:51820"),
            ep("203.0.113.4:4000"),
            ep("203.0.113.5:4000")
        ]
    );
    assert_eq!(
        t.update_endpoint(ep("1.2.3.4:5").as_ref(), &key(1), Duration::ZERO),
        ep("1.2.3.4:5")
    );
}

#[test]
fn conf_in_cross_granularity_skips_nodes_of_the_local_location() {
    let t = fixture(Granularity::Cross, "a");
    let want = Config {
        interface: interface(),
        peers: vec![
            peer(
                2,
                Some("10.1.0.2:51820"),
                &["10.2.2.0/24", "192.168.0.1/32", "10.4.0.2/32", "192.168.178.3/32"],
                0,
            ),
            peer(3, Some("10.1.0.3:51820"), &["10.2.3.0/24", "192.168.0.2/32", "10.4.0.3/32"], 0),
            peer(4, None, &["10.5.0.1/24", "10.5.0.2/24"], 0),
            peer(5, Some("192.168.0.1:51820"), &["10.5.0.3/24"], 0),
        ],
    };
    assert_eq!(t.conf(), want);
    let keys: Vec<_> =
        fixture(Granularity::Cross, "c").conf().peers.iter().map(|p| p.public_key).collect();
    assert_eq!(keys, [key(1), key(4), key(4), key(5)]);
}

#[test]
fn conf_for_device_masks_allowed_ips_and_gives_shared_networks_to_the_last_claimant() {
    let t = fixture(Granularity::Location, "d");
    let want = Config {
        interface: interface(),
        peers: vec![
            // 192.168.0.1/32 is claimed by both locations (nodes a and b share it): the later wins.
            peer(1, Some("10.1.0.1:51820"), &["10.2.1.0/24", "10.4.0.1/32"], 0),
            peer(2, Some("10.1.0.2:51820"), LOCATION_2, 0),
            // 10.5.0.1/24, 10.5.0.2/24 and 10.5.0.3/24 are all 10.5.0.0/24.
            peer(4, None, &[], 0),
            peer(5, Some("192.168.0.1:51820"), &["10.5.0.0/24"], 0),
        ],
    };
    assert_eq!(t.conf_for_device(), want);
    let mut peers = fixtures::peers();
    peers[1].allowed_ips = cs(&["10.6.0.1/24"]);
    let t = build(&fixtures::nodes(), &peers, Granularity::Location, "d", Duration::ZERO);
    assert_eq!(t.conf_for_device().peers[2].allowed_ips, cs(&["10.5.0.0/24"]));
    assert_eq!(t.conf_for_device().peers[3].allowed_ips, cs(&["10.6.0.0/24"]));
}

#[test]
fn peer_conf_lists_every_segment_then_the_other_peers_with_the_named_peers_settings() {
    let mut peers = fixtures::peers();
    let psk = PresharedKey::from_bytes(*key(9).as_bytes());
    peers[0].preshared_key = Some(psk);
    peers[0].persistent_keepalive = Duration::from_secs(10);
    let t = build(&fixtures::nodes(), &peers, Granularity::Location, "a", Duration::ZERO);
    let with_psk = |mut p: PeerConfig| {
        p.preshared_key = Some(psk);
        p
    };
    let want = Config {
        interface: None,
        peers: vec![
            with_psk(peer(
                1,
                Some("10.1.0.1:51820"),
                &["10.2.1.0/24", "192.168.0.1/32", "10.4.0.1/32"],
                10,
            )),
            with_psk(peer(2, Some("10.1.0.2:51820"), LOCATION_2, 10)),
            with_psk(peer(4, Some("10.1.0.4:51820"), &["10.2.4.0/24", "10.4.0.3/32"], 10)),
            peer(5, Some("192.168.0.1:51820"), &["10.5.0.3/24"], 10),
        ],
    };
    assert_eq!(t.peer_conf(Some("a")), want);

    let anonymous = t.peer_conf(None);
    assert_eq!(anonymous.peers.len(), 5);
    assert!(anonymous.peers.iter().all(|p| p.persistent_keepalive == 0));
    assert!(anonymous.peers.iter().all(|p| p.preshared_key.is_none()));
    assert_eq!(t.peer_conf(Some("nobody")), anonymous);
}

#[test]
fn as_peer_is_the_local_segment_without_allowed_location_ips() {
    let t = fixture(Granularity::Location, "c");
    assert_eq!(
        t.as_peer(),
        Some(peer(
            2,
            Some("10.1.0.2:51820"),
            &["10.2.2.0/24", "192.168.0.1/32", "10.2.3.0/24", "192.168.0.2/32", "10.4.0.2/32"],
            0
        ))
    );
    let mut t = fixture(Granularity::Location, "a");
    t.location = "location:gone".into();
    assert_eq!(t.as_peer(), None);
    assert!(t.local_segment().is_none());
}

#[test]
fn segment_helpers_name_the_leader_and_the_private_ips() {
    let t = fixture(Granularity::Location, "c");
    let local = t.local_segment().unwrap();
    assert_eq!(local.location, "location:2");
    assert_eq!(local.leader_member().name, "b");
    let ips: Vec<IpAddr> = local.private_ips().collect();
    assert_eq!(ips, ["192.168.0.1".parse::<IpAddr>().unwrap(), "192.168.0.2".parse().unwrap()]);
    assert_eq!(t.segments[2].private_ips().count(), 0);
}
