//! Kubernetes objects as a file (contract 4).

use std::path::Path;
use std::time::Duration;

use kilo_backend_file::{FileError, Options, SNAPSHOT_LAST_SEEN, load, parse_str};
use kilo_core::{Granularity, ObjectKind, Snapshot, fixtures};

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn parse(text: &str) -> Result<Snapshot, FileError> {
    parse_str(text, "cluster.yaml", &Options::default())
}

const K1: &str = "a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

fn node_doc(name: &str, annotations: &str, pod_cidr: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  annotations:\n{annotations}\
         spec:\n  podCIDR: {pod_cidr}\n"
    )
}

#[test]
fn the_upstream_fixture_translates_to_the_fixture_nodes_and_peers() {
    let s = load(&data("upstream-fixture.yaml"), &Options::default()).unwrap();
    let mut want = fixtures::nodes();
    for n in &mut want {
        n.last_seen = SNAPSHOT_LAST_SEEN;
        n.granularity = Some(Granularity::Location);
    }
    // An annotation holds whole seconds: node a's 25 ns keepalive is 0 in the YAML.
    want[0].persistent_keepalive = Duration::ZERO;
    want[0].wireguard_ip = Some("10.4.0.1/16".parse().unwrap());
    want[1].wireguard_ip = Some("10.4.0.2/16".parse().unwrap());
    assert_eq!(s.nodes, want);
    assert_eq!(s.peers, fixtures::peers());
    assert!(s.invalid.is_empty(), "{:?}", s.invalid);
    assert_eq!(s.settings.subnet, Some(fixtures::subnet()));
    assert_eq!(s.settings.granularity, Some(Granularity::Location));
    assert_eq!(s.settings.port, None);
}

#[test]
fn separate_documents_are_read_like_a_list() {
    let a = node_doc(
        "a",
        &format!("    kilo.squat.ai/endpoint: 10.1.0.1:51820\n    kilo.squat.ai/key: {K1}\n"),
        "10.2.1.0/24",
    );
    let text = format!(
        "---\n{a}---\napiVersion: kilo.squat.ai/v1alpha1\nkind: Peer\nmetadata:\n  name: p\nspec:\n  allowedIPs: [10.5.0.1/32]\n  publicKey: a2V5NQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n  persistentKeepalive: 10\n---\n"
    );
    let s = parse(&text).unwrap();
    assert_eq!(s.nodes.len(), 1);
    assert_eq!(s.nodes[0].endpoint.as_ref().unwrap().to_string(), "10.1.0.1:51820");
    assert_eq!(s.peers[0].name, "p");
    assert_eq!(s.peers[0].persistent_keepalive, Duration::from_secs(10));
}

#[test]
fn kubectl_json_output_is_read_too() {
    let text = format!(
        r#"{{"apiVersion": "v1", "kind": "List", "items": [{{"apiVersion": "v1", "kind": "Node",
        "metadata": {{"name": "a", "annotations": {{"kilo.squat.ai/endpoint": "10.1.0.1:51820",
        "kilo.squat.ai/key": "{K1}"}}}}, "spec": {{"podCIDR": "10.2.1.0/24"}}}}]}}"#
    );
    let s = parse(&text).unwrap();
    assert_eq!(s.nodes[0].name, "a");
}

#[test]
fn json_nested_32_levels_deep_is_read_and_one_level_deeper_is_refused_naming_the_limit() {
    // The object is one level, `spec` two, and every `[` one more.
    let node = |arrays: usize| {
        format!(
            r#"{{"apiVersion": "v1", "kind": "Node", "metadata": {{"name": "a", "annotations":
            {{"kilo.squat.ai/endpoint": "10.1.0.1:51820", "kilo.squat.ai/key": "{K1}"}}}},
            "spec": {{"podCIDR": "10.2.1.0/24", "x": {}{}}}}}"#,
            "[".repeat(arrays),
            "]".repeat(arrays)
        )
    };
    let s = parse(&node(30)).unwrap();
    let names: Vec<&str> = s.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["a"]);
    assert!(s.invalid.is_empty(), "{:?}", s.invalid);
    let err = parse(&node(31)).unwrap_err();
    assert_eq!(err.to_string(), "cluster.yaml:3: collections nested deeper than 32 levels");
}

#[test]
fn other_kinds_are_skipped_with_an_invalid_entry() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers: []\n";
    let s = parse(text).unwrap();
    assert!(s.nodes.is_empty() && s.peers.is_empty());
    assert_eq!(s.invalid.len(), 1);
    assert_eq!(s.invalid[0].kind, ObjectKind::Other);
    assert_eq!(s.invalid[0].name, "web");
    assert!(s.invalid[0].message.contains("kind \"Pod\""), "{}", s.invalid[0]);
}

#[test]
fn a_node_that_is_not_ready_is_left_out_naming_what_is_missing() {
    let text = node_doc("bad", "    kilo.squat.ai/key: not-a-key\n", "10.2.1.0/24");
    let s = parse(&text).unwrap();
    assert!(s.nodes.is_empty());
    let invalid = &s.invalid[0];
    assert_eq!((invalid.kind, invalid.name.as_str()), (ObjectKind::Node, "bad"));
    assert!(invalid.message.starts_with("not ready: it has no endpoint"), "{invalid}");
    assert!(invalid.message.contains("no WireGuard key"), "{invalid}");
    assert!(invalid.message.contains("kilo.squat.ai/key=\"not-a-key\""), "{invalid}");
}

#[test]
fn ignored_annotations_of_kept_nodes_are_listed_for_validation() {
    let ann = format!(
        "    kilo.squat.ai/endpoint: 10.1.0.1:51820\n    kilo.squat.ai/key: {K1}\n    \
         kilo.squat.ai/internal-ip: foo\n"
    );
    let text = node_doc("a", &ann, "10.2.1.0/24");
    let (s, issues) =
        kilo_backend_file::parse_kube_yaml_with_issues(&text, "f", &Options::default()).unwrap();
    assert_eq!(s.nodes.len(), 1);
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].node, "a");
    assert_eq!(issues[0].issue.key, "kilo.squat.ai/internal-ip");
    assert!(
        issues[0].to_string().starts_with("node \"a\": kilo.squat.ai/internal-ip="),
        "{}",
        issues[0]
    );
}

#[test]
fn last_seen_is_not_checked_in_a_snapshot() {
    let ann = format!(
        "    kilo.squat.ai/endpoint: 10.1.0.1:51820\n    kilo.squat.ai/key: {K1}\n    \
         kilo.squat.ai/last-seen: \"0\"\n"
    );
    let s = parse(&node_doc("a", &ann, "10.2.1.0/24")).unwrap();
    assert_eq!(s.nodes[0].last_seen, SNAPSHOT_LAST_SEEN);
    assert!(s.nodes[0].is_ready_at(1_900_000_000));
}

#[test]
fn an_invalid_peer_is_left_out_with_upstreams_validation_message() {
    let text = "apiVersion: kilo.squat.ai/v1alpha1\nkind: Peer\nmetadata:\n  name: p\nspec:\n  \
                allowedIPs: [foo]\n  publicKey: x\n---\napiVersion: kilo.squat.ai/v1alpha1\n\
                kind: Peer\nmetadata:\n  name: q\nspec:\n  allowedIPs: []\n  \
                publicKey: a2V5NQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
    let s = parse(text).unwrap();
    assert!(s.peers.is_empty());
    assert_eq!(s.invalid.len(), 2);
    assert_eq!((s.invalid[0].kind, s.invalid[0].name.as_str()), (ObjectKind::Peer, "p"));
    assert!(s.invalid[0].message.starts_with("failed to parse \"foo\""), "{}", s.invalid[0]);
    assert_eq!(s.invalid[1].message, "not ready: allowedIPs is empty");
}

#[test]
fn a_peer_spec_of_the_wrong_shape_is_left_out_not_fatal() {
    let text = "apiVersion: kilo.squat.ai/v1alpha1\nkind: Peer\nmetadata:\n  name: p\nspec:\n  \
                allowedIPs: 5\n";
    let s = parse(text).unwrap();
    assert!(s.invalid[0].message.starts_with("spec: "), "{}", s.invalid[0]);
}

#[test]
fn objects_without_a_name_are_left_out_by_position() {
    let s = parse("apiVersion: v1\nkind: Node\nmetadata: {}\n").unwrap();
    assert_eq!(s.invalid[0].name, "#1");
    assert!(s.invalid[0].message.contains("metadata.name"));
}

#[test]
fn positions_count_objects_not_lists() {
    let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Node\n  \
                metadata:\n    name: a\n- apiVersion: v1\n  kind: Node\n  metadata: {}\n";
    let s = parse(text).unwrap();
    assert_eq!(s.invalid[1].name, "#2");
}

#[test]
fn unquoted_annotation_values_are_read_as_text() {
    let ann = format!(
        "    kilo.squat.ai/endpoint: 10.1.0.1:51820\n    kilo.squat.ai/key: {K1}\n    \
         kilo.squat.ai/persistent-keepalive: 25\n    kilo.squat.ai/leader: true\n"
    );
    let s = parse(&node_doc("a", &ann, "10.2.1.0/24")).unwrap();
    assert_eq!(s.nodes[0].persistent_keepalive, Duration::from_secs(25));
    assert!(s.nodes[0].leader);
}

#[test]
fn the_topology_label_is_configurable() {
    let text = format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: a\n  labels:\n    zone: z1\n    \
         topology.kubernetes.io/region: r1\n  annotations:\n    kilo.squat.ai/endpoint: \
         10.1.0.1:51820\n    kilo.squat.ai/key: {K1}\nspec:\n  podCIDR: 10.2.1.0/24\n"
    );
    assert_eq!(parse(&text).unwrap().nodes[0].location, "r1");
    let mut options = Options::default();
    options.topology_label = "zone".to_string();
    assert_eq!(parse_str(&text, "f", &options).unwrap().nodes[0].location, "z1");
}

#[test]
fn the_subnet_comes_from_the_last_node_with_a_wireguard_ip_and_granularity_from_the_first() {
    let doc = |name: &str, extra: &str| {
        node_doc(name, &format!("    kilo.squat.ai/key: {K1}\n{extra}"), "10.2.1.0/24")
    };
    let text = [
        doc("a", "    kilo.squat.ai/granularity: full\n    kilo.squat.ai/wireguard-ip: 10.4.0.1/16\n"),
        doc("b", "    kilo.squat.ai/granularity: location\n    kilo.squat.ai/wireguard-ip: 10.9.0.7/24\n"),
        doc("c", "    kilo.squat.ai/wireguard-ip: \"\"\n"),
    ]
    .join("---\n");
    let s = parse(&text).unwrap();
    assert_eq!(s.settings.subnet, Some("10.9.0.0/24".parse().unwrap()));
    assert_eq!(s.settings.granularity, Some(Granularity::Full));
    assert_eq!(s.invalid.len(), 3, "no endpoint: none of them is ready");
}

#[test]
fn duplicate_node_names_keep_the_first() {
    let ann = format!("    kilo.squat.ai/endpoint: 10.1.0.1:51820\n    kilo.squat.ai/key: {K1}\n");
    let text = format!(
        "{}---\n{}",
        node_doc("a", &ann, "10.2.1.0/24"),
        node_doc("a", &ann, "10.2.2.0/24")
    );
    let s = parse(&text).unwrap();
    assert_eq!(s.nodes.len(), 1);
    assert_eq!(s.nodes[0].subnets[0].to_string(), "10.2.1.0/24");
    assert!(s.invalid[0].message.contains("listed before"));
}

#[test]
fn yaml_syntax_errors_name_the_file_and_line() {
    let err =
        parse("apiVersion: v1\nkind: Node\nmetadata:\n  name: a\n  labels: x: y\n").unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("cluster.yaml:5: "), "{text}");
    assert!(!text.contains(" at line "), "{text}");
}

#[test]
fn objects_not_shaped_like_kubernetes_objects_are_an_error_with_a_line() {
    let err =
        parse("apiVersion: v1\nkind: Node\nmetadata:\n  name: a\n  labels: [x]\n").unwrap_err();
    assert!(matches!(err, FileError::Syntax { line: 5, .. }), "{err}");
}

#[test]
fn deeply_nested_yaml_does_not_overflow_the_stack() {
    for depth in [200, 1_000_000] {
        let (open, close) = ("[".repeat(depth), "]".repeat(depth));
        let text = format!("apiVersion: v1\nkind: Node\nspec: {open}{close}\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("cluster.yaml:3: "), "{err}");
        assert!(err.contains("recursion limit exceeded") || err.contains("nested deeper"), "{err}");
    }
    let mut text = String::from("kind: List\nitems:\n");
    for level in 0..2000 {
        let indent = " ".repeat(2 * level);
        text.push_str(&format!("{indent}- kind: List\n{indent}  items:\n"));
    }
    assert!(parse(&text).is_err());
}

#[test]
fn alias_bombs_are_refused() {
    let mut text = String::from(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: a\nspec:\n  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n",
    );
    for i in 1..10 {
        let p = i - 1;
        text.push_str(&format!(
            "  a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    assert!(parse(&text).is_err());
}
