//! Three agents' backends against a fake Kubernetes API server on loopback: publishing, watching,
//! Peers (valid and invalid), clean-up, and the webhook over HTTPS with the cluster view.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use kilo_backend_k8s::testing::{Collection, FakeApiServer};
use kilo_backend_k8s::webhook::{WebhookState, serve_https, tls_config_from};
use kilo_backend_k8s::{KubeBackend, KubeBackendConfig};
use kilo_core::annotations::AGENT_ANNOTATION_KEYS;
use kilo_core::backend::{Backend, Event, ObjectKind};
use kilo_core::{Endpoint, Granularity, Key, Node};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::{Value, json};

const NAMES: [&str; 3] = ["a", "b", "c"];
const NOW: i64 = 1_700_000_000;

fn node_object(index: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": NAMES[index],
            "labels": {"topology.kubernetes.io/region": format!("region-{index}")},
            "annotations": {"kilo.squat.ai/leader": "true", "unrelated.example/keep": "yes"},
        },
        "spec": {"podCIDR": format!("10.2.{index}.0/24")},
    })
}

fn local_node(index: usize) -> Node {
    Node {
        name: NAMES[index].to_string(),
        endpoint: Some(format!("192.0.2.{}:51820", index + 1).parse::<Endpoint>().unwrap()),
        key: Key::from_bytes([index as u8 + 1; 32]),
        internal_ip: Some(format!("10.1.0.{}/24", index + 1).parse().unwrap()),
        last_seen: NOW,
        leader: true,
        location: format!("region-{index}"),
        subnets: vec![format!("10.2.{index}.0/24").parse().unwrap()],
        granularity: Some(Granularity::Location),
        ..Node::default()
    }
}

fn peer_object(name: &str, allowed_ips: &[&str], key_byte: u8) -> Value {
    json!({
        "apiVersion": "kilo.squat.ai/v1alpha1", "kind": "Peer",
        "metadata": {"name": name},
        "spec": {
            "allowedIPs": allowed_ips,
            "publicKey": Key::from_bytes([key_byte; 32]).to_base64(),
            "persistentKeepalive": 10,
        },
    })
}

/// Waits (up to 10 s) for an event matching `want`, returning it.
async fn wait_for(backend: &mut KubeBackend, want: impl Fn(&Event) -> bool) -> Event {
    let deadline = Duration::from_secs(10);
    tokio::time::timeout(deadline, async {
        loop {
            match backend.next_event().await {
                Some(Ok(event)) if want(&event) => return event,
                Some(_) => {}
                None => panic!("the backend's events ended"),
            }
        }
    })
    .await
    .expect("the event arrives within 10 s")
}

async fn start_cluster() -> (FakeApiServer, Vec<KubeBackend>) {
    let server = FakeApiServer::start().await;
    for index in 0..3 {
        server.put(Collection::Nodes, node_object(index));
    }
    let backends =
        (0..3).map(|_| KubeBackend::new(server.client(), KubeBackendConfig::default())).collect();
    (server, backends)
}

#[tokio::test]
async fn three_agents_publish_and_each_sees_all_three_nodes_with_the_others_annotations() {
    let (server, mut backends) = start_cluster().await;
    for backend in &mut backends {
        let snapshot = backend.snapshot().await.unwrap();
        let names: Vec<&str> = snapshot.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, NAMES);
        assert!(snapshot.nodes.iter().all(|n| n.key.is_zero() && n.leader));
    }
    for (index, backend) in backends.iter_mut().enumerate() {
        backend.publish_local(&local_node(index)).await.unwrap();
    }
    for backend in &mut backends {
        let mut seen = BTreeSet::new();
        while seen.len() < 3 {
            let event =
                wait_for(backend, |e| matches!(e, Event::NodeChanged(n) if !n.key.is_zero())).await;
            let Event::NodeChanged(node) = event else { unreachable!() };
            let index = NAMES.iter().position(|n| *n == node.name).unwrap();
            assert_eq!(node, local_node(index), "node {} as published", node.name);
            seen.insert(node.name);
        }
    }
    // Only kg's annotations were touched: the user's are still there.
    let stored = server.get(Collection::Nodes, "a").unwrap();
    assert_eq!(stored["metadata"]["annotations"]["unrelated.example/keep"], "yes");
    assert_eq!(stored["metadata"]["annotations"]["kilo.squat.ai/leader"], "true");
    for (_, content_type, patch) in server.patches() {
        assert_eq!(content_type, "application/merge-patch+json");
        let keys: BTreeSet<&str> = patch["metadata"]["annotations"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert!(keys.iter().all(|k| AGENT_ANNOTATION_KEYS.contains(k)), "{keys:?}");
    }
}

#[tokio::test]
async fn publishing_an_unchanged_node_sends_nothing_and_a_change_sends_only_the_change() {
    let (server, mut backends) = start_cluster().await;
    let backend = &mut backends[0];
    backend.snapshot().await.unwrap();
    let mut node = local_node(0);
    backend.publish_local(&node).await.unwrap();
    backend.publish_local(&node).await.unwrap();
    assert_eq!(server.patches().len(), 1);
    node.last_seen += 30;
    backend.publish_local(&node).await.unwrap();
    let patches = server.patches();
    assert_eq!(patches.len(), 2);
    assert_eq!(
        patches[1].2,
        json!({"metadata": {"annotations": {"kilo.squat.ai/last-seen": (NOW + 30).to_string()}}})
    );
}

#[tokio::test]
async fn a_peer_created_through_the_api_reaches_every_backend_and_an_invalid_one_arrives_as_invalid()
 {
    let (server, mut backends) = start_cluster().await;
    for backend in &mut backends {
        assert!(backend.snapshot().await.unwrap().peers.is_empty());
    }
    let peers: kube::Api<kilo_backend_k8s::Peer> = kube::Api::all(server.client());
    let peer: kilo_backend_k8s::Peer =
        serde_json::from_value(peer_object("laptop", &["10.5.0.1/32"], 9)).unwrap();
    peers.create(&Default::default(), &peer).await.unwrap();
    for backend in &mut backends {
        let event = wait_for(backend, |e| matches!(e, Event::PeerChanged(_))).await;
        let Event::PeerChanged(peer) = event else { unreachable!() };
        assert_eq!(peer.name, "laptop");
        assert_eq!(peer.allowed_ips, vec!["10.5.0.1/32".parse().unwrap()]);
        assert_eq!(peer.public_key, Key::from_bytes([9; 32]));
        assert_eq!(peer.persistent_keepalive, Duration::from_secs(10));
    }
    // The fake server does not enforce the CRD schema, as a cluster without it would not.
    server.put(Collection::Peers, peer_object("broken", &["foo"], 8));
    for backend in &mut backends {
        let event = wait_for(backend, |e| matches!(e, Event::Invalid(_))).await;
        let Event::Invalid(invalid) = event else { unreachable!() };
        assert_eq!(invalid.kind, ObjectKind::Peer);
        assert_eq!(invalid.name, "broken");
        assert!(invalid.message.contains("\"foo\""), "{}", invalid.message);
    }
    peers.delete("laptop", &Default::default()).await.unwrap();
    for backend in &mut backends {
        let event = wait_for(backend, |e| matches!(e, Event::PeerRemoved(_))).await;
        assert_eq!(event, Event::PeerRemoved("laptop".to_string()));
    }
    let snapshot = backends[0].snapshot().await.unwrap();
    assert!(snapshot.peers.is_empty());
    assert_eq!(snapshot.invalid.len(), 1);
}

#[tokio::test]
async fn clean_up_removes_every_agent_annotation_and_tolerates_absent_ones() {
    let (server, mut backends) = start_cluster().await;
    let backend = &mut backends[1];
    backend.snapshot().await.unwrap();
    let mut node = local_node(1);
    node.cni_compatibility_ip = Some("10.0.9.1/32".parse().unwrap());
    backend.publish_local(&node).await.unwrap();
    backend.clean_up_local("b").await.unwrap();
    let annotations =
        server.get(Collection::Nodes, "b").unwrap()["metadata"]["annotations"].clone();
    assert_eq!(
        annotations,
        json!({"kilo.squat.ai/leader": "true", "unrelated.example/keep": "yes"}),
        "only the user's annotations remain"
    );
    // Again, with every annotation already absent; and for a node that does not exist.
    backend.clean_up_local("b").await.unwrap();
    backend.clean_up_local("gone").await.unwrap();
}

fn https_client_config(cert: CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

async fn post_https(
    addr: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    body: String,
) -> (u16, Value) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(tls);
    let stream = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::post("/validate")
        .header("content-type", "application/json")
        .header("host", "localhost")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn admission_review(uid: &str, peer: Value) -> String {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "operation": "CREATE", "name": peer["metadata"]["name"],
            "kind": {"group": "kilo.squat.ai", "version": "v1alpha1", "kind": "Peer"},
            "object": peer,
        },
    })
    .to_string()
}

#[tokio::test]
async fn the_webhook_over_https_refuses_a_peer_that_would_hijack_a_pod_subnet() {
    let (server, _) = start_cluster().await;
    server.put(Collection::Peers, peer_object("laptop", &["10.5.0.1/32"], 9));
    let state = WebhookState::new(None);
    let follower = state.clone();
    let backend = KubeBackend::new(server.client(), KubeBackendConfig::default());
    tokio::spawn(async move { follower.follow(backend).await });
    tokio::time::timeout(Duration::from_secs(10), async {
        while state.view.read().unwrap().nodes.len() < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the webhook's view fills within 10 s");

    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = generated.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der()));
    let tls = tls_config_from(vec![cert.clone()], key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_https(listener, tls, state.clone()));
    let client = https_client_config(cert);

    let hijack = peer_object("hijacker", &["10.2.1.0/25"], 7);
    let (status, review) = post_https(addr, client.clone(), admission_review("u-1", hijack)).await;
    assert_eq!(status, 200);
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    assert_eq!(review["response"]["uid"], "u-1");
    assert_eq!(review["response"]["allowed"], false);
    let message = review["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("pod subnet 10.2.1.0/24 of node \"b\""), "{message}");

    let same_ips = peer_object("copycat", &["10.5.0.0/24"], 6);
    let (_, review) = post_https(addr, client.clone(), admission_review("u-2", same_ips)).await;
    assert_eq!(review["response"]["allowed"], false);

    let fine = peer_object("phone", &["10.6.0.1/32"], 5);
    let (status, review) = post_https(addr, client, admission_review("u-3", fine)).await;
    assert_eq!((status, &review["response"]), (200, &json!({"uid": "u-3", "allowed": true})));

    let metrics = state.metrics.encode();
    assert!(
        metrics.contains("admission_requests_total{operation=\"CREATE\",response=\"denied\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("admission_requests_total{operation=\"CREATE\",response=\"allowed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("http_requests_total{handler=\"/validate\",method=\"POST\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_backend_lists_then_watches_from_the_list_version_with_bookmarks() {
    let (server, mut backends) = start_cluster().await;
    backends[0].snapshot().await.unwrap();
    server.put(Collection::Peers, peer_object("laptop", &["10.5.0.1/32"], 9));
    wait_for(&mut backends[0], |e| matches!(e, Event::PeerChanged(_))).await;
    let requests = server.requests();
    for path in ["/api/v1/nodes", "/apis/kilo.squat.ai/v1alpha1/peers"] {
        let list = requests.iter().find(|r| r.starts_with(&format!("GET {path}?"))).unwrap();
        assert!(!list.contains("watch="), "{list}");
        let watch = requests
            .iter()
            .find(|r| r.starts_with(&format!("GET {path}?")) && r.contains("watch=true"))
            .unwrap();
        assert!(watch.contains("allowWatchBookmarks=true"), "{watch}");
        assert!(watch.contains("resourceVersion=103"), "{watch}");
    }
}
