//! The webhook cannot be starved (issue: idle connections, slow clients, accept errors, metric
//! labels from the request). Real sockets on 127.0.0.1 only.

mod webhook_support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kilo_backend_k8s::webhook::{ServeLimits, WebhookState};
use kilo_core::Snapshot;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use webhook_support::*;

/// A state whose cluster view has been listed (an empty cluster).
fn listed_state() -> WebhookState {
    let state = WebhookState::new(None);
    state.view.write().unwrap().reset(Snapshot::default());
    state
}

/// Opens `count` TCP connections to `addr` that never send a byte; returns those established.
async fn idle_connections(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut open = Vec::with_capacity(count);
    for _ in 0..count {
        let connect = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr));
        if let Ok(Ok(stream)) = connect.await {
            open.push(stream);
        }
    }
    open
}

/// Posts a valid review until it is answered or `within` has passed; the time it took.
async fn answered_within(
    addr: SocketAddr,
    tls: std::sync::Arc<rustls::ClientConfig>,
    uid: &str,
    within: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        let attempt = async {
            let mut sender = connect_https(addr, tls.clone()).await.ok()?;
            let review = review(uid, "CREATE", "phone", &["10.6.0.1/32"], 5);
            post_review(&mut sender, &review).await.ok()
        };
        if let Ok(Some((status, body))) = tokio::time::timeout(within, attempt).await {
            assert_eq!(status, 200);
            assert_eq!(body["response"], json!({"uid": uid, "allowed": true}));
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eleven_hundred_idle_connections_do_not_keep_a_valid_review_from_being_answered() {
    let cert = cert();
    let state = listed_state();
    // Room for 100 connections, and timeouts far beyond the test's bound: only evicting idle
    // connections can let the review in.
    let long = Duration::from_secs(300);
    let limits = ServeLimits {
        tls_handshake_timeout: long,
        header_read_timeout: long,
        body_read_timeout: long,
        max_connections: 100,
    };
    let addr = start_https_within(&state, &cert, limits).await;
    let idle = idle_connections(addr, 1_100).await;
    eprintln!("{} idle connections established", idle.len());
    assert!(idle.len() >= 1_000, "only {} idle connections", idle.len());
    let tls = client_config(&cert.der);
    let first = answered_within(addr, tls.clone(), "u-1", Duration::from_secs(60)).await;
    eprintln!("a valid review with {} idle connections open: answered after {first:?}", idle.len());
    assert!(first.is_some(), "a valid review was not answered within 60 s");
    let second = answered_within(addr, tls, "u-2", Duration::from_secs(60)).await;
    eprintln!("a second review: answered after {second:?}");
    assert!(second.is_some(), "the server died");
    drop(idle);
}

const CHILD: &str = "child_webhook_server_with_few_file_descriptors";
const CHILD_DIR: &str = "KILO_WEBHOOK_TEST_CHILD_DIR";

/// Not a test: the HTTPS server of
/// `a_webhook_out_of_file_descriptors_keeps_serving`, run in a child process whose file
/// descriptor limit is 128 (so that `accept` fails with EMFILE).
#[tokio::test]
#[ignore = "run by a_webhook_out_of_file_descriptors_keeps_serving in a child process"]
async fn child_webhook_server_with_few_file_descriptors() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else { return };
    let dir = std::path::PathBuf::from(dir);
    let tls =
        kilo_backend_k8s::webhook::tls_config(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("LISTENING {}", listener.local_addr().unwrap());
    let state = listed_state();
    // More connections allowed than descriptors: `accept` runs into EMFILE.
    let limits = limits(1_000);
    let result = kilo_backend_k8s::webhook::serve_https_with(listener, tls, state, limits).await;
    println!("SERVER ENDED {result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_out_of_file_descriptors_keeps_serving() {
    let cert = cert();
    let dir = std::env::temp_dir().join(format!("kilo-webhook-emfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), &cert.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &cert.key_pem).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 128 && exec \"$0\" \"$@\"")
        .arg(&exe)
        .args(["--exact", CHILD, "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr: SocketAddr = loop {
        let line = lines.next().expect("the child prints its address").unwrap();
        // The harness's "test NAME ... " shares the line.
        if let Some((_, addr)) = line.split_once("LISTENING ") {
            break addr.trim().parse().unwrap();
        }
    };
    let output = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());

    let idle = idle_connections(addr, 1_100).await;
    eprintln!("{} idle connections established", idle.len());
    let answered =
        answered_within(addr, client_config(&cert.der), "u-1", Duration::from_secs(60)).await;
    let alive = child.try_wait().unwrap().is_none();
    eprintln!("with a limit of 128 file descriptors: answered after {answered:?}, alive {alive}");
    drop(idle);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let printed = output.join().unwrap();
    assert!(alive, "the server process ended: {printed:?}");
    assert!(answered.is_some(), "a valid review was not answered within 60 s: {printed:?}");
}

/// The number of series and the size of `/metrics`.
async fn metrics_size(addr: SocketAddr) -> (usize, usize, String) {
    let mut sender = connect_http(addr).await.unwrap();
    let (status, _, text) = send(&mut sender, "GET", "/metrics", &[], String::new()).await.unwrap();
    assert_eq!(status, 200);
    let series = text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count();
    (series, text.len(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_requests_with_odd_methods_and_operations_leave_metrics_small() {
    let cert = cert();
    let state = listed_state();
    let addr = start_https(&state, &cert, 100).await;
    let metrics = start_metrics(&state).await;
    let mut sender = connect_https(addr, client_config(&cert.der)).await.unwrap();
    let (status, _) =
        post_review(&mut sender, &review("u-0", "CREATE", "phone", &["10.6.0.1/32"], 5))
            .await
            .unwrap();
    assert_eq!(status, 200);
    let (series_before, bytes_before, _) = metrics_size(metrics).await;
    for i in 0..10_000 {
        let method = format!("M{i}");
        let path = format!("/validate?x={i}");
        let (status, _, _) = send(&mut sender, &method, &path, &[], String::new()).await.unwrap();
        assert_eq!(status, 405, "{method}");
    }
    for i in 0..10_000 {
        let review = review(&format!("u-{i}"), &format!("OP-{i}"), "phone", &["10.6.0.1/32"], 5);
        let (status, _) = post_review(&mut sender, &review).await.unwrap();
        assert_eq!(status, 200);
    }
    let (series_after, bytes_after, text) = metrics_size(metrics).await;
    eprintln!(
        "/metrics before: {series_before} series, {bytes_before} B; after 20,000 odd requests: \
         {series_after} series, {bytes_after} B"
    );
    assert!(series_after <= 12, "{series_after} series:\n{text}");
    assert!(bytes_after <= 2_048, "{bytes_after} B:\n{text}");
}

/// How long until the server closes a connection that stalls after sending `prefix`.
async fn closed_after(mut stream: TcpStream, prefix: &[u8], within: Duration) -> Option<Duration> {
    let start = Instant::now();
    stream.write_all(prefix).await.unwrap();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    closed.ok().map(|()| start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_the_tls_handshake_is_disconnected() {
    let cert = cert();
    let state = listed_state();
    let addr = start_https(&state, &cert, 100).await;
    // Nothing at all, then the first bytes of a TLS record header and nothing more.
    let silent = TcpStream::connect(addr).await.unwrap();
    let silent = closed_after(silent, b"", Duration::from_secs(20)).await;
    let partial = TcpStream::connect(addr).await.unwrap();
    let partial = closed_after(partial, &[0x16, 0x03, 0x01], Duration::from_secs(20)).await;
    eprintln!(
        "silent client closed after {silent:?}; partial ClientHello closed after {partial:?}"
    );
    assert!(silent.is_some(), "a silent client was still connected after 20 s");
    assert!(partial.is_some(), "a partial handshake was still connected after 20 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let cert = cert();
    let state = listed_state();
    let addr = start_https(&state, &cert, 100).await;
    let metrics = start_metrics(&state).await;

    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_config(&cert.der));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let start = Instant::now();
    tls.write_all(b"POST /validate HTTP/1.1\r\nhost: localhost\r\n").await.unwrap();
    tls.flush().await.unwrap();
    let mut buf = [0u8; 4096];
    let https = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|()| start.elapsed());

    let plain = TcpStream::connect(metrics).await.unwrap();
    let plain =
        closed_after(plain, b"GET /metrics HTTP/1.1\r\nhost: x\r\n", Duration::from_secs(20)).await;
    eprintln!("half-sent headers closed after: HTTPS {https:?}, metrics {plain:?}");
    assert!(https.is_some(), "a client stalled in its headers was still connected after 20 s");
    assert!(plain.is_some(), "a metrics client stalled in its headers was connected after 20 s");
}
