//! `kgctl connect [peer-name]` (upstream 12.4), the runtime: this machine joins the mesh as a
//! Kilo Peer. The Peer is created if missing (and deleted on exit with `--clean-up`); a
//! WireGuard interface gets the peer's address; every resync period the configuration and
//! routes are recomputed from the cluster ([`kilo_core::connect::peer_plan`]) and applied.

use std::path::PathBuf;
use std::time::Duration;

use ::kube::api::{Api, DeleteParams, PostParams};
use kilo_backend_k8s::Peer as PeerObject;
use kilo_backend_k8s::snapshot::{self, SnapshotError};
use kilo_backend_k8s::{KubeBackend, KubeBackendConfig};
use kilo_core::agent::{Agent, AgentConfig, ConnectRole, HostFacts, ReadinessPolicy, Timers};
use kilo_core::plan::{Plan, PlanOptions};
use kilo_core::routes::Interfaces;
use kilo_core::settings::{self, Explicit};
use kilo_core::{Cidr, Encapsulation, PrivateKey};
use kilo_net_linux::host::ApplyReport;
use kilo_net_linux::reconcile::{ReconcileError, RouteReconciler};
use kilo_net_linux::wireguard::{
    Device, DeviceOptions, DeviceState, WireGuardChoice, WireGuardError,
};
use kilo_net_linux::{Netlink, NetlinkError};

use crate::RunOptions;
use crate::host::{Host, HostCounters};

/// Everything `connect` needs from the command line: [`ConnectArgs::new`], then fields set as
/// needed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectArgs {
    /// The peer's name.
    pub peer: String,
    /// `--allowed-ip`: this machine's address in the mesh.
    pub allowed_ip: Cidr,
    /// `--allowed-ips`.
    pub allowed_ips: Vec<Cidr>,
    /// This machine's private key.
    pub private_key: PrivateKey,
    /// `--clean-up`.
    pub clean_up: bool,
    /// `--mtu`.
    pub mtu: u32,
    /// `--resync-period`.
    pub resync: Duration,
    /// `--interface`.
    pub interface: String,
    /// `--persistent-keepalive` (seconds) of a created Peer.
    pub keepalive: u64,
    /// `--wireguard`.
    pub wireguard: WireGuardChoice,
    /// `--wireguard-socket-dir`.
    pub socket_dir: PathBuf,
    /// `--mesh-granularity`, `--subnet`, `--port`.
    pub flags: Explicit,
    /// `--kubeconfig`.
    pub kubeconfig: Option<String>,
    /// `--topology-label`.
    pub topology_label: String,
}

impl ConnectArgs {
    /// The arguments of peer `peer` at `allowed_ip` with this key, the rest as `kgctl connect`'s
    /// flags default: nothing else routed to the mesh, clean-up on exit, MTU
    /// [`DEFAULT_MTU`](kilo_core::discovery::DEFAULT_MTU), a 30 s resync, interface `kilo0`, a
    /// 10 s keepalive on a created Peer, the WireGuard implementation chosen automatically with
    /// UAPI sockets in [`DEFAULT_UAPI_DIR`](kilo_net_linux::wireguard::DEFAULT_UAPI_DIR), no mesh
    /// settings given, the usual kubeconfig, and the default topology label.
    pub fn new(peer: impl Into<String>, allowed_ip: Cidr, private_key: PrivateKey) -> ConnectArgs {
        ConnectArgs {
            peer: peer.into(),
            allowed_ip,
            allowed_ips: Vec::new(),
            private_key,
            clean_up: true,
            mtu: kilo_core::discovery::DEFAULT_MTU,
            resync: Duration::from_secs(30),
            interface: "kilo0".to_string(),
            keepalive: 10,
            wireguard: WireGuardChoice::default(),
            socket_dir: PathBuf::from(kilo_net_linux::wireguard::DEFAULT_UAPI_DIR),
            flags: Explicit::default(),
            kubeconfig: None,
            topology_label: kilo_core::annotations::DEFAULT_TOPOLOGY_LABEL.to_string(),
        }
    }
}

/// Why `connect` stopped, or why one resync failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The machine's hostname (the default peer name) is unknown.
    #[error("cannot read this machine's hostname; give the peer's name")]
    Hostname,
    /// No randomness for a new private key.
    #[error("no randomness: {0}")]
    Randomness(String),
    /// The `--private-key` file cannot be read.
    #[error("--private-key {path}")]
    ReadKey {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The `--private-key` file does not hold a key.
    #[error("--private-key {path}: not a private key: {reason}")]
    BadKey {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// No client, or the cluster could not be listed.
    #[error(transparent)]
    Cluster(#[from] SnapshotError),
    /// The Peer could not be read.
    #[error("cannot read Peer {peer:?} from the Kubernetes API at {url}")]
    ReadPeer {
        /// The peer.
        peer: String,
        /// The API server.
        url: String,
        /// Why.
        #[source]
        source: ::kube::Error,
    },
    /// The Peer could not be created.
    #[error("cannot create Peer {peer:?}")]
    CreatePeer {
        /// The peer.
        peer: String,
        /// Why.
        #[source]
        source: ::kube::Error,
    },
    /// The WireGuard interface could not be opened or created.
    #[error("cannot open or create WireGuard interface {interface}")]
    Device {
        /// The interface.
        interface: String,
        /// Why.
        #[source]
        source: WireGuardError,
    },
    /// No netlink connection.
    #[error("cannot open a netlink connection")]
    NetlinkConnect(#[source] NetlinkError),
    /// SIGTERM cannot be caught.
    #[error("cannot handle SIGTERM")]
    Signal(#[source] std::io::Error),
    /// Cleaning up on exit failed (the loop itself logs its failures and retries).
    #[error("clean-up")]
    Host(#[source] PeerHostError),
}

/// What [`run`] reports while it runs, for the caller to print.
#[derive(Debug)]
#[non_exhaustive]
pub enum Notice<'a> {
    /// The Peer did not exist and was created.
    Created(&'a str),
    /// Deleting the created Peer on exit failed.
    DeleteFailed(&'a str, &'a ::kube::Error),
}

impl std::fmt::Display for Notice<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::Created(peer) => write!(f, "created Peer {peer:?}"),
            Notice::DeleteFailed(peer, e) => write!(f, "cannot delete Peer {peer:?}: {e}"),
        }
    }
}

/// This machine's hostname, the default peer name.
pub fn hostname() -> Result<String, RunError> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .ok_or(RunError::Hostname)
}

/// A new private key.
pub fn generate_key() -> Result<PrivateKey, RunError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| RunError::Randomness(e.to_string()))?;
    Ok(PrivateKey::from_random_bytes(bytes))
}

/// The key in the `--private-key` file `path`, or a new one when `path` is empty.
pub fn private_key(path: &str) -> Result<PrivateKey, RunError> {
    if path.is_empty() {
        return generate_key();
    }
    let text = std::fs::read_to_string(path)
        .map_err(|source| RunError::ReadKey { path: path.to_string(), source })?;
    text.trim()
        .parse()
        .map_err(|e| RunError::BadKey { path: path.to_string(), reason: format!("{e}") })
}

/// Runs `kgctl connect` until SIGTERM or SIGINT: creates the Peer if it is missing, opens the
/// interface, then runs the agent's driver ([`crate::run`]) as a Peer
/// ([`kilo_core::agent::ConnectRole`]): the cluster is watched, the peer's plan recomputed on
/// every change and every resync period, and applied by a [`PeerHost`]. With `--clean-up` the
/// routes and the interface go, and a Peer this run created is deleted.
pub async fn run(args: ConnectArgs, notify: impl Fn(Notice<'_>)) -> Result<(), RunError> {
    let (client, url) = snapshot::client(args.kubeconfig.as_deref()).await?;
    let peers: Api<PeerObject> = Api::all(client.clone());
    let existing = peers.get_opt(&args.peer).await.map_err(|source| RunError::ReadPeer {
        peer: args.peer.clone(),
        url: url.clone(),
        source,
    })?;
    let created = match existing {
        Some(_) => false,
        None => {
            let object = kilo_backend_k8s::connect::new_peer_object(
                &args.peer,
                args.allowed_ip,
                args.keepalive,
                &args.private_key,
            );
            peers
                .create(&PostParams::default(), &object)
                .await
                .map_err(|source| RunError::CreatePeer { peer: args.peer.clone(), source })?;
            notify(Notice::Created(&args.peer));
            true
        }
    };
    let result = connected(&args, client).await;
    if created
        && args.clean_up
        && let Err(e) = peers.delete(&args.peer, &DeleteParams::default()).await
    {
        notify(Notice::DeleteFailed(&args.peer, &e));
    }
    result
}

/// The agent's settings for a Peer: readiness judged live, nothing published (the Peer object
/// is the peer's publication), the mesh settings from the flags and the nodes.
pub fn agent_config(args: &ConnectArgs) -> AgentConfig {
    // The flags and defaults; each plan resolves the rest from the nodes (connect::peer_plan).
    let settings = settings::resolve(&args.flags, settings::Source::KubernetesAgent);
    let interfaces =
        Interfaces { kilo: args.interface.clone(), private: String::new(), tunnel: String::new() };
    let mut plan = PlanOptions::new(args.peer.clone(), interfaces);
    plan.local = false;
    plan.cni = false;
    plan.iptables_forward_rules = false;
    plan.encapsulation = Encapsulation::Never;
    plan.compatibility = None;
    let mut role = ConnectRole::new(args.allowed_ip);
    role.allowed_ips = args.allowed_ips.clone();
    role.flags = args.flags;
    let mut config = AgentConfig::new(plan, args.private_key.clone());
    config.hostname = args.peer.clone();
    config.granularity = settings.granularity;
    config.port = settings.port;
    config.subnet = settings.subnet;
    config.subnet6 = settings.subnet6;
    config.service_cidrs = Vec::new();
    config.readiness = ReadinessPolicy::Live;
    config.publishes = false;
    config.prioritise_private_addresses = false;
    config.timers = Timers::default().with_resync(args.resync);
    config.connect = Some(role);
    config
}

async fn connected(args: &ConnectArgs, client: ::kube::Client) -> Result<(), RunError> {
    let mut options = DeviceOptions::default();
    options.uapi_dir = args.socket_dir.clone();
    options.netns = None;
    let kind = kilo_net_linux::wireguard::select(args.wireguard, &options).await;
    let device = Device::open_or_create(kind, &args.interface, args.mtu, &options)
        .await
        .map_err(|source| RunError::Device { interface: args.interface.clone(), source })?;
    let netlink = Netlink::connect().map_err(RunError::NetlinkConnect)?;
    let routes = RouteReconciler::new(netlink.clone(), [args.interface.clone()]);
    let host = PeerHost { device, netlink, routes, interface: args.interface.clone() };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(RunError::Signal)?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    };
    let mut backend_config = KubeBackendConfig::default();
    backend_config.topology_label = args.topology_label.clone();
    let backend = KubeBackend::new(client, backend_config);
    let options = RunOptions { clean_up: args.clean_up, clean_up_interface: args.clean_up };
    crate::run(
        Agent::new(agent_config(args)),
        backend,
        host,
        crate::SystemClock,
        options,
        crate::Shared::new(),
        shutdown,
    )
    .await
    .map_err(RunError::Host)
}

/// What goes wrong on a Peer's host.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerHostError {
    /// Reading or configuring the WireGuard device.
    #[error("cannot configure WireGuard")]
    WireGuard(#[from] WireGuardError),
    /// The interface's link and address.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// Routes.
    #[error("cannot apply routes")]
    Routes(#[from] ReconcileError),
}

/// This machine as a Kilo Peer: one WireGuard interface with the peer's address, and routes to
/// the mesh through it. No firewall rules, no policy rules, no CNI.
pub struct PeerHost {
    device: Device,
    netlink: Netlink,
    routes: RouteReconciler,
    interface: String,
}

impl std::fmt::Debug for PeerHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerHost").field("interface", &self.interface).finish_non_exhaustive()
    }
}

impl Host for PeerHost {
    type Error = PeerHostError;

    fn probe(
        &self,
        _targets: Vec<std::net::IpAddr>,
        _timeout: std::time::Duration,
    ) -> impl std::future::Future<Output = std::io::Result<bool>> + Send + 'static {
        // A Peer goes through no leader: the core never asks it to probe.
        std::future::ready(Err(std::io::Error::other("a Peer does not probe")))
    }

    async fn apply(&mut self, plan: &Plan) -> Result<ApplyReport, PeerHostError> {
        let mut report = ApplyReport::default();
        let current = self.device.read().await?.to_config();
        // DNS endpoints as the agent resolves them (kilo_core::dns): a name that does not
        // resolve keeps its last address, else its peer goes without an endpoint, with a warning.
        let desired =
            kilo_net_linux::host::resolve_wireguard(&plan.interface.wireguard, &current).await;
        for unresolved in &desired.unresolved {
            tracing::warn!(interface = %self.interface, "{unresolved}");
        }
        let diff = kilo_core::wireguard::diff(&current, &desired.config);
        if !diff.is_empty() {
            report.wireguard += self.device.apply(&diff).await?;
        }
        let link = self.netlink.link(&self.interface).await?;
        let addresses = plan.interface.addresses();
        if !addresses.is_empty() {
            report.links += self.netlink.set_only_addresses(&link, &addresses).await?;
        }
        report.links +=
            usize::from(self.netlink.ensure_link_state(&self.interface, plan.interface.up).await?);
        report.routes += self.routes.reconcile(&plan.routes, &plan.rules).await?.len();
        Ok(report)
    }

    async fn observe(&mut self) -> Result<DeviceState, PeerHostError> {
        Ok(self.device.read().await?)
    }

    async fn detect(&mut self) -> Option<HostFacts> {
        None
    }

    fn update_cni(&mut self, _subnets: &[Cidr]) -> Result<bool, PeerHostError> {
        Ok(false)
    }

    fn reconcile_firewall(&mut self) -> Result<(), PeerHostError> {
        Ok(())
    }

    async fn interface_deleted(&mut self) {
        std::future::pending::<()>().await
    }

    fn counters(&self) -> HostCounters {
        HostCounters { route_writes: self.routes.writes(), ..HostCounters::default() }
    }

    async fn clean_up(self, interface: bool) -> Result<(), PeerHostError> {
        let mut first: Option<PeerHostError> = None;
        if let Err(e) = self.routes.clean_up().await {
            tracing::error!(error = %crate::chain(&e), "clean-up: routes");
            first.get_or_insert(e.into());
        }
        if interface && let Err(e) = self.device.delete().await {
            tracing::error!(error = %crate::chain(&e), "clean-up: interface");
            first.get_or_insert(e.into());
        }
        first.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_key_file_names_the_flag_and_the_cause() {
        let e = private_key("/nowhere/key").unwrap_err();
        assert_eq!(
            crate::chain(&e),
            "--private-key /nowhere/key: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn an_empty_key_path_generates_a_key() {
        let a = private_key("").unwrap();
        let b = private_key("").unwrap();
        assert_ne!(a.public_key(), b.public_key());
    }

    #[test]
    fn notices_read_as_kgctl_printed_them() {
        assert_eq!(Notice::Created("laptop").to_string(), "created Peer \"laptop\"");
    }
}
