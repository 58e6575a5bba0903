//! The static mesh TOML file (contract 3): the example files and every kind of error.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kilo_backend_file::{FileError, Options, SNAPSHOT_LAST_SEEN, load, local_node, parse_str};
use kilo_core::{Granularity, Key};

const K1: &str = "a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
const K2: &str = "a2V5MgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn parse(text: &str) -> Result<kilo_core::Snapshot, FileError> {
    parse_str(text, "mesh.toml", &Options::default())
}

fn error(text: &str) -> String {
    parse(text).expect_err("the text should not parse").to_string()
}

#[test]
fn three_locations_example_reads_settings_nodes_and_peers() {
    let s = load(&data("three-locations.toml"), &Options::default()).unwrap();
    assert_eq!(s.settings.granularity, Some(Granularity::Location));
    assert_eq!(s.settings.subnet, Some("10.4.0.0/16".parse().unwrap()));
    assert_eq!(s.settings.port, Some(51820));
    let names: Vec<_> = s.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["gcp-1", "gcp-2", "aws-1", "aws-2", "home-gw"]);
    let gcp1 = local_node(&s, "gcp-1").unwrap();
    assert!(gcp1.leader);
    assert_eq!(gcp1.location, "gcp");
    assert_eq!(gcp1.endpoint.as_ref().unwrap().to_string(), "35.190.1.1:51820");
    assert_eq!(gcp1.internal_ip, Some("10.128.0.2/32".parse().unwrap()));
    assert_eq!(gcp1.subnets, vec!["10.2.1.0/24".parse().unwrap()]);
    let aws1 = local_node(&s, "aws-1").unwrap();
    assert_eq!(aws1.allowed_location_ips, vec!["172.31.32.0/20".parse().unwrap()]);
    let home = local_node(&s, "home-gw").unwrap();
    assert_eq!(home.endpoint.as_ref().unwrap().dns_host(), Some("home.example.net"));
    assert_eq!(home.persistent_keepalive, Duration::from_secs(25));
    assert!(s.nodes.iter().all(|n| n.is_ready_ignoring_last_seen() && n.is_ready_at(0)));
    assert_eq!(s.peers.len(), 2);
    assert_eq!(s.peers[0].name, "laptop");
    assert_eq!(s.peers[0].persistent_keepalive, Duration::from_secs(10));
    assert!(s.peers[0].endpoint.is_none());
    assert_eq!(s.peers[1].allowed_ips.len(), 2);
    assert!(s.peers[1].preshared_key.is_some());
    assert!(s.invalid.is_empty());
}

#[test]
fn a_node_behind_nat_has_no_endpoint_and_keeps_its_keepalive() {
    let s = load(&data("nat.toml"), &Options::default()).unwrap();
    let edge = local_node(&s, "edge-1").unwrap();
    assert_eq!(edge.endpoint, None);
    assert_eq!(edge.persistent_keepalive, Duration::from_secs(25));
    assert!(!edge.is_ready_ignoring_last_seen(), "upstream readiness needs an endpoint");
    assert_eq!(s.settings.granularity, None);
}

#[test]
fn the_hijack_example_parses_so_that_validation_can_report_it() {
    let s = load(&data("hijack.toml"), &Options::default()).unwrap();
    assert_eq!(s.peers[0].allowed_ips[1], "10.2.2.0/25".parse().unwrap());
    assert_eq!(s.nodes[1].subnets[0], "10.2.2.0/24".parse().unwrap());
}

#[test]
fn examples_at_the_repository_top_level_match_the_test_data() {
    let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for (example, test) in [
        ("three-locations.toml", "three-locations.toml"),
        ("nat.toml", "nat.toml"),
        ("hijack.toml", "hijack.toml"),
        ("dual-stack.toml", "dual-stack.toml"),
        ("upstream-fixture.yaml", "upstream-fixture.yaml"),
    ] {
        let a = std::fs::read_to_string(top.join(example)).unwrap();
        let b = std::fs::read_to_string(data(test)).unwrap();
        assert_eq!(a, b, "examples/{example} differs from tests/data/{test}");
    }
}

#[test]
fn a_node_needs_only_a_name_and_a_public_key() {
    let s = parse(&format!("[[node]]\nname = \"a\"\npublic-key = \"{K1}\"\n")).unwrap();
    let n = &s.nodes[0];
    assert_eq!(n.key, K1.parse::<Key>().unwrap());
    assert_eq!(n.endpoint, None);
    assert!(n.subnets.is_empty());
    assert_eq!(n.location, "");
    assert!(!n.leader);
    assert_eq!(n.last_seen, SNAPSHOT_LAST_SEEN);
    assert_eq!(s.settings, kilo_core::MeshSettings { static_mesh: true, ..Default::default() });
}

#[test]
fn a_node_subnet_is_masked_like_a_pod_cidr_but_internal_ip_keeps_host_bits() {
    let s = parse(&format!(
        "[[node]]\nname = \"a\"\npublic-key = \"{K1}\"\nsubnet = \"10.2.0.1/24\"\n\
         internal-ip = \"10.0.0.5/24\"\n"
    ))
    .unwrap();
    assert_eq!(s.nodes[0].subnets[0].to_string(), "10.2.0.0/24");
    assert_eq!(s.nodes[0].internal_ip.unwrap().to_string(), "10.0.0.5/24");
}

#[test]
fn the_dual_stack_example_reads_one_cidr_per_family() {
    let s = load(&data("dual-stack.toml"), &Options::default()).unwrap();
    let c = |t: &str| t.parse::<kilo_core::Cidr>().unwrap();
    assert_eq!(
        (s.settings.subnet, s.settings.subnet6),
        (Some(c("10.4.0.0/16")), Some(c("fd04::/64")))
    );
    let lab2 = local_node(&s, "lab-2").unwrap();
    assert_eq!(lab2.subnets, vec![c("10.2.2.0/24"), c("fd02:2::/64")]);
    assert_eq!(
        (lab2.internal_ip, lab2.internal_ip6),
        (Some(c("192.168.10.2/24")), Some(c("fd00:10::2/64")))
    );
    assert_eq!(s.peers[0].allowed_ips, vec![c("10.5.0.1/32"), c("fd05::1/128")]);
    assert!(s.invalid.is_empty());
}

#[test]
fn subnet_and_internal_ip_take_a_string_or_one_cidr_per_family_in_either_order() {
    let c = |t: &str| t.parse::<kilo_core::Cidr>().unwrap();
    let s = parse(&format!(
        "[mesh]\nsubnet = [\"fd04::/64\", \"10.4.0.1/16\"]\n\n[[node]]\nname = \"a\"\n\
         public-key = \"{K1}\"\nsubnet = [\"fd02:1::1/64\", \"10.2.1.1/24\"]\n\
         internal-ip = [\"fd00::5/64\", \"10.0.0.5/24\"]\n\n[[node]]\nname = \"b\"\n\
         public-key = \"{K2}\"\nsubnet = [\"fd02:2::/64\"]\ninternal-ip = \"fd00::6/64\"\n"
    ))
    .unwrap();
    // The mesh's first range is the IPv4 one, whatever the order written.
    assert_eq!(
        (s.settings.subnet, s.settings.subnet6),
        (Some(c("10.4.0.0/16")), Some(c("fd04::/64")))
    );
    // Pod subnets keep the order written (the first is the node's primary), masked.
    assert_eq!(s.nodes[0].subnets, vec![c("fd02:1::/64"), c("10.2.1.0/24")]);
    assert_eq!(
        (s.nodes[0].internal_ip, s.nodes[0].internal_ip6),
        (Some(c("10.0.0.5/24")), Some(c("fd00::5/64")))
    );
    // A single IPv6 value is the node's only one.
    assert_eq!(s.nodes[1].subnets, vec![c("fd02:2::/64")]);
    assert_eq!((s.nodes[1].internal_ip, s.nodes[1].internal_ip6), (Some(c("fd00::6/64")), None));
}

#[test]
fn two_cidrs_of_one_family_or_an_empty_array_are_errors_naming_the_line() {
    let err =
        error("[mesh]\ngranularity = \"full\"\nsubnet = [\"10.4.0.0/16\", \"10.5.0.0/16\"]\n");
    assert_eq!(
        err,
        "mesh.toml:3: [mesh]: subnet: 10.4.0.0/16 and 10.5.0.0/16 are both IPv4: give at most one \
         CIDR per address family"
    );
    let err = error(&format!(
        "[[node]]\nname = \"a\"\npublic-key = \"{K1}\"\nsubnet = [\"fd02:1::/64\", \"fd02:2::/64\"]\n"
    ));
    assert_eq!(
        err,
        "mesh.toml:4: node \"a\": subnet: fd02:1::/64 and fd02:2::/64 are both IPv6: give at most \
         one CIDR per address family"
    );
    let err = error(&format!(
        "[[node]]\nname = \"a\"\npublic-key = \"{K1}\"\ninternal-ip = [\"10.0.0.1/24\", \"10.0.0.2/24\"]\n"
    ));
    assert!(
        err.starts_with(
            "mesh.toml:4: node \"a\": internal-ip: 10.0.0.1/24 and 10.0.0.2/24 are both IPv4"
        ),
        "{err}"
    );
    let err = error("[mesh]\nsubnet = []\n");
    assert_eq!(
        err,
        "mesh.toml:2: [mesh]: subnet: want one CIDR, or one per address family; found an empty array"
    );
    let err = error("[mesh]\nsubnet = 7\n");
    assert!(
        err.starts_with("mesh.toml:2: [mesh]: subnet: want a CIDR string, or an array"),
        "{err}"
    );
}

#[test]
fn a_missing_file_is_an_error_naming_the_file() {
    let err = load(Path::new("/nonexistent/mesh.toml"), &Options::default()).unwrap_err();
    assert!(matches!(err, FileError::Read { .. }));
    assert!(err.to_string().starts_with("/nonexistent/mesh.toml: "), "{err}");
}

#[test]
fn invalid_toml_reports_the_line() {
    let err = error("[mesh]\nport = 51820\n\n[[node]\nname = \"a\"\n");
    assert!(err.starts_with("mesh.toml:4: "), "{err}");
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let err =
        error(&format!("[[node]]\nname = \"a\"\npublic-key = \"{K1}\"\npublic_key = \"x\"\n"));
    assert!(err.starts_with("mesh.toml:4: node \"a\": unknown key \"public_key\""), "{err}");
    let err = error("[mesh]\ngranularity = \"full\"\nmtu = 1420\n");
    assert!(err.starts_with("mesh.toml:3: [mesh]: unknown key \"mtu\""), "{err}");
    let err = error("[nodes]\nname = \"a\"\n");
    assert!(err.starts_with("mesh.toml:1: top level: unknown key \"nodes\""), "{err}");
}

#[test]
fn a_value_of_the_wrong_type_names_the_key_and_both_types() {
    let err = error("[mesh]\nport = \"51820\"\n");
    assert_eq!(err, "mesh.toml:2: [mesh]: port: want an integer, found a string");
    let err = error(&format!("[[node]]\nname = \"a\"\npublic-key = \"{K1}\"\nleader = \"yes\"\n"));
    assert_eq!(err, "mesh.toml:4: node \"a\": leader: want true or false, found a string");
    let err = error("[node]\nname = \"a\"\n");
    assert!(err.contains("want [[node]] tables, found a table"), "{err}");
}

#[test]
fn a_bad_public_key_is_reported_in_the_exact_contract_style() {
    let text = format!(
        "[[node]]\nname = \"gcp-1\"\npublic-key = \"{K1}\"\n\n[[node]]\nname = \"gcp-2\"\n\
         public-key = \"not base64!\"\n"
    );
    assert_eq!(error(&text), "mesh.toml:7: node \"gcp-2\": public-key: invalid base64");
    let err = error("[[node]]\nname = \"a\"\npublic-key = \"Zm9v\"\n");
    assert!(err.contains("public-key: invalid length: decodes to 3 bytes, want 32"), "{err}");
}

#[test]
fn a_bad_cidr_names_the_key_and_the_value() {
    let err = error(&format!(
        "[[node]]\nname = \"a\"\npublic-key = \"{K1}\"\nallowed-location-ips = [\"10.0.0.0/33\"]\n"
    ));
    assert!(
        err.starts_with(
            "mesh.toml:4: node \"a\": allowed-location-ips: invalid CIDR \"10.0.0.0/33\""
        ),
        "{err}"
    );
    let err = error("[mesh]\nsubnet = \"10.4.0.0\"\n");
    assert!(err.starts_with("mesh.toml:2: [mesh]: subnet: invalid CIDR"), "{err}");
}

#[test]
fn a_bad_endpoint_names_the_key_and_the_value() {
    let err = error(&format!(
        "[[peer]]\nname = \"p\"\npublic-key = \"{K1}\"\nallowed-ips = [\"10.5.0.1/32\"]\n\
         endpoint = \"Example.com:51820\"\n"
    ));
    assert!(
        err.starts_with(
            "mesh.toml:5: peer \"p\": endpoint: invalid endpoint \"Example.com:51820\""
        ),
        "{err}"
    );
}

#[test]
fn duplicate_node_names_are_an_error_with_both_lines() {
    let err = error(&format!(
        "[[node]]\nname = \"a\"\npublic-key = \"{K1}\"\n[[node]]\nname = \"a\"\npublic-key = \"{K2}\"\n"
    ));
    assert_eq!(err, "mesh.toml:5: node \"a\": name: \"a\" is already used by node \"a\" at line 2");
}

#[test]
fn a_node_and_a_peer_may_share_a_name_but_two_peers_may_not() {
    let peer = |name: &str, key: &str| {
        format!(
            "[[peer]]\nname = \"{name}\"\npublic-key = \"{key}\"\nallowed-ips = [\"10.5.0.1/32\"]\n"
        )
    };
    let ok = format!("[[node]]\nname = \"a\"\npublic-key = \"{K1}\"\n{}", peer("a", K2));
    assert!(parse(&ok).is_ok());
    let err = error(&format!("{}{}", peer("p", K1), peer("p", K2)));
    assert!(
        err.contains("peer \"p\": name: \"p\" is already used by peer \"p\" at line 2"),
        "{err}"
    );
}

#[test]
fn duplicate_public_keys_are_an_error_with_both_lines() {
    let err = error(&format!(
        "[[node]]\nname = \"a\"\npublic-key = \"{K1}\"\n[[peer]]\nname = \"p\"\n\
         allowed-ips = [\"10.5.0.1/32\"]\npublic-key = \"{K1}\"\n"
    ));
    assert_eq!(
        err,
        format!(
            "mesh.toml:7: peer \"p\": public-key: {K1} is already used by node \"a\" at line 3"
        )
    );
}

#[test]
fn missing_required_keys_are_named() {
    let err = error("[[node]]\nname = \"a\"\n");
    assert!(err.contains("node \"a\": missing required key \"public-key\""), "{err}");
    let err = error(&format!("[[node]]\npublic-key = \"{K1}\"\n"));
    assert!(err.contains("node #1: missing required key \"name\""), "{err}");
    let err = error(&format!("[[peer]]\nname = \"p\"\npublic-key = \"{K1}\"\n"));
    assert!(err.contains("peer \"p\": missing required key \"allowed-ips\""), "{err}");
    let err = error(&format!("[[peer]]\nname = \"p\"\npublic-key = \"{K1}\"\nallowed-ips = []\n"));
    assert!(err.contains("allowed-ips: want at least one CIDR"), "{err}");
}

#[test]
fn out_of_range_numbers_and_unknown_words_are_errors() {
    assert!(error("[mesh]\nport = 0\n").contains("port: want a port from 1 to 65535, found 0"));
    assert!(error("[mesh]\nport = 70000\n").contains("found 70000"));
    let err = error(&format!(
        "[[node]]\nname = \"a\"\npublic-key = \"{K1}\"\npersistent-keepalive = -1\n"
    ));
    assert!(err.contains("persistent-keepalive: want seconds from 0 to 65535"), "{err}");
    let err = error("[mesh]\ngranularity = \"mesh\"\n");
    assert!(
        err.contains("granularity: mesh granularity \"mesh\" unknown; possible values are"),
        "{err}"
    );
}

#[test]
fn an_empty_or_comment_only_file_is_an_error() {
    assert_eq!(error(""), "mesh.toml: file is empty");
    assert_eq!(error("  \n\t\n# nothing here\n"), "mesh.toml: file is empty");
}

#[test]
fn a_binary_file_is_refused_as_not_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.toml");
    std::fs::write(&path, [0x7f, b'E', b'L', b'F', 0xff, 0xfe, 0x00, 0x01]).unwrap();
    let err = load(&path, &Options::default()).unwrap_err();
    assert!(matches!(err, FileError::NotUtf8 { offset: 4, .. }), "{err:?}");
    assert!(err.to_string().contains("not UTF-8 text"), "{err}");
}

#[test]
fn text_in_neither_format_is_an_error_naming_the_line() {
    assert!(error("\nhello world\n").starts_with("mesh.toml:2: cannot tell the format"));
}

#[test]
fn a_directory_is_not_a_mesh_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = load(dir.path(), &Options::default()).unwrap_err();
    assert!(err.to_string().ends_with(": is a directory"), "{err}");
}

#[test]
fn deeply_nested_toml_arrays_do_not_overflow_the_stack() {
    let depth = 100_000;
    let text = format!("[mesh]\nport = {}{}\n", "[".repeat(depth), "]".repeat(depth));
    let err = error(&text);
    assert!(err.starts_with("mesh.toml:2: "), "{err}");
}

#[test]
fn a_mesh_file_is_a_static_mesh_where_nodes_need_only_a_name_and_a_key() {
    let text =
        "[[node]]\nname = \"a\"\npublic-key = \"a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n";
    let snapshot = kilo_backend_file::parse_mesh_toml(text, "mesh.toml").unwrap();
    assert!(snapshot.settings.static_mesh);
    assert!(snapshot.nodes[0].is_ready(kilo_core::Readiness::StaticMesh));
}
