//! The webhook's decisions: upstream's answers for malformed requests, and the cluster checks.

use http::StatusCode;
use kilo_backend_k8s::webhook::{ClusterView, PeerRejection, WebhookMetrics, check_peer, review};
use kilo_core::peer_spec::{PeerSpec, PeerSpecError};
use kilo_core::{Cidr, Key, Node, Peer};
use serde_json::{Value, json};

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn key(n: u8) -> Key {
    Key::from_bytes([n; 32])
}

fn nodes() -> Vec<Node> {
    vec![
        Node {
            name: "a".into(),
            key: key(1),
            internal_ip: Some(cidr("192.168.0.1/24")),
            subnets: vec![cidr("10.2.0.0/24")],
            wireguard_ip: Some(cidr("10.4.0.1/16")),
            ..Node::default()
        },
        Node {
            name: "b".into(),
            key: key(2),
            internal_ip: Some(cidr("192.168.0.2/24")),
            subnets: vec![cidr("10.2.1.0/24")],
            ..Node::default()
        },
    ]
}

fn peers() -> Vec<Peer> {
    vec![Peer {
        name: "laptop".into(),
        allowed_ips: vec![cidr("10.5.0.1/32")],
        public_key: key(9),
        ..Peer::default()
    }]
}

fn spec(allowed_ips: &[&str], public_key: Key) -> PeerSpec {
    PeerSpec {
        allowed_ips: allowed_ips.iter().map(|s| s.to_string()).collect(),
        public_key: public_key.to_base64(),
        ..PeerSpec::default()
    }
}

fn check(spec: &PeerSpec, name: &str) -> Result<(), PeerRejection> {
    check_peer(spec, name, &nodes(), &peers(), cidr("10.4.0.0/16"))
}

#[test]
fn a_peer_clear_of_everything_is_admitted() {
    assert_eq!(check(&spec(&["10.5.0.2/32", "172.16.0.0/16"], key(7)), "phone"), Ok(()));
}

#[test]
fn upstream_validation_comes_first_with_its_message() {
    let rejection = check(&spec(&["foo"], key(7)), "phone").unwrap_err();
    assert_eq!(rejection, PeerRejection::Invalid(PeerSpecError::AllowedIp { ip: "foo".into() }));
    assert_eq!(
        rejection.to_string(),
        "failed to parse \"foo\" as a valid IP address: invalid CIDR address: foo"
    );
}

#[test]
fn a_peer_overlapping_a_pod_subnet_is_refused() {
    let rejection = check(&spec(&["10.2.1.128/25"], key(7)), "phone").unwrap_err();
    assert_eq!(
        rejection,
        PeerRejection::PodSubnet {
            allowed_ip: cidr("10.2.1.128/25"),
            node: "b".into(),
            subnet: cidr("10.2.1.0/24"),
        }
    );
    // A wider allowed IP that covers a pod subnet is a hijack too.
    assert!(matches!(
        check(&spec(&["10.0.0.0/8"], key(7)), "phone"),
        Err(PeerRejection::PodSubnet { .. })
    ));
}

#[test]
fn a_peer_containing_a_nodes_internal_ip_is_refused() {
    let rejection = check(&spec(&["192.168.0.0/30"], key(7)), "phone").unwrap_err();
    assert_eq!(
        rejection,
        PeerRejection::InternalIp {
            allowed_ip: cidr("192.168.0.0/30"),
            node: "a".into(),
            internal_ip: cidr("192.168.0.1/24"),
        }
    );
    // The node's LAN beside its own address is not the node.
    assert_eq!(check(&spec(&["192.168.0.200/32"], key(7)), "phone"), Ok(()));
}

#[test]
fn a_peer_overlapping_the_wireguard_subnet_is_refused() {
    let rejection = check(&spec(&["10.4.0.9/32"], key(7)), "phone").unwrap_err();
    assert_eq!(
        rejection,
        PeerRejection::WireGuardSubnet {
            allowed_ip: cidr("10.4.0.9/32"),
            subnet: cidr("10.4.0.0/16")
        }
    );
}

#[test]
fn a_peer_overlapping_another_peer_is_refused_but_not_its_own_previous_version() {
    let rejection = check(&spec(&["10.5.0.0/24"], key(7)), "phone").unwrap_err();
    assert_eq!(
        rejection,
        PeerRejection::OtherPeer {
            allowed_ip: cidr("10.5.0.0/24"),
            peer: "laptop".into(),
            other: cidr("10.5.0.1/32"),
        }
    );
    // An UPDATE of "laptop" itself, same key, wider range.
    assert_eq!(check(&spec(&["10.5.0.0/24"], key(9)), "laptop"), Ok(()));
}

#[test]
fn a_public_key_already_used_by_a_node_or_another_peer_is_refused() {
    let by_node = check(&spec(&["10.5.1.0/24"], key(2)), "phone").unwrap_err();
    assert_eq!(by_node, PeerRejection::KeyOfNode { key: key(2).to_base64(), node: "b".into() });
    let by_peer = check(&spec(&["10.5.1.0/24"], key(9)), "phone").unwrap_err();
    assert_eq!(
        by_peer,
        PeerRejection::KeyOfPeer { key: key(9).to_base64(), peer: "laptop".into() }
    );
}

fn view() -> ClusterView {
    ClusterView { nodes: nodes(), peers: peers(), configured_subnet: None }
}

fn body(review_json: Value) -> Vec<u8> {
    review_json.to_string().into_bytes()
}

fn admission(api_version: &str, peer_spec: Value) -> Value {
    json!({
        "apiVersion": api_version, "kind": "AdmissionReview",
        "request": {"uid": "abc", "operation": "UPDATE",
                    "object": {"apiVersion": "kilo.squat.ai/v1alpha1", "kind": "Peer",
                               "metadata": {"name": "phone"}, "spec": peer_spec}},
    })
}

#[test]
fn a_wrong_content_type_is_a_400_with_upstreams_message() {
    let metrics = WebhookMetrics::default();
    let answer = review(Some("text/plain"), b"{}", &view(), &metrics);
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body, "received Content-Type=text/plain, expected application/json\n");
    let answer = review(None, b"{}", &view(), &metrics);
    assert_eq!(answer.body, "received Content-Type=, expected application/json\n");
    assert!(metrics.encode().contains("errors_total 2"));
}

#[test]
fn a_review_of_another_version_is_a_400_only_api_v1_is_supported() {
    let metrics = WebhookMetrics::default();
    let spec = json!({"allowedIPs": ["10.5.9.0/24"], "publicKey": key(7).to_base64()});
    let answer = review(
        Some("application/json"),
        &body(admission("admission.k8s.io/v1beta1", spec)),
        &view(),
        &metrics,
    );
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body, "only API v1 is supported\n");
}

#[test]
fn undecodable_bodies_are_400s() {
    let metrics = WebhookMetrics::default();
    for bad in [&b"not json"[..], b"[]", br#"{"apiVersion":"admission.k8s.io/v1"}"#] {
        let answer = review(Some("application/json"), bad, &view(), &metrics);
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(bad));
    }
    let no_object = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "x"}});
    assert_eq!(
        review(Some("application/json"), &body(no_object), &view(), &metrics).status,
        StatusCode::BAD_REQUEST
    );
    let wrong_type = admission("admission.k8s.io/v1", json!({"allowedIPs": "10.0.0.0/8"}));
    assert_eq!(
        review(Some("application/json"), &body(wrong_type), &view(), &metrics).status,
        StatusCode::BAD_REQUEST
    );
}

#[test]
fn a_valid_review_is_answered_with_the_request_uid_and_the_decision() {
    let metrics = WebhookMetrics::default();
    let good = json!({"allowedIPs": ["10.5.9.0/24"], "publicKey": key(7).to_base64()});
    let answer = review(
        Some("application/json"),
        &body(admission("admission.k8s.io/v1", good)),
        &view(),
        &metrics,
    );
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.content_type, "application/json");
    let parsed: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(
        parsed,
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
               "response": {"uid": "abc", "allowed": true}})
    );
    let bad = json!({"allowedIPs": ["10.5.9.0/24"], "publicKey": "short"});
    let answer = review(
        Some("application/json"),
        &body(admission("admission.k8s.io/v1", bad)),
        &view(),
        &metrics,
    );
    let parsed: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(parsed["response"]["allowed"], false);
    assert_eq!(
        parsed["response"]["status"]["message"],
        "WireGuard public key is not base64 encoded: illegal base64 data at input byte 4"
    );
    let text = metrics.encode();
    assert!(
        text.contains("admission_requests_total{operation=\"UPDATE\",response=\"allowed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("admission_requests_total{operation=\"UPDATE\",response=\"denied\"} 1"),
        "{text}"
    );
}

#[test]
fn the_wireguard_subnet_is_configured_or_derived_from_the_nodes() {
    assert_eq!(view().subnet(), cidr("10.4.0.0/16"));
    let mut v = view();
    v.nodes[0].wireguard_ip = Some(cidr("10.10.0.1/24"));
    assert_eq!(v.subnet(), cidr("10.10.0.0/24"));
    v.configured_subnet = Some(cidr("10.99.0.0/16"));
    assert_eq!(v.subnet(), cidr("10.99.0.0/16"));
    assert_eq!(ClusterView::default().subnet(), cidr("10.4.0.0/16"));
}

#[tokio::test]
async fn only_post_validate_is_served_and_metrics_only_on_metrics() {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use kilo_backend_k8s::webhook::WebhookState;

    let state = WebhookState::new(None);
    let request = |method: &str, path: &str| {
        http::Request::builder().method(method).uri(path).body(Full::new(Bytes::new())).unwrap()
    };
    assert_eq!(state.handle(request("POST", "/other")).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        state.handle(request("GET", "/validate")).await.status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
    let response = state.handle(request("POST", "/validate")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "received Content-Type=, expected application/json\n");

    let metrics = state.handle_metrics(&request("GET", "/metrics"));
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = metrics.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(text.to_vec()).unwrap();
    assert!(text.contains("http_requests_total{handler=\"validate\",method=\"POST\"} 1"), "{text}");
    assert!(text.contains("http_requests_total{handler=\"validate\",method=\"GET\"} 1"), "{text}");
    assert!(text.contains("errors_total 2"), "{text}");
    assert_eq!(state.handle_metrics(&request("GET", "/")).status(), StatusCode::NOT_FOUND);
}
