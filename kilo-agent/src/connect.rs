//! `kgctl connect [peer-name]` (upstream 12.4), the runtime: this machine joins the mesh as a
//! Kilo Peer. The Peer is created if missing (and deleted on exit with `--clean-up`); a
//! WireGuard interface gets the peer's address; every resync period the configuration and
//! routes are recomputed from the cluster ([`kilo_core::connect::peer_plan`]) and applied.

use std::path::PathBuf;
use std::time::Duration;

use ::kube::api::{Api, DeleteParams, PostParams};
use kilo_backend_k8s::Peer as PeerObject;
use kilo_backend_k8s::snapshot::{self, SnapshotError};
use kilo_core::connect::{ConnectError, ConnectInput, peer_plan};
use kilo_core::settings::Explicit;
use kilo_core::wireguard::Config;
use kilo_core::{Cidr, PrivateKey, Readiness};
use kilo_net_linux::reconcile::{ReconcileError, RouteReconciler};
use kilo_net_linux::wireguard::{Device, DeviceOptions, WireGuardChoice, WireGuardError};
use kilo_net_linux::{Netlink, NetlinkError};

/// Everything `connect` needs from the command line.
#[derive(Debug, Clone)]
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

/// Why `connect` stopped, or why one resync failed.
#[derive(Debug, thiserror::Error)]
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
    /// A link or address change failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// SIGTERM cannot be caught.
    #[error("cannot handle SIGTERM")]
    Signal(#[source] std::io::Error),
    /// The configuration cannot be computed.
    #[error(transparent)]
    Plan(#[from] ConnectError),
    /// An endpoint's name does not resolve (as upstream, this fails the resync).
    #[error("endpoint {0} does not resolve")]
    Unresolved(String),
    /// The interface's configuration cannot be read.
    #[error(transparent)]
    ReadDevice(#[from] WireGuardError),
    /// The configuration cannot be applied.
    #[error("cannot configure WireGuard")]
    Configure(#[source] WireGuardError),
    /// The routes cannot be applied.
    #[error("cannot apply routes")]
    Routes(#[source] ReconcileError),
}

/// What [`run`] reports while it runs, for the caller to print.
#[derive(Debug)]
pub enum Notice<'a> {
    /// The Peer did not exist and was created.
    Created(&'a str),
    /// A resync failed; the next one retries.
    ResyncFailed(&'a RunError),
    /// Deleting the created Peer on exit failed.
    DeleteFailed(&'a str, &'a ::kube::Error),
    /// A clean-up step (`routes`, `link down`, `interface`) failed.
    CleanUpFailed(&'static str, &'a (dyn std::error::Error + 'static)),
}

impl std::fmt::Display for Notice<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::Created(peer) => write!(f, "created Peer {peer:?}"),
            Notice::ResyncFailed(e) => write!(f, "{}", crate::chain(*e)),
            Notice::DeleteFailed(peer, e) => write!(f, "cannot delete Peer {peer:?}: {e}"),
            Notice::CleanUpFailed(what, e) => write!(f, "clean-up: {what}: {e}"),
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

/// Runs `connect` until interrupted (SIGINT or SIGTERM), reporting through `notify`.
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
    let result = connected(&args, client, &url, &notify).await;
    if created
        && args.clean_up
        && let Err(e) = peers.delete(&args.peer, &DeleteParams::default()).await
    {
        notify(Notice::DeleteFailed(&args.peer, &e));
    }
    result
}

async fn connected(
    args: &ConnectArgs,
    client: ::kube::Client,
    url: &str,
    notify: &impl Fn(Notice<'_>),
) -> Result<(), RunError> {
    let options = DeviceOptions { uapi_dir: args.socket_dir.clone(), netns: None };
    let kind = kilo_net_linux::wireguard::select(args.wireguard, &options).await;
    let device = Device::open_or_create(kind, &args.interface, args.mtu, &options)
        .await
        .map_err(|source| RunError::Device { interface: args.interface.clone(), source })?;
    let netlink = Netlink::connect().map_err(RunError::NetlinkConnect)?;
    let link = netlink.link(&args.interface).await?;
    netlink.set_only_address(&link, args.allowed_ip).await?;
    netlink.set_link_up(&link).await?;
    let routes = RouteReconciler::new(netlink.clone(), [args.interface.clone()]);
    let result = resync_loop(args, client, url, &device, &routes, notify).await;
    if args.clean_up {
        if let Err(e) = routes.clean_up().await {
            notify(Notice::CleanUpFailed("routes", &e));
        }
        if let Err(e) = netlink.set_link_down(&link).await {
            notify(Notice::CleanUpFailed("link down", &e));
        }
        if let Err(e) = device.delete().await {
            notify(Notice::CleanUpFailed("interface", &e));
        }
    }
    result
}

async fn resync_loop(
    args: &ConnectArgs,
    client: ::kube::Client,
    url: &str,
    device: &Device,
    routes: &RouteReconciler,
    notify: &impl Fn(Notice<'_>),
) -> Result<(), RunError> {
    let mut interval = tokio::time::interval(args.resync);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(RunError::Signal)?;
    loop {
        tokio::select! {
            _ = interval.tick() => {
                if let Err(e) = resync(args, client.clone(), url, device, routes).await {
                    notify(Notice::ResyncFailed(&e));
                }
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
        }
    }
}

async fn resync(
    args: &ConnectArgs,
    client: ::kube::Client,
    url: &str,
    device: &Device,
    routes: &RouteReconciler,
) -> Result<(), RunError> {
    let snapshot = snapshot::list(client, url, &args.topology_label).await?;
    let plan = peer_plan(
        &snapshot,
        Readiness::At(snapshot::now()),
        &ConnectInput {
            peer: &args.peer,
            flags: args.flags,
            private_key: &args.private_key,
            interface: &args.interface,
            allowed_ips: &args.allowed_ips,
        },
    )?;
    let desired = resolve(&plan.config).await?;
    let current = device.read().await?.to_config();
    let diff = kilo_core::wireguard::diff(&current, &desired);
    device.apply(&diff).await.map_err(RunError::Configure)?;
    routes.reconcile(&plan.routes, &[]).await.map_err(RunError::Routes)?;
    Ok(())
}

/// Resolves DNS endpoints; as upstream, a name that does not resolve fails the resync.
async fn resolve(config: &Config) -> Result<Config, RunError> {
    let (config, unresolved) = kilo_net_linux::host::resolve_endpoints(config).await;
    match unresolved.first() {
        Some(name) => Err(RunError::Unresolved(name.clone())),
        None => Ok(config),
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
        let e = RunError::Unresolved("example.invalid".into());
        assert_eq!(
            Notice::ResyncFailed(&e).to_string(),
            "endpoint example.invalid does not resolve"
        );
        let io = std::io::Error::other("busy");
        assert_eq!(Notice::CleanUpFailed("routes", &io).to_string(), "clean-up: routes: busy");
    }
}
