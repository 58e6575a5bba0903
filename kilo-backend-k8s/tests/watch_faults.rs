//! The backend under faults of the API server's data and of its watches (issue 16, items 1 and 8):
//! a Node or Peer that does not decode is left out on its own, and never logged with its
//! pre-shared key; a watch that goes silent is noticed and the backend re-lists.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kilo_backend_k8s::testing::{Collection, FakeApiServer};
use kilo_backend_k8s::{KubeBackend, KubeBackendConfig};
use kilo_core::backend::{Backend, Event, Invalid, ObjectKind, Snapshot};
use kilo_core::{Key, Peer, PresharedKey};
use serde_json::{Value, json};
use tracing_subscriber::fmt::MakeWriter;

/// Everything logged while a [`Capture`] is installed on the current thread, as text.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    /// Installs a subscriber (every level, every target) writing to this buffer, for the
    /// current thread (the test's current-thread runtime runs every task on it).
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(self.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

/// The pre-shared key of the malformed Peer, and of a valid one.
const BAD_PSK: &str = "QkFEUFNLQkFEUFNLQkFEUFNLQkFEUFNLQkFEUFNLISE=";
const GOOD_PSK: &str = "R09PRFBTS0dPT0RQU0tHT09EUFNLR09PRFBTS0dPTyE=";

fn node_object(name: &str, index: u8) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "annotations": {
            "kilo.squat.ai/key": Key::from_bytes([index; 32]).to_base64(),
        }},
        "spec": {"podCIDR": format!("10.2.{index}.0/24")},
    })
}

fn peer_object(name: &str, index: u8, psk: Option<&str>) -> Value {
    let mut spec = json!({
        "allowedIPs": [format!("10.5.0.{index}/32")],
        "publicKey": Key::from_bytes([100 + index; 32]).to_base64(),
    });
    if let Some(psk) = psk {
        spec["presharedKey"] = json!(psk);
    }
    json!({"apiVersion": "kilo.squat.ai/v1alpha1", "kind": "Peer",
           "metadata": {"name": name}, "spec": spec})
}

fn mesh_peer(name: &str, index: u8, psk: Option<&str>) -> Peer {
    Peer {
        name: name.to_string(),
        allowed_ips: vec![format!("10.5.0.{index}/32").parse().unwrap()],
        public_key: Key::from_bytes([100 + index; 32]),
        preshared_key: psk.map(|p| p.parse::<PresharedKey>().unwrap()),
        ..Peer::default()
    }
}

/// A Peer the API server would serve if its CRD had no schema (upstream's first CRDs, or a CRD
/// edited by hand): the keepalive is a string, so the object does not decode as a `Peer`.
fn malformed_peer() -> Value {
    let mut peer = peer_object("broken", 3, Some(BAD_PSK));
    peer["spec"]["persistentKeepalive"] = json!("often");
    peer
}

fn names(snapshot: &Snapshot) -> Vec<&str> {
    snapshot.nodes.iter().map(|n| n.name.as_str()).collect()
}

/// Asserts that the captured logs hold no key material and no object body.
fn assert_no_secrets(logs: &str) {
    for secret in [BAD_PSK, GOOD_PSK, "presharedKey", "QkFEUFNL", "R09PRFBTS0"] {
        let count = logs.matches(secret).count();
        assert_eq!(count, 0, "the logs contain {secret:?} {count} times:\n{logs}");
    }
    assert!(!logs.contains("\"spec\""), "the logs contain an object body:\n{logs}");
}

/// Takes a snapshot as a starting agent does: retrying after each error, for up to `secs`.
/// Returns the snapshot, if any, and the errors seen (as text, with their causes).
async fn snapshot_within(backend: &mut KubeBackend, secs: u64) -> (Option<Snapshot>, Vec<String>) {
    let mut errors = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while let Ok(result) = tokio::time::timeout_at(deadline, backend.snapshot()).await {
        match result {
            Ok(snapshot) => return (Some(snapshot), errors),
            Err(e) => errors.push(chain(&e)),
        }
    }
    (None, errors)
}

/// Waits (up to `secs`) for an event matching `want`.
async fn wait_for(backend: &mut KubeBackend, secs: u64, want: impl Fn(&Event) -> bool) -> Event {
    tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            match backend.next_event().await {
                Some(Ok(event)) if want(&event) => return event,
                Some(_) => {}
                None => panic!("the backend's events ended"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no matching event within {secs} s"))
}

#[tokio::test]
async fn a_peer_that_does_not_decode_is_left_out_alone_and_its_preshared_key_is_never_logged() {
    let logs = Capture::default();
    let _guard = logs.install();
    let server = FakeApiServer::start().await;
    server.put(Collection::Nodes, node_object("a", 1));
    server.put(Collection::Nodes, node_object("b", 2));
    server.put(Collection::Peers, peer_object("laptop", 1, Some(GOOD_PSK)));
    server.put(Collection::Peers, malformed_peer());
    server.put(Collection::Peers, peer_object("phone", 2, None));
    let mut backend = KubeBackend::new(server.client(), KubeBackendConfig::default());

    let (snapshot, errors) = snapshot_within(&mut backend, 8).await;
    let text = logs.text();
    let Some(snapshot) = snapshot else {
        panic!(
            "no snapshot after 8 s: {} errors ({} lists of peers), e.g. {:?}; the logs contain the \
             malformed Peer's pre-shared key {} times (in {} WARN lines) and the valid one's {} \
             times:\n{}",
            errors.len(),
            server
                .requests()
                .iter()
                .filter(|r| r.starts_with("GET /apis/") && !r.contains("watch="))
                .count(),
            errors.first(),
            text.matches(BAD_PSK).count(),
            text.lines().filter(|l| l.contains(" WARN ") && l.contains(BAD_PSK)).count(),
            text.matches(GOOD_PSK).count(),
            &text[..text.len().min(3000)],
        );
    };
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(names(&snapshot), ["a", "b"]);
    assert_eq!(
        snapshot.peers,
        vec![mesh_peer("laptop", 1, Some(GOOD_PSK)), mesh_peer("phone", 2, None)]
    );
    assert_eq!(
        snapshot.invalid,
        vec![Invalid {
            kind: ObjectKind::Peer,
            name: "broken".into(),
            message:
                "does not decode: spec.persistentKeepalive: invalid type: string, expected i64"
                    .into(),
        }]
    );
    assert!(text.contains("broken") && text.contains("spec.persistentKeepalive"), "{text}");

    // Through the watch: the bad Peer is fixed (it joins), then broken again (it leaves).
    let mut fixed = peer_object("broken", 3, Some(BAD_PSK));
    fixed["spec"]["persistentKeepalive"] = json!(5);
    server.put(Collection::Peers, fixed);
    let event = wait_for(&mut backend, 10, |e| matches!(e, Event::PeerChanged(_))).await;
    let mut want = mesh_peer("broken", 3, Some(BAD_PSK));
    want.persistent_keepalive = Duration::from_secs(5);
    assert_eq!(event, Event::PeerChanged(want));
    server.put(Collection::Peers, malformed_peer());
    assert_eq!(
        wait_for(&mut backend, 10, |_| true).await,
        Event::PeerRemoved("broken".into()),
        "a Peer that was valid and no longer decodes is removed first"
    );
    let Event::Invalid(invalid) = wait_for(&mut backend, 10, |_| true).await else {
        panic!("the Peer that no longer decodes is reported");
    };
    assert_eq!(invalid.name, "broken");
    assert_no_secrets(&logs.text());
}

#[tokio::test]
async fn a_node_that_does_not_decode_is_left_out_and_the_others_make_the_snapshot() {
    let logs = Capture::default();
    let _guard = logs.install();
    let server = FakeApiServer::start().await;
    server.put(Collection::Nodes, node_object("a", 1));
    let mut bad = node_object("b", 2);
    bad["spec"]["podCIDRs"] = json!("10.2.2.0/24");
    server.put(Collection::Nodes, bad);
    server.put(Collection::Nodes, node_object("c", 3));
    server.put(Collection::Peers, peer_object("laptop", 1, Some(GOOD_PSK)));
    let mut backend = KubeBackend::new(server.client(), KubeBackendConfig::default());
    let (snapshot, errors) = snapshot_within(&mut backend, 8).await;
    let snapshot = snapshot.unwrap_or_else(|| {
        panic!("no snapshot after 8 s: {} errors, e.g. {:?}", errors.len(), errors.first())
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(names(&snapshot), ["a", "c"]);
    assert_eq!(snapshot.peers, vec![mesh_peer("laptop", 1, Some(GOOD_PSK))]);
    assert_eq!(
        snapshot.invalid,
        vec![Invalid {
            kind: ObjectKind::Node,
            name: "b".into(),
            message: "does not decode: spec.podCIDRs: invalid type: string, expected a sequence"
                .into(),
        }]
    );
    assert_no_secrets(&logs.text());
}

fn lists(server: &FakeApiServer, path: &str) -> usize {
    let prefix = format!("GET {path}?");
    server.requests().iter().filter(|r| r.starts_with(&prefix) && !r.contains("watch=")).count()
}

#[tokio::test]
async fn a_silent_watch_is_noticed_logged_and_replaced_by_a_fresh_list_and_a_reset() {
    let logs = Capture::default();
    let _guard = logs.install();
    let server = FakeApiServer::start().await;
    server.put(Collection::Nodes, node_object("a", 1));
    server.put(Collection::Nodes, node_object("b", 2));
    server.put(Collection::Peers, peer_object("laptop", 1, None));
    let mut config = KubeBackendConfig::default();
    config.watch_idle_timeout = Duration::from_secs(1);
    let mut backend = KubeBackend::new(server.client(), config);
    let snapshot = backend.snapshot().await.unwrap();
    assert_eq!(names(&snapshot), ["a", "b"]);
    // The watches are open (the change arrives through them) ...
    server.put(Collection::Nodes, node_object("c", 3));
    let event = wait_for(&mut backend, 10, |_| true).await;
    assert!(matches!(&event, Event::NodeChanged(n) if n.name == "c"), "{event:?}");

    // ... then go silent, and a change is made that they do not deliver.
    server.stall_watches(true);
    server.put(Collection::Nodes, node_object("d", 4));
    server.delete(Collection::Peers, "laptop");
    let started = std::time::Instant::now();
    let event = wait_for(&mut backend, 20, |_| true).await;
    let waited = started.elapsed();
    let Event::Reset(reset) = event else { panic!("a reset first, not {event:?}") };
    assert_eq!(names(&reset), ["a", "b", "c", "d"]);
    assert_eq!(reset.peers, vec![]);
    assert!(waited < Duration::from_secs(15), "the stall was noticed after {waited:?}");
    let text = logs.text();
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains(" WARN ")).collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].ends_with("no watch events for 1 s; re-listing nodes and peers"),
        "{warnings:#?}"
    );
    assert_eq!(lists(&server, "/api/v1/nodes"), 2);
    assert_eq!(lists(&server, "/apis/kilo.squat.ai/v1alpha1/peers"), 2);

    // The API recovers: the next re-list (the watch opened during the stall is silent too)
    // brings watches that deliver again.
    server.stall_watches(false);
    let event = wait_for(&mut backend, 20, |_| true).await;
    assert!(matches!(&event, Event::Reset(r) if names(r) == ["a", "b", "c", "d"]), "{event:?}");
    server.put(Collection::Peers, peer_object("phone", 2, None));
    let event = wait_for(&mut backend, 10, |e| !matches!(e, Event::Reset(_))).await;
    assert_eq!(event, Event::PeerChanged(mesh_peer("phone", 2, None)));
}

#[test]
fn the_watches_are_restarted_after_90_s_of_silence_by_default() {
    assert_eq!(KubeBackendConfig::default().watch_idle_timeout, Duration::from_secs(90));
}

/// The error and its causes, one after the other.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[tokio::test]
async fn an_unreachable_api_is_an_error_naming_what_failed_and_why() {
    // A port nothing listens on: bind one, then close it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = format!("http://{addr}").parse().unwrap();
    let client = kube::Client::try_from(kube::Config::new(url)).unwrap();
    let mut backend = KubeBackend::new(client, KubeBackendConfig::default());
    let error = tokio::time::timeout(Duration::from_secs(10), backend.snapshot())
        .await
        .expect("the error comes at once")
        .unwrap_err();
    let text = chain(&error);
    assert!(
        text.starts_with("listing or watching nodes failed (retried with back-off): ")
            || text.starts_with("listing or watching peers failed (retried with back-off): "),
        "{text}"
    );
    assert!(text.contains("Connection refused"), "{text}");
}
