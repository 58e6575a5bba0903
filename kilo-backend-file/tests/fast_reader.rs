//! The fast reader of kubectl-style YAML and the full YAML parser read the same objects: a
//! `%YAML` directive in front of a text sends it to the full parser.

use std::path::Path;

use kilo_backend_file::{Options, parse_kube_yaml_with_issues, read_kube_yaml};

fn both(text: &str) {
    let options = Options::default();
    let full_text = format!("%YAML 1.2\n---\n{text}");
    let fast = read_kube_yaml(text, "f.yaml", &options).unwrap();
    let full = read_kube_yaml(&full_text, "f.yaml", &options).unwrap();
    assert_eq!(fast, full, "{text}");
    let fast = parse_kube_yaml_with_issues(text, "f.yaml", &options).unwrap();
    let full = parse_kube_yaml_with_issues(&full_text, "f.yaml", &options).unwrap();
    assert_eq!(fast, full, "{text}");
}

#[test]
fn the_upstream_fixtures_read_alike() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in ["tests/data/upstream-fixture.yaml", "../examples/upstream-fixture.yaml"] {
        both(&std::fs::read_to_string(root.join(file)).unwrap());
    }
}

const K1: &str = "a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
const K2: &str = "a2V5MgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

fn node(name: &str, key: &str, extra: &str) -> String {
    format!(
        "- apiVersion: v1\n  kind: Node\n  metadata:\n    annotations:\n      \
         kilo.squat.ai/endpoint: \"10.1.0.1:51820\"\n      kilo.squat.ai/key: {key}\n      \
         kilo.squat.ai/persistent-keepalive: x\n      other.io/thing: \"y\"\n{extra}    labels:\n      \
         topology.kubernetes.io/region: r1\n      kubernetes.io/os: linux\n    name: {name}\n    \
         managedFields:\n    - manager: kubelet\n      fieldsV1:\n        f:status: {{}}\n  \
         spec:\n    podCIDR: 10.2.1.0/24\n    podCIDRs:\n    - 10.2.1.0/24\n    - 7\n  \
         status:\n    conditions:\n    - type: Ready\n      status: \"True\"\n"
    )
}

#[test]
fn lists_repeats_and_objects_with_items_read_alike() {
    let peer = "- apiVersion: kilo.squat.ai/v1alpha1\n  kind: Peer\n  metadata:\n    name: p\n  \
                spec:\n    allowedIPs:\n    - 10.5.0.1/32\n    persistentKeepalive: 10\n    \
                publicKey: a2V5NQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
    let bad_peer = "- apiVersion: kilo.squat.ai/v1alpha1\n  kind: Peer\n  metadata:\n    name: q\n  \
                    spec:\n    allowedIPs: 10.5.0.2/32\n";
    let nodes = format!(
        "{}{}{}",
        node("a", K1, ""),
        node("b", K2, "      kilo.squat.ai/leader: \"\"\n      kilo.squat.ai/location: west\n"),
        node("a", K2, ""),
    );
    // kubectl's order (kind after items), the kind first, nested lists, a list inside an object
    // that is not one (its items are not objects), empty and null items, separate documents.
    both(&format!(
        "apiVersion: v1\nitems:\n{nodes}{peer}{bad_peer}kind: List\nmetadata:\n  resourceVersion: \"\"\n"
    ));
    both(&format!("kind: NodeList\napiVersion: v1\nitems:\n{nodes}"));
    let inner = format!("- kind: List\n  items:\n{}", indent(&node("c", K1, "")));
    both(&format!("apiVersion: v1\nitems:\n{inner}- ~\n- {{}}\n{peer}kind: List\n"));
    let thing = format!("apiVersion: v1\nitems:\n{nodes}{peer}kind: Thing\nmetadata:\n  name: t\n");
    both(&format!("apiVersion: v1\nitems:\n-{}{peer}{bad_peer}kind: List\n", &indent(&thing)[1..]));
    both(&format!("{thing}---\napiVersion: v1\nitems:\n{peer}kind: List\n"));
    both(&format!("---\napiVersion: v1\nitems: []\nkind: List\n---\nkind: List\nitems:\n{peer}"));
}

/// Every line two columns deeper.
fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}
