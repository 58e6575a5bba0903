//! Shared helpers of the webhook socket tests: a self-signed certificate, an HTTPS client on
//! 127.0.0.1, AdmissionReview bodies and the servers started on free loopback ports.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use kilo_backend_k8s::webhook::{
    ServeLimits, WebhookState, serve_https_with, serve_metrics_with, tls_config_from,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::{Value, json};

/// A self-signed certificate for `localhost`: (certificate, PKCS#8 key, PEM certificate, PEM key).
pub struct Cert {
    pub der: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn cert() -> Cert {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let der = generated.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der()));
    Cert {
        der,
        key,
        cert_pem: generated.cert.pem(),
        key_pem: generated.signing_key.serialize_pem(),
    }
}

pub fn client_config(cert: &CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// An HTTP/1.1 connection over TLS to `addr`.
pub async fn connect_https(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> std::io::Result<SendRequest<Full<Bytes>>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(tls);
    let stream = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    Ok(sender)
}

/// A plain HTTP/1.1 connection to `addr`.
pub async fn connect_http(addr: SocketAddr) -> std::io::Result<SendRequest<Full<Bytes>>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Sends one request; (status, content type, body).
pub async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: String,
) -> Result<(u16, String, String), hyper::Error> {
    let mut request = http::Request::builder()
        .method(http::Method::from_bytes(method.as_bytes()).unwrap())
        .uri(path)
        .header("host", "localhost");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body))).unwrap();
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, content_type, String::from_utf8_lossy(&bytes).into_owned()))
}

/// `POST /validate` with an AdmissionReview; (status, parsed body).
pub async fn post_review(
    sender: &mut SendRequest<Full<Bytes>>,
    review: &Value,
) -> Result<(u16, Value), hyper::Error> {
    let headers = [("content-type", "application/json")];
    let (status, _, body) = send(sender, "POST", "/validate", &headers, review.to_string()).await?;
    Ok((status, serde_json::from_str(&body).unwrap_or(Value::String(body))))
}

/// An AdmissionReview of a Peer.
pub fn review(uid: &str, operation: &str, name: &str, allowed_ips: &[&str], key: u8) -> Value {
    let public_key = kilo_core::Key::from_bytes([key; 32]).to_base64();
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "operation": operation, "name": name,
            "kind": {"group": "kilo.squat.ai", "version": "v1alpha1", "kind": "Peer"},
            "object": {
                "apiVersion": "kilo.squat.ai/v1alpha1", "kind": "Peer",
                "metadata": {"name": name},
                "spec": {"allowedIPs": allowed_ips, "publicKey": public_key},
            },
        },
    })
}

/// The timeouts the socket tests use (short, so that a test sees a slow client dropped).
pub const SHORT: Duration = Duration::from_secs(1);

/// Limits with [`SHORT`] timeouts and at most `max_connections` connections.
pub fn limits(max_connections: usize) -> ServeLimits {
    ServeLimits {
        tls_handshake_timeout: SHORT,
        header_read_timeout: SHORT,
        body_read_timeout: SHORT,
        max_connections,
    }
}

/// Starts the HTTPS server on a free loopback port, with [`limits`].
pub async fn start_https(state: &WebhookState, cert: &Cert, max_connections: usize) -> SocketAddr {
    start_https_within(state, cert, limits(max_connections)).await
}

/// Starts the HTTPS server on a free loopback port, within `limits`.
pub async fn start_https_within(
    state: &WebhookState,
    cert: &Cert,
    limits: ServeLimits,
) -> SocketAddr {
    let tls = tls_config_from(vec![cert.der.clone()], cert.key.clone_key()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_https_with(listener, tls, state.clone(), limits));
    addr
}

/// Starts the metrics server on a free loopback port, with [`limits`] of 100 connections.
pub async fn start_metrics(state: &WebhookState) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_metrics_with(listener, state.clone(), limits(100)));
    addr
}
