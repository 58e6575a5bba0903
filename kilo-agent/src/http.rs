//! The HTTP surface on `--listen` (upstream 11): `/metrics`, `/health`, `/graph`.

use std::sync::Arc;

use crate::graph::{RenderError, Renderer};
use crate::metrics::{Exposition, Shared};
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// `/graph` query parameters.
#[derive(Debug, serde::Deserialize)]
pub struct GraphQuery {
    format: Option<String>,
    layout: Option<String>,
}

/// The router: `/`, `/metrics`, `/health` and `/graph` over the agent's [`Shared`] state.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/graph", get(graph).with_state(GraphState::new(shared.clone())))
        .with_state(shared)
}

async fn index() -> &'static str {
    "kg\n/metrics\n/health\n/graph?format=dot|svg|png&layout=circo|dot|neato|twopi|fdp\n"
}

/// `/metrics`: Prometheus text 0.0.4, or OpenMetrics when the scraper's `Accept` asks for it;
/// the content type says which.
async fn metrics(State(shared): State<Arc<Shared>>, headers: axum::http::HeaderMap) -> Response {
    shared.refresh_device().await;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Exposition::negotiate(accept);
    ([(header::CONTENT_TYPE, format.content_type())], shared.metrics.encode_as(format))
        .into_response()
}

async fn health(State(shared): State<Arc<Shared>>) -> Response {
    match shared.health() {
        Ok(()) => StatusCode::OK.into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
    }
}

/// What `/graph` needs: the agent's mesh and the one `dot` runner (see [`crate::graph`]).
#[derive(Debug, Clone)]
pub struct GraphState {
    shared: Arc<Shared>,
    renderer: Arc<Renderer>,
}

impl GraphState {
    /// Renders with `dot` from `PATH`.
    pub fn new(shared: Arc<Shared>) -> GraphState {
        GraphState { shared, renderer: Arc::new(Renderer::new("dot")) }
    }
}

async fn graph(
    State(GraphState { shared, renderer }): State<GraphState>,
    Query(q): Query<GraphQuery>,
) -> Response {
    let Some(dot) = tokio::task::spawn_blocking(move || shared.graph()).await.ok().flatten() else {
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
        "dot" | "gv" => {
            return ([(header::CONTENT_TYPE, "text/vnd.graphviz")], dot).into_response();
        }
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "bmp" => "image/bmp",
        "gif" => "image/gif",
        "json" => "application/json",
        "ps" => "application/postscript",
        "fig" => "application/octet-stream",
        _ => return (StatusCode::INTERNAL_SERVER_ERROR, "unsupported format\n").into_response(),
    };
    // Dropped (and `dot` killed) when the client goes away.
    match renderer.render(&dot, &format, &layout).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, mime)], bytes).into_response(),
        Err(RenderError::Busy) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "another graph is being rendered; try again\n",
        )
            .into_response(),
        Err(e @ RenderError::TimedOut(_)) => {
            tracing::warn!(error = %e, "cannot render the graph");
            (StatusCode::SERVICE_UNAVAILABLE, "rendering the graph took too long\n").into_response()
        }
        // What to do, rather than upstream's bare "unable to render graph".
        Err(e @ RenderError::NotInstalled(_)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot render the graph");
            (StatusCode::INTERNAL_SERVER_ERROR, "unable to render graph\n").into_response()
        }
    }
}

/// Go-style listen addresses as one socket address (the webhook's): `:1107` means every address,
/// `[::]:1107` (which also takes IPv4 under Linux's default `net.ipv6.bindv6only=0`), or
/// `0.0.0.0:1107` on a host without IPv6. [`bind`] does the same for the agent, whatever the
/// sysctl says.
pub fn listen_address(listen: &str) -> String {
    if !listen.starts_with(':') {
        return listen.to_string();
    }
    let ipv6 = std::net::TcpListener::bind((std::net::Ipv6Addr::UNSPECIFIED, 0)).is_ok();
    if ipv6 { format!("[::]{listen}") } else { format!("0.0.0.0{listen}") }
}

/// Binds `--listen` as Go's `net.Listen("tcp", addr)` does: an address without a host
/// (`:1107`) listens on every IPv4 and IPv6 address (one IPv6 socket with `IPV6_V6ONLY` off),
/// or on every IPv4 address when this host has no IPv6.
pub fn bind(listen: &str) -> std::io::Result<tokio::net::TcpListener> {
    let listener = match listen.strip_prefix(':') {
        Some(port) => {
            let port: u16 = port.parse().map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{port:?} is not a port number"),
                )
            })?;
            match bind_dual_stack(port) {
                Ok(listener) => listener,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::AddrInUse | std::io::ErrorKind::PermissionDenied
                    ) =>
                {
                    return Err(e);
                }
                Err(_) => std::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, port))?,
            }
        }
        None => std::net::TcpListener::bind(listen)?,
    };
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

/// One listening IPv6 socket on `[::]:port` that also accepts IPv4 (`IPV6_V6ONLY` off, whatever
/// `net.ipv6.bindv6only` says).
fn bind_dual_stack(port: u16) -> std::io::Result<std::net::TcpListener> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrIn6, bind, listen, setsockopt, socket,
        sockopt,
    };
    let fd = socket(AddressFamily::Inet6, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    setsockopt(&fd, sockopt::Ipv6V6Only, &false)?;
    let address = std::net::SocketAddrV6::new(std::net::Ipv6Addr::UNSPECIFIED, port, 0, 0);
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn6::from(address))?;
    listen(&fd, Backlog::new(1024).unwrap_or(Backlog::MAXCONN))?;
    Ok(std::net::TcpListener::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connects to `address` and reports whether the connection was accepted.
    async fn connects(listener: &tokio::net::TcpListener, address: std::net::SocketAddr) -> bool {
        let connect = tokio::net::TcpStream::connect(address);
        let accept = listener.accept();
        matches!(tokio::join!(connect, accept), (Ok(_), Ok(_)))
    }

    #[tokio::test]
    async fn a_listen_address_without_host_accepts_ipv4_and_ipv6() {
        // A free port: bind one, drop it, and listen there.
        let port = std::net::TcpListener::bind("[::]:0")
            .or_else(|_| std::net::TcpListener::bind("0.0.0.0:0"))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let listener = bind(&format!(":{port}")).expect("binds");
        let ipv6_here = std::net::UdpSocket::bind("[::1]:0").is_ok();
        assert!(connects(&listener, ([127, 0, 0, 1], port).into()).await, "IPv4");
        if ipv6_here {
            let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
            assert!(connects(&listener, v6).await, "IPv6");
        }
    }

    #[tokio::test]
    async fn a_listen_address_with_a_host_listens_there_only() {
        let listener = bind("127.0.0.1:0").expect("binds");
        let address = listener.local_addr().expect("address");
        assert_eq!(address.ip(), std::net::Ipv4Addr::LOCALHOST);
        assert!(connects(&listener, address).await);
    }

    /// `GET path` on `address` with `accept` as the Accept header: the content type and body.
    async fn get(
        address: std::net::SocketAddr,
        path: &str,
        accept: Option<&str>,
    ) -> (String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(address).await.expect("connects");
        let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: kg\r\n{accept}Connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("request sent");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("response read");
        let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let content_type = head
            .lines()
            .find_map(|l| l.strip_prefix("content-type: "))
            .expect("a content type")
            .to_string();
        (content_type, body.to_string())
    }

    /// A virtualenv with Prometheus' Python client, whose parsers check the exposition formats.
    fn prometheus_python() -> std::path::PathBuf {
        const PACKAGE: &str = "prometheus-client==0.26.0";
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache")))
            .expect("HOME or XDG_CACHE_HOME");
        let venv = cache.join("kilo-rs/prometheus-client-venv");
        let python = venv.join("bin/python");
        let ready = std::process::Command::new(&python)
            .args(["-c", "import importlib.metadata as m, sys; sys.exit(m.version('prometheus-client') != '0.26.0')"])
            .status()
            .is_ok_and(|s| s.success());
        if !ready {
            let run = |program: &std::path::Path, args: &[&str]| {
                let status = std::process::Command::new(program).args(args).status();
                assert!(
                    status.is_ok_and(|s| s.success()),
                    "{} {args:?} failed: this test needs python3 with venv and PyPI's {PACKAGE}",
                    program.display()
                );
            };
            run(std::path::Path::new("python3"), &["-m", "venv", &venv.to_string_lossy()]);
            run(
                &venv.join("bin/pip"),
                &["install", "--quiet", "--disable-pip-version-check", PACKAGE],
            );
        }
        python
    }

    /// Parses `body` with the Python client's parser for `format` (`prometheus` or
    /// `openmetrics`): each family's name and type, and its samples' names; a parse error panics.
    fn parse_with_prometheus_client(
        format: &str,
        body: &str,
    ) -> Vec<(String, String, Vec<String>)> {
        use std::io::Write;
        const SCRIPT: &str = r#"
import json, sys
if sys.argv[1] == "openmetrics":
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
else:
    from prometheus_client.parser import text_string_to_metric_families
families = [[f.name, f.type, sorted({s.name for s in f.samples})]
            for f in text_string_to_metric_families(sys.stdin.read())]
print(json.dumps(families))
"#;
        let mut child = std::process::Command::new(prometheus_python())
            .args(["-c", SCRIPT, format])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python runs");
        child.stdin.take().expect("stdin").write_all(body.as_bytes()).expect("body written");
        let out = child.wait_with_output().expect("python ends");
        assert!(
            out.status.success(),
            "the {format} parser rejects the body: {}\n{body}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("the script's JSON")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metrics_are_prometheus_text_by_default_and_openmetrics_when_asked() {
        let shared = Shared::new();
        shared.metrics.error("run");
        shared.metrics.reconciles.inc();
        shared.metrics.leader.set(1);
        shared.metrics.reconcile_duration.observe(0.01);
        let listener = bind("127.0.0.1:0").expect("binds");
        let address = listener.local_addr().expect("address");
        tokio::spawn(axum::serve(listener, router(shared)).into_future());

        let (content_type, body) = get(address, "/metrics", None).await;
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        let families = parse_with_prometheus_client("prometheus", &body);
        // The parser calls samples it cannot place in a typed family `unknown`.
        let untyped: Vec<_> = families.iter().filter(|(_, kind, _)| kind == "unknown").collect();
        assert!(untyped.is_empty(), "samples outside their family: {untyped:?}\n{body}");
        let kind = |name: &str| {
            families
                .iter()
                .find(|(n, ..)| n == name)
                .map(|(_, kind, samples)| (kind.as_str(), samples.clone()))
                .unwrap_or_else(|| panic!("no family {name} in {families:?}"))
        };
        // The Python client names counters without `_total`, as OpenMetrics.
        assert_eq!(kind("kilo_errors"), ("counter", vec!["kilo_errors_total".to_string()]));
        assert_eq!(kind("kilo_reconciles"), ("counter", vec!["kilo_reconciles_total".to_string()]));
        assert_eq!(kind("kilo_leader"), ("gauge", vec!["kilo_leader".to_string()]));
        assert_eq!(kind("kilo_reconcile_duration_seconds").0, "histogram");
        assert_eq!(
            kind("process_cpu_seconds"),
            ("counter", vec!["process_cpu_seconds_total".to_string()])
        );
        for gauge in [
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            assert_eq!(kind(gauge), ("gauge", vec![gauge.to_string()]));
        }

        // What Prometheus itself sends.
        let prometheus_accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let (content_type, body) = get(address, "/metrics", Some(prometheus_accept)).await;
        assert_eq!(content_type, "application/openmetrics-text; version=1.0.0; charset=utf-8");
        assert!(body.ends_with("# EOF\n"));
        let open = parse_with_prometheus_client("openmetrics", &body);
        let names: Vec<&str> = open.iter().map(|(n, ..)| n.as_str()).collect();
        let plain: Vec<&str> = families.iter().map(|(n, ..)| n.as_str()).collect();
        assert_eq!(names, plain, "the same families in both formats");
    }

    #[test]
    fn the_webhooks_listen_address_without_host_is_every_address() {
        let ipv6 = std::net::TcpListener::bind("[::]:0").is_ok();
        let every = if ipv6 { "[::]:8443" } else { "0.0.0.0:8443" };
        assert_eq!(listen_address(":8443"), every);
        assert_eq!(listen_address("127.0.0.1:8443"), "127.0.0.1:8443");
        assert!(listen_address(":8443").parse::<std::net::SocketAddr>().is_ok());
    }

    #[test]
    fn a_bad_port_is_named() {
        let e = bind(":http").expect_err("not a port");
        assert_eq!(e.to_string(), "\"http\" is not a port number");
    }
}
