//! Issue: an API outage, or a watch that silently stops delivering events, must not tear the mesh
//! down. Three `kg` agents with the Kubernetes backend run in network namespaces against the
//! loopback fake API server; each reaches it through a proxy on 127.0.0.1:6443 inside its own
//! namespace, which the test can switch to "down" (every connection closed, new ones refused) or
//! "silent" (connections stay open, nothing is forwarded: a stalled watch). Pods must keep
//! reaching each other across locations for the whole fault, and afterwards.
//!
//! Before the fix (agents judged `last-seen` against the wall clock), the pods of the other
//! location became unreachable about 60 s into either fault.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kilo_backend_k8s::testing::{Collection, FakeApiServer};
use serde_json::json;
use support::{Cluster, MeshSpec, NODES, Process, wait_for};
use tokio::net::{TcpListener, TcpStream};

/// Forward everything.
const PASS: u8 = 0;
/// Close every connection and refuse new ones: the API server is unreachable.
const DOWN: u8 = 1;
/// Keep connections open but forward nothing: the watch goes silent.
const SILENT: u8 = 2;

/// A TCP listener on 127.0.0.1:`port` inside the network namespace `ns` (bound from a thread
/// that enters the namespace; the socket stays in it).
fn listen_in(ns: &str, port: u16) -> Result<std::net::TcpListener> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || -> Result<std::net::TcpListener> {
        let file = std::fs::File::open(&path).with_context(|| path.clone())?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?;
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
}

/// Proxies connections accepted on `listener` to `upstream`, as `mode` says.
async fn proxy(listener: std::net::TcpListener, upstream: SocketAddr, mode: Arc<AtomicU8>) {
    let listener = TcpListener::from_std(listener).expect("tokio listener");
    loop {
        let Ok((mut client, _)) = listener.accept().await else { return };
        let mode = mode.clone();
        tokio::spawn(async move {
            if mode.load(Ordering::Relaxed) == DOWN {
                return;
            }
            let Ok(mut server) = TcpStream::connect(upstream).await else { return };
            let (mut cr, mut cw) = client.split();
            let (mut sr, mut sw) = server.split();
            let copy = async {
                tokio::select! {
                    _ = tokio::io::copy(&mut cr, &mut sw) => {},
                    _ = tokio::io::copy(&mut sr, &mut cw) => {},
                }
            };
            let fault = async {
                loop {
                    let m = mode.load(Ordering::Relaxed);
                    if m != PASS {
                        return m;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            };
            tokio::select! {
                () = copy => {}
                m = fault => {
                    if m == SILENT {
                        // Hold both ends open, forwarding nothing, until the fault ends.
                        while mode.load(Ordering::Relaxed) == SILENT {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        });
    }
}

fn node_object(name: &str, location: &str, wan: &str, lan: &str, pod: u8) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {
                "kilo.squat.ai/location": location,
                "kilo.squat.ai/force-endpoint": format!("{wan}:51820"),
                "kilo.squat.ai/force-internal-ip": lan,
            },
        },
        "spec": {"podCIDR": format!("10.2.{pod}.0/24")},
    })
}

fn start_agent(cluster: &Cluster, name: &str, kubeconfig: &std::path::Path) -> Result<Process> {
    let dir = cluster.dir.path();
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let child = std::process::Command::new("ip")
        .args(["netns", "exec", &cluster.ns(name).name, env!("CARGO_BIN_EXE_kg")])
        .args(["--backend", "kubernetes", "--kubeconfig"])
        .arg(kubeconfig)
        .args(["--hostname", name, "--wireguard", "userspace", "--wireguard-socket-dir"])
        .arg(dir.join(format!("{name}.wg")))
        .args(["--encapsulate", "never", "--cni=false", "--key-file"])
        .arg(dir.join(format!("{name}.key")))
        .args(["--listen", "127.0.0.1:1107", "--log-format", "human", "--resync-period", "5s"])
        // The LAN, not the pod bridge (10.2.N.1/24), carries the private IP.
        .args(["--internal-cidr", "192.168.0.0/16"])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start kg")?;
    Ok(Process { child, what: format!("kg on {name}") })
}

/// Pod to pod across the locations, through the non-leader a2 and the leaders a1 and b1.
const PINGS: [(&str, &str); 3] = [("a2", "10.2.3.1"), ("b1", "10.2.2.1"), ("b1", "10.2.1.1")];

/// Pings across the locations every two seconds for `duration`; the seconds during which some
/// ping failed.
fn outage_seconds(cluster: &Cluster, duration: Duration) -> u64 {
    let start = Instant::now();
    let mut failed = 0;
    while start.elapsed() < duration {
        let round = Instant::now();
        let ok = PINGS.iter().all(|(from, dst)| cluster.ping(from, dst, Duration::from_secs(1)));
        std::thread::sleep(Duration::from_secs(2).saturating_sub(round.elapsed()));
        if !ok {
            failed += round.elapsed().as_secs().max(1);
        }
    }
    failed
}

#[test]
fn an_api_outage_or_a_silent_watch_keeps_the_mesh() -> Result<()> {
    let cluster = Cluster::build(&MeshSpec::new("location"))?;
    let runtime = tokio::runtime::Runtime::new()?;
    let server = runtime.block_on(FakeApiServer::start());
    for (name, location, wan, lan, pod) in NODES {
        server.put(Collection::Nodes, node_object(name, location, wan, lan, pod));
        // Address detection starts from the default route (upstream 9.1); it leads nowhere
        // beyond the test's own WAN bridge.
        cluster.ns(name).ip(&["route", "add", "default", "dev", "wan0"])?;
    }
    let mode = Arc::new(AtomicU8::new(PASS));
    for (name, ..) in NODES {
        let listener = listen_in(&cluster.ns(name).name, 6443)?;
        runtime.spawn(proxy(listener, server.addr, mode.clone()));
    }
    let kubeconfig = cluster.dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\ncurrent-context: test\nclusters:\n- name: test\n  \
         cluster:\n    server: http://127.0.0.1:6443\ncontexts:\n- name: test\n  context:\n    \
         cluster: test\n    user: test\nusers:\n- name: test\n  user: {}\n",
    )?;
    let mut agents = Vec::new();
    for (name, ..) in NODES {
        agents.push(start_agent(&cluster, name, &kubeconfig)?);
    }
    for (name, ..) in NODES {
        cluster.wait_healthy(name)?;
    }
    // The first handshakes take a moment.
    for (from, dst) in PINGS {
        assert!(cluster.ping(from, dst, Duration::from_secs(30)), "{from} -> {dst}");
    }
    let debug = |cluster: &Cluster| {
        let mut out = String::new();
        for (name, ..) in NODES {
            out += &format!(
                "--- {name} routes:\n{}",
                cluster.ns(name).ip(&["route"]).unwrap_or_default()
            );
            out += &format!("--- {name} log:\n{}", cluster.log(name));
        }
        out
    };
    assert_eq!(
        outage_seconds(&cluster, Duration::from_secs(6)),
        0,
        "the mesh works to begin with\n{}",
        debug(&cluster)
    );

    for (round, (fault, what)) in
        [(DOWN, "API outage"), (SILENT, "silent watch")].into_iter().enumerate()
    {
        mode.store(fault, Ordering::Relaxed);
        let lost = outage_seconds(&cluster, Duration::from_secs(90));
        mode.store(PASS, Ordering::Relaxed);
        eprintln!("{what}: {lost} s of failed pings in 90 s");
        assert_eq!(lost, 0, "{what}: pods lost each other; log of a1:\n{}", cluster.log("a1"));
        // The agents notice and say so.
        assert!(
            cluster.log("a2").matches("nothing heard from the mesh source").count() > round,
            "{what}: a2 did not log the silence:\n{}",
            cluster.log("a2")
        );
        // Once the API is back, the mesh keeps working and the agents check in again.
        let before = server.patches().len();
        wait_for(Duration::from_secs(60), || Ok(server.patches().len() > before + 2))
            .with_context(|| format!("after the {what}, no agent checked in again"))?;
        assert_eq!(outage_seconds(&cluster, Duration::from_secs(6)), 0, "after the {what}");
    }
    for mut agent in agents {
        assert!(agent.terminate(Duration::from_secs(20)), "kg exits cleanly");
    }
    Ok(())
}
