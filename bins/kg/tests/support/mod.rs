//! The end-to-end harness: real hosts as network namespaces, one `kg` per node, an external
//! peer running a userspace WireGuard daemon, and guards that tear everything down (agents with
//! SIGTERM then SIGKILL, the peer daemon, namespaces, temporary files) even when a test panics.
//!
//! Layout of one cluster (`kilo-e2e-<pid>-<cluster><name>` namespaces):
//!
//! - `wan`: a bridge, the "internet" 203.0.113.0/24;
//! - `lana`, `lanb`: the LAN bridges of locations `a` (192.168.1.0/24) and `b` (192.168.2.0/24);
//! - nodes `a1`, `a2` (location `a`) and `b1` (location `b`): `wan0` on the WAN, `lan0` on their
//!   LAN, a `pods` bridge with 10.2.N.1/24 (the "pod"), `net.ipv4.ip_forward=1`;
//! - `peer`: the external peer `laptop`, `wan0` 203.0.113.100/24, `wg0` 10.5.0.1/32.
//!
//! A [`Family::Dual`] cluster adds IPv6 beside every IPv4 address of the LANs, pods and peer
//! (`fd00:1::11/64` on `a1`'s LAN, `fd02:1::1/64` on its pods, `fd05::1/128` on the peer's
//! `wg0`) over the same IPv4 WAN; a [`Family::Ipv6`] cluster has IPv6 only, its WAN included
//! (`2001:db8::11/64`).
//!
//! No packet leaves these namespaces.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

pub mod kube;
mod root;

pub use root::skip_unless_root;

/// A node's host: name, location, WAN address, LAN address with its mask, pod subnet number.
pub type Host = (&'static str, &'static str, &'static str, &'static str, u8);

/// The nodes.
pub const NODES: [Host; 3] = [
    ("a1", "a", "203.0.113.11", "192.168.1.11/24", 1),
    ("a2", "a", "203.0.113.12", "192.168.1.12/24", 2),
    ("b1", "b", "203.0.113.21", "192.168.2.21/24", 3),
];

/// The peer's WAN address.
pub const PEER_WAN: &str = "203.0.113.100";

fn run(cmd: &str, args: &[&str]) -> Result<Output> {
    Command::new(cmd).args(args).output().with_context(|| format!("cannot run {cmd}"))
}

/// Runs a command and returns its stdout; an error with its stderr when it fails.
pub fn sh(cmd: &str, args: &[&str]) -> Result<String> {
    let out = run(cmd, args)?;
    ensure!(
        out.status.success(),
        "{cmd} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Panics when not root: a test that builds a cluster without first skipping
/// ([`skip_unless_root`]) for a developer who is not root fails loudly.
fn require_root() {
    let uid = sh("id", &["-u"]).expect("id -u");
    assert_eq!(uid.trim(), "0", "the e2e tests create network namespaces: run them as root");
}

fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_kg")).parent().expect("kg sits in a directory").to_path_buf()
}

fn cargo_build(args: &[&str]) {
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--manifest-path",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml"),
        ])
        .args(args)
        .status()
        .expect("cannot run cargo");
    assert!(status.success(), "cargo build {args:?} failed");
}

/// `kgctl`, built if missing.
pub fn kgctl() -> &'static Path {
    static KGCTL: OnceLock<PathBuf> = OnceLock::new();
    KGCTL.get_or_init(|| {
        let path = target_dir().join("kgctl");
        if !path.exists() {
            cargo_build(&["-p", "kgctl"]);
        }
        path
    })
}

/// The userspace WireGuard daemon for the peer (`kilo-net-linux/examples/wg_userspace.rs`).
pub fn wg_userspace() -> &'static Path {
    static WGU: OnceLock<PathBuf> = OnceLock::new();
    WGU.get_or_init(|| {
        let path = target_dir().join("examples").join("wg_userspace");
        if !path.exists() {
            cargo_build(&["-p", "kilo-net-linux", "--example", "wg_userspace"]);
        }
        path
    })
}

fn kgctl_run(args: &[&str], stdin: Option<&str>) -> Result<String> {
    use std::io::Write;
    let mut child = Command::new(kgctl())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run kgctl")?;
    let mut input = child.stdin.take().context("kgctl stdin")?;
    input.write_all(stdin.unwrap_or("").as_bytes())?;
    drop(input);
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "kgctl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A private and public key made by `kgctl genkey` / `kgctl pubkey`.
pub struct KeyPair {
    /// Base64 private key.
    pub private: String,
    /// Base64 public key.
    pub public: String,
}

fn keypair() -> Result<KeyPair> {
    let private = kgctl_run(&["genkey"], None)?.trim().to_string();
    let public = kgctl_run(&["pubkey"], Some(&private))?.trim().to_string();
    Ok(KeyPair { private, public })
}

/// A network namespace, deleted on drop.
pub struct Netns {
    /// Its name.
    pub name: String,
}

impl Netns {
    /// Creates namespace `name` with its loopback up.
    pub fn new(name: String) -> Result<Netns> {
        sh("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        // IPv6 addresses usable at once (no duplicate address detection); a kernel without IPv6
        // has no such setting.
        let _ = ns.exec(&[
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ]);
        Ok(ns)
    }

    /// `ip -n NS ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        sh("ip", &all)
    }

    /// `ip netns exec NS ARGS`, its output whatever the exit status.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        let mut all = vec!["netns", "exec", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// `ip netns exec NS ARGS`, stdout; an error when it fails.
    pub fn exec_ok(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["netns", "exec", self.name.as_str()];
        all.extend_from_slice(args);
        sh("ip", &all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// A child process stopped on drop: SIGTERM, then SIGKILL after five seconds.
pub struct Process {
    /// The process.
    pub child: Child,
    /// What it is, for messages.
    pub what: String,
}

impl Process {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit; SIGKILL after that. Returns whether
    /// it exited by itself, with success.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status.success();
        }
        let _ = run("kill", &["-TERM", &self.child.id().to_string()]);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(5));
    }
}

/// The address families of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4 only (the default).
    Ipv4,
    /// IPv4 and IPv6 LANs, pods, WireGuard ranges and peer, over an IPv4 WAN.
    Dual,
    /// IPv6 only, the WAN included.
    Ipv6,
}

impl Family {
    /// Whether the cluster's pods have IPv4 addresses.
    pub fn v4(self) -> bool {
        self != Family::Ipv6
    }

    /// Whether the cluster's pods have IPv6 addresses.
    pub fn v6(self) -> bool {
        self != Family::Ipv4
    }
}

/// The IPv6 twin of an IPv4 address of the harness (`192.168.1.11/24` → `fd00:1::11/64`,
/// `10.2.3.1` → `fd02:3::1`, `203.0.113.21` → `2001:db8::21`).
pub fn v6_of(v4: &str) -> String {
    let (addr, prefix) = v4.split_once('/').map_or((v4, None), |(a, p)| (a, Some(p)));
    let o: Vec<&str> = addr.split('.').collect();
    let twin = match (o[0], o[1]) {
        ("192", "168") => format!("fd00:{}::{}", o[2], o[3]),
        ("10", second) => format!("fd{second:0>2}:{}::{}", o[2], o[3]),
        _ => format!("2001:db8::{}", o[3]),
    };
    match prefix {
        Some("32") => format!("{twin}/128"),
        Some(_) => format!("{twin}/64"),
        None => twin,
    }
}

/// The mesh file's variable parts.
#[derive(Debug, Clone)]
pub struct MeshSpec {
    /// `[mesh] granularity`.
    pub granularity: &'static str,
    /// The address families.
    pub family: Family,
    /// The node of location `a` with `leader = true`.
    pub leader: &'static str,
    /// Nodes left out of the file.
    pub removed: Vec<&'static str>,
    /// Nodes written without an endpoint (they dial out: `persistent-keepalive = 5`).
    pub dial_out: Vec<&'static str>,
}

impl MeshSpec {
    /// All nodes, `a1` leads location `a`.
    pub fn new(granularity: &'static str) -> MeshSpec {
        MeshSpec {
            granularity,
            family: Family::Ipv4,
            leader: "a1",
            removed: Vec::new(),
            dial_out: Vec::new(),
        }
    }
}

static CLUSTERS: AtomicU32 = AtomicU32::new(0);

/// One cluster: hosts, agents, peer. Fields drop in order: agents first, then the peer, then
/// the namespaces, then the files.
pub struct Cluster {
    /// One `kg` per node, by node name.
    pub agents: Vec<(String, Process)>,
    /// The peer's WireGuard daemon.
    pub peer_daemon: Option<Process>,
    /// Namespaces by short name (`wan`, `lana`, `lanb`, `a1`, `a2`, `b1`, `peer`).
    pub namespaces: Vec<(String, Netns)>,
    keys: Vec<(String, KeyPair)>,
    /// The prefix of the namespaces' names.
    prefix: String,
    /// The mesh file.
    pub mesh: PathBuf,
    /// The temporary directory of keys, logs and sockets.
    pub dir: tempfile::TempDir,
    /// The address families.
    pub family: Family,
}

impl Cluster {
    /// The namespace prefix of this process's clusters.
    pub fn prefix() -> String {
        format!("kilo-e2e-{}-", std::process::id())
    }

    /// Builds the hosts and the mesh file, starts every agent and the peer, and waits for every
    /// agent's `/health`.
    pub fn start(spec: &MeshSpec) -> Result<Cluster> {
        let mut cluster = Cluster::build(spec)?;
        for (name, ..) in NODES {
            cluster.start_agent(name)?;
        }
        cluster.start_peer()?;
        for (name, ..) in NODES {
            cluster.wait_healthy(name)?;
        }
        Ok(cluster)
    }

    /// Builds the hosts and writes the mesh file; starts nothing.
    pub fn build(spec: &MeshSpec) -> Result<Cluster> {
        require_root();
        let index = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        let dir = tempfile::Builder::new().prefix("kilo-e2e-").tempdir()?;
        std::fs::create_dir(dir.path().join("mesh"))?;
        let mesh = dir.path().join("mesh").join("mesh.toml");
        let mut cluster = Cluster {
            agents: Vec::new(),
            peer_daemon: None,
            namespaces: Vec::new(),
            keys: Vec::new(),
            prefix: format!("{}{index}", Cluster::prefix()),
            mesh,
            dir,
            family: spec.family,
        };
        let prefix = cluster.prefix.clone();
        for hub in ["wan", "lana", "lanb"] {
            let ns = Netns::new(format!("{prefix}{hub}"))?;
            ns.ip(&["link", "add", "br0", "type", "bridge"])?;
            ns.ip(&["link", "set", "br0", "up"])?;
            cluster.namespaces.push((hub.to_string(), ns));
        }
        for host in NODES {
            cluster.add_host(host)?;
        }
        cluster.namespaces.push(("peer".into(), Netns::new(format!("{prefix}peer"))?));
        let peer_wan = cluster.wan(PEER_WAN);
        cluster.plug("peer", "wan0", "wan", &format!("{peer_wan}/{}", cluster.wan_prefix()))?;
        cluster.keys.push(("laptop".into(), keypair()?));
        cluster.write_mesh(spec)?;
        Ok(cluster)
    }

    /// Adds a node's host: its namespace (forwarding on), its WAN and LAN links, its pod bridge
    /// (`10.2.POD.1/24`) and its key file. Only `NODES` are in the mesh file.
    pub fn add_host(&mut self, (name, location, wan, lan, pod): Host) -> Result<()> {
        let cluster = self;
        {
            let ns = Netns::new(format!("{}{name}", cluster.prefix))?;
            ns.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
            if cluster.family.v6() {
                ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
            }
            cluster.namespaces.push((name.to_string(), ns));
            let wan = format!("{}/{}", cluster.wan(wan), cluster.wan_prefix());
            cluster.plug(name, "wan0", "wan", &wan)?;
            let hub = format!("lan{location}");
            if cluster.family.v4() {
                cluster.plug(name, "lan0", &hub, lan)?;
            }
            if cluster.family.v6() {
                let lan0 = if cluster.family.v4() { None } else { Some(v6_of(lan)) };
                match lan0 {
                    Some(first) => cluster.plug(name, "lan0", &hub, &first)?,
                    None => {
                        cluster.ns(name).ip(&["addr", "add", &v6_of(lan), "dev", "lan0"])?;
                    }
                }
            }
            let ns = cluster.ns(name);
            ns.ip(&["link", "add", "pods", "type", "bridge"])?;
            for pod_ip in cluster.pod_ips(pod) {
                let prefix = if pod_ip.contains(':') { 64 } else { 24 };
                ns.ip(&["addr", "add", &format!("{pod_ip}/{prefix}"), "dev", "pods"])?;
            }
            ns.ip(&["link", "set", "pods", "up"])?;
            let keys = keypair()?;
            let key_file = cluster.dir.path().join(format!("{name}.key"));
            write_private(&key_file, &keys.private)?;
            cluster.keys.push((name.to_string(), keys));
        }
        Ok(())
    }

    /// A veth `iface` from namespace `from`, its other end in bridge `br0` of namespace `hub`.
    fn plug(&self, from: &str, iface: &str, hub: &str, address: &str) -> Result<()> {
        let (ns, hub_ns) = (self.ns(from), self.ns(hub));
        let outer = format!("{from}-{iface}");
        ns.ip(&[
            "link",
            "add",
            iface,
            "type",
            "veth",
            "peer",
            "name",
            &outer,
            "netns",
            &hub_ns.name,
        ])?;
        hub_ns.ip(&["link", "set", &outer, "master", "br0", "up"])?;
        ns.ip(&["addr", "add", address, "dev", iface])?;
        ns.ip(&["link", "set", iface, "up"])?;
        Ok(())
    }

    /// The namespace called `name` (`a1`, `wan`, `peer`, ...).
    pub fn ns(&self, name: &str) -> &Netns {
        &self.namespaces.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name}")).1
    }

    fn key(&self, name: &str) -> &KeyPair {
        &self.keys.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no key {name}")).1
    }

    /// Writes the mesh file for `spec` (a new file renamed over the old one).
    pub fn write_mesh(&self, spec: &MeshSpec) -> Result<()> {
        let mut toml = format!("[mesh]\ngranularity = \"{}\"\n", spec.granularity);
        let f = self.family;
        let list = |v4: String| -> String {
            match f {
                Family::Ipv4 => format!("\"{v4}\""),
                Family::Dual => format!("[\"{v4}\", \"{}\"]", v6_of(&v4)),
                Family::Ipv6 => format!("\"{}\"", v6_of(&v4)),
            }
        };
        if f != Family::Ipv4 {
            toml +=
                &format!("subnet = {}\n", list("10.4.0.0/16".into()).replace(":0::0/64", "::/64"));
        }
        for (name, location, wan, lan, pod) in NODES {
            if spec.removed.contains(&name) {
                continue;
            }
            let endpoint = match f {
                Family::Ipv6 => format!("[{}]:51820", self.wan(wan)),
                _ => format!("{wan}:51820"),
            };
            let endpoint = if spec.dial_out.contains(&name) {
                "persistent-keepalive = 5".to_string()
            } else {
                format!("endpoint = \"{endpoint}\"")
            };
            toml += &format!(
                "\n[[node]]\nname = \"{name}\"\npublic-key = \"{}\"\n{endpoint}\n\
                 location = \"{location}\"\ninternal-ip = {}\nsubnet = {}\n",
                self.key(name).public,
                list(lan.to_string()),
                list(format!("10.2.{pod}.0/24"))
                    .replace(&format!(":{pod}::0/64"), &format!(":{pod}::/64")),
            );
            if name == spec.leader {
                toml += "leader = true\n";
            }
        }
        let peer_wan = match f {
            Family::Ipv6 => format!("[{}]", self.wan(PEER_WAN)),
            _ => PEER_WAN.to_string(),
        };
        let peer_ips = match f {
            Family::Ipv4 => "\"10.5.0.1/32\"".to_string(),
            Family::Dual => "\"10.5.0.1/32\", \"fd05::1/128\"".to_string(),
            Family::Ipv6 => "\"fd05::1/128\"".to_string(),
        };
        toml += &format!(
            "\n[[peer]]\nname = \"laptop\"\npublic-key = \"{}\"\nallowed-ips = [{peer_ips}]\n\
             endpoint = \"{peer_wan}:51820\"\n",
            self.key("laptop").public
        );
        let tmp = self.dir.path().join("mesh.toml.new");
        std::fs::write(&tmp, toml)?;
        std::fs::rename(&tmp, &self.mesh)?;
        Ok(())
    }

    /// A WAN address of the harness in this cluster's WAN family.
    pub fn wan(&self, v4: &str) -> String {
        if self.family == Family::Ipv6 { v6_of(v4) } else { v4.to_string() }
    }

    fn wan_prefix(&self) -> u8 {
        if self.family == Family::Ipv6 { 64 } else { 24 }
    }

    /// The pod addresses of pod subnet `pod` in this cluster's families (`10.2.1.1`,
    /// `fd02:1::1`).
    pub fn pod_ips(&self, pod: u8) -> Vec<String> {
        let v4 = format!("10.2.{pod}.1");
        let mut out = Vec::new();
        if self.family.v4() {
            out.push(v4.clone());
        }
        if self.family.v6() {
            out.push(v6_of(&v4));
        }
        out
    }

    /// The peer's addresses on `wg0` in this cluster's families.
    pub fn peer_ips(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.family.v4() {
            out.push("10.5.0.1");
        }
        if self.family.v6() {
            out.push("fd05::1");
        }
        out
    }

    /// Pings every pod address of every family from every node in `nodes` (from its own pod
    /// address of that family, `ping -I`) and from the peer (from its `wg0` address), retrying
    /// up to `within`; an error lists the failures with the routes and the agents' logs' tails.
    pub fn ping_pods(&self, nodes: &[&str], within: Duration) -> Result<()> {
        let mut failures = Vec::new();
        let mut sources: Vec<(&str, Vec<String>)> = NODES
            .iter()
            .filter(|(name, ..)| nodes.contains(name))
            .map(|&(name, .., pod)| (name, self.pod_ips(pod)))
            .collect();
        sources.push(("peer", self.peer_ips().into_iter().map(String::from).collect()));
        for (from, source_ips) in &sources {
            for &(name, .., pod) in NODES.iter().filter(|(name, ..)| nodes.contains(name)) {
                for dst in self.pod_ips(pod) {
                    let v6 = dst.contains(':');
                    let Some(src) = source_ips.iter().find(|s| s.contains(':') == v6) else {
                        continue;
                    };
                    if !self.ping_from(from, src, &dst, within) {
                        failures.push(format!("{from} {src} -> {dst} ({name})"));
                    }
                }
            }
        }
        self.ping_report(&failures)
    }

    /// Whether `ping -c1 -W1 -I src dst` from namespace `from` succeeds within `within`.
    pub fn ping_from(&self, from: &str, src: &str, dst: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(out) = self.ns(from).exec(&["ping", "-c1", "-W1", "-q", "-I", src, dst])
                && out.status.success()
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Starts `kg` on node `name`.
    pub fn start_agent(&mut self, name: &str) -> Result<()> {
        let dir = self.dir.path();
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let ns = self.ns(name).name.clone();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, env!("CARGO_BIN_EXE_kg"), "--backend", "file", "--file"])
            .arg(&self.mesh)
            .args(["--hostname", name, "--wireguard", "userspace", "--wireguard-socket-dir"])
            .arg(dir.join(format!("{name}.wg")))
            .args(["--encapsulate", "never", "--cni=false", "--key-file"])
            .arg(dir.join(format!("{name}.key")))
            .args(["--listen", "127.0.0.1:1107", "--log-format", "human", "--resync-period", "2s"])
            // These tests read the rules back with `iptables-save` (`auto` would pick native
            // nftables in a fresh namespace; `e2e_firewall` covers it).
            .args(["--firewall", "iptables"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start kg")?;
        self.agents.push((name.to_string(), Process { child, what: format!("kg on {name}") }));
        Ok(())
    }

    /// The agent of node `name`.
    pub fn agent(&mut self, name: &str) -> &mut Process {
        &mut self.agents.iter_mut().find(|(n, _)| n == name).expect("no such agent").1
    }

    /// Starts the peer: its WireGuard configured from `kgctl showconf peer laptop` plus its
    /// private key and listen port, address 10.5.0.1/32 and routes for the mesh's allowed IPs.
    pub fn start_peer(&mut self) -> Result<()> {
        let mesh = self.mesh.to_string_lossy().into_owned();
        let showconf =
            kgctl_run(&["--backend", "file", "--file", &mesh, "showconf", "peer", "laptop"], None)?;
        let config = format!(
            "[Interface]\nPrivateKey = {}\nListenPort = 51820\n{showconf}",
            self.key("laptop").private
        );
        let conf = self.dir.path().join("laptop.conf");
        write_private(&conf, &config)?;
        let log_path = self.dir.path().join("laptop.log");
        let log = std::fs::File::create(&log_path)?;
        let ns = self.ns("peer").name.clone();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(wg_userspace())
            .arg("wg0")
            .arg(self.dir.path().join("laptop.wg"))
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.peer_daemon = Some(Process { child, what: "the peer's WireGuard".into() });
        wait_for(Duration::from_secs(10), || {
            Ok(std::fs::read_to_string(&log_path)?.contains("ready"))
        })
        .with_context(|| format!("the peer's WireGuard: {}", read(&log_path)))?;
        let peer = self.ns("peer");
        for ip in self.peer_ips() {
            let host = if ip.contains(':') { format!("{ip}/128") } else { format!("{ip}/32") };
            peer.ip(&["addr", "add", &host, "dev", "wg0"])?;
        }
        peer.ip(&["link", "set", "wg0", "up"])?;
        for line in showconf.lines() {
            if let Some(ips) = line.strip_prefix("AllowedIPs = ") {
                for cidr in ips.split(',').map(str::trim) {
                    peer.ip(&["route", "replace", cidr, "dev", "wg0"])?;
                }
            }
        }
        Ok(())
    }

    /// Every node's and the peer's private key (base64), by name.
    pub fn private_keys(&self) -> Vec<(String, String)> {
        self.keys.iter().map(|(name, k)| (name.clone(), k.private.clone())).collect()
    }

    /// The agent's log so far.
    pub fn log(&self, name: &str) -> String {
        read(&self.dir.path().join(format!("{name}.log")))
    }

    /// `GET http://127.0.0.1:1107/PATH` inside node `name`: status code and body.
    pub fn http(&self, name: &str, path: &str) -> Result<(u16, String)> {
        let url = format!("http://127.0.0.1:1107{path}");
        let out = self.ns(name).exec(&["curl", "-s", "-w", "\n%{http_code}", &url])?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        Ok((code.trim().parse().unwrap_or(0), body.to_string()))
    }

    /// Waits until node `name`'s `/health` answers 200.
    pub fn wait_healthy(&self, name: &str) -> Result<()> {
        wait_for(Duration::from_secs(20), || Ok(self.http(name, "/health")?.0 == 200))
            .with_context(|| format!("kg on {name} never became healthy; log:\n{}", self.log(name)))
    }

    /// Node `name`'s `/metrics`.
    pub fn metrics(&self, name: &str) -> Result<Metrics> {
        let (code, body) = self.http(name, "/metrics")?;
        ensure!(code == 200, "/metrics on {name} answered {code}");
        Ok(Metrics(body))
    }

    /// Whether `ping -c1 -W1 dst` from namespace `from` succeeds within `within`.
    pub fn ping(&self, from: &str, dst: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(out) = self.ns(from).exec(&["ping", "-c1", "-W1", "-q", dst])
                && out.status.success()
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Pings every pod from every node in `nodes` and from the peer, retrying up to `within`;
    /// an error lists the failures with the agents' logs' tails.
    pub fn ping_all(&self, nodes: &[&str], within: Duration) -> Result<()> {
        let mut failures = Vec::new();
        let mut sources: Vec<&str> = nodes.to_vec();
        sources.push("peer");
        for from in sources {
            for (name, .., pod) in NODES {
                if !nodes.contains(&name) {
                    continue;
                }
                let dst = format!("10.2.{pod}.1");
                if !self.ping(from, &dst, within) {
                    failures.push(format!("{from} -> {dst} ({name})"));
                }
            }
        }
        self.ping_report(&failures)
    }

    /// `Ok` without failures; else an error listing them, with every node's routes (both
    /// families) and the tail of its agent's log.
    fn ping_report(&self, failures: &[String]) -> Result<()> {
        if failures.is_empty() {
            return Ok(());
        }
        let mut report = format!("pings failed: {}\n", failures.join(", "));
        for (name, ..) in NODES {
            report += &format!("--- routes on {name}:\n{}", self.ns(name).ip(&["route"])?);
            report += &self.ns(name).ip(&["-6", "route"])?;
            let log = self.log(name);
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            report += &format!("--- log of {name} (tail):\n");
            for line in tail.into_iter().rev() {
                report += line;
                report += "\n";
            }
        }
        bail!(report)
    }
}

/// The line of `ip route` output `routes` whose destination is `dst`.
pub fn route_line<'a>(routes: &'a str, dst: &str) -> Option<&'a str> {
    routes.lines().find(|l| l.split_whitespace().next() == Some(dst))
}

/// Metrics text.
pub struct Metrics(pub String);

impl Metrics {
    /// The sum of every sample of `name` whose labels contain every one of `labels`
    /// (`operation="Delete"` say).
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let metric = series.split('{').next()?;
                (metric == name && labels.iter().all(|want| series.contains(want)))
                    .then(|| value.parse::<f64>().ok())
                    .flatten()
            })
            .sum()
    }

    /// Firewall write operations (everything but `Exists`, `List` and `ListChains`).
    pub fn iptables_writes(&self) -> f64 {
        let all = self.sum("kilo_iptables_operations_total", &[]);
        let reads: f64 = ["Exists", "List", "ListChains"]
            .iter()
            .map(|op| self.sum("kilo_iptables_operations_total", &[&format!("operation=\"{op}\"")]))
            .sum();
        all - reads
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// Polls `check` every 100 ms until it is true; an error after `timeout`.
pub fn wait_for(timeout: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if check().unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("condition not met within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The namespaces of this process whose names start with `prefix`.
pub fn namespaces_with(prefix: &str) -> Vec<String> {
    sh("ip", &["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Everything Kilo may own on a host, one sorted line each: `proto static` routes of every
/// table, policy rules (without their kernel-assigned priorities), the rules and chains of the
/// `iptables-save` listings and every line of the `kilo` nftables tables.
pub fn dump(ns: &Netns) -> Vec<String> {
    let mut lines = Vec::new();
    for family in ["-4", "-6"] {
        let routes = ns.ip(&[family, "route", "show", "table", "all", "proto", "static"]).unwrap();
        lines.extend(routes.lines().map(|l| format!("route {}", l.trim())));
        let rules = ns.ip(&[family, "rule"]).unwrap();
        lines.extend(rules.lines().map(|l| {
            let rule = l.split_once(':').map_or(l, |(_, r)| r);
            format!("rule {family} {}", rule.trim())
        }));
    }
    for save in ["iptables-save", "ip6tables-save"] {
        let saved = ns.exec_ok(&[save]).unwrap();
        lines.extend(
            saved
                .lines()
                .filter(|l| l.starts_with("-A") || l.starts_with(":KILO"))
                .map(|l| format!("{save} {l}")),
        );
    }
    let ruleset = ns.exec_ok(&["nft", "list", "ruleset"]).unwrap();
    let mut ours = false;
    for line in ruleset.lines() {
        if line.starts_with("table ") {
            ours = line.starts_with("table ip kilo ") || line.starts_with("table ip6 kilo6 ");
        }
        if ours && !line.trim().is_empty() {
            lines.push(format!("nft {}", line.trim()));
        }
    }
    lines.sort();
    lines
}

/// The lines of `a` that `b` lacks (as multisets: a duplicate counts).
pub fn surplus(a: &[String], b: &[String]) -> Vec<String> {
    let mut b = b.to_vec();
    let mut out = Vec::new();
    for line in a {
        match b.iter().position(|l| l == line) {
            Some(i) => {
                b.remove(i);
            }
            None => out.push(line.clone()),
        }
    }
    out
}
