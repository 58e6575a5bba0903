//! One node's agent from its checked options: opens the mesh source, the key file, the host and
//! the HTTP listener, and runs the [`driver`](crate::driver) until shut down.
//!
//! The side effects come in this order, each only once the one before succeeded: the mesh
//! source is opened (the mesh file is read; the Kubernetes client is built), the key file is
//! created, the WireGuard interface, then the HTTP listener is bound. Flags are checked by the
//! caller before any of them, when it builds [`NodeOptions`].

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use kilo_backend_file::{FileBackend, FileError, Options};
use kilo_core::agent::{Agent, AgentConfig, Timers};
use kilo_core::plan::PlanOptions;
use kilo_core::routes::Interfaces;
use kilo_core::settings::{self, Explicit, Settings};
use kilo_core::{Backend, Cidr, Compatibility, Encapsulation, Key, Node, PrivateKey};
use kilo_net_linux::NetlinkError;
use kilo_net_linux::host::{FirewallKind, Host, HostError, HostOptions};
use kilo_net_linux::wireguard::{WireGuardChoice, WireGuardKind};

use crate::clock::SystemClock;
use crate::driver::RunOptions;
use crate::keyfile::KeyFileError;
use crate::kube::{Cluster, KubeError};
use crate::linux::{Detect, LinuxHost, LinuxHostError};
use crate::metrics::Shared;

/// Why the agent stopped or could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The mesh file cannot be read or watched.
    #[error(transparent)]
    MeshFile(#[from] FileError),
    /// The cluster cannot be reached, or this host's addresses cannot be detected.
    #[error(transparent)]
    Kube(#[from] KubeError),
    /// The key file cannot be read or created.
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    /// The mesh file has no node of this name.
    #[error("{}: no node named {hostname:?}; this host's public key is {public_key}", path.display())]
    NotInMeshFile {
        /// The mesh file.
        path: PathBuf,
        /// The node's name.
        hostname: String,
        /// The key file's public key, to add to the mesh file.
        public_key: Key,
    },
    /// The mesh file gives this node another public key than the key file's.
    #[error(
        "node {hostname:?} has public key {in_mesh} in {}, but the key file {} holds the key of \
         {public_key}",
        path.display(),
        key_file.display()
    )]
    KeyMismatch {
        /// The mesh file.
        path: PathBuf,
        /// The node's name.
        hostname: String,
        /// The node's key in the mesh file.
        in_mesh: Key,
        /// The key file.
        key_file: PathBuf,
        /// The key file's public key.
        public_key: Key,
    },
    /// The mesh file's `internal-ip` of this node is on none of this host's interfaces.
    #[error(
        "{}: the internal-ip {ip} of node {hostname:?} is not an address of this host; set it to \
         one of this host's addresses (`ip -o addr`) or leave it out",
        path.display()
    )]
    InternalIpNotHere {
        /// The mesh file.
        path: PathBuf,
        /// The node's name.
        hostname: String,
        /// The address.
        ip: IpAddr,
    },
    /// The HTTP listener cannot be bound.
    #[error("--listen {listen}")]
    Listen {
        /// The address given.
        listen: String,
        /// Why it cannot be bound.
        #[source]
        source: std::io::Error,
    },
    /// The host (WireGuard, routes, firewall) cannot be opened.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The host's route or link monitor cannot start.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// The agent failed on the host.
    #[error(transparent)]
    Driver(#[from] LinuxHostError),
}

/// Where the mesh comes from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum MeshSource {
    /// A mesh file, re-read when it changes.
    File {
        /// The mesh file.
        path: PathBuf,
        /// The node label that gives a node's location when it has no location annotation.
        topology_label: String,
    },
    /// The Kubernetes API: Nodes and Peers.
    Kubernetes(Cluster),
}

/// A node's checked options (`kg`'s flags): [`NodeOptions::new`], then fields set as needed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NodeOptions {
    /// The node's name.
    pub hostname: String,
    /// The mesh settings given explicitly; the others come from the mesh source, then the
    /// defaults.
    pub explicit: Explicit,
    /// Where the mesh comes from.
    pub source: MeshSource,
    /// The private key file (created 0600 in a 0700 directory if missing).
    pub key_file: PathBuf,
    /// The WireGuard interface.
    pub interface: String,
    /// The WireGuard implementation; `None`: the kernel module when it can create a link (or a
    /// userspace sidecar's, see [`crate::sidecar`]), else userspace.
    pub wireguard: Option<WireGuardKind>,
    /// Directory for the userspace implementation's UAPI sockets.
    pub wireguard_socket_dir: PathBuf,
    /// Whether the in-process userspace device asks its TUN interface for segmentation
    /// offloads (`kg --tun-offloads`, default on).
    pub tun_offloads: bool,
    /// Create the WireGuard interface if it is missing.
    pub create_interface: bool,
    /// The WireGuard interface MTU; `None`: the default-route interface's MTU minus 80.
    pub mtu: Option<u32>,
    /// The firewall implementation.
    pub firewall: FirewallKind,
    /// When to encapsulate traffic inside a location.
    pub encapsulation: Encapsulation,
    /// Compatibility with another CNI.
    pub compatibility: Option<Compatibility>,
    /// Service CIDRs, excluded from NAT.
    pub service_cidrs: Vec<Cidr>,
    /// CIDRs that private-IP detection is restricted to.
    pub internal_cidrs: Vec<Cidr>,
    /// Manage routes within a location.
    pub local: bool,
    /// Manage the CNI configuration list at this path (`--cni` with `--cni-path`).
    pub cni: Option<PathBuf>,
    /// Add FORWARD ACCEPT rules for the mesh's traffic.
    pub iptables_forward_rules: bool,
    /// Use the private IP as the endpoint when no endpoint is set.
    pub prioritise_private_addresses: bool,
    /// `--leader-health`: probe the leader's data path and publish a verdict, so that leaders
    /// fail over on data-path health (see `kilo_core::health`).
    pub leader_health: bool,
    /// The address of `/metrics`, `/health` and `/graph` (`:PORT` or `HOST:PORT`).
    pub listen: String,
    /// How often to reconcile everything.
    pub resync: Duration,
    /// Clean up firewall rules, routes, node annotations and the tunnel on exit.
    pub clean_up: bool,
    /// Also delete the WireGuard interface on exit.
    pub clean_up_interface: bool,
}

impl NodeOptions {
    /// The options of node `hostname` whose mesh comes from `source`, the rest as `kg`'s flags
    /// default: no explicit mesh settings, the key in `/var/lib/kilo/key`, interface `kilo0`
    /// (created if missing, implementation and MTU detected, UAPI sockets in
    /// [`DEFAULT_UAPI_DIR`](kilo_net_linux::wireguard::DEFAULT_UAPI_DIR)), `iptables`,
    /// `--encapsulate always`, no compatibility mode, no service or internal CIDRs, `--local`,
    /// the CNI configuration managed at
    /// [`DEFAULT_CNI_PATH`](kilo_net_linux::cni::DEFAULT_CNI_PATH), no forward rules, private
    /// addresses not prioritised, listening on `:1107`, a 30 s resync, and clean-up on exit
    /// that keeps the WireGuard interface.
    pub fn new(hostname: impl Into<String>, source: MeshSource) -> NodeOptions {
        NodeOptions {
            hostname: hostname.into(),
            explicit: Explicit::default(),
            source,
            key_file: PathBuf::from("/var/lib/kilo/key"),
            interface: "kilo0".to_string(),
            wireguard: None,
            wireguard_socket_dir: PathBuf::from(kilo_net_linux::wireguard::DEFAULT_UAPI_DIR),
            tun_offloads: true,
            create_interface: true,
            mtu: None,
            firewall: FirewallKind::Auto,
            encapsulation: Encapsulation::Always,
            compatibility: None,
            service_cidrs: Vec::new(),
            internal_cidrs: Vec::new(),
            local: true,
            cni: Some(PathBuf::from(kilo_net_linux::cni::DEFAULT_CNI_PATH)),
            iptables_forward_rules: false,
            prioritise_private_addresses: false,
            leader_health: true,
            listen: ":1107".to_string(),
            resync: Duration::from_secs(30),
            clean_up: true,
            clean_up_interface: false,
        }
    }
}

/// Resolves on SIGTERM or SIGINT (never, if they cannot be caught).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        }
        _ => std::future::pending::<()>().await,
    }
    tracing::info!("received a termination signal");
}

/// The interface that carries `ip`, if any (`ip -o addr show to IP`).
async fn interface_of(netlink: &kilo_net_linux::Netlink, ip: IpAddr) -> Option<String> {
    let links = netlink.links().await.ok()?;
    let addresses = netlink.addresses().await.ok()?;
    let index = addresses.iter().find(|a| a.cidr.addr() == ip)?.index;
    links.into_iter().find(|l| l.index == index).map(|l| l.name)
}

async fn open_host(o: &NodeOptions) -> Result<Host, HostError> {
    let sidecar =
        crate::sidecar::serves_interface(o.create_interface, &o.wireguard_socket_dir, &o.interface);
    let wireguard = match o.wireguard {
        None if sidecar => WireGuardChoice::Kind(WireGuardKind::Userspace),
        None => WireGuardChoice::Auto,
        Some(kind) => WireGuardChoice::Kind(kind),
    };
    let mut options = HostOptions::new(o.interface.clone());
    options.wireguard = wireguard;
    options.uapi_dir = o.wireguard_socket_dir.clone();
    options.offloads = o.tun_offloads;
    options.mtu = o.mtu;
    options.create_interface = o.create_interface;
    options.firewall = o.firewall;
    options.tunnel = kilo_core::routes::IPIP_TUNNEL.into();
    Host::open(options).await
}

/// How the agent sees the mesh, by backend.
struct Mode {
    settings: Settings,
    publishes: bool,
    private_interface: Option<String>,
}

fn agent_config(o: &NodeOptions, key: PrivateKey, mode: Mode) -> AgentConfig {
    let interfaces = Interfaces::of_agent(&o.interface, mode.private_interface, o.compatibility);
    let mut plan = PlanOptions::new(o.hostname.clone(), interfaces);
    plan.local = o.local;
    plan.cni = o.cni.is_some();
    plan.iptables_forward_rules = o.iptables_forward_rules;
    plan.encapsulation = o.encapsulation;
    plan.compatibility = o.compatibility;
    let mut config = AgentConfig::new(plan, key);
    config.hostname = o.hostname.clone();
    config.granularity = mode.settings.granularity;
    config.port = mode.settings.port;
    config.subnet = mode.settings.subnet;
    config.subnet6 = mode.settings.subnet6;
    config.service_cidrs = o.service_cidrs.clone();
    config.readiness = mode.settings.readiness;
    config.publishes = mode.publishes;
    config.prioritise_private_addresses = o.prioritise_private_addresses;
    config.timers = Timers::default().with_resync(o.resync);
    config.connect = None;
    config.leader_health = o.leader_health;
    config
}

/// Runs the agent until `shutdown` resolves (then cleans up as the options say), or until it
/// fails.
pub async fn run(options: NodeOptions, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    match &options.source {
        MeshSource::File { path, topology_label } => {
            let mut options_file = Options::default();
            options_file.topology_label = topology_label.clone();
            let backend = FileBackend::open(path.clone(), options_file)?;
            run_file(path.clone(), backend, &options, shutdown).await
        }
        MeshSource::Kubernetes(cluster) => {
            let backend = cluster.backend().await?;
            run_kubernetes(backend, &options, shutdown).await
        }
    }
}

async fn run_file(
    path: PathBuf,
    mut backend: FileBackend,
    o: &NodeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let snapshot = backend.snapshot().await?;
    // The first side effect: the key file (its public key is named if this host is not in the
    // mesh file, so that it can be added).
    let key = crate::keyfile::load_or_create(&o.key_file)?;
    // The mesh file's `[mesh]` settings (contract 3) apply where no flag was given, so that kg
    // and `kgctl --backend file` compute the same mesh from the same file.
    let settings = settings::resolve(&o.explicit, settings::Source::MeshFile(&snapshot.settings));
    let hostname = o.hostname.clone();
    let Some(local): Option<Node> = kilo_backend_file::local_node(&snapshot, &hostname).cloned()
    else {
        return Err(Error::NotInMeshFile { path, hostname, public_key: key.public_key() });
    };
    if local.key != key.public_key() {
        return Err(Error::KeyMismatch {
            path,
            hostname,
            in_mesh: local.key,
            key_file: o.key_file.clone(),
            public_key: key.public_key(),
        });
    }
    let host = open_host(o).await?;
    let private_interface = match local.internal_ip {
        Some(ip) => match interface_of(host.netlink(), ip.addr()).await {
            Some(interface) => Some(interface),
            None => return Err(Error::InternalIpNotHere { path, hostname, ip: ip.addr() }),
        },
        None => None,
    };
    let config = agent_config(o, key, Mode { settings, publishes: false, private_interface });
    // A mesh file is the truth about every node, this one included: nothing is detected or
    // published, so every agent computes the same topology.
    serve_and_run(o, config, backend, host, None, None, shutdown).await
}

async fn run_kubernetes(
    backend: kilo_backend_k8s::KubeBackend,
    o: &NodeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let key = crate::keyfile::load_or_create(&o.key_file)?;
    // Upstream 4.1: the agent's own flags (and their defaults), nothing derived from other nodes.
    let settings = settings::resolve(&o.explicit, settings::Source::KubernetesAgent);
    let host = open_host(o).await?;
    let ignored = crate::kube::ignored_interfaces(&o.interface);
    // Upstream 4.2: a node without a usable IP cannot join.
    let facts =
        crate::kube::detect_once(host.netlink(), &o.hostname, &ignored, &o.internal_cidrs).await?;
    let private_interface = match facts.private_ip {
        Some(ip) => interface_of(host.netlink(), ip.addr()).await,
        None => None,
    };
    let detect = crate::kube::detector(o.hostname.clone(), &o.interface, o.internal_cidrs.clone())?;
    let config = agent_config(o, key, Mode { settings, publishes: true, private_interface });
    serve_and_run(o, config, backend, host, Some(detect), o.cni.clone(), shutdown).await
}

async fn serve_and_run<B: Backend>(
    o: &NodeOptions,
    config: AgentConfig,
    backend: B,
    host: Host,
    detect: Option<Detect>,
    cni_path: Option<PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let shared = Shared::new();
    let listener = crate::http::bind(&o.listen)
        .map_err(|source| Error::Listen { listen: o.listen.clone(), source })?;
    let router = crate::http::router(shared.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %crate::chain(&e), "HTTP server stopped");
        }
    });
    tracing::info!(node = %config.hostname, granularity = %config.granularity, "kg started");
    let host = LinuxHost::new(host, cni_path, detect)?;
    let options = RunOptions { clean_up: o.clean_up, clean_up_interface: o.clean_up_interface };
    crate::driver::run(Agent::new(config), backend, host, SystemClock, options, shared, shutdown)
        .await?;
    Ok(())
}
