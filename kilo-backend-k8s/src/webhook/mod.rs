//! The Peer admission webhook (`kg webhook`): HTTPS `POST /validate`
//! answering `admission.k8s.io/v1` AdmissionReviews of Peers as upstream does, plus the admission
//! rules of [`kilo_core::admission`] against the cluster's current nodes and peers (kept up to
//! date by a watcher) and the service CIDRs, so that a Peer cannot hijack a node's default route,
//! pod subnet, internal or endpoint IP, allowed location IPs, a service CIDR, the WireGuard
//! subnet, another Peer's addresses or a key already in use. It fails closed: until it has
//! listed the nodes and peers, every Peer CREATE and UPDATE is refused. Metrics are served over
//! plain HTTP on `/metrics`.

mod check;
mod metrics;
mod review;
mod serve;
mod slots;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes};
use kilo_core::backend::{Backend, Event, Snapshot};
use kilo_core::{Cidr, Node, Peer};
use kube::Client;
use tokio::net::TcpListener;

pub use check::{PeerRejection, check_peer};
pub use metrics::{
    AdmissionLabels, HttpLabels, OPENMETRICS_TEXT, PROMETHEUS_TEXT, WebhookMetrics, method_label,
    operation_label, prometheus_text,
};
pub use review::{Answer, review};
pub use serve::{
    ServeLimits, WebhookError, serve_https, serve_https_with, serve_metrics, serve_metrics_with,
    tls_config, tls_config_from,
};

use crate::backend::{KubeBackend, KubeBackendConfig};

/// The default WireGuard subnet (10.4.0.0/16), used when neither the configuration nor any node
/// names one.
pub fn default_subnet() -> Cidr {
    kilo_core::settings::default_subnet()
}

/// The largest request body the webhook reads.
const MAX_BODY: usize = 4 << 20;

/// The cluster as the webhook sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// The nodes.
    pub nodes: Vec<Node>,
    /// The valid peers.
    pub peers: Vec<Peer>,
    /// The WireGuard subnet, if configured (`--subnet`; the IPv4 one when given per family).
    pub configured_subnet: Option<Cidr>,
    /// The IPv6 WireGuard subnet of a dual-stack mesh, if configured (`--subnet` per family).
    pub configured_subnet6: Option<Cidr>,
    /// The service CIDRs (`--service-cidr`).
    pub service_cidrs: Vec<Cidr>,
    /// Whether the nodes and peers have been listed. Until then every Peer is refused.
    pub listed: bool,
    /// Why they have not been listed, when known (no client, the last listing error).
    pub not_listed_reason: Option<String>,
}

impl ClusterView {
    /// The WireGuard subnet: the configured one, else derived from the nodes as kgctl derives it
    /// ([`kilo_core::settings`]: the last listed `wireguard-ip`'s network), else 10.4.0.0/16.
    /// (The networks of every node's `wireguard-ip` are checked as well.)
    pub fn subnet(&self) -> Cidr {
        self.settings().subnet
    }

    /// The WireGuard subnets: [`ClusterView::subnet`] and, in a dual-stack mesh, the IPv6 one
    /// (configured, else derived from the nodes' `wireguard-ip6` annotations).
    pub fn subnets(&self) -> Vec<Cidr> {
        let settings = self.settings();
        std::iter::once(settings.subnet).chain(settings.subnet6).collect()
    }

    fn settings(&self) -> kilo_core::settings::Settings {
        use kilo_core::settings::{Explicit, Source, resolve};
        let mut explicit = Explicit::default();
        explicit.subnet = self.configured_subnet;
        explicit.subnet6 = self.configured_subnet6;
        resolve(&explicit, Source::KubernetesNodes { nodes: &self.nodes, live: true })
    }

    /// Replaces nodes and peers with a snapshot's: the view is listed.
    pub fn reset(&mut self, snapshot: Snapshot) {
        self.nodes = snapshot.nodes;
        self.peers = snapshot.peers;
        self.listed = true;
        self.not_listed_reason = None;
    }

    /// Applies one backend event.
    pub fn apply(&mut self, event: Event) {
        match event {
            Event::NodeChanged(node) => {
                self.nodes.retain(|n| n.name != node.name);
                self.nodes.push(node);
            }
            Event::NodeRemoved(name) => self.nodes.retain(|n| n.name != name),
            Event::PeerChanged(peer) => {
                self.peers.retain(|p| p.name != peer.name);
                self.peers.push(peer);
            }
            Event::PeerRemoved(name) => self.peers.retain(|p| p.name != name),
            Event::Reset(snapshot) => self.reset(snapshot),
            Event::Invalid(_) => {}
            // An event this crate does not know: nothing the checks read.
            _ => {}
        }
    }
}

/// What the webhook's handlers share.
#[derive(Debug, Clone, Default)]
pub struct WebhookState {
    /// The cluster view the checks use.
    pub view: Arc<RwLock<ClusterView>>,
    /// The counters.
    pub metrics: Arc<WebhookMetrics>,
}

impl WebhookState {
    /// A state, not yet listed, whose view uses `subnet` as the WireGuard subnet when given.
    pub fn new(subnet: Option<Cidr>) -> WebhookState {
        WebhookState::with_view(ClusterView { configured_subnet: subnet, ..ClusterView::default() })
    }

    /// A state starting from `view`.
    pub fn with_view(view: ClusterView) -> WebhookState {
        WebhookState { view: Arc::new(RwLock::new(view)), metrics: Arc::default() }
    }

    /// Keeps the view up to date from `backend` until its events end: lists (retrying until it
    /// can; the view stays unlisted, with the error as the reason, until then), then applies
    /// every change. Watch errors after the list are logged and the last view is kept (the
    /// backend retries with back-off and re-lists when it must).
    pub async fn follow<B: Backend>(&self, mut backend: B) {
        loop {
            match backend.snapshot().await {
                Ok(snapshot) => {
                    self.write_view(|v| v.reset(snapshot));
                    tracing::info!("read the cluster's nodes and peers: checking Peers");
                    break;
                }
                Err(e) => {
                    let why = chain(&e);
                    tracing::warn!("cannot list nodes and peers; refusing every Peer: {why}");
                    let reason = format!("cannot list nodes and peers: {why}");
                    self.write_view(|v| v.not_listed_reason = Some(reason));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        while let Some(event) = backend.next_event().await {
            match event {
                Ok(event) => self.write_view(|v| v.apply(event)),
                Err(e) => tracing::warn!("watching nodes and peers: {e}"),
            }
        }
    }

    fn write_view(&self, f: impl FnOnce(&mut ClusterView)) {
        let mut view = self.view.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut view);
    }

    /// Handles one HTTPS request: `POST /validate`, else 404 (405 for another method); the body
    /// must arrive within 10 s.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.handle_within(request, ServeLimits::default().body_read_timeout).await
    }

    /// [`WebhookState::handle`], the body within `body_timeout` (else 408).
    pub async fn handle_within<B>(
        &self,
        request: Request<B>,
        body_timeout: Duration,
    ) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        const TEXT: &str = "text/plain; charset=utf-8";
        if request.uri().path() != "/validate" {
            return respond(StatusCode::NOT_FOUND, TEXT, "404 page not found\n");
        }
        self.metrics.http(request.method());
        if request.method() != Method::POST {
            self.metrics.errors.inc();
            return respond(StatusCode::METHOD_NOT_ALLOWED, TEXT, "only POST is supported\n");
        }
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = http_body_util::Limited::new(request.into_body(), MAX_BODY).collect();
        let body = match tokio::time::timeout(body_timeout, body).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) => {
                self.metrics.errors.inc();
                let message = format!("cannot read the body: {e}\n");
                return respond(StatusCode::BAD_REQUEST, TEXT, message);
            }
            Err(_) => {
                self.metrics.errors.inc();
                let message = format!("the body did not arrive within {body_timeout:?}\n");
                return respond(StatusCode::REQUEST_TIMEOUT, TEXT, message);
            }
        };
        let view = self.view.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let answer = review(content_type.as_deref(), &body, &view, &self.metrics);
        respond(answer.status, answer.content_type, answer.body)
    }

    /// Handles one metrics request: `GET /metrics`, else 404. Prometheus text 0.0.4, or
    /// OpenMetrics when the `Accept` header asks for `application/openmetrics-text`.
    pub fn handle_metrics<B>(&self, request: &Request<B>) -> Response<Full<Bytes>> {
        if request.uri().path() != "/metrics" {
            let text = "text/plain; charset=utf-8";
            return respond(StatusCode::NOT_FOUND, text, "404 page not found\n");
        }
        let openmetrics = request
            .headers()
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("application/openmetrics-text"));
        if openmetrics {
            respond(StatusCode::OK, OPENMETRICS_TEXT, self.metrics.encode_openmetrics())
        } else {
            respond(StatusCode::OK, PROMETHEUS_TEXT, self.metrics.encode())
        }
    }
}

/// An error with its causes, `: `-separated.
fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert("x-content-type-options", header::HeaderValue::from_static("nosniff"));
    response
}

/// The configuration of `kg webhook`.
#[derive(Clone)]
pub struct WebhookConfig {
    /// `--listen` (upstream default `:8443`): the HTTPS address.
    pub listen: SocketAddr,
    /// `--listen-metrics` (upstream default `:1107`): the plain HTTP metrics address, if any.
    pub listen_metrics: Option<SocketAddr>,
    /// `--cert-file`: the PEM certificate chain.
    pub cert_file: PathBuf,
    /// `--key-file`: the PEM private key.
    pub key_file: PathBuf,
    /// The WireGuard subnet; `None`: derived from the nodes' `wireguard-ip` annotations, else
    /// 10.4.0.0/16.
    pub subnet: Option<Cidr>,
    /// The IPv6 WireGuard subnet of a dual-stack mesh (`--subnet` given per family); `None`:
    /// derived from the nodes' `wireguard-ip6` annotations, if any.
    pub subnet6: Option<Cidr>,
    /// `--service-cidr`: the service CIDRs no Peer may route.
    pub service_cidrs: Vec<Cidr>,
    /// Timeouts and the connection cap of both listeners.
    pub limits: ServeLimits,
    /// How nodes are read (topology label).
    pub backend: KubeBackendConfig,
    /// The client used to watch nodes and peers; `Err(why)` when there is none: the webhook then
    /// cannot read the cluster and refuses every Peer CREATE and UPDATE, saying why.
    pub client: Result<Client, String>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("listen", &self.listen)
            .field("listen_metrics", &self.listen_metrics)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("subnet", &self.subnet)
            .field("subnet6", &self.subnet6)
            .field("service_cidrs", &self.service_cidrs)
            .field("limits", &self.limits)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// Runs `kg webhook`: watches nodes and peers, serves `/validate` over HTTPS and `/metrics` over
/// HTTP. Returns only on a configuration error (certificate, key, listen address). Until the
/// first list arrives (or without a client), every Peer CREATE and UPDATE is refused with the
/// reason. The watch needs RBAC `list` and `watch` on nodes and on `kilo.squat.ai` peers.
pub async fn serve_webhook(config: WebhookConfig) -> Result<(), WebhookError> {
    let tls = tls_config(&config.cert_file, &config.key_file)?;
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr).await.map_err(|source| WebhookError::Bind { addr, source })
    };
    let https = bind(config.listen).await?;
    let state = WebhookState::with_view(ClusterView {
        configured_subnet: config.subnet,
        configured_subnet6: config.subnet6,
        service_cidrs: config.service_cidrs,
        ..ClusterView::default()
    });
    match config.client {
        Ok(client) => {
            let follower = state.clone();
            let backend = KubeBackend::new(client, config.backend);
            tokio::spawn(async move { follower.follow(backend).await });
        }
        Err(why) => {
            tracing::error!("no Kubernetes client ({why}): every Peer will be refused");
            state
                .write_view(|v| v.not_listed_reason = Some(format!("no Kubernetes client: {why}")));
        }
    }
    if let Some(addr) = config.listen_metrics {
        let listener = bind(addr).await?;
        tokio::spawn(serve_metrics_with(listener, state.clone(), config.limits));
    }
    tracing::info!(addr = %config.listen, "serving the Peer admission webhook");
    serve_https_with(https, tls, state, config.limits).await
}
