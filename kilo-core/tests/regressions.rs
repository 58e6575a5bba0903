//! Regression tests for inputs the fuzz targets in `fuzz/` found. Each test names its target and
//! the input; each input stays here for good so that the bug cannot come back.

use kilo_core::Endpoint;
use kilo_core::peer_spec::{peer_from_spec, spec_from_peer, validate};
use kilo_core::wireguard::Config;

const K1: &str = "a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
const ZERO: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

/// `endpoint_parse`, input `[fc001]:51820`. Like Go's `net.SplitHostPort`, the parser accepts a
/// bracketed DNS name and keeps the original text; `dns_host` returned `[fc001]`, which is not a
/// DNS name, so an exported Peer spec failed its own validation.
#[test]
fn a_bracketed_dns_endpoint_has_its_host_without_brackets() {
    let endpoint: Endpoint = "[fc001]:51820".parse().unwrap();
    assert_eq!(endpoint.dns(), Some("[fc001]:51820"));
    assert_eq!(endpoint.dns_host(), Some("fc001"));
    assert_eq!(endpoint.port(), 51820);
    let peer = kilo_core::Peer { endpoint: Some(endpoint), ..kilo_core::Peer::default() };
    let spec = spec_from_peer(&peer);
    assert_eq!(validate(&spec), Ok(()));
    let back = peer_from_spec("", &spec);
    assert_eq!(back.endpoint.and_then(|e| e.dns_host().map(str::to_string)), Some("fc001".into()));
}

/// `wireguard_ini`: `PresharedKey = AAAA…A=` (the all-zero key) parsed as a pre-shared key, but
/// rendering omits an all-zero pre-shared key, so render-then-parse lost it. Fixed in the parser:
/// an all-zero pre-shared key, like wg(8)'s, means none.
#[test]
fn an_all_zero_preshared_key_reads_as_none_and_round_trips() {
    let text = format!("[Peer]\nPublicKey = {K1}\nPresharedKey = {ZERO}\n");
    let config = Config::from_ini(&text).unwrap();
    assert_eq!(config.peers[0].preshared_key, None);
    assert_eq!(Config::from_ini(&config.to_ini()), Ok(config));
}

/// `wireguard_ini`, the same for `[Interface] PrivateKey = AAAA…A=`.
#[test]
fn an_all_zero_private_key_reads_as_none_and_round_trips() {
    let text = format!("[Interface]\nPrivateKey = {ZERO}\nListenPort = 51820\n");
    let config = Config::from_ini(&text).unwrap();
    assert_eq!(config.interface.as_ref().and_then(|i| i.private_key.clone()), None);
    assert_eq!(Config::from_ini(&config.to_ini()), Ok(config));
}

/// Found by fuzzing (`wireguard_ini`, input `[Peer]\nPublicKey = AAAA…A=\n`): the parser
/// accepted an all-zero public key that `to_ini` omits, so the rendered text no longer parsed.
/// Fixed: the parser refuses the all-zero public key.
#[test]
fn a_peer_with_an_all_zero_public_key_renders_to_text_that_parses_back_or_is_rejected() {
    let text = format!("[Peer]\nPublicKey = {ZERO}\nAllowedIPs = 10.5.0.1/32\n");
    if let Ok(config) = Config::from_ini(&text) {
        let rendered = config.to_ini();
        assert_eq!(Config::from_ini(&rendered), Ok(config), "rendered:\n{rendered}");
    }
}

// ---------------------------------------------------------------------------------------------
// The bad-input matrix over the core parsers: each bad value is an error that names it (or, for
// annotations, an issue naming the key), never a panic; long values are not echoed in full
// where the core shortens them (annotation issues).

mod matrix {
    use std::collections::BTreeMap;

    use kilo_core::annotations::{DEFAULT_TOPOLOGY_LABEL, NodeObject, key, node_from_object};
    use kilo_core::peer_spec::{PeerEndpoint, PeerSpec, validate};
    use kilo_core::wireguard::Config;
    use kilo_core::{Cidr, Endpoint, Key, PrivateKey};

    const KEY1: &str = "a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    #[test]
    fn bad_keys_are_errors() {
        for bad in [
            "",
            "Zm9v",
            "not a key!",
            "a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            " a2V5MQ==",
            "\u{0}",
        ] {
            assert!(bad.parse::<Key>().is_err(), "{bad:?} parsed as a key");
            assert!(bad.parse::<PrivateKey>().is_err(), "{bad:?} parsed as a private key");
        }
        let long = format!("{KEY1}{KEY1}");
        assert!(long.parse::<Key>().is_err());
    }

    #[test]
    fn bad_cidrs_are_errors_naming_the_input() {
        for bad in [
            "",
            "10.0.0.0",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0 /8",
            "10.0.0.0/ 8",
            " 10.0.0.0/8",
            "10.0.0.0/8 ",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/8/8",
            "10.0.0.256/8",
            "fe80::1%eth0/64",
            "10.0.0.0/99999999999999999999",
            "\u{0}/8",
        ] {
            let err = bad.parse::<Cidr>().expect_err(bad);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err} does not name {bad:?}");
        }
    }

    #[test]
    fn bad_endpoints_are_errors_naming_the_input() {
        for bad in [
            "",
            ":51820",
            "10.0.0.1",
            "10.0.0.1:",
            "10.0.0.1:0",
            "10.0.0.1:65536",
            "10.0.0.1:99999999999999999999",
            "10.0.0.1:-1",
            "10.0.0.1:+1",
            "fc00::1:51820",
            "fc00::1",
            "[fc00::1]",
            "[fc00::1]:",
            "[fc00::1]:0",
            "[fc00::1]51820",
            "Example.com:51820",
            "under_score.example:1",
            "-a.example:1",
            "a..b:1",
            "a b:1",
            "[10.0.0.1:1",
            "10.0.0.1]:1",
        ] {
            let err = bad.parse::<Endpoint>().expect_err(bad);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err} does not name {bad:?}");
        }
    }

    #[test]
    fn bad_peer_specs_fail_validation_with_upstream_messages() {
        let valid = || PeerSpec {
            allowed_ips: vec!["10.5.0.1/32".into()],
            public_key: KEY1.into(),
            ..PeerSpec::default()
        };
        let endpoint = |ip: &str, port: i32| {
            let mut e = PeerEndpoint { port, ..PeerEndpoint::default() };
            e.dns_or_ip.ip = Some(ip.into());
            Some(e)
        };
        let cases: Vec<(&str, PeerSpec, &str)> = vec![
            (
                "negative keepalive",
                PeerSpec { persistent_keepalive: Some(-1), ..valid() },
                "keepalive",
            ),
            ("key too short", PeerSpec { public_key: "Zm9v".into(), ..valid() }, "length"),
            ("key not base64", PeerSpec { public_key: "not a key!".into(), ..valid() }, "base64"),
            (
                "CIDR with a space",
                PeerSpec { allowed_ips: vec!["10.5.0.1 /32".into()], ..valid() },
                "10.5.0.1 /32",
            ),
            ("port 0", PeerSpec { endpoint: endpoint("10.0.0.1", 0), ..valid() }, "port"),
            ("port 65536", PeerSpec { endpoint: endpoint("10.0.0.1", 65536), ..valid() }, "65536"),
            (
                "IP with a port",
                PeerSpec { endpoint: endpoint("10.0.0.1:1", 1), ..valid() },
                "10.0.0.1:1",
            ),
        ];
        assert_eq!(validate(&valid()), Ok(()));
        for (name, spec, word) in cases {
            let err = validate(&spec).expect_err(name);
            assert!(err.to_string().contains(word), "{name}: {err} does not mention {word}");
        }
    }

    #[test]
    fn bad_annotations_are_issues_naming_the_key_and_a_1_mb_value_is_shortened() {
        let huge = "x".repeat(1 << 20);
        let cases: Vec<(&str, String)> = vec![
            (key::KEY, "Zm9v".into()),
            (key::KEY, "not a key!".into()),
            (key::ENDPOINT, "10.0.0.1:0".into()),
            (key::ENDPOINT, "10.0.0.1:65536".into()),
            (key::ENDPOINT, "fc00::1:51820".into()),
            (key::INTERNAL_IP, "10.0.0.1 /24".into()),
            (key::PERSISTENT_KEEPALIVE, "-5".into()),
            (key::PERSISTENT_KEEPALIVE, "ten".into()),
            (key::ALLOWED_LOCATION_IPS, huge.clone()),
            (key::DISCOVERED_ENDPOINTS, huge.clone()),
            (key::DISCOVERED_ENDPOINTS, "{\"a\":".into()),
            (key::LAST_SEEN, "\u{0}".into()),
        ];
        let labels = BTreeMap::new();
        for (k, value) in cases {
            let annotations = BTreeMap::from([(k.to_string(), value.clone())]);
            let obj = NodeObject {
                name: "../etc",
                annotations: &annotations,
                labels: &labels,
                pod_cidrs: &[],
            };
            let (node, issues) = node_from_object(&obj, DEFAULT_TOPOLOGY_LABEL);
            assert_eq!(node.name, "../etc");
            let issue = issues.iter().find(|i| i.key == k);
            let issue = issue.unwrap_or_else(|| panic!("no issue for {k}={:.40}", value));
            let text = issue.to_string();
            assert!(text.len() < 4096, "{k}: a {} byte issue", text.len());
        }
        let huge_pod_cidr = [huge];
        let empty = BTreeMap::new();
        let obj = NodeObject {
            name: "n",
            annotations: &empty,
            labels: &labels,
            pod_cidrs: &huge_pod_cidr,
        };
        let (node, issues) = node_from_object(&obj, DEFAULT_TOPOLOGY_LABEL);
        assert!(node.subnets.is_empty());
        assert!(issues.iter().all(|i| i.to_string().len() < 4096));
    }

    #[test]
    fn bad_wireguard_ini_is_an_error_naming_the_line() {
        let peer = format!("[Peer]\nPublicKey = {KEY1}\n");
        let cases: Vec<(String, usize)> = vec![
            ("ListenPort = 1\n".into(), 1),
            ("[Interface]\nListenPort = 65536\n".into(), 2),
            ("[Interface]\nListenPort = -1\n".into(), 2),
            ("[Interface]\nPrivateKey = Zm9v\n".into(), 2),
            (format!("{peer}AllowedIPs = 10.0.0.0 /8\n"), 3),
            (format!("{peer}Endpoint = fc00::1:51820\n"), 3),
            (format!("{peer}Endpoint = 10.0.0.1:0\n"), 3),
            (format!("{peer}PersistentKeepalive = -1\n"), 3),
            (format!("{peer}PersistentKeepalive = 65536\n"), 3),
            (format!("{peer}Colour = red\n"), 3),
            (format!("{peer}no equals sign\n"), 3),
            ("[Peer]\nAllowedIPs = 10.0.0.0/8\n".into(), 1),
            ("[Tunnel]\n".into(), 1),
        ];
        for (text, line) in cases {
            let err = Config::from_ini(&text).expect_err(&text);
            assert_eq!(err.line(), line, "{text:?}: {err}");
            assert!(err.to_string().starts_with(&format!("line {line}:")), "{err}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The fuzz seed corpus (fuzz/seeds/TARGET/), replayed through the text targets' properties on
// stable Rust, so that every seed and every crash turned into a seed stays checked in CI.

mod seeds {
    use std::path::PathBuf;

    use kilo_core::peer_spec::{PeerSpec, peer_from_spec, spec_from_peer, validate};
    use kilo_core::wireguard::{Config, diff};
    use kilo_core::{Cidr, Endpoint, Key};

    fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds").join(target);
        let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry").path())
            .map(|p| {
                let bytes = std::fs::read(&p).expect("a seed file");
                (p, bytes)
            })
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no seeds in {}", dir.display());
        files
    }

    fn texts(target: &str) -> Vec<(PathBuf, String)> {
        seeds(target)
            .into_iter()
            .filter_map(|(p, b)| String::from_utf8(b).ok().map(|t| (p, t)))
            .collect()
    }

    #[test]
    fn cidr_seeds_print_and_parse_back() {
        for (path, text) in texts("cidr_parse") {
            if let Ok(cidr) = text.parse::<Cidr>() {
                assert_eq!(cidr.to_string().parse::<Cidr>(), Ok(cidr), "{}", path.display());
            }
        }
    }

    #[test]
    fn endpoint_seeds_print_and_parse_back() {
        for (path, text) in texts("endpoint_parse") {
            if let Ok(endpoint) = text.parse::<Endpoint>() {
                let back = endpoint.to_string().parse::<Endpoint>();
                assert_eq!(back.as_ref(), Ok(&endpoint), "{}", path.display());
            }
        }
    }

    #[test]
    fn key_seeds_print_and_parse_back() {
        for (path, text) in texts("key_parse") {
            if let Ok(key) = text.parse::<Key>() {
                assert_eq!(key.to_base64().parse::<Key>(), Ok(key), "{}", path.display());
            }
        }
    }

    #[test]
    fn wireguard_ini_seeds_render_and_parse_back() {
        let mut parsed = 0;
        for (path, text) in texts("wireguard_ini") {
            let Ok(config) = Config::from_ini(&text) else { continue };
            parsed += 1;
            let rendered = config.to_ini();
            assert_eq!(Config::from_ini(&rendered).as_ref(), Ok(&config), "{}", path.display());
            assert!(diff(&config, &config).is_empty(), "{}", path.display());
        }
        assert!(parsed > 0);
    }

    #[test]
    fn peer_spec_seeds_export_valid_specs() {
        for (path, bytes) in seeds("peer_spec") {
            let Ok(spec) = serde_json::from_slice::<PeerSpec>(&bytes) else { continue };
            let peer = peer_from_spec("peer", &spec);
            let exported = spec_from_peer(&peer);
            assert_eq!(validate(&exported), Ok(()), "{}", path.display());
            if validate(&spec).is_ok() {
                assert_eq!(peer_from_spec("peer", &exported), peer, "{}", path.display());
            }
        }
    }
}
