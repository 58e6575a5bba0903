//! The HTTP surface on `--listen` (upstream 11): `/metrics`, `/health`, `/graph`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kilo_net_linux::agent::Shared;

/// `/graph` query parameters.
#[derive(Debug, serde::Deserialize)]
pub struct GraphQuery {
    format: Option<String>,
    layout: Option<String>,
}

/// The router.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/graph", get(graph))
        .with_state(shared)
}

async fn index() -> &'static str {
    "kg\n/metrics\n/health\n/graph?format=dot|svg|png&layout=circo|dot|neato|twopi|fdp\n"
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], shared.metrics.encode()).into_response()
}

async fn health(State(shared): State<Arc<Shared>>) -> Response {
    if shared.healthy.load(Ordering::Relaxed) {
        StatusCode::OK.into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no plan applied yet\n").into_response()
    }
}

async fn graph(State(shared): State<Arc<Shared>>, Query(q): Query<GraphQuery>) -> Response {
    let Some(dot) = shared.graph.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
        // Contract C18: upstream panicked here.
        return (StatusCode::SERVICE_UNAVAILABLE, "the local node is not ready; no graph yet\n")
            .into_response();
    };
    let format = q.format.unwrap_or_else(|| "svg".into());
    let layout = q.layout.unwrap_or_else(|| "circo".into());
    if !["circo", "dot", "neato", "twopi", "fdp"].contains(&layout.as_str()) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "unsupported layout\n").into_response();
    }
    let mime = match format.as_str() {
        "dot" | "gv" => return ([(header::CONTENT_TYPE, "text/vnd.graphviz")], dot).into_response(),
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "bmp" => "image/bmp",
        "gif" => "image/gif",
        "json" => "application/json",
        "ps" => "application/postscript",
        "fig" => "application/octet-stream",
        _ => return (StatusCode::INTERNAL_SERVER_ERROR, "unsupported format\n").into_response(),
    };
    match render(&dot, &format, &layout).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, mime)], bytes).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot render the graph");
            (StatusCode::INTERNAL_SERVER_ERROR, "unable to render graph\n").into_response()
        }
    }
}

async fn render(dot: &str, format: &str, layout: &str) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("dot")
        .arg(format!("-K{layout}"))
        .arg(format!("-T{format}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(dot.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    if out.status.success() { Ok(out.stdout) } else { Err(std::io::Error::other("dot failed")) }
}

/// Go-style listen addresses: `:1107` means every address.
pub fn listen_address(listen: &str) -> String {
    if listen.starts_with(':') { format!("0.0.0.0{listen}") } else { listen.to_string() }
}
