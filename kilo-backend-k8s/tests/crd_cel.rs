//! The Peer CRD's CEL rules (`x-kubernetes-validations`), evaluated offline with kube-cel (the
//! Kubernetes CEL library): they compile, fit the API server's cost budget, and refuse what
//! upstream's `Validate()` refuses.

use kilo_backend_k8s::peer_crd;
use kube_cel::{ScopeContext, analyze_rule, compile_schema, validate};
use serde_json::{Value, json};

const KEY: &str = "xT9lUpBzFhZbT3fyJYVJOeyRtEIRQSWgGP6HWJeMvWA=";

fn schema() -> Value {
    let crd = serde_json::to_value(peer_crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn peer(spec: Value) -> Value {
    json!({"apiVersion": "kilo.squat.ai/v1alpha1", "kind": "Peer", "metadata": {"name": "p"}, "spec": spec})
}

/// Every (rule, schema node it is attached to) in the schema.
fn rules(node: &Value, out: &mut Vec<(String, Value)>) {
    if let Some(list) = node.get("x-kubernetes-validations").and_then(Value::as_array) {
        for rule in list {
            out.push((rule["rule"].as_str().unwrap().to_string(), node.clone()));
        }
    }
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        properties.values().for_each(|child| rules(child, out));
    }
    if let Some(items) = node.get("items") {
        rules(items, out);
    }
}

#[test]
fn the_cel_rules_compile_and_fit_the_api_servers_cost_budget() {
    let schema = schema();
    assert!(!compile_schema(&schema).has_errors());
    let mut found = Vec::new();
    rules(&schema, &mut found);
    assert_eq!(found.len(), 3, "{found:?}");
    for (rule, node) in found {
        let warnings = analyze_rule(&rule, &compile_schema(&node), ScopeContext::CrdValidation);
        assert!(warnings.is_empty(), "{rule}: {warnings:?}");
    }
}

fn errors(spec: Value) -> Vec<String> {
    match validate(&schema(), &peer(spec), None) {
        Ok(()) => Vec::new(),
        Err(e) => e.into_vec().into_iter().map(|e| e.message).collect(),
    }
}

#[test]
fn well_formed_peers_pass_the_cel_rules() {
    for spec in [
        json!({"allowedIPs": ["10.5.0.1/32"], "publicKey": KEY}),
        json!({"allowedIPs": ["10.0.0.1/24", "fd00::1/64"], "publicKey": KEY}),
        json!({"allowedIPs": ["10.5.0.1/32"], "publicKey": KEY,
               "endpoint": {"dnsOrIP": {"dns": "example.com"}, "port": 51820}}),
        json!({"allowedIPs": ["10.5.0.1/32"], "publicKey": KEY,
               "endpoint": {"dnsOrIP": {"ip": "2001:db8::1"}, "port": 51820}}),
    ] {
        assert_eq!(errors(spec.clone()), Vec::<String>::new(), "{spec}");
    }
}

#[test]
fn an_allowed_ip_that_is_not_a_cidr_fails_the_cel_rule() {
    for bad in ["foo", "10.5.0.1", "10.5.0.1/33"] {
        let found = errors(json!({"allowedIPs": ["10.5.0.1/32", bad], "publicKey": KEY}));
        assert_eq!(found, ["each allowed IP must be a CIDR such as 10.5.0.1/32"], "{bad}");
    }
}

#[test]
fn an_endpoint_without_dns_or_ip_or_with_a_bad_ip_fails_the_cel_rules() {
    let missing = errors(json!({"allowedIPs": ["10.5.0.1/32"], "publicKey": KEY,
                                "endpoint": {"dnsOrIP": {}, "port": 51820}}));
    assert_eq!(missing, ["either an endpoint DNS name or IP address must be given"]);
    let empty = errors(json!({"allowedIPs": ["10.5.0.1/32"], "publicKey": KEY,
                              "endpoint": {"dnsOrIP": {"dns": "", "ip": ""}, "port": 51820}}));
    assert_eq!(empty, ["either an endpoint DNS name or IP address must be given"]);
    let bad_ip = errors(json!({"allowedIPs": ["10.5.0.1/32"], "publicKey": KEY,
                               "endpoint": {"dnsOrIP": {"ip": "10.0.0.300"}, "port": 51820}}));
    assert_eq!(bad_ip, ["the endpoint IP must be an IP address"]);
}

#[test]
fn the_cost_analysis_would_flag_an_unbounded_list_of_cidrs() {
    // The check above is meaningful: without maxItems/maxLength the same rule is flagged.
    let unbounded = json!({"type": "array", "items": {"type": "string"}});
    let warnings = analyze_rule(
        "self.all(x, isCIDR(x))",
        &compile_schema(&unbounded),
        ScopeContext::CrdValidation,
    );
    assert!(!warnings.is_empty());
}
