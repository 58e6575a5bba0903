//! `tower-test` mock API scenarios (as kube-rs tests its own client): the exact requests the
//! backend sends — list and watch parameters, the publish patch, the clean-up patch.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response};
use kilo_backend_k8s::{KubeBackend, KubeBackendConfig};
use kilo_core::annotations::agent_annotations;
use kilo_core::backend::{Backend, Event};
use kilo_core::{Endpoint, Granularity, Key, Node};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{Handle, SendResponse};

type MockHandle = Handle<Request<Body>, Response<Body>>;

fn mock() -> (kube::Client, MockHandle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

fn respond(send: SendResponse<Response<Body>>, body: Value) {
    send.send_response(
        Response::builder().body(Body::from(body.to_string().into_bytes())).unwrap(),
    );
}

fn query(request: &Request<Body>) -> BTreeMap<String, String> {
    request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn node_json(name: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "resourceVersion": "7", "annotations": annotations},
        "spec": {"podCIDR": "10.2.0.0/24"},
    })
}

fn local() -> Node {
    Node {
        name: "a".to_string(),
        endpoint: Some("192.0.2.1:51820".parse::<Endpoint>().unwrap()),
        key: Key::from_bytes([1; 32]),
        internal_ip: Some("10.1.0.1/24".parse().unwrap()),
        last_seen: 1_700_000_000,
        subnets: vec!["10.2.0.0/24".parse().unwrap()],
        granularity: Some(Granularity::Location),
        ..Node::default()
    }
}

/// What the scenario saw.
#[derive(Default)]
struct Seen {
    lists: Vec<(String, BTreeMap<String, String>)>,
    watches: Vec<(String, BTreeMap<String, String>)>,
    patches: Vec<(String, String, Value)>,
}

/// A mock API server scenario: answers the lists (the given node, no peers) at resource version
/// 42, answers each collection's first watch with the given events (then ends that stream),
/// holds later watches open, and answers PATCHes with the node. Records every request.
fn scenario(
    mut handle: MockHandle,
    node: Value,
    mut watch_events: BTreeMap<&'static str, Vec<Value>>,
) -> Arc<Mutex<Seen>> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record = seen.clone();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let path = request.uri().path().to_string();
            let q = query(&request);
            if request.method() == Method::PATCH {
                let content_type = request.headers()["content-type"].to_str().unwrap().to_string();
                let bytes = request.into_body().collect_bytes().await.unwrap();
                let body: Value = serde_json::from_slice(&bytes).unwrap();
                record.lock().unwrap().patches.push((path, content_type, body));
                respond(send, node.clone());
                continue;
            }
            assert_eq!(request.method(), Method::GET);
            let kind = match path.as_str() {
                "/api/v1/nodes" => "NodeList",
                "/apis/kilo.squat.ai/v1alpha1/peers" => "PeerList",
                other => panic!("unexpected path {other}"),
            };
            if q.contains_key("watch") {
                record.lock().unwrap().watches.push((path.clone(), q));
                match watch_events.remove(path.as_str()) {
                    Some(events) => {
                        let lines: String = events.iter().map(|e| format!("{e}\n")).collect();
                        respond_raw(send, lines);
                    }
                    None => open.push(send),
                }
            } else {
                record.lock().unwrap().lists.push((path, q));
                let items = if kind == "NodeList" { vec![node.clone()] } else { vec![] };
                respond(
                    send,
                    json!({"kind": kind, "metadata": {"resourceVersion": "42"}, "items": items}),
                );
            }
        }
    });
    seen
}

fn respond_raw(send: SendResponse<Response<Body>>, body: String) {
    send.send_response(Response::builder().body(Body::from(body.into_bytes())).unwrap());
}

/// Polls the backend's events for a while (so that it issues its watch requests).
async fn drive(backend: &mut KubeBackend, millis: u64) -> Vec<Event> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(millis);
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, backend.next_event()).await {
        if let Ok(event) = event {
            events.push(event);
        }
    }
    events
}

#[tokio::test]
async fn the_backend_lists_nodes_and_peers_then_watches_from_the_list_version_with_bookmarks() {
    let (client, handle) = mock();
    let seen = scenario(handle, node_json("a", json!({})), BTreeMap::new());
    let mut backend = KubeBackend::new(client, KubeBackendConfig::default());
    let snapshot = backend.snapshot().await.unwrap();
    assert_eq!(snapshot.nodes.len(), 1);
    assert_eq!(snapshot.nodes[0].subnets, vec!["10.2.0.0/24".parse().unwrap()]);
    for _ in 0..50 {
        if seen.lock().unwrap().watches.len() >= 2 {
            break;
        }
        drive(&mut backend, 100).await;
    }
    let seen = seen.lock().unwrap();
    let mut lists: Vec<&str> = seen.lists.iter().map(|(p, _)| p.as_str()).collect();
    lists.sort();
    assert_eq!(lists, ["/api/v1/nodes", "/apis/kilo.squat.ai/v1alpha1/peers"]);
    for (path, q) in &seen.lists {
        assert_eq!(q.get("limit").map(String::as_str), Some("500"), "{path}: a paged list");
        assert!(!q.contains_key("resourceVersion"), "{path}: a consistent (most recent) list");
        assert!(!q.contains_key("watch"), "{path}");
    }
    let mut watches: Vec<&str> = seen.watches.iter().map(|(p, _)| p.as_str()).collect();
    watches.sort();
    assert_eq!(watches, ["/api/v1/nodes", "/apis/kilo.squat.ai/v1alpha1/peers"]);
    for (path, q) in &seen.watches {
        assert_eq!(q["watch"], "true", "{path}");
        assert_eq!(q["resourceVersion"], "42", "{path}: the watch starts at the list's version");
        assert_eq!(q["allowWatchBookmarks"], "true", "{path}");
        assert!(q.contains_key("timeoutSeconds"), "{path}");
    }
}

#[tokio::test]
async fn watch_events_become_backend_events_and_invalid_peers_are_reported() {
    let (client, handle) = mock();
    let peer = |name: &str, rv: &str, key: String| {
        json!({"type": "ADDED", "object": {
            "apiVersion": "kilo.squat.ai/v1alpha1", "kind": "Peer",
            "metadata": {"name": name, "resourceVersion": rv},
            "spec": {"allowedIPs": ["10.5.0.1/32"], "publicKey": key}}})
    };
    let bookmark = json!({"type": "BOOKMARK", "object": {
        "apiVersion": "kilo.squat.ai/v1alpha1", "kind": "Peer", "metadata": {"resourceVersion": "44"}}});
    let mut node = node_json("a", json!({}));
    node["metadata"]["resourceVersion"] = json!("45");
    let events = BTreeMap::from([
        (
            "/apis/kilo.squat.ai/v1alpha1/peers",
            vec![
                peer("laptop", "43", Key::from_bytes([3; 32]).to_base64()),
                bookmark,
                peer("bad", "44", "short".into()),
            ],
        ),
        ("/api/v1/nodes", vec![json!({"type": "DELETED", "object": node})]),
    ]);
    let seen = scenario(handle, node_json("a", json!({})), events);
    let mut backend = KubeBackend::new(client, KubeBackendConfig::default());
    backend.snapshot().await.unwrap();
    let mut events = Vec::new();
    for _ in 0..50 {
        events.extend(drive(&mut backend, 100).await);
        if events.len() >= 3 && seen.lock().unwrap().watches.len() >= 4 {
            break;
        }
    }
    assert!(events.contains(&Event::NodeRemoved("a".into())), "{events:?}");
    let laptop = events.iter().find_map(|e| match e {
        Event::PeerChanged(p) => Some(p.clone()),
        _ => None,
    });
    assert_eq!(laptop.map(|p| p.public_key), Some(Key::from_bytes([3; 32])));
    let invalid = events.iter().find_map(|e| match e {
        Event::Invalid(i) => Some(i.clone()),
        _ => None,
    });
    let invalid = invalid.expect("the invalid peer is reported");
    assert_eq!(invalid.name, "bad");
    assert_eq!(
        invalid.message,
        "WireGuard public key is not base64 encoded: illegal base64 data at input byte 4"
    );
    // After the streams ended, the watches resume from the last version seen (bookmarks count).
    let seen = seen.lock().unwrap();
    let resumed: Vec<&str> =
        seen.watches.iter().skip(2).map(|(_, q)| q["resourceVersion"].as_str()).collect();
    assert!(resumed.contains(&"44") && resumed.contains(&"45"), "{resumed:?}");
}

#[tokio::test]
async fn publish_local_patches_only_the_agent_annotations_that_changed() {
    let (client, handle) = mock();
    let mut node = local();
    let mut annotations: BTreeMap<String, String> = agent_annotations(&node);
    annotations.insert("kilo.squat.ai/leader".into(), "".into());
    annotations.insert("kilo.squat.ai/force-endpoint".into(), "198.51.100.1:51820".into());
    let object = node_json("a", serde_json::to_value(&annotations).unwrap());
    let seen = scenario(handle, object, BTreeMap::new());
    let mut backend = KubeBackend::new(client, KubeBackendConfig::default());
    backend.snapshot().await.unwrap();
    backend.publish_local(&node).await.unwrap();
    assert!(seen.lock().unwrap().patches.is_empty(), "nothing changed: nothing sent");
    node.last_seen += 30;
    node.internal_ip = None;
    backend.publish_local(&node).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.patches.len(), 1);
    let (path, content_type, body) = &seen.patches[0];
    assert_eq!(path, "/api/v1/nodes/a");
    assert_eq!(content_type, "application/merge-patch+json");
    assert_eq!(
        body,
        &json!({"metadata": {"annotations": {
            "kilo.squat.ai/internal-ip": "",
            "kilo.squat.ai/last-seen": "1700000030",
        }}})
    );
}

#[tokio::test]
async fn publish_local_before_the_node_was_seen_sends_every_agent_annotation() {
    let (client, handle) = mock();
    let seen = scenario(handle, node_json("a", json!({})), BTreeMap::new());
    let mut backend = KubeBackend::new(client, KubeBackendConfig::default());
    backend.publish_local(&local()).await.unwrap();
    let seen = seen.lock().unwrap();
    let expected = serde_json::to_value(agent_annotations(&local())).unwrap();
    assert_eq!(seen.patches[0].2, json!({"metadata": {"annotations": expected}}));
    assert_eq!(expected.as_object().unwrap().len(), 11);
}

#[tokio::test]
async fn clean_up_sends_a_merge_patch_removing_every_agent_annotation() {
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        let (request, send) = handle.next_request().await.expect("the patch");
        assert_eq!(request.method(), Method::PATCH);
        assert_eq!(request.uri().path(), "/api/v1/nodes/a");
        assert_eq!(request.headers()["content-type"], "application/merge-patch+json");
        let body: Value =
            serde_json::from_slice(&request.into_body().collect_bytes().await.unwrap()).unwrap();
        respond(send, node_json("a", json!({})));
        body
    });
    let mut backend = KubeBackend::new(client, KubeBackendConfig::default());
    backend.clean_up_local("a").await.unwrap();
    assert_eq!(
        server.await.unwrap(),
        json!({"metadata": {"annotations": {
            "kilo.squat.ai/endpoint": null,
            "kilo.squat.ai/internal-ip": null,
            "kilo.squat.ai/key": null,
            "kilo.squat.ai/last-seen": null,
            "kilo.squat.ai/wireguard-ip": null,
            "kilo.squat.ai/discovered-endpoints": null,
            "kilo.squat.ai/granularity": null,
            "kilo.squat.ai/cni-compatibility-ip": null,
            "kilo.squat.ai/leader-health": null,
            "kilo.squat.ai/internal-ip6": null,
            "kilo.squat.ai/wireguard-ip6": null,
        }}})
    );
}

#[tokio::test]
async fn clean_up_of_a_node_that_no_longer_exists_succeeds() {
    let (client, mut handle) = mock();
    tokio::spawn(async move {
        let (_, send) = handle.next_request().await.expect("the patch");
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "nodes \"a\" not found", "reason": "NotFound", "code": 404});
        send.send_response(
            Response::builder()
                .status(404)
                .body(Body::from(status.to_string().into_bytes()))
                .unwrap(),
        );
    });
    let mut backend = KubeBackend::new(client, KubeBackendConfig::default());
    backend.clean_up_local("a").await.unwrap();
}

#[tokio::test]
async fn an_expired_watch_relists_and_yields_a_reset_with_the_new_list() {
    let (client, handle) = mock();
    let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
        "status": "Failure", "message": "too old resource version", "reason": "Expired", "code": 410}});
    let events = BTreeMap::from([("/api/v1/nodes", vec![gone])]);
    let seen = scenario(handle, node_json("a", json!({"kilo.squat.ai/location": "x"})), events);
    let mut backend = KubeBackend::new(client, KubeBackendConfig::default());
    backend.snapshot().await.unwrap();
    // The watcher re-lists after its back-off (about a second).
    let reset = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(Ok(Event::Reset(snapshot))) = backend.next_event().await {
                return snapshot;
            }
        }
    })
    .await
    .expect("a re-list yields a reset");
    assert_eq!(reset.nodes.len(), 1);
    assert_eq!(reset.nodes[0].location, "x");
    let seen = seen.lock().unwrap();
    let node_lists = seen.lists.iter().filter(|(p, _)| p == "/api/v1/nodes").count();
    assert_eq!(node_lists, 2, "the nodes were listed again");
}
