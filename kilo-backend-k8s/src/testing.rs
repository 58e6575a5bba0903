//! Test support (feature `test-support`): a small Kubernetes API server on loopback, enough for the backend: list and watch (chunked
//! JSON event streams from a resource version, with bookmarks) of `/api/v1/nodes` and
//! `/apis/kilo.squat.ai/v1alpha1/peers`, merge and strategic-merge PATCH of nodes, and Peer
//! create and delete. Objects are stored as JSON; every write bumps a global resource version.
//! Its watches can be made to go silent ([`FakeApiServer::stall_watches`]).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

/// The two collections served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Collection {
    Nodes,
    Peers,
}

impl Collection {
    fn from_path(path: &str) -> Option<(Collection, Option<String>)> {
        let (collection, rest) = if let Some(rest) = path.strip_prefix("/api/v1/nodes") {
            (Collection::Nodes, rest)
        } else if let Some(rest) = path.strip_prefix("/apis/kilo.squat.ai/v1alpha1/peers") {
            (Collection::Peers, rest)
        } else {
            return None;
        };
        match rest {
            "" => Some((collection, None)),
            name => name.strip_prefix('/').map(|n| (collection, Some(n.to_string()))),
        }
    }

    fn list_kind(self) -> (&'static str, &'static str) {
        match self {
            Collection::Nodes => ("v1", "NodeList"),
            Collection::Peers => ("kilo.squat.ai/v1alpha1", "PeerList"),
        }
    }
}

#[derive(Clone, Debug)]
struct Change {
    rv: u64,
    collection: Collection,
    kind: &'static str,
    object: Value,
}

struct Inner {
    rv: u64,
    objects: BTreeMap<(Collection, String), Value>,
    history: Vec<Change>,
    requests: Vec<String>,
    patches: Vec<(String, String, Value)>,
    /// Whether watches are stalled: open, but silent.
    stalled: bool,
    /// How long every request waits before it is answered (a slow API).
    delay: std::time::Duration,
}

/// The fake API server's shared state.
#[derive(Clone)]
pub struct FakeApiServer {
    inner: Arc<Mutex<Inner>>,
    changes: broadcast::Sender<Change>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl FakeApiServer {
    /// Starts a server on 127.0.0.1 with a free port.
    pub async fn start() -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (changes, _) = broadcast::channel(1024);
        let server = FakeApiServer {
            inner: Arc::new(Mutex::new(Inner {
                rv: 100,
                objects: BTreeMap::new(),
                history: Vec::new(),
                requests: Vec::new(),
                patches: Vec::new(),
                stalled: false,
                delay: std::time::Duration::ZERO,
            })),
            changes,
            addr: listener.local_addr().unwrap(),
        };
        let accept = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let server = accept.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.handle(request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        server
    }

    /// A kube client talking to this server.
    pub fn client(&self) -> kube::Client {
        let url = format!("http://{}", self.addr).parse().unwrap();
        kube::Client::try_from(kube::Config::new(url)).unwrap()
    }

    /// Every request as `METHOD path?query`, in arrival order.
    pub fn requests(&self) -> Vec<String> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// Makes every request from now on wait `delay` before it is handled (a slow API server).
    pub fn set_delay(&self, delay: std::time::Duration) {
        self.inner.lock().unwrap().delay = delay;
    }

    /// Stalls every watch (`true`): the open ones stop sending and new ones are accepted but
    /// send nothing, and none is ever closed by the server, as over a connection that silently
    /// stopped delivering; lists and other requests are answered as usual. `false` ends the
    /// stall for watches opened from then on (those opened during it stay silent).
    pub fn stall_watches(&self, stalled: bool) {
        self.inner.lock().unwrap().stalled = stalled;
    }

    /// Every PATCH as (node, content type, body).
    pub fn patches(&self) -> Vec<(String, String, Value)> {
        self.inner.lock().unwrap().patches.clone()
    }

    /// The stored object, if any.
    pub fn get(&self, collection: Collection, name: &str) -> Option<Value> {
        self.inner.lock().unwrap().objects.get(&(collection, name.to_string())).cloned()
    }

    /// Stores (adds or replaces) an object and announces it to watchers.
    pub fn put(&self, collection: Collection, mut object: Value) -> Value {
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let mut inner = self.inner.lock().unwrap();
        inner.rv += 1;
        let rv = inner.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let kind = if inner.objects.contains_key(&(collection, name.clone())) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        inner.objects.insert((collection, name), object.clone());
        self.record(&mut inner, Change { rv, collection, kind, object: object.clone() });
        object
    }

    /// Removes an object and announces it.
    pub fn delete(&self, collection: Collection, name: &str) -> Option<Value> {
        let mut inner = self.inner.lock().unwrap();
        let mut object = inner.objects.remove(&(collection, name.to_string()))?;
        inner.rv += 1;
        let rv = inner.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.record(&mut inner, Change { rv, collection, kind: "DELETED", object: object.clone() });
        Some(object)
    }

    fn record(&self, inner: &mut Inner, change: Change) {
        inner.history.push(change.clone());
        let _ = self.changes.send(change);
    }

    async fn handle(
        &self,
        request: Request<Incoming>,
    ) -> Response<UnsyncBoxBody<Bytes, Infallible>> {
        let path = request.uri().path().to_string();
        let query: BTreeMap<String, String> = request
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let method = request.method().clone();
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        self.inner.lock().unwrap().requests.push(match request.uri().query() {
            Some(q) => format!("{method} {path}?{q}"),
            None => format!("{method} {path}"),
        });
        let delay = self.inner.lock().unwrap().delay;
        tokio::time::sleep(delay).await;
        let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let Some((collection, name)) = Collection::from_path(&path) else {
            return status(
                StatusCode::NOT_FOUND,
                "the server could not find the requested resource",
            );
        };
        match (method, name) {
            (Method::GET, None)
                if matches!(query.get("watch").map(String::as_str), Some("1" | "true")) =>
            {
                let from = query.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
                let bookmarks = query.get("allowWatchBookmarks").is_some_and(|v| v == "true");
                self.watch(collection, from, bookmarks)
            }
            (Method::GET, None) => {
                let inner = self.inner.lock().unwrap();
                let items: Vec<Value> = inner
                    .objects
                    .iter()
                    .filter(|((c, _), _)| *c == collection)
                    .map(|(_, o)| o.clone())
                    .collect();
                let (api_version, kind) = collection.list_kind();
                let list = json!({
                    "apiVersion": api_version, "kind": kind,
                    "metadata": {"resourceVersion": inner.rv.to_string()},
                    "items": items,
                });
                ok(list)
            }
            (Method::GET, Some(name)) => match self.get(collection, &name) {
                Some(o) => ok(o),
                None => status(StatusCode::NOT_FOUND, &format!("{name} not found")),
            },
            (Method::PATCH, Some(name)) if collection == Collection::Nodes => {
                let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
                    return status(StatusCode::BAD_REQUEST, "bad patch");
                };
                if !content_type.starts_with("application/merge-patch+json")
                    && !content_type.starts_with("application/strategic-merge-patch+json")
                {
                    return status(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported patch type");
                }
                self.inner.lock().unwrap().patches.push((
                    name.clone(),
                    content_type,
                    patch.clone(),
                ));
                let Some(mut object) = self.get(collection, &name) else {
                    return status(StatusCode::NOT_FOUND, &format!("nodes \"{name}\" not found"));
                };
                merge_patch(&mut object, &patch);
                ok(self.put(collection, object))
            }
            (Method::POST, None) if collection == Collection::Peers => {
                let Ok(object) = serde_json::from_slice::<Value>(&body) else {
                    return status(StatusCode::BAD_REQUEST, "bad object");
                };
                let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
                if self.get(collection, &name).is_some() {
                    return status(StatusCode::CONFLICT, "already exists");
                }
                let stored = self.put(collection, object);
                json_response(StatusCode::CREATED, stored)
            }
            (Method::DELETE, Some(name)) if collection == Collection::Peers => {
                match self.delete(collection, &name) {
                    Some(o) => ok(o),
                    None => status(StatusCode::NOT_FOUND, &format!("{name} not found")),
                }
            }
            _ => status(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        }
    }

    fn watch(
        &self,
        collection: Collection,
        from: u64,
        bookmarks: bool,
    ) -> Response<UnsyncBoxBody<Bytes, Infallible>> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        let stalled = self.inner.clone();
        let is_stalled = move || stalled.lock().unwrap().stalled;
        let (backlog, mut live, rv) = {
            let inner = self.inner.lock().unwrap();
            let backlog: Vec<Change> = inner
                .history
                .iter()
                .filter(|c| c.collection == collection && c.rv > from)
                .cloned()
                .collect();
            (backlog, self.changes.subscribe(), inner.rv)
        };
        tokio::spawn(async move {
            if is_stalled() {
                // Silent until the client goes away.
                tx.closed().await;
                return;
            }
            let line = |v: Value| Bytes::from(format!("{v}\n"));
            let mut last = from;
            for change in backlog {
                last = change.rv;
                if tx
                    .send(line(json!({"type": change.kind, "object": change.object})))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            // Everything up to `rv` has been sent: say so with a bookmark.
            last = last.max(rv);
            if bookmarks {
                let (api_version, kind) = collection.list_kind();
                let kind = kind.trim_end_matches("List");
                let bookmark = json!({"type": "BOOKMARK", "object": {
                    "apiVersion": api_version, "kind": kind,
                    "metadata": {"resourceVersion": last.to_string()}}});
                if tx.send(line(bookmark)).await.is_err() {
                    return;
                }
            }
            while let Ok(change) = live.recv().await {
                if is_stalled() {
                    tx.closed().await;
                    return;
                }
                if change.collection != collection || change.rv <= last {
                    continue;
                }
                last = change.rv;
                if tx
                    .send(line(json!({"type": change.kind, "object": change.object})))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
        });
        let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream.boxed())));
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, "application/json".parse().unwrap());
        response
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Value::Object(map) = target else { return };
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

fn json_response(code: StatusCode, body: Value) -> Response<UnsyncBoxBody<Bytes, Infallible>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed_unsync());
    *response.status_mut() = code;
    response.headers_mut().insert(http::header::CONTENT_TYPE, "application/json".parse().unwrap());
    response
}

fn ok(body: Value) -> Response<UnsyncBoxBody<Bytes, Infallible>> {
    json_response(StatusCode::OK, body)
}

fn status(code: StatusCode, message: &str) -> Response<UnsyncBoxBody<Bytes, Infallible>> {
    let reason = match code.as_u16() {
        404 => "NotFound",
        409 => "AlreadyExists",
        _ => "BadRequest",
    };
    json_response(
        code,
        json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code.as_u16()}),
    )
}
