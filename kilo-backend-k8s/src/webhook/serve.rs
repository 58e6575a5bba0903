//! The webhook's listeners: HTTPS for `/validate`, plain HTTP for `/metrics`. Neither can be
//! starved by slow or idle clients (TLS-handshake, header and body timeouts, a connection cap
//! that evicts idle connections first), and neither ends on an `accept` error (EMFILE included):
//! it logs, backs off and goes on.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::pem::{Error as PemError, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::WebhookState;
use super::slots::{Slot, Slots};

/// Limits that keep slow, idle or numerous clients from starving the webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// How long a client has to finish the TLS handshake (default 10 s).
    pub tls_handshake_timeout: Duration,
    /// How long a client has to send a request's headers, counted from when the server starts
    /// waiting for them, so also while a kept-alive connection idles (default 10 s).
    pub header_read_timeout: Duration,
    /// How long a client has to send a request's body (default 10 s).
    pub body_read_timeout: Duration,
    /// The most connections at once per listener (default 256). When all are taken, a new
    /// connection evicts the oldest one that has not sent a request yet; when every one is
    /// serving a request, new connections wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            max_connections: 256,
        }
    }
}

/// Why the webhook cannot serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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

/// The first pause after a failed `accept`; it doubles up to [`MAX_ACCEPT_BACKOFF`].
const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// The longest pause after failed `accept`s.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts connections on `listener` forever within [`Slots`] of `max` connections, each served
/// by `serve` (which marks its [`Slot`] busy when a request arrives). A failed `accept` (out of
/// file descriptors, a connection reset before it was accepted, ...) is logged and retried after
/// a short, growing pause; it never ends the loop.
async fn accept_forever<F, Fut>(listener: TcpListener, max: usize, what: &'static str, serve: F)
where
    F: Fn(TcpStream, SocketAddr, Arc<Slot>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Slots::new(max);
    let mut backoff = MIN_ACCEPT_BACKOFF;
    loop {
        slots.ready().await;
        match listener.accept().await {
            Ok((stream, peer)) => {
                backoff = MIN_ACCEPT_BACKOFF;
                let (slot, evicted) = slots.take();
                let connection = serve(stream, peer, Arc::new(slot));
                tokio::spawn(async move {
                    // `evicted` fails (without evicting) once the connection is busy.
                    tokio::select! {
                        () = connection => {}
                        Ok(()) = evicted => tracing::debug!(%peer, server = what, "evicted an idle connection"),
                    }
                });
            }
            Err(e) => {
                tracing::warn!(
                    server = what,
                    "cannot accept a connection: {e}; retrying in {backoff:?}"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
            }
        }
    }
}

fn http1(limits: &ServeLimits) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    builder
}

/// Serves `POST /validate` over HTTPS on `listener` with the default [`ServeLimits`]; never
/// returns.
pub async fn serve_https(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: WebhookState,
) -> Result<(), WebhookError> {
    serve_https_with(listener, tls, state, ServeLimits::default()).await
}

/// Serves `POST /validate` over HTTPS on `listener` within `limits`; never returns.
pub async fn serve_https_with(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: WebhookState,
    limits: ServeLimits,
) -> Result<(), WebhookError> {
    let acceptor = TlsAcceptor::from(tls);
    accept_forever(listener, limits.max_connections, "webhook", |stream, peer, slot| {
        let (acceptor, state) = (acceptor.clone(), state.clone());
        async move {
            let handshake = acceptor.accept(stream);
            let stream = match tokio::time::timeout(limits.tls_handshake_timeout, handshake).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let service = service_fn(move |request: hyper::Request<Incoming>| {
                slot.busy();
                let state = state.clone();
                async move {
                    Ok::<_, Infallible>(
                        state.handle_within(request, limits.body_read_timeout).await,
                    )
                }
            });
            let connection = http1(&limits).serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(%peer, "connection error: {e}");
            }
        }
    })
    .await;
    Ok(())
}

/// Serves `GET /metrics` over plain HTTP on `listener` with the default [`ServeLimits`]; never
/// returns.
pub async fn serve_metrics(listener: TcpListener, state: WebhookState) -> Result<(), WebhookError> {
    serve_metrics_with(listener, state, ServeLimits::default()).await
}

/// Serves `GET /metrics` over plain HTTP on `listener` within `limits`; never returns.
pub async fn serve_metrics_with(
    listener: TcpListener,
    state: WebhookState,
    limits: ServeLimits,
) -> Result<(), WebhookError> {
    accept_forever(listener, limits.max_connections, "metrics", |stream, peer, slot| {
        let state = state.clone();
        async move {
            let service = service_fn(move |request: hyper::Request<Incoming>| {
                slot.busy();
                let response = state.handle_metrics(&request);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = http1(&limits).serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(%peer, "metrics connection error: {e}");
            }
        }
    })
    .await;
    Ok(())
}
