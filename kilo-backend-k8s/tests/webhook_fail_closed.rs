//! The webhook fails closed: while it cannot read the cluster's nodes and peers from the API
//! server, it refuses every Peer CREATE and UPDATE with the reason; once it has listed them, it
//! applies the admission rules.

mod webhook_support;

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use kilo_backend_k8s::testing::{Collection, FakeApiServer};
use kilo_backend_k8s::webhook::{ServeLimits, WebhookConfig, WebhookState, serve_webhook};
use kilo_backend_k8s::{KubeBackend, KubeBackendConfig};
use kilo_core::Key;
use serde_json::{Value, json};

fn review(uid: &str, allowed_ips: &[&str]) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "operation": "CREATE", "name": "phone",
            "object": {
                "apiVersion": "kilo.squat.ai/v1alpha1", "kind": "Peer",
                "metadata": {"name": "phone"},
                "spec": {"allowedIPs": allowed_ips, "publicKey": Key::from_bytes([7; 32]).to_base64()},
            },
        },
    })
}

/// The `response` of the webhook's answer to `review`.
async fn respond(state: &WebhookState, review: Value) -> Value {
    let request = http::Request::post("/validate")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(review.to_string())))
        .unwrap();
    let response = state.handle(request).await;
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice::<Value>(&body).unwrap()["response"].clone()
}

/// A client of an API server that is not there: a loopback port nothing listens on.
async fn unreachable_client() -> kube::Client {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("http://{addr}").parse().unwrap();
    kube::Client::try_from(kube::Config::new(url)).unwrap()
}

async fn wait_until(state: &WebhookState, what: &str, done: impl Fn(&WebhookState) -> bool) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while !done(state) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} within 30 s"));
}

#[tokio::test]
async fn with_the_api_server_unreachable_every_peer_is_refused_with_the_reason() {
    let state = WebhookState::new(None);
    let follower = state.clone();
    let backend = KubeBackend::new(unreachable_client().await, KubeBackendConfig::default());
    let follow = tokio::spawn(async move { follower.follow(backend).await });

    // Before the first attempt has even failed.
    let response = respond(&state, review("u-0", &["10.5.9.0/24"])).await;
    eprintln!("before the first list attempt: {response}");
    assert_eq!(response["allowed"], false);

    wait_until(&state, "a failed list", |s| s.view.read().unwrap().not_listed_reason.is_some())
        .await;
    let response = respond(&state, review("u-1", &["10.5.9.0/24"])).await;
    eprintln!("with the API server unreachable: {response}");
    let message = response["status"]["message"].as_str().unwrap().to_string();
    assert_eq!(
        response,
        json!({"uid": "u-1", "allowed": false, "status": {"metadata": {}, "message": message}})
    );
    assert!(
        message.starts_with(
            "the webhook has not yet read the cluster's nodes and peers; retry in a few seconds \
             (cannot list nodes and peers: "
        ),
        "{message}"
    );
    follow.abort();
}

#[tokio::test]
async fn once_the_cluster_is_listed_the_admission_rules_apply() {
    let server = FakeApiServer::start().await;
    server.put(
        Collection::Nodes,
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "a", "annotations": {"kilo.squat.ai/endpoint": "203.0.113.1:51820"}},
            "spec": {"podCIDR": "10.2.0.0/24"},
        }),
    );
    let state = WebhookState::new(None);
    let follower = state.clone();
    let backend = KubeBackend::new(server.client(), KubeBackendConfig::default());
    tokio::spawn(async move { follower.follow(backend).await });
    wait_until(&state, "the list", |s| s.view.read().unwrap().listed).await;

    assert_eq!(
        respond(&state, review("u-1", &["10.5.9.0/24"])).await,
        json!({"uid": "u-1", "allowed": true})
    );
    let message = "allowed IP 10.2.0.0/16 overlaps the pod subnet 10.2.0.0/24 of node \"a\": the \
                   peer would take that traffic";
    assert_eq!(
        respond(&state, review("u-2", &["10.2.0.0/16"])).await,
        json!({"uid": "u-2", "allowed": false, "status": {"metadata": {}, "message": message}})
    );
    let message = "allowed IP 203.0.113.0/24 covers the endpoint IP 203.0.113.1 of node \"a\": \
                   the peer would take the node's WireGuard traffic";
    assert_eq!(
        respond(&state, review("u-3", &["203.0.113.0/24"])).await,
        json!({"uid": "u-3", "allowed": false, "status": {"metadata": {}, "message": message}})
    );
}

async fn free_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn the_served_webhook_without_a_client_refuses_every_peer_saying_why() {
    use webhook_support::{cert, client_config, connect_http, connect_https, post_review, send};

    let cert = cert();
    let dir = std::env::temp_dir().join(format!("kilo-webhook-no-client-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tls.crt"), &cert.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &cert.key_pem).unwrap();
    let (listen, metrics) = (free_port().await, free_port().await);
    let config = WebhookConfig {
        listen,
        listen_metrics: Some(metrics),
        cert_file: dir.join("tls.crt"),
        key_file: dir.join("tls.key"),
        subnet: None,
        subnet6: None,
        service_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
        limits: ServeLimits::default(),
        backend: KubeBackendConfig::default(),
        client: Err("no kubeconfig in this test".into()),
    };
    let server = tokio::spawn(serve_webhook(config));
    let mut sender = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(sender) = connect_https(listen, client_config(&cert.der)).await {
                return sender;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the webhook listens within 30 s");
    let (status, answer) =
        post_review(&mut sender, &review("u-1", &["10.5.9.0/24"])).await.unwrap();
    let message = "the webhook has not yet read the cluster's nodes and peers; retry in a few \
                   seconds (no Kubernetes client: no kubeconfig in this test)";
    assert_eq!(status, 200);
    assert_eq!(
        answer["response"],
        json!({"uid": "u-1", "allowed": false, "status": {"metadata": {}, "message": message}})
    );
    let mut plain = connect_http(metrics).await.unwrap();
    let (status, content_type, text) =
        send(&mut plain, "GET", "/metrics", &[], String::new()).await.unwrap();
    assert_eq!((status, content_type.as_str()), (200, "text/plain; version=0.0.4; charset=utf-8"));
    assert!(
        text.contains("admission_requests_total{operation=\"CREATE\",response=\"denied\"} 1"),
        "{text}"
    );
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
