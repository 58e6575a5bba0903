//! The normalised per-peer WireGuard diff (contract C12 and 6, "Reconciling").

use kilo_core::fixtures::{PORT, key, private_key};
use kilo_core::wireguard::{
    Config, ConfigDiff, InterfaceChange, InterfaceConfig, PeerChange, PeerConfig, PeerField, diff,
};
use kilo_core::{Cidr, Endpoint, PresharedKey, PrivateKey};

fn cidrs(list: &[&str]) -> Vec<Cidr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn ep(s: &str) -> Endpoint {
    s.parse().unwrap()
}

fn peer(n: u8, endpoint: Option<&str>, ips: &[&str]) -> PeerConfig {
    PeerConfig {
        public_key: key(n),
        endpoint: endpoint.map(ep),
        allowed_ips: cidrs(ips),
        ..PeerConfig::default()
    }
}

fn config(peers: Vec<PeerConfig>) -> Config {
    Config {
        interface: Some(InterfaceConfig {
            private_key: Some(private_key()),
            listen_port: Some(PORT),
        }),
        peers,
    }
}

fn base() -> Config {
    config(vec![
        peer(1, Some("10.1.0.1:51820"), &["10.2.1.0/24", "10.4.0.1/32"]),
        peer(2, Some("10.1.0.2:51820"), &["10.2.2.0/24", "10.4.0.2/32"]),
        peer(4, None, &["10.5.0.1/24"]),
    ])
}

const K1: &str = "a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

#[test]
fn config_diffed_with_itself_is_empty() {
    let d = diff(&base(), &base());
    assert!(d.is_empty());
    assert_eq!(d, ConfigDiff::default());
    assert_eq!(d.to_string(), "");
}

#[test]
fn normalisation_masks_sorts_and_deduplicates_allowed_ips() {
    let current = config(vec![peer(1, None, &["10.4.0.1/32", "10.2.1.7/24", "10.2.1.0/24"])]);
    let desired = config(vec![peer(1, None, &["10.2.1.0/24", "10.4.0.1/32"])]);
    assert!(diff(&current, &desired).is_empty());
    let got: Vec<String> =
        current.normalized().peers[0].allowed_ips.iter().map(ToString::to_string).collect();
    assert_eq!(got, ["10.2.1.0/24", "10.4.0.1/32"]);
}

#[test]
fn normalisation_orders_peers_by_key_and_merges_repeated_keys() {
    let current = config(vec![
        peer(2, None, &["10.2.2.0/24"]),
        peer(1, None, &["10.2.1.0/24"]),
        peer(2, Some("10.1.0.2:51820"), &["10.4.0.2/32"]),
    ]);
    let normal = current.normalized();
    assert_eq!(normal.peers.len(), 2);
    assert_eq!(normal.peers[0].public_key, key(1));
    assert_eq!(normal.peers[1], peer(2, Some("10.1.0.2:51820"), &["10.2.2.0/24", "10.4.0.2/32"]));
}

#[test]
fn zero_preshared_key_and_zero_private_key_mean_none() {
    let mut current = base();
    current.peers[0].preshared_key = Some(PresharedKey::ZERO);
    current.interface.as_mut().unwrap().private_key = Some(PrivateKey::from_bytes([0; 32]));
    let mut desired = base();
    desired.interface.as_mut().unwrap().private_key = None;
    assert!(diff(&current, &desired).is_empty());
}

#[test]
fn desired_peer_without_endpoint_ignores_a_roamed_endpoint() {
    let mut current = base();
    current.peers[2].endpoint = Some(ep("203.0.113.9:41000"));
    assert!(diff(&current, &base()).is_empty());
}

#[test]
fn changed_ip_endpoint_is_one_readable_change() {
    let mut desired = base();
    desired.peers[0].endpoint = Some(ep("10.1.0.9:51820"));
    let d = diff(&base(), &desired);
    assert_eq!(
        d.peers,
        [PeerChange::Update {
            key: key(1),
            changes: vec![PeerField::Endpoint {
                from: Some(ep("10.1.0.1:51820")),
                to: ep("10.1.0.9:51820"),
            }],
        }]
    );
    assert_eq!(d.to_string(), format!("peer {K1}: endpoint 10.1.0.1:51820 → 10.1.0.9:51820\n"));
}

#[test]
fn endpoint_set_on_a_peer_that_had_none_is_a_change_from_none() {
    let mut desired = base();
    desired.peers[2].endpoint = Some(ep("[fd00::4]:51820"));
    let d = diff(&base(), &desired);
    assert!(d.to_string().ends_with(": endpoint none → [fd00::4]:51820\n"), "{d}");
}

#[test]
fn unresolved_dns_endpoint_is_not_compared() {
    let mut desired = base();
    desired.peers[0].endpoint = Some(ep("gw.example.com:51820"));
    assert!(diff(&base(), &desired).is_empty());
}

#[test]
fn resolved_dns_endpoint_compares_by_address() {
    let mut desired = base();
    let dns = ep("gw.example.com:51820");
    desired.peers[0].endpoint = Some(dns.with_resolved("10.1.0.1:51820".parse().unwrap()));
    assert!(diff(&base(), &desired).is_empty());
    desired.peers[0].endpoint = Some(dns.with_resolved("10.1.0.7:51820".parse().unwrap()));
    let d = diff(&base(), &desired);
    assert_eq!(d.to_string(), format!("peer {K1}: endpoint 10.1.0.1:51820 → 10.1.0.7:51820\n"));
}

#[test]
fn allowed_ip_changes_list_added_and_removed_networks() {
    let mut desired = base();
    desired.peers[1].allowed_ips = cidrs(&["10.2.2.0/24", "10.2.3.5/24", "fd00::/64"]);
    let d = diff(&base(), &desired);
    assert_eq!(
        d.peers,
        [PeerChange::Update {
            key: key(2),
            changes: vec![PeerField::AllowedIps {
                added: cidrs(&["10.2.3.0/24", "fd00::/64"]),
                removed: cidrs(&["10.4.0.2/32"]),
            }],
        }]
    );
    assert!(d.to_string().ends_with(": allowed IPs +10.2.3.0/24, fd00::/64 -10.4.0.2/32\n"));
}

#[test]
fn keepalive_and_preshared_key_changes_never_print_the_key() {
    let psk = PresharedKey::from_bytes([7; 32]);
    let mut desired = base();
    desired.peers[0].persistent_keepalive = 25;
    desired.peers[0].preshared_key = Some(psk);
    let d = diff(&base(), &desired);
    let text = d.to_string();
    assert_eq!(text, format!("peer {K1}: keepalive 0s → 25s\npeer {K1}: preshared key added\n"));
    assert!(!text.contains(&psk.expose_base64()));
    let removed = diff(&desired, &base()).to_string();
    assert!(removed.contains("preshared key removed"), "{removed}");
}

#[test]
fn added_and_removed_peers_are_listed_by_key() {
    let mut desired = base();
    desired.peers.remove(1);
    desired.peers.push(peer(5, Some("192.168.0.1:51820"), &["10.5.0.3/24"]));
    let d = diff(&base(), &desired);
    assert_eq!(
        d.peers,
        [
            PeerChange::Remove(key(2)),
            PeerChange::Add(peer(5, Some("192.168.0.1:51820"), &["10.5.0.0/24"])),
        ]
    );
    assert_eq!(
        d.to_string(),
        "peer a2V5MgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=: remove\n\
         peer a2V5NQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=: add (allowed IPs 10.5.0.0/24; \
         endpoint 192.168.0.1:51820; keepalive 0s; preshared key none)\n"
    );
}

#[test]
fn interface_changes_never_print_the_private_key() {
    let mut desired = base();
    let other = PrivateKey::from_bytes([9; 32]);
    desired.interface =
        Some(InterfaceConfig { private_key: Some(other.clone()), listen_port: Some(51821) });
    let d = diff(&base(), &desired);
    assert_eq!(
        d.interface,
        [
            InterfaceChange::PrivateKey(Some(other.clone())),
            InterfaceChange::ListenPort { from: Some(PORT), to: Some(51821) },
        ]
    );
    let text = d.to_string();
    assert_eq!(text, "interface: private key changed\ninterface: listen port 51820 → 51821\n");
    assert!(!format!("{d:?}").contains(&other.expose_base64()));
    assert!(!format!("{d:?}").contains(&private_key().expose_base64()));
}

#[test]
fn interface_added_or_removed_is_one_change() {
    let mut without = base();
    without.interface = None;
    assert_eq!(diff(&base(), &without).interface, [InterfaceChange::Remove]);
    let d = diff(&without, &base());
    assert_eq!(d.to_string(), "interface: add (private key set, listen port 51820)\n");
}

#[test]
fn applying_a_diff_yields_the_desired_config() {
    let mut desired = base();
    desired.interface.as_mut().unwrap().listen_port = Some(1);
    desired.peers[0].endpoint = Some(ep("10.1.0.9:51820"));
    desired.peers[0].persistent_keepalive = 10;
    desired.peers[1].allowed_ips = cidrs(&["10.9.0.0/16"]);
    desired.peers.remove(2);
    desired.peers.push(peer(6, None, &["10.6.0.1/32"]));
    assert_eq!(diff(&base(), &desired).apply(&base()), desired.normalized());
}

#[test]
fn applying_keeps_endpoints_the_diff_does_not_compare() {
    let mut current = base();
    current.peers[2].endpoint = Some(ep("203.0.113.9:41000"));
    let mut desired = base();
    desired.peers[2].persistent_keepalive = 25;
    let applied = diff(&current, &desired).apply(&current);
    assert_eq!(applied.peers[2].endpoint, Some(ep("203.0.113.9:41000")));
    assert_eq!(applied.peers[2].persistent_keepalive, 25);
    assert!(diff(&applied, &desired).is_empty());
}
