//! The Peer CRD spec: upstream's `TestTranslatePeer`, `Validate()` messages, the JSON shape, and
//! exporting mesh peers and nodes as Peer specs (contract C1, C2).

use std::time::Duration;

use kilo_core::fixtures;
use kilo_core::peer_spec::{
    DnsOrIp, PeerEndpoint, PeerSpec, PeerSpecError, peer_from_spec, spec_from_peer, validate,
};
use kilo_core::{Cidr, Endpoint, Peer, PresharedKey};

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn endpoint(dns: Option<&str>, ip: Option<&str>, port: i32) -> Option<PeerEndpoint> {
    Some(PeerEndpoint {
        dns_or_ip: DnsOrIp { dns: dns.map(Into::into), ip: ip.map(Into::into) },
        port,
    })
}

#[test]
fn translate_peer_matches_upstream_table() {
    let k = fixtures::key(1);
    let psk = PresharedKey::from_bytes(*fixtures::key(2).as_bytes());
    let ep = |s: &str| Some(s.parse::<Endpoint>().unwrap());
    let cases: Vec<(&str, PeerSpec, Peer)> = vec![
        ("empty", PeerSpec::default(), Peer::default()),
        (
            "invalid ips",
            PeerSpec { allowed_ips: vec!["10.0.0.1".into(), "foo".into()], ..PeerSpec::default() },
            Peer::default(),
        ),
        (
            "valid ips",
            PeerSpec {
                allowed_ips: vec!["10.0.0.1/24".into(), "10.0.0.2/32".into()],
                ..PeerSpec::default()
            },
            Peer { allowed_ips: vec![cidr("10.0.0.1/24"), cidr("10.0.0.2/32")], ..Peer::default() },
        ),
        (
            "invalid endpoint ip",
            PeerSpec { endpoint: endpoint(None, Some("foo"), 51820), ..PeerSpec::default() },
            Peer::default(),
        ),
        (
            "only endpoint port",
            PeerSpec { endpoint: endpoint(None, None, 51820), ..PeerSpec::default() },
            Peer::default(),
        ),
        (
            "valid endpoint ip",
            PeerSpec { endpoint: endpoint(None, Some("10.0.0.1"), 51820), ..PeerSpec::default() },
            Peer { endpoint: ep("10.0.0.1:51820"), ..Peer::default() },
        ),
        (
            "valid endpoint ipv6",
            PeerSpec { endpoint: endpoint(None, Some("ff60::2"), 51820), ..PeerSpec::default() },
            Peer { endpoint: ep("[ff60::2]:51820"), ..Peer::default() },
        ),
        (
            "valid endpoint DNS",
            PeerSpec {
                endpoint: endpoint(Some("example.com"), None, 51820),
                ..PeerSpec::default()
            },
            Peer { endpoint: ep("example.com:51820"), ..Peer::default() },
        ),
        (
            "empty key",
            PeerSpec { public_key: String::new(), ..PeerSpec::default() },
            Peer::default(),
        ),
        (
            "valid key",
            PeerSpec { public_key: k.to_base64(), ..PeerSpec::default() },
            Peer { public_key: k, ..Peer::default() },
        ),
        (
            "invalid keepalive",
            PeerSpec { persistent_keepalive: Some(-1), ..PeerSpec::default() },
            Peer::default(),
        ),
        (
            "valid keepalive",
            PeerSpec { persistent_keepalive: Some(1), ..PeerSpec::default() },
            Peer { persistent_keepalive: Duration::from_secs(1), ..Peer::default() },
        ),
        (
            "valid preshared key",
            PeerSpec { preshared_key: Some(psk.expose_base64()), ..PeerSpec::default() },
            Peer { preshared_key: Some(psk), ..Peer::default() },
        ),
    ];
    for (name, spec, want) in cases {
        assert_eq!(peer_from_spec("", &spec), want, "test case {name:?}");
    }
}

#[test]
fn peer_dns_wins_over_ip_and_an_invalid_dns_gives_no_endpoint() {
    let both = PeerSpec {
        endpoint: endpoint(Some("example.com"), Some("10.0.0.1"), 51820),
        ..PeerSpec::default()
    };
    assert_eq!(peer_from_spec("p", &both).endpoint.unwrap().to_string(), "example.com:51820");
    let bad_dns = PeerSpec {
        endpoint: endpoint(Some("Bad_Name"), Some("10.0.0.1"), 51820),
        ..PeerSpec::default()
    };
    assert_eq!(peer_from_spec("p", &bad_dns).endpoint, None);
    for port in [0, -1, 65536] {
        let spec =
            PeerSpec { endpoint: endpoint(None, Some("10.0.0.1"), port), ..PeerSpec::default() };
        assert_eq!(peer_from_spec("p", &spec).endpoint, None, "{port}");
    }
    assert_eq!(peer_from_spec("laptop", &PeerSpec::default()).name, "laptop");
}

fn valid() -> PeerSpec {
    PeerSpec {
        allowed_ips: vec!["10.5.0.1/24".into()],
        endpoint: endpoint(None, Some("1.2.3.4"), 51820),
        persistent_keepalive: Some(10),
        preshared_key: None,
        public_key: fixtures::key(1).to_base64(),
    }
}

#[test]
fn validate_reports_upstream_messages_first_failure_first() {
    assert_eq!(validate(&valid()), Ok(()));
    assert_eq!(validate(&PeerSpec { allowed_ips: vec![], ..valid() }), Ok(()));
    let dns_regex = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
        characters, '-' or '.', and must start and end with an alphanumeric character (e.g. \
        'example.com', regex used for validation is \
        '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
    let long_upper = "A".repeat(254);
    let cases: Vec<(PeerSpec, String)> = vec![
        (
            PeerSpec { allowed_ips: vec!["10.0.0.1/24".into(), "10.0.0.1".into()], ..valid() },
            "failed to parse \"10.0.0.1\" as a valid IP address: invalid CIDR address: 10.0.0.1"
                .into(),
        ),
        (
            PeerSpec { allowed_ips: vec!["foo".into()], public_key: String::new(), ..valid() },
            "failed to parse \"foo\" as a valid IP address: invalid CIDR address: foo".into(),
        ),
        (
            PeerSpec { endpoint: endpoint(Some(""), Some(""), 51820), ..valid() },
            "either an endpoint DNS name IP address must be given".into(),
        ),
        (
            PeerSpec { endpoint: endpoint(None, None, 0), ..valid() },
            "either an endpoint DNS name IP address must be given".into(),
        ),
        (
            PeerSpec { endpoint: endpoint(Some("Example.com"), None, 51820), ..valid() },
            dns_regex.into(),
        ),
        (
            PeerSpec { endpoint: endpoint(Some(&long_upper), None, 51820), ..valid() },
            format!("must be no more than 253 characters; {dns_regex}"),
        ),
        (
            PeerSpec { endpoint: endpoint(None, Some("1.2.3"), 51820), ..valid() },
            "failed to parse \"1.2.3\" as a valid IP address".into(),
        ),
        (
            PeerSpec { endpoint: endpoint(Some("example.com"), Some("1.2.3.4"), 0), ..valid() },
            "port must be a valid UDP port number, got 0".into(),
        ),
        (
            PeerSpec { endpoint: endpoint(None, Some("1.2.3.4"), 65536), ..valid() },
            "port must be a valid UDP port number, got 65536".into(),
        ),
        (
            PeerSpec { persistent_keepalive: Some(-1), ..valid() },
            "persistent keepalive must be greater than or equal to zero; got '\u{fffd}'".into(),
        ),
        (
            PeerSpec { public_key: "foo!".into(), ..valid() },
            "WireGuard public key is not base64 encoded: illegal base64 data at input byte 3"
                .into(),
        ),
        (
            PeerSpec { public_key: String::new(), ..valid() },
            "WireGuard public key has invalid length".into(),
        ),
        (
            PeerSpec { public_key: "Zm9v".into(), ..valid() },
            "WireGuard public key has invalid length".into(),
        ),
    ];
    for (spec, message) in cases {
        let err = validate(&spec).unwrap_err();
        assert_eq!(err.to_string(), message, "{spec:?}");
    }
    assert_eq!(
        validate(&PeerSpec { persistent_keepalive: Some(-7), ..valid() }),
        Err(PeerSpecError::NegativeKeepalive { value: -7 })
    );
}

#[test]
fn spec_json_uses_upstream_names_and_omits_empty_fields() {
    let spec = PeerSpec {
        allowed_ips: vec!["10.5.0.1/32".into()],
        endpoint: endpoint(Some("vpn.example.com"), None, 51820),
        persistent_keepalive: Some(25),
        preshared_key: Some(fixtures::key(2).to_base64()),
        public_key: fixtures::key(1).to_base64(),
    };
    let json = serde_json::to_string(&spec).unwrap();
    assert_eq!(
        json,
        concat!(
            r#"{"allowedIPs":["10.5.0.1/32"],"endpoint":{"dnsOrIP":{"dns":"vpn.example.com"},"port":51820},"#,
            r#""persistentKeepalive":25,"presharedKey":"a2V5MgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","#,
            r#""publicKey":"a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}"#
        )
    );
    assert_eq!(serde_json::from_str::<PeerSpec>(&json).unwrap(), spec);
    let minimal = PeerSpec { persistent_keepalive: Some(0), ..PeerSpec::default() };
    assert_eq!(serde_json::to_string(&minimal).unwrap(), r#"{"allowedIPs":[],"publicKey":""}"#);
    let read: PeerSpec = serde_json::from_str(
        r#"{"allowedIPs":null,"endpoint":{"dnsOrIP":{"ip":"1.1.1.1"},"port":7},"unknown":1}"#,
    )
    .unwrap();
    assert_eq!(read.allowed_ips, Vec::<String>::new());
    assert_eq!(read.endpoint, endpoint(None, Some("1.1.1.1"), 7));
}

#[test]
fn exported_peers_carry_the_dns_name_seconds_and_no_empty_endpoint() {
    let dns = Peer {
        name: "laptop".into(),
        allowed_ips: vec![cidr("10.5.0.1/24")],
        public_key: fixtures::key(3),
        preshared_key: None,
        persistent_keepalive: Duration::from_secs(25),
        endpoint: Some(
            "vpn.example.com:51821"
                .parse::<Endpoint>()
                .unwrap()
                .with_resolved("1.2.3.4:51821".parse().unwrap()),
        ),
    };
    let spec = spec_from_peer(&dns);
    assert_eq!(spec.endpoint, endpoint(Some("vpn.example.com"), None, 51821));
    assert_eq!(spec.persistent_keepalive, Some(25));
    assert_eq!(spec.allowed_ips, vec!["10.5.0.1/24".to_string()]);
    assert_eq!(validate(&spec), Ok(()));
    assert_eq!(
        peer_from_spec("laptop", &spec),
        Peer { endpoint: Some("vpn.example.com:51821".parse().unwrap()), ..dns }
    );

    let fixture = fixtures::peers();
    let a = spec_from_peer(&fixture[0]);
    assert_eq!(a.endpoint, None);
    assert_eq!(a.persistent_keepalive, None);
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        r#"{"allowedIPs":["10.5.0.1/24","10.5.0.2/24"],"publicKey":"a2V5NAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}"#
    );
    let b = spec_from_peer(&fixture[1]);
    assert_eq!(b.endpoint, endpoint(None, Some("192.168.0.1"), 51820));
    for peer in fixture {
        assert_eq!(peer_from_spec(&peer.name, &spec_from_peer(&peer)), peer);
    }
    let v6 = Peer { endpoint: Some("[fd00::1]:5".parse().unwrap()), ..Peer::default() };
    assert_eq!(spec_from_peer(&v6).endpoint, endpoint(None, Some("fd00::1"), 5));
    let sub_second = Peer { persistent_keepalive: Duration::from_nanos(25), ..Peer::default() };
    assert_eq!(spec_from_peer(&sub_second).persistent_keepalive, None);
}
