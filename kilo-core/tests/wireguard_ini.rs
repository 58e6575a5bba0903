//! Upstream's WireGuard INI text and the wg(8) parser.

use kilo_core::fixtures::{PORT, key, private_key};
use kilo_core::wireguard::{Config, IniError, InterfaceConfig, PeerConfig};
use kilo_core::{Cidr, Endpoint, PresharedKey, PrivateKey};

fn cidrs(list: &[&str]) -> Vec<Cidr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn endpoint(s: &str) -> Option<Endpoint> {
    Some(s.parse().unwrap())
}

fn psk() -> PresharedKey {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(b"psk1");
    PresharedKey::from_bytes(b)
}

fn fixture_interface_config() -> Config {
    Config {
        interface: Some(InterfaceConfig {
            private_key: Some(PrivateKey::from_bytes([0; 32])),
            listen_port: Some(PORT),
        }),
        peers: vec![
            PeerConfig {
                public_key: key(1),
                endpoint: endpoint("10.1.0.1:51820"),
                allowed_ips: cidrs(&["10.2.1.0/24", "192.168.0.1/32", "10.4.0.1/32"]),
                ..PeerConfig::default()
            },
            PeerConfig {
                public_key: key(2),
                preshared_key: Some(PresharedKey::ZERO),
                endpoint: endpoint("example.com:51820"),
                allowed_ips: cidrs(&[
                    "10.2.2.0/24",
                    "192.168.0.1/32",
                    "10.2.3.0/24",
                    "192.168.0.2/32",
                    "10.4.0.2/32",
                    "192.168.178.3/32",
                ]),
                persistent_keepalive: 25,
            },
            PeerConfig {
                public_key: key(4),
                preshared_key: Some(psk()),
                endpoint: None,
                allowed_ips: cidrs(&["10.5.0.1/24", "10.5.0.2/24", "fd00:5::/64"]),
                persistent_keepalive: 25,
            },
        ],
    }
}

fn peer_config() -> Config {
    Config {
        interface: None,
        peers: vec![
            PeerConfig {
                public_key: key(1),
                preshared_key: Some(psk()),
                endpoint: endpoint("10.1.0.1:51820"),
                allowed_ips: cidrs(&["10.2.1.0/24", "192.168.0.1/32", "10.4.0.1/32"]),
                persistent_keepalive: 10,
            },
            PeerConfig {
                public_key: key(5),
                preshared_key: None,
                endpoint: endpoint("[fd00::1]:51820"),
                allowed_ips: cidrs(&["10.5.0.3/24"]),
                persistent_keepalive: 10,
            },
        ],
    }
}

const FIXTURE_INTERFACE: &str = include_str!("golden/wireguard/fixture_interface.ini");
const PEER_CONFIG: &str = include_str!("golden/wireguard/peer_config.ini");
const WG_QUICK: &str = include_str!("golden/wireguard/wg_quick.conf");

#[test]
fn interface_with_zero_key_and_three_peers_renders_as_upstream_golden() {
    assert_eq!(fixture_interface_config().to_ini(), FIXTURE_INTERFACE);
    assert_eq!(fixture_interface_config().to_string(), FIXTURE_INTERFACE);
}

#[test]
fn peer_config_without_interface_renders_as_upstream_golden() {
    assert_eq!(peer_config().to_ini(), PEER_CONFIG);
}

#[test]
fn golden_files_parse_back_to_their_configs() {
    // The zero private key and zero pre-shared key are not written, so they come back as none.
    let mut want = fixture_interface_config();
    want.interface.as_mut().unwrap().private_key = None;
    want.peers[1].preshared_key = None;
    assert_eq!(Config::from_ini(FIXTURE_INTERFACE).unwrap(), want);
    assert_eq!(Config::from_ini(PEER_CONFIG).unwrap(), peer_config());
}

#[test]
fn wg_quick_file_parses_with_its_extra_keys_ignored() {
    let got = Config::from_ini(WG_QUICK).unwrap();
    let want = Config {
        interface: Some(InterfaceConfig {
            private_key: Some(private_key()),
            listen_port: Some(51821),
        }),
        peers: vec![
            PeerConfig {
                public_key: key(1),
                preshared_key: None,
                endpoint: endpoint("gw.example.com:51820"),
                allowed_ips: cidrs(&["10.2.1.0/24", "192.168.0.1/32", "10.4.0.1/32"]),
                persistent_keepalive: 0,
            },
            PeerConfig {
                public_key: key(5),
                preshared_key: Some(psk()),
                endpoint: None,
                allowed_ips: cidrs(&["10.5.0.1/24", "fd00:5::1/64"]),
                persistent_keepalive: 25,
            },
        ],
    };
    assert_eq!(got, want);
}

#[test]
fn private_key_is_written_when_non_zero() {
    let config = Config {
        interface: Some(InterfaceConfig {
            private_key: Some(private_key()),
            listen_port: Some(PORT),
        }),
        peers: vec![],
    };
    assert_eq!(
        config.to_ini(),
        "[Interface]\nPrivateKey = cHJpdgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\nListenPort = 51820\n"
    );
}

#[test]
fn interface_without_peers_has_no_trailing_blank_line() {
    let config = Config {
        interface: Some(InterfaceConfig { private_key: None, listen_port: Some(PORT) }),
        peers: vec![],
    };
    assert_eq!(config.to_ini(), "[Interface]\nListenPort = 51820\n");
}

#[test]
fn interface_without_port_or_key_is_a_bare_header() {
    let config = Config { interface: Some(InterfaceConfig::default()), peers: vec![] };
    assert_eq!(config.to_ini(), "[Interface]\n");
    assert_eq!(Config::from_ini("[Interface]\n").unwrap(), config);
}

#[test]
fn empty_config_renders_as_empty_string_and_parses_back() {
    assert_eq!(Config::default().to_ini(), "");
    assert_eq!(Config::from_ini("").unwrap(), Config::default());
    assert_eq!(Config::from_ini("# nothing\n\n   \n").unwrap(), Config::default());
}

#[test]
fn peer_without_allowed_ips_endpoint_or_key_writes_only_keepalive() {
    let config = Config { interface: None, peers: vec![PeerConfig::default()] };
    assert_eq!(config.to_ini(), "[Peer]\nPersistentKeepalive = 0\n");
}

#[test]
fn single_peer_without_interface_starts_without_blank_line() {
    let config = Config {
        interface: None,
        peers: vec![PeerConfig {
            public_key: key(3),
            allowed_ips: cidrs(&["10.2.3.0/24"]),
            ..PeerConfig::default()
        }],
    };
    assert_eq!(
        config.to_ini(),
        "[Peer]\nAllowedIPs = 10.2.3.0/24\nPersistentKeepalive = 0\n\
         PublicKey = a2V5MwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
    );
}

#[test]
fn resolved_dns_endpoint_prints_its_name() {
    let resolved = "example.com:51820"
        .parse::<Endpoint>()
        .unwrap()
        .with_resolved("1.1.1.1:51820".parse().unwrap());
    let config = Config {
        interface: None,
        peers: vec![PeerConfig {
            public_key: key(1),
            endpoint: Some(resolved),
            ..PeerConfig::default()
        }],
    };
    assert!(config.to_ini().contains("Endpoint = example.com:51820\n"));
}

#[test]
fn host_bits_are_kept_as_written_when_parsing() {
    let text = "[Peer]\nPublicKey = a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\
                AllowedIPs = 10.5.0.1/24,10.5.0.0/24 ,  fd00::1/64\n";
    let config = Config::from_ini(text).unwrap();
    let got: Vec<String> = config.peers[0].allowed_ips.iter().map(ToString::to_string).collect();
    assert_eq!(got, ["10.5.0.1/24", "10.5.0.0/24", "fd00::1/64"]);
}

#[test]
fn keys_and_sections_are_case_insensitive_and_crlf_is_accepted() {
    let text = "[INTERFACE]\r\nLISTENPORT = 1\r\n\r\n[peer]\r\npublickey = \
                a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\nPERSISTENTKEEPALIVE = OFF\r\n";
    let config = Config::from_ini(text).unwrap();
    assert_eq!(config.interface.unwrap().listen_port, Some(1));
    assert_eq!(config.peers[0].public_key, key(1));
}

#[test]
fn upper_case_dns_endpoint_is_stored_in_lower_case() {
    let config = Config::from_ini(&format!("{PEER}Endpoint = VPN.Example.com:51820\n")).unwrap();
    assert_eq!(config.peers[0].endpoint, endpoint("vpn.example.com:51820"));
}

#[test]
fn later_scalar_value_overwrites_earlier_one() {
    let text = "[Peer]\nPublicKey = a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\
                PersistentKeepalive = 5\nPersistentKeepalive = 7\n";
    assert_eq!(Config::from_ini(text).unwrap().peers[0].persistent_keepalive, 7);
}

fn err(text: &str) -> IniError {
    Config::from_ini(text).unwrap_err()
}

const PEER: &str = "[Peer]\nPublicKey = a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";

#[test]
fn line_without_equals_is_an_error_naming_its_line() {
    let e = err("[Interface]\nListenPort 51820\n");
    assert_eq!(e, IniError::MissingEquals { line: 2, text: "ListenPort 51820".into() });
    assert_eq!(e.line(), 2);
    assert_eq!(e.to_string(), "line 2: missing '=' in \"ListenPort 51820\" (want Key = value)");
}

#[test]
fn key_before_any_section_is_an_error() {
    assert_eq!(
        err("# header\nListenPort = 1\n"),
        IniError::OutsideSection { line: 2, key: "ListenPort".into() }
    );
}

#[test]
fn unknown_section_is_an_error() {
    assert_eq!(
        err("[Interface]\n[Peers]\n"),
        IniError::UnknownSection { line: 2, section: "Peers".into() }
    );
}

#[test]
fn unknown_keys_are_errors_naming_section_and_key() {
    assert_eq!(
        err("[Interface]\nListenPort = 1\nPort = 2\n"),
        IniError::UnknownKey { line: 3, section: "Interface", key: "Port".into() }
    );
    // wg-quick's interface keys are not accepted in a peer.
    assert_eq!(
        err(&format!("{PEER}Address = 10.0.0.1/32\n")),
        IniError::UnknownKey { line: 3, section: "Peer", key: "Address".into() }
    );
}

#[test]
fn bad_values_are_errors_naming_line_and_key() {
    let cases: [(&str, &str); 8] = [
        ("[Interface]\nListenPort = 65536\n", "ListenPort"),
        ("[Interface]\nListenPort = -1\n", "ListenPort"),
        ("[Interface]\nPrivateKey = Zm9v\n", "PrivateKey"),
        ("[Peer]\nPublicKey = not-base64!\n", "PublicKey"),
        ("[Peer]\nPresharedKey = Zm9v\n", "PresharedKey"),
        ("[Peer]\nEndpoint = 10.0.0.1\n", "Endpoint"),
        ("[Peer]\nAllowedIPs = 10.0.0.1/33\n", "AllowedIPs"),
        ("[Peer]\nPersistentKeepalive = on\n", "PersistentKeepalive"),
    ];
    for (text, want) in cases {
        match err(text) {
            IniError::InvalidValue { line: 2, key, .. } => assert_eq!(key, want, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
    assert!(
        err("[Peer]\nAllowedIPs = 10.0.0.0/8,,10.1.0.0/16\n").to_string().contains("AllowedIPs")
    );
    assert!(
        err("[Peer]\nEndpoint = [::1]:99999\n").to_string().starts_with("line 2: invalid Endpoint")
    );
}

#[test]
fn secret_values_are_not_echoed_in_errors() {
    let secret = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0";
    let e = err(&format!("[Interface]\nPrivateKey = {secret}\n"));
    assert!(!e.to_string().contains(secret), "{e}");
    let e = err(&format!("{PEER}PresharedKey = {secret}\n"));
    assert!(!e.to_string().contains(secret), "{e}");
    let e = err(&format!("[Interface]\nPrivateKey {secret}\n"));
    assert_eq!(e, IniError::MissingEquals { line: 2, text: "PrivateKey <redacted>".into() });
}

#[test]
fn peer_without_public_key_is_an_error_at_its_header() {
    assert_eq!(
        err("[Interface]\n\n[Peer]\nAllowedIPs = 10.0.0.0/8\n[Peer]\n"),
        IniError::MissingPublicKey { line: 3 }
    );
    assert_eq!(err(&format!("{PEER}\n[Peer]\n")), IniError::MissingPublicKey { line: 4 });
}

#[test]
fn empty_allowed_ips_value_adds_nothing() {
    let config = Config::from_ini(&format!("{PEER}AllowedIPs =\n")).unwrap();
    assert!(config.peers[0].allowed_ips.is_empty());
}

#[test]
fn leading_byte_order_mark_is_ignored() {
    assert_eq!(
        Config::from_ini("\u{feff}[Interface]\n").unwrap().interface,
        Some(Default::default())
    );
}

#[test]
fn garbage_never_panics() {
    for text in ["[", "]", "=", "[Peer", "[]\n", "\u{feff}[Interface]", "[Peer]\n=\n", "é=é"] {
        let _ = Config::from_ini(text);
    }
}
