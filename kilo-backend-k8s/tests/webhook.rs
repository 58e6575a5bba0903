//! The webhook's decisions: upstream's answers for malformed requests, every hijack class of the
//! admission rules as an AdmissionReview answer, failing closed, and metrics.

use http::StatusCode;
use kilo_backend_k8s::webhook::{ClusterView, WebhookMetrics, review};
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

fn view() -> ClusterView {
    ClusterView { nodes: nodes(), peers: peers(), listed: true, ..ClusterView::default() }
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
    assert!(
        text.contains("http_requests_total{handler=\"/validate\",method=\"POST\"} 1"),
        "{text}"
    );
    assert!(text.contains("http_requests_total{handler=\"/validate\",method=\"GET\"} 1"), "{text}");
    assert!(text.contains("errors_total 2"), "{text}");
    assert_eq!(state.handle_metrics(&request("GET", "/")).status(), StatusCode::NOT_FOUND);
}

/// The AdmissionReview answer's `response` for a CREATE of `name` with `allowed_ips` and key
/// `key_byte`, in `view`.
fn answer(view: &ClusterView, operation: &str, allowed_ips: &[&str], key_byte: u8) -> Value {
    let mut request = admission(
        "admission.k8s.io/v1",
        json!({"allowedIPs": allowed_ips, "publicKey": key(key_byte).to_base64()}),
    );
    request["request"]["operation"] = json!(operation);
    let metrics = WebhookMetrics::default();
    let answer = review(Some("application/json"), &body(request), view, &metrics);
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let parsed: Value = serde_json::from_str(&answer.body).unwrap();
    parsed["response"].clone()
}

fn denied(message: &str) -> Value {
    json!({"uid": "abc", "allowed": false, "status": {"metadata": {}, "message": message}})
}

fn allowed() -> Value {
    json!({"uid": "abc", "allowed": true})
}

/// A dual-stack view: every kind of address in IPv4 and IPv6, and the service CIDRs.
fn dual_stack_view() -> ClusterView {
    let a = Node {
        name: "a".into(),
        key: key(1),
        endpoint: Some("203.0.113.1:51820".parse().unwrap()),
        internal_ip: Some(cidr("192.168.0.1/24")),
        subnets: vec![cidr("10.2.0.0/24"), cidr("fd00:2::/64")],
        wireguard_ip: Some(cidr("10.4.0.1/16")),
        allowed_location_ips: vec![cidr("172.16.0.0/24")],
        discovered_endpoints: Some(
            [
                (key(3), "198.51.100.3:40000".parse().unwrap()),
                (key(4), "[2001:db8:4::4]:40000".parse().unwrap()),
            ]
            .into(),
        ),
        ..Node::default()
    };
    let b = Node {
        name: "b".into(),
        key: key(2),
        endpoint: Some("[2001:db8:2::2]:51820".parse().unwrap()),
        internal_ip: Some(cidr("fd00:1::2/64")),
        subnets: vec![cidr("10.2.1.0/24")],
        wireguard_ip: Some(cidr("fd00:4::2/64")),
        allowed_location_ips: vec![cidr("fd00:16::/64")],
        ..Node::default()
    };
    let c = Node { name: "c".into(), key: key(3), ..Node::default() };
    let d = Node { name: "d".into(), key: key(4), ..Node::default() };
    let laptop = Peer {
        name: "laptop".into(),
        allowed_ips: vec![cidr("10.5.0.1/32"), cidr("fd00:5::1/128")],
        public_key: key(9),
        ..Peer::default()
    };
    ClusterView {
        nodes: vec![a, b, c, d],
        peers: vec![laptop],
        service_cidrs: vec![cidr("10.96.0.0/12"), cidr("fd00:96::/108")],
        listed: true,
        ..ClusterView::default()
    }
}

#[test]
fn every_hijack_class_is_refused_in_both_families_with_the_shared_message() {
    let view = dual_stack_view();
    let cases: [(&str, &str); 17] = [
        (
            "0.0.0.0/0",
            "allowed IP 0.0.0.0/0 is a default route: every node would send its IPv4 traffic to this peer",
        ),
        (
            "::/0",
            "allowed IP ::/0 is a default route: every node would send its IPv6 traffic to this peer",
        ),
        (
            "10.2.1.128/25",
            "allowed IP 10.2.1.128/25 overlaps the pod subnet 10.2.1.0/24 of node \"b\": the peer would take that traffic",
        ),
        (
            "fd00:2::/48",
            "allowed IP fd00:2::/48 overlaps the pod subnet fd00:2::/64 of node \"a\": the peer would take that traffic",
        ),
        (
            "192.168.0.0/30",
            "allowed IP 192.168.0.0/30 covers the internal IP 192.168.0.1 of node \"a\": the peer would take that node's traffic",
        ),
        (
            "fd00:1::2/128",
            "allowed IP fd00:1::2/128 covers the internal IP fd00:1::2 of node \"b\": the peer would take that node's traffic",
        ),
        (
            "203.0.113.1/32",
            "allowed IP 203.0.113.1/32 covers the endpoint IP 203.0.113.1 of node \"a\": the peer would take the node's WireGuard traffic",
        ),
        (
            "2001:db8:2::/64",
            "allowed IP 2001:db8:2::/64 covers the endpoint IP 2001:db8:2::2 of node \"b\": the peer would take the node's WireGuard traffic",
        ),
        (
            "198.51.100.3/32",
            "allowed IP 198.51.100.3/32 covers the endpoint IP 198.51.100.3 of node \"c\": the peer would take the node's WireGuard traffic",
        ),
        (
            "2001:db8:4::4/128",
            "allowed IP 2001:db8:4::4/128 covers the endpoint IP 2001:db8:4::4 of node \"d\": the peer would take the node's WireGuard traffic",
        ),
        (
            "172.16.0.7/32",
            "allowed IP 172.16.0.7/32 overlaps the allowed location IP 172.16.0.0/24 of node \"a\": the peer would take that traffic",
        ),
        (
            "fd00:16::/32",
            "allowed IP fd00:16::/32 overlaps the allowed location IP fd00:16::/64 of node \"b\": the peer would take that traffic",
        ),
        (
            "10.100.0.1/32",
            "allowed IP 10.100.0.1/32 overlaps the service CIDR 10.96.0.0/12: the peer would take that traffic",
        ),
        (
            "fd00:96::10/128",
            "allowed IP fd00:96::10/128 overlaps the service CIDR fd00:96::/108: the peer would take that traffic",
        ),
        (
            "10.4.0.9/32",
            "allowed IP 10.4.0.9/32 overlaps the WireGuard subnet 10.4.0.0/16: the peer would take the mesh's WireGuard traffic",
        ),
        (
            "fd00:4::9/128",
            "allowed IP fd00:4::9/128 overlaps the WireGuard subnet fd00:4::/64: the peer would take the mesh's WireGuard traffic",
        ),
        (
            "fd00:5::/64",
            "allowed IP fd00:5::/64 overlaps allowed IP fd00:5::1/128 of peer \"laptop\": WireGuard gives a prefix to one peer only",
        ),
    ];
    for (allowed_ip, message) in cases {
        assert_eq!(answer(&view, "CREATE", &[allowed_ip], 7), denied(message), "{allowed_ip}");
    }
    assert_eq!(
        answer(&view, "UPDATE", &["10.5.0.0/24"], 7),
        denied(
            "allowed IP 10.5.0.0/24 overlaps allowed IP 10.5.0.1/32 of peer \"laptop\": \
             WireGuard gives a prefix to one peer only"
        )
    );
    assert_eq!(
        answer(&view, "CREATE", &["10.5.1.0/24"], 2),
        denied(&format!("public key {} is already used by node \"b\"", key(2)))
    );
    assert_eq!(
        answer(&view, "CREATE", &["10.5.1.0/24"], 9),
        denied(&format!("public key {} is already used by peer \"laptop\"", key(9)))
    );
    // Clear of everything, in both families.
    assert_eq!(
        answer(&view, "CREATE", &["10.5.0.2/32", "172.17.0.0/16", "2001:db8:99::/48"], 7),
        allowed()
    );
}

#[test]
fn an_ipv6_default_route_is_refused_in_an_ipv4_only_cluster() {
    let view = view();
    assert!(view.nodes.iter().all(|n| n.subnets.iter().all(Cidr::is_ipv4)));
    assert_eq!(
        answer(&view, "CREATE", &["::/0"], 7),
        denied(
            "allowed IP ::/0 is a default route: every node would send its IPv6 traffic to this \
             peer"
        )
    );
    assert_eq!(
        answer(&view, "UPDATE", &["10.5.9.0/24", "::0/0"], 7),
        denied(
            "allowed IP ::/0 is a default route: every node would send its IPv6 traffic to this \
             peer"
        )
    );
    assert_eq!(answer(&view, "CREATE", &["2001:db8::/64"], 7), allowed());
}

#[test]
fn until_the_cluster_is_listed_every_create_and_update_is_refused_but_delete_is_allowed() {
    let mut view = ClusterView { listed: false, ..view() };
    let message = "the webhook has not yet read the cluster's nodes and peers; retry in a few \
                   seconds";
    assert_eq!(answer(&view, "CREATE", &["10.5.9.0/24"], 7), denied(message));
    assert_eq!(answer(&view, "UPDATE", &["10.5.9.0/24"], 7), denied(message));
    view.not_listed_reason = Some("no Kubernetes client: no kubeconfig".into());
    assert_eq!(
        answer(&view, "CREATE", &["10.5.9.0/24"], 7),
        denied(&format!("{message} (no Kubernetes client: no kubeconfig)"))
    );
    // A DELETE carries no object.
    let delete = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "del", "operation": "DELETE", "name": "phone", "object": null,
                    "oldObject": {"metadata": {"name": "phone"}, "spec": {}}},
    });
    let metrics = WebhookMetrics::default();
    let answer = review(Some("application/json"), &body(delete), &view, &metrics);
    assert_eq!(answer.status, StatusCode::OK);
    let parsed: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(parsed["response"], json!({"uid": "del", "allowed": true}));
    assert!(
        metrics
            .encode()
            .contains("admission_requests_total{operation=\"DELETE\",response=\"allowed\"} 1")
    );
}

#[tokio::test]
async fn metrics_are_prometheus_text_unless_openmetrics_is_asked_for_and_labels_are_bounded() {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use kilo_backend_k8s::webhook::WebhookState;

    let state = WebhookState::with_view(view());
    let request = |method: &str, accept: Option<&str>| {
        let mut builder = http::Request::builder().method(method).uri("/validate");
        if let Some(accept) = accept {
            builder = builder.header("accept", accept);
        }
        builder.body(Full::new(Bytes::new())).unwrap()
    };
    for method in ["BREW", "PROPFIND", "get", "GET"] {
        state.handle(request(method, None)).await;
    }
    let review_of = |operation: &str| {
        let mut request = admission(
            "admission.k8s.io/v1",
            json!({"allowedIPs": ["10.5.9.0/24"], "publicKey": key(7).to_base64()}),
        );
        request["request"]["operation"] = json!(operation);
        request
    };
    for operation in ["CREATE", "create", "OP-1", "x\"y"] {
        review(Some("application/json"), &body(review_of(operation)), &view(), &state.metrics);
    }
    let metrics = |accept: Option<&str>| {
        let response = state.handle_metrics(
            &http::Request::get("/metrics")
                .header("accept", accept.unwrap_or("*/*"))
                .body(())
                .unwrap(),
        );
        let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
        (content_type, response.into_body())
    };
    let (content_type, text) = metrics(None);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let text = String::from_utf8(text.collect().await.unwrap().to_bytes().to_vec()).unwrap();
    // Series within a family come in no particular order.
    let sorted = |text: &str| {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    assert!(text.starts_with("# HELP admission_requests_total "), "{text}");
    assert_eq!(
        sorted(&text),
        sorted(
            "# HELP admission_requests_total The number of admission requests, by operation and response.\n\
         # TYPE admission_requests_total counter\n\
         admission_requests_total{operation=\"CREATE\",response=\"allowed\"} 1\n\
         admission_requests_total{operation=\"other\",response=\"allowed\"} 3\n\
         # HELP http_requests_total The number of HTTP requests, by handler and method.\n\
         # TYPE http_requests_total counter\n\
         http_requests_total{handler=\"/validate\",method=\"other\"} 3\n\
         http_requests_total{handler=\"/validate\",method=\"GET\"} 1\n\
         # HELP errors_total The number of requests answered with an error.\n\
         # TYPE errors_total counter\n\
         errors_total 4\n"
        )
    );
    let (content_type, text) =
        metrics(Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"));
    assert_eq!(content_type, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    let text = String::from_utf8(text.collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(text.starts_with("# HELP admission_requests The number"), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
}

/// A dual-stack node's IPv6 side (`kilo.squat.ai/internal-ip6`, `wireguard-ip6`) is protected
/// like its IPv4 side; the IPv6 WireGuard range comes from `--subnet` given per family, else from
/// the nodes' `wireguard-ip6`.
#[test]
fn the_ipv6_side_of_a_dual_stack_node_and_the_ipv6_range_are_protected() {
    let e = Node {
        name: "e".into(),
        key: key(5),
        internal_ip: Some(cidr("192.168.9.1/24")),
        internal_ip6: Some(cidr("fd00:9::1/64")),
        subnets: vec![cidr("10.2.9.0/24"), cidr("fd02:9::/64")],
        wireguard_ip: Some(cidr("10.4.0.3/16")),
        wireguard_ip6: Some(cidr("fd04::3/64")),
        ..Node::default()
    };
    let mut view = ClusterView { nodes: vec![e], listed: true, ..ClusterView::default() };
    assert_eq!(view.subnets(), [cidr("10.4.0.0/16"), cidr("fd04::/64")]);
    let cases = [
        (
            "fd00:9::1/128",
            "allowed IP fd00:9::1/128 covers the internal IP fd00:9::1 of node \"e\": the peer would take that node's traffic",
        ),
        (
            "fd02:9::/56",
            "allowed IP fd02:9::/56 overlaps the pod subnet fd02:9::/64 of node \"e\": the peer would take that traffic",
        ),
        (
            "fd04::77/128",
            "allowed IP fd04::77/128 overlaps the WireGuard subnet fd04::/64: the peer would take the mesh's WireGuard traffic",
        ),
    ];
    for (allowed_ip, message) in cases {
        assert_eq!(answer(&view, "CREATE", &[allowed_ip], 7), denied(message), "{allowed_ip}");
    }
    // A configured IPv6 range replaces the derived one (the published addresses stay protected).
    view.configured_subnet = Some(cidr("10.8.0.0/16"));
    view.configured_subnet6 = Some(cidr("fd08::/64"));
    assert_eq!(view.subnets(), [cidr("10.8.0.0/16"), cidr("fd08::/64")]);
    assert_eq!(
        answer(&view, "CREATE", &["fd08::1/128"], 7),
        denied(
            "allowed IP fd08::1/128 overlaps the WireGuard subnet fd08::/64: the peer would take \
             the mesh's WireGuard traffic"
        )
    );
    assert_eq!(answer(&view, "CREATE", &["fd05::1/128", "10.5.0.1/32"], 7), allowed());
}
