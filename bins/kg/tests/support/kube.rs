//! The same hosts as [`Cluster`], with `kg --backend kubernetes` on each node against the
//! loopback fake API server of `kilo-backend-k8s` (feature `test-support`). The server listens on
//! the test's own loopback; each node reaches it through a proxy on 127.0.0.1:6443 inside its
//! namespace, which a test can switch to an unreachable API server or to a silent one
//! ([`ApiPath`]). No packet leaves the namespaces and loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use kilo_backend_k8s::testing::{Collection, FakeApiServer};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

use super::{Cluster, Host, MeshSpec, NODES, Process};

/// What the proxies between the nodes and the API server do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ApiPath {
    /// Forward everything.
    Pass = 0,
    /// Close every connection and refuse new ones: the API server is unreachable.
    Down = 1,
    /// Keep connections open but forward nothing: a watch (and every request) goes silent.
    Silent = 2,
}

/// A mesh of `kg` agents with the Kubernetes backend. Fields drop in order: agents first.
pub struct KubeMesh {
    /// The nodes: [`NODES`] and the extra ones of [`KubeMesh::build_with`].
    pub nodes: Vec<Host>,
    /// One `kg` per node, by node name.
    pub agents: Vec<(&'static str, Process)>,
    /// The hosts.
    pub cluster: Cluster,
    /// The API server.
    pub server: FakeApiServer,
    /// The kubeconfig every agent uses (`http://127.0.0.1:6443`).
    pub kubeconfig: PathBuf,
    path: Arc<AtomicU8>,
    /// Runs the API server and the proxies.
    pub runtime: tokio::runtime::Runtime,
}

impl KubeMesh {
    /// The hosts (each with a default route into the test's own WAN bridge: address detection
    /// starts from it, upstream 9.1), the API server with the three Nodes (location, forced
    /// endpoint and internal IP, pod CIDR) and the proxies; no agent yet.
    pub fn build() -> Result<KubeMesh> {
        KubeMesh::build_with(&[])
    }

    /// [`KubeMesh::build`] with more nodes than [`NODES`] (hosts on the same WAN and LANs).
    pub fn build_with(extra: &[Host]) -> Result<KubeMesh> {
        let mut cluster = Cluster::build(&MeshSpec::new("location"))?;
        for host in extra {
            cluster.add_host(*host)?;
        }
        let nodes: Vec<Host> = NODES.iter().chain(extra).copied().collect();
        let runtime = tokio::runtime::Runtime::new()?;
        let server = runtime.block_on(FakeApiServer::start());
        let path = Arc::new(AtomicU8::new(ApiPath::Pass as u8));
        for &(name, location, wan, lan, pod) in &nodes {
            server.put(Collection::Nodes, node_object(name, location, wan, lan, pod));
            cluster.ns(name).ip(&[
                "route",
                "add",
                "default",
                "via",
                "203.0.113.1",
                "dev",
                "wan0",
            ])?;
            let listener = listen_in(&cluster.ns(name).name, 6443)?;
            runtime.spawn(proxy(listener, server.addr, path.clone()));
        }
        let kubeconfig = cluster.dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            "apiVersion: v1\nkind: Config\ncurrent-context: test\nclusters:\n- name: test\n  \
             cluster:\n    server: http://127.0.0.1:6443\ncontexts:\n- name: test\n  context:\n    \
             cluster: test\n    user: test\nusers:\n- name: test\n  user: {}\n",
        )?;
        Ok(KubeMesh { nodes, agents: Vec::new(), cluster, server, kubeconfig, path, runtime })
    }

    /// Starts `kg` on every node and waits for every `/health`.
    pub fn start_agents(&mut self) -> Result<()> {
        for (name, ..) in self.nodes.clone() {
            let agent = self.start_agent(name)?;
            self.agents.push((name, agent));
        }
        for &(name, ..) in &self.nodes {
            self.cluster.wait_healthy(name)?;
        }
        Ok(())
    }

    fn start_agent(&self, name: &str) -> Result<Process> {
        let dir = self.cluster.dir.path();
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", &self.cluster.ns(name).name, env!("CARGO_BIN_EXE_kg")])
            .args(["--backend", "kubernetes", "--kubeconfig"])
            .arg(&self.kubeconfig)
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

    /// The agent of node `name`.
    pub fn agent(&mut self, name: &str) -> &mut Process {
        &mut self.agents.iter_mut().find(|(n, _)| *n == name).expect("no such agent").1
    }

    /// Switches what the proxies do.
    pub fn set_api_path(&self, path: ApiPath) {
        self.path.store(path as u8, Ordering::Relaxed);
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

/// Proxies connections accepted on `listener` to `upstream`, as `path` says.
async fn proxy(listener: std::net::TcpListener, upstream: SocketAddr, path: Arc<AtomicU8>) {
    let listener = TcpListener::from_std(listener).expect("tokio listener");
    let pass = ApiPath::Pass as u8;
    loop {
        let Ok((mut client, _)) = listener.accept().await else { return };
        let path = path.clone();
        tokio::spawn(async move {
            if path.load(Ordering::Relaxed) == ApiPath::Down as u8 {
                return;
            }
            let Ok(mut server) = TcpStream::connect(upstream).await else { return };
            let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
            let fault = async {
                loop {
                    let p = path.load(Ordering::Relaxed);
                    if p != pass {
                        return p;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            };
            tokio::select! {
                _ = copy => {}
                p = fault => {
                    // Down: drop both ends. Silent: hold them open, forwarding nothing, until
                    // the fault ends.
                    while p == ApiPath::Silent as u8 && path.load(Ordering::Relaxed) == p {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }
}
