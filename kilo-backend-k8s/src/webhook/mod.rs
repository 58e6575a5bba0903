//! The Peer admission webhook (`kg webhook`, upstream-kilo.md 3.4): HTTPS `POST /validate`
//! answering `admission.k8s.io/v1` AdmissionReviews of Peers as upstream does, plus checks
//! against the cluster's current nodes and peers (kept up to date by a watcher) so that a Peer
//! cannot hijack a pod subnet, a node's internal IP, the WireGuard subnet, another Peer's
//! addresses or a key already in use. Metrics are served over plain HTTP on `/metrics`.

mod check;
mod metrics;
mod review;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kilo_core::backend::{Backend, Event, Snapshot};
use kilo_core::{Cidr, Node, Peer};
use kube::Client;
use rustls::pki_types::pem::{Error as PemError, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use check::{PeerRejection, check_peer};
pub use metrics::{AdmissionLabels, HttpLabels, WebhookMetrics};
pub use review::{Answer, review};

use crate::backend::{KubeBackend, KubeBackendConfig};

/// The default WireGuard subnet (10.4.0.0/16), used when neither the configuration nor any node
/// names one.
pub fn default_subnet() -> Cidr {
    let network = std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 4, 0, 0));
    Cidr::new(network, 16).unwrap_or(Cidr::host(network))
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
    /// The WireGuard subnet, if configured (`--subnet`).
    pub configured_subnet: Option<Cidr>,
}

impl ClusterView {
    /// The WireGuard subnet: the configured one, else the network of the first published
    /// `wireguard-ip` annotation (as kgctl derives it), else 10.4.0.0/16.
    pub fn subnet(&self) -> Cidr {
        self.configured_subnet
            .or_else(|| self.nodes.iter().find_map(|n| n.wireguard_ip).map(|c| c.network()))
            .unwrap_or_else(default_subnet)
    }

    /// Replaces nodes and peers with a snapshot's.
    pub fn reset(&mut self, snapshot: Snapshot) {
        self.nodes = snapshot.nodes;
        self.peers = snapshot.peers;
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
    /// A state whose view uses `subnet` as the WireGuard subnet when given.
    pub fn new(subnet: Option<Cidr>) -> WebhookState {
        let view = ClusterView { configured_subnet: subnet, ..ClusterView::default() };
        WebhookState { view: Arc::new(RwLock::new(view)), metrics: Arc::default() }
    }

    /// Keeps the view up to date from `backend` until its events end. Errors are logged and the
    /// watch goes on (the backend retries with back-off).
    pub async fn follow<B: Backend>(&self, mut backend: B) {
        loop {
            match backend.snapshot().await {
                Ok(snapshot) => {
                    self.write_view(|v| v.reset(snapshot));
                    break;
                }
                Err(e) => tracing::warn!("reading nodes and peers: {e}"),
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

    /// Handles one HTTPS request: `POST /validate`, else 404 (405 for another method).
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if request.uri().path() != "/validate" {
            return respond(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "404 page not found\n",
            );
        }
        self.metrics.http("validate", request.method().as_str());
        if request.method() != Method::POST {
            self.metrics.errors.inc();
            return respond(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                "only POST is supported\n",
            );
        }
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = match http_body_util::Limited::new(request.into_body(), MAX_BODY).collect().await
        {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                self.metrics.errors.inc();
                let message = format!("cannot read the body: {e}\n");
                return respond(StatusCode::BAD_REQUEST, "text/plain; charset=utf-8", message);
            }
        };
        let view = self.view.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let answer = review(content_type.as_deref(), &body, &view, &self.metrics);
        respond(answer.status, answer.content_type, answer.body)
    }

    /// Handles one metrics request: `GET /metrics`, else 404.
    pub fn handle_metrics<B>(&self, request: &Request<B>) -> Response<Full<Bytes>> {
        if request.uri().path() != "/metrics" {
            return respond(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "404 page not found\n",
            );
        }
        respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            self.metrics.encode(),
        )
    }
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

/// Why the webhook cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The certificate or key file cannot be read or parsed.
    #[error("cannot read {what} from {}", path.display())]
    Pem {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: PemError,
    },
    /// The certificate and key do not make a TLS configuration.
    #[error("cannot use the certificate and key")]
    Tls {
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// A listen address cannot be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Accepting connections failed.
    #[error("cannot accept connections")]
    Accept {
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A rustls server configuration from PEM certificate chain and private key files.
pub fn tls_config(
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<rustls::ServerConfig>, WebhookError> {
    fn pem<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(PemError) -> WebhookError + 'a {
        move |source| WebhookError::Pem { what, path: path.to_path_buf(), source }
    }
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(pem("certificate", cert_file))?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(pem("private key", key_file))?;
    tls_config_from(certs, key)
}

/// A rustls server configuration (ring, TLS 1.2 and 1.3, HTTP/1.1) from DER certificates and key.
pub fn tls_config_from(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, WebhookError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| WebhookError::Tls { source })?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|source| WebhookError::Tls { source })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `POST /validate` over HTTPS on `listener` until the listener fails.
pub async fn serve_https(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: WebhookState,
) -> Result<(), WebhookError> {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (stream, peer) =
            listener.accept().await.map_err(|source| WebhookError::Accept { source })?;
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let stream = match acceptor.accept(stream).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    return;
                }
            };
            let service = service_fn(move |request: Request<Incoming>| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(state.handle(request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(%peer, "connection error: {e}");
            }
        });
    }
}

/// Serves `GET /metrics` over plain HTTP on `listener` until the listener fails.
pub async fn serve_metrics(listener: TcpListener, state: WebhookState) -> Result<(), WebhookError> {
    loop {
        let (stream, _) =
            listener.accept().await.map_err(|source| WebhookError::Accept { source })?;
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = state.handle_metrics(&request);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!("metrics connection error: {e}");
            }
        });
    }
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
    /// How nodes are read (topology label).
    pub backend: KubeBackendConfig,
    /// The client used to watch nodes and peers; `None`: no cluster checks, only upstream's
    /// validation (as upstream's webhook, which never calls the API server).
    pub client: Option<Client>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("listen", &self.listen)
            .field("listen_metrics", &self.listen_metrics)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("subnet", &self.subnet)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// Runs `kg webhook`: watches nodes and peers (when given a client), serves `/validate` over
/// HTTPS and `/metrics` over HTTP. Returns only on error. Until the first list arrives, Peers are
/// checked by upstream's validation alone. The watch needs RBAC `list` and `watch` on nodes and
/// on `kilo.squat.ai` peers.
pub async fn serve_webhook(config: WebhookConfig) -> Result<(), WebhookError> {
    let tls = tls_config(&config.cert_file, &config.key_file)?;
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr).await.map_err(|source| WebhookError::Bind { addr, source })
    };
    let https = bind(config.listen).await?;
    let state = WebhookState::new(config.subnet);
    match config.client {
        Some(client) => {
            let follower = state.clone();
            let backend = KubeBackend::new(client, config.backend);
            tokio::spawn(async move { follower.follow(backend).await });
        }
        None => tracing::warn!(
            "no Kubernetes client: Peers are checked by upstream's validation only, not against \
             the cluster's nodes and peers"
        ),
    }
    if let Some(addr) = config.listen_metrics {
        let listener = bind(addr).await?;
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_metrics(listener, state).await {
                tracing::error!("metrics server stopped: {e}");
            }
        });
    }
    tracing::info!(addr = %config.listen, "serving the Peer admission webhook");
    serve_https(https, tls, state).await
}
