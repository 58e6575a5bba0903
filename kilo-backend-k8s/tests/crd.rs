//! The Peer CRD: the committed manifest, upstream's names, and a schema that refuses malformed
//! Peers on its own.

use kilo_backend_k8s::crd::{DNS_PATTERN, KEY_PATTERN};
use kilo_backend_k8s::{PeerSpec, crd_yaml, peer_crd};
use kilo_core::peer_spec;
use regex::Regex;
use serde_json::{Value, json};

fn schema() -> Value {
    let crd = serde_json::to_value(peer_crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn the_committed_manifest_is_what_crd_yaml_prints() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/crds.yaml");
    let committed = std::fs::read_to_string(path).expect("manifests/crds.yaml exists");
    assert_eq!(
        committed,
        crd_yaml(),
        "regenerate with: cargo run -p kilo-backend-k8s --example print_crd > manifests/crds.yaml"
    );
}

#[test]
fn the_crd_has_upstreams_names_and_is_cluster_scoped() {
    let crd = serde_json::to_value(peer_crd()).unwrap();
    assert_eq!(crd["metadata"]["name"], "peers.kilo.squat.ai");
    assert_eq!(crd["spec"]["group"], "kilo.squat.ai");
    assert_eq!(crd["spec"]["scope"], "Cluster");
    assert_eq!(
        crd["spec"]["names"],
        json!({"kind": "Peer", "listKind": "PeerList", "plural": "peers", "singular": "peer"})
    );
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!((version["served"].clone(), version["storage"].clone()), (json!(true), json!(true)));
    assert_eq!(crd["spec"]["versions"].as_array().unwrap().len(), 1);
    assert!(version.get("subresources").is_none_or(|s| s.is_null() || s == &json!({})));
}

#[test]
fn the_schema_requires_the_fields_upstream_requires() {
    let schema = schema();
    assert_eq!(schema["required"], json!(["spec"]));
    let spec = &schema["properties"]["spec"];
    assert_eq!(spec["required"], json!(["allowedIPs", "publicKey"]));
    let names: Vec<&str> =
        spec["properties"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["allowedIPs", "endpoint", "persistentKeepalive", "presharedKey", "publicKey"]
    );
    assert_eq!(spec["properties"]["endpoint"]["required"], json!(["dnsOrIP", "port"]));
}

#[test]
fn the_schema_bounds_allowed_ips_ports_and_keepalives() {
    let spec = &schema()["properties"]["spec"]["properties"];
    assert_eq!(spec["allowedIPs"]["minItems"], 1);
    let number = |v: &Value| v.as_f64().unwrap();
    let rules = &spec["allowedIPs"]["items"]["x-kubernetes-validations"];
    assert_eq!(rules[0]["rule"], "isCIDR(self)");
    let port = &spec["endpoint"]["properties"]["port"];
    assert_eq!((number(&port["minimum"]), number(&port["maximum"])), (1.0, 65535.0));
    assert_eq!(number(&spec["persistentKeepalive"]["minimum"]), 0.0);
    let dns_or_ip = &spec["endpoint"]["properties"]["dnsOrIP"];
    let rule = dns_or_ip["x-kubernetes-validations"][0]["rule"].as_str().unwrap();
    assert!(rule.contains("self.dns") && rule.contains("self.ip"), "{rule}");
    assert_eq!(
        dns_or_ip["properties"]["ip"]["x-kubernetes-validations"][0]["rule"],
        "self == '' || isIP(self)"
    );
}

#[test]
fn key_patterns_accept_wireguard_keys_and_refuse_anything_else() {
    let spec = &schema()["properties"]["spec"]["properties"];
    assert_eq!(spec["publicKey"]["pattern"], KEY_PATTERN);
    let public = Regex::new(KEY_PATTERN).unwrap();
    let preshared = Regex::new(spec["presharedKey"]["pattern"].as_str().unwrap()).unwrap();
    let good = kilo_core::Key::from_bytes([0xfb; 32]).to_base64();
    assert!(public.is_match(&good) && preshared.is_match(&good));
    assert!(preshared.is_match(""), "an empty pre-shared key means none");
    for bad in [
        "",
        "short",
        "xT9lUpBzFhZbT3fyJYVJOeyRtEIRQSWgGP6HWJeMvWA", // no padding
        "xT9lUpBzFhZbT3fyJYVJOeyRtEIRQSWgGP6HWJeMvWA==", // 45 characters
        "xT9lUpBzFhZbT3fyJYVJOeyRtEIRQSWgGP6HWJeMv-A=", // URL-safe alphabet
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", // 48 bytes of base64
    ] {
        assert!(!public.is_match(bad), "{bad}");
    }
    assert!(!preshared.is_match("short"));
}

#[test]
fn the_dns_pattern_is_rfc_1123() {
    let dns = Regex::new(DNS_PATTERN).unwrap();
    for good in ["", "example.com", "a", "vpn-1.example.com"] {
        assert!(dns.is_match(good), "{good}");
    }
    for bad in ["Example.com", "-a.com", "a_b.com", "a..b", "a.com."] {
        assert!(!dns.is_match(bad), "{bad}");
    }
}

#[test]
fn the_spec_converts_to_and_from_the_core_spec_with_the_same_json() {
    let json = json!({
        "allowedIPs": ["10.5.0.1/32"],
        "endpoint": {"dnsOrIP": {"dns": "example.com"}, "port": 51820},
        "persistentKeepalive": 10,
        "presharedKey": "xT9lUpBzFhZbT3fyJYVJOeyRtEIRQSWgGP6HWJeMvWA=",
        "publicKey": "xT9lUpBzFhZbT3fyJYVJOeyRtEIRQSWgGP6HWJeMvWA=",
    });
    let crd_spec: PeerSpec = serde_json::from_value(json.clone()).unwrap();
    let core: peer_spec::PeerSpec = crd_spec.clone().into();
    assert_eq!(serde_json::to_value(&core).unwrap(), json);
    assert_eq!(serde_json::to_value(PeerSpec::from(core)).unwrap(), json);
    assert_eq!(serde_json::to_value(&crd_spec).unwrap(), json);
}

#[test]
fn a_peers_debug_output_never_shows_its_preshared_key() {
    let psk = "cHNrMQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let peer: kilo_backend_k8s::Peer = serde_json::from_value(serde_json::json!({
        "apiVersion": "kilo.squat.ai/v1alpha1", "kind": "Peer", "metadata": {"name": "p"},
        "spec": {"allowedIPs": ["10.5.0.1/32"], "publicKey": psk, "presharedKey": psk},
    }))
    .unwrap();
    assert_eq!(peer.spec.preshared_key.as_deref(), Some(psk));
    let debug = format!("{peer:?}");
    assert!(debug.contains("preshared_key: Some(\"<redacted>\")"), "{debug}");
    assert_eq!(debug.matches(psk).count(), 1, "only the public key is shown: {debug}");
}
