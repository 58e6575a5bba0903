//! `kgctl connect [peer-name]` (upstream 12.4): this machine joins the mesh as a Kilo Peer. The
//! Peer is created if missing (and deleted on exit with `--clean-up`); a WireGuard interface gets
//! the peer's address; every resync period the configuration and routes are recomputed from the
//! cluster and applied.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use kilo_backend_k8s::{Peer as PeerObject, PeerSpec};
use kilo_core::routes::Route;
use kilo_core::settings::{self, Explicit, Origin, Source};
use kilo_core::wireguard::{Config, InterfaceConfig};
use kilo_core::{Cidr, Node, Peer, PrivateKey, Readiness, Snapshot, Topology, TopologyInput};
use kilo_net_linux::Netlink;
use kilo_net_linux::reconcile::RouteReconciler;
use kilo_net_linux::wireguard::{Device, DeviceOptions, WireGuardChoice};
use kube::api::{Api, DeleteParams, PostParams};

/// Why the peer's configuration cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// No node takes part in the mesh.
    #[error("did not find any valid Kilo nodes in the cluster")]
    NoNodes,
    /// No node carries a `wireguard-ip` annotation (and no `--subnet` was given).
    #[error("did not find a valid Kilo subnet on any node")]
    NoSubnet,
    /// The peer is missing or not valid.
    #[error("did not find any valid peer named {0:?} in the cluster")]
    PeerNotReady(String),
    /// The topology cannot be built.
    #[error(transparent)]
    Topology(#[from] kilo_core::topology::TopologyError),
}

/// What the peer's configuration depends on besides the cluster.
#[derive(Debug, Clone)]
pub struct ConnectInput<'a> {
    /// The peer's name.
    pub peer: &'a str,
    /// `--mesh-granularity`, `--subnet` and `--port` (the local listen port), resolved with
    /// the nodes by [`kilo_core::settings::resolve`].
    pub flags: Explicit,
    /// This machine's private key.
    pub private_key: &'a PrivateKey,
    /// `--interface`.
    pub interface: &'a str,
    /// `--allowed-ips`: extra CIDRs reached through the mesh.
    pub allowed_ips: &'a [Cidr],
}

/// The WireGuard configuration and routes this machine applies.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectPlan {
    /// `PeerConf(peer)` with this machine's private key and listen port.
    pub config: Config,
    /// `PeerRoutes(peer, interface, allowed IPs)`.
    pub routes: Vec<Route>,
}

/// Upstream's resync step (12.4), pure: ready nodes; settings from the flags and the nodes as
/// every kgctl command resolves them ([`kilo_core::settings`]: the subnet of the last node with a
/// `wireguard-ip`, where upstream's connect takes the first), an error when no subnet is given
/// or found; `--allowed-ips` appended to the allowed-location IPs of the alphabetically
/// first ready node; the peer must be ready; topology seen from the last ready node with the
/// peer's keepalive.
pub fn peer_plan(
    snapshot: &Snapshot,
    readiness: Readiness,
    input: &ConnectInput<'_>,
) -> Result<ConnectPlan, ConnectError> {
    let settings = settings::resolve(
        &input.flags,
        Source::KubernetesNodes { nodes: &snapshot.nodes, live: true },
    );
    if settings.subnet_origin == Origin::Default {
        return Err(ConnectError::NoSubnet);
    }
    let mut nodes: Vec<Node> =
        snapshot.nodes.iter().filter(|n| n.is_ready(readiness)).cloned().collect();
    let hostname = nodes.last().ok_or(ConnectError::NoNodes)?.name.clone();
    if let Some(first) = nodes.iter_mut().min_by(|a, b| a.name.cmp(&b.name)) {
        first.allowed_location_ips.extend_from_slice(input.allowed_ips);
    }
    let peers: Vec<Peer> = snapshot.peers.iter().filter(|p| p.is_ready()).cloned().collect();
    let me = peers
        .iter()
        .find(|p| p.name == input.peer)
        .ok_or_else(|| ConnectError::PeerNotReady(input.peer.to_string()))?;
    let topology = Topology::new(TopologyInput {
        nodes: &nodes,
        peers: &peers,
        granularity: settings.granularity,
        hostname: &hostname,
        port: settings.port,
        key: input.private_key.clone(),
        subnet: settings.subnet,
        service_cidrs: &[],
        persistent_keepalive: me.persistent_keepalive,
    })?;
    let mut config = topology.peer_conf(Some(input.peer));
    config.interface = Some(InterfaceConfig {
        private_key: Some(input.private_key.clone()),
        listen_port: Some(settings.port),
    });
    let routes = topology.peer_routes(input.peer, input.interface, input.allowed_ips);
    Ok(ConnectPlan { config, routes })
}

/// The Peer object `kgctl connect` creates when none of that name exists.
pub fn new_peer_object(
    name: &str,
    allowed_ip: Cidr,
    keepalive: u64,
    key: &PrivateKey,
) -> PeerObject {
    let mut peer = PeerObject::new(
        name,
        PeerSpec {
            allowed_ips: vec![allowed_ip.to_string()],
            endpoint: None,
            persistent_keepalive: Some(i64::try_from(keepalive).unwrap_or(i64::MAX)),
            preshared_key: None,
            public_key: key.public_key().to_base64(),
        },
    );
    peer.metadata.name = Some(name.to_string());
    peer
}

/// Parses a resync period: Go-style `30s`, `1m`, `1m30s`, `500ms`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}: want e.g. 30s, 1m, 1m30s or 500ms");
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let part = match &rest[..unit] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(part);
        rest = &rest[unit..];
    }
    if total.is_zero() { Err(bad()) } else { Ok(total) }
}

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
    pub socket_dir: std::path::PathBuf,
    /// `--mesh-granularity`, `--subnet`, `--port`.
    pub flags: Explicit,
    /// `--kubeconfig`.
    pub kubeconfig: Option<String>,
    /// `--topology-label`.
    pub topology_label: String,
}

/// Runs `connect` until interrupted (SIGINT or SIGTERM).
pub async fn run(args: ConnectArgs) -> Result<()> {
    let (client, url) = crate::kube::client(args.kubeconfig.as_deref()).await?;
    let peers: Api<PeerObject> = Api::all(client.clone());
    let existing = peers.get_opt(&args.peer).await.with_context(|| {
        format!("cannot read Peer {:?} from the Kubernetes API at {url}", args.peer)
    })?;
    let created = match existing {
        Some(_) => false,
        None => {
            let object =
                new_peer_object(&args.peer, args.allowed_ip, args.keepalive, &args.private_key);
            peers
                .create(&PostParams::default(), &object)
                .await
                .with_context(|| format!("cannot create Peer {:?}", args.peer))?;
            eprintln!("kgctl: created Peer {:?}", args.peer);
            true
        }
    };
    let result = connected(&args, client, &url).await;
    if created
        && args.clean_up
        && let Err(e) = peers.delete(&args.peer, &DeleteParams::default()).await
    {
        eprintln!("kgctl: cannot delete Peer {:?}: {e}", args.peer);
    }
    result
}

async fn connected(args: &ConnectArgs, client: kube::Client, url: &str) -> Result<()> {
    let options = DeviceOptions { uapi_dir: args.socket_dir.clone(), netns: None };
    let kind = kilo_net_linux::wireguard::select(args.wireguard, &options).await;
    let device = Device::open_or_create(kind, &args.interface, args.mtu, &options)
        .await
        .with_context(|| format!("cannot open or create WireGuard interface {}", args.interface))?;
    let netlink = Netlink::connect().context("cannot open a netlink connection")?;
    let link = netlink.link(&args.interface).await?;
    netlink.set_only_address(&link, args.allowed_ip).await?;
    netlink.set_link_up(&link).await?;
    let routes = RouteReconciler::new(netlink.clone(), [args.interface.clone()]);
    let result = resync_loop(args, client, url, &device, &routes).await;
    if args.clean_up {
        if let Err(e) = routes.clean_up().await {
            eprintln!("kgctl: clean-up: routes: {e}");
        }
        if let Err(e) = netlink.set_link_down(&link).await {
            eprintln!("kgctl: clean-up: link down: {e}");
        }
        if let Err(e) = device.delete().await {
            eprintln!("kgctl: clean-up: interface: {e}");
        }
    }
    result
}

async fn resync_loop(
    args: &ConnectArgs,
    client: kube::Client,
    url: &str,
    device: &Device,
    routes: &RouteReconciler,
) -> Result<()> {
    let mut interval = tokio::time::interval(args.resync);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot handle SIGTERM")?;
    loop {
        tokio::select! {
            _ = interval.tick() => {
                if let Err(e) = resync(args, client.clone(), url, device, routes).await {
                    eprintln!("kgctl: {}", crate::one_line(&e));
                }
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
        }
    }
}

async fn resync(
    args: &ConnectArgs,
    client: kube::Client,
    url: &str,
    device: &Device,
    routes: &RouteReconciler,
) -> Result<()> {
    let snapshot = crate::kube::snapshot(client, url, &args.topology_label).await?;
    let plan = peer_plan(
        &snapshot,
        Readiness::At(crate::kube::now()),
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
    device.apply(&diff).await.context("cannot configure WireGuard")?;
    routes.reconcile(&plan.routes, &[]).await.context("cannot apply routes")?;
    Ok(())
}

/// Resolves DNS endpoints; as upstream, a name that does not resolve fails the resync.
async fn resolve(config: &Config) -> Result<Config> {
    let (config, unresolved) = kilo_net_linux::host::resolve_endpoints(config).await;
    match unresolved.first() {
        Some(name) => Err(anyhow!("endpoint {name} does not resolve")),
        None => Ok(config),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Snapshot {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/upstream-fixture.yaml");
        kilo_backend_file::load(&path, &kilo_backend_file::Options::default()).unwrap()
    }

    fn key() -> PrivateKey {
        "cHJpdgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".parse().unwrap()
    }

    fn input<'a>(peer: &'a str, key: &'a PrivateKey, extra: &'a [Cidr]) -> ConnectInput<'a> {
        ConnectInput {
            peer,
            flags: Explicit { port: Some(51821), ..Explicit::default() },
            private_key: key,
            interface: "kilo0",
            allowed_ips: extra,
        }
    }

    #[test]
    fn the_peer_gets_every_segment_then_the_other_peers_with_its_own_interface() {
        let key = key();
        let plan =
            peer_plan(&fixture(), Readiness::IgnoringLastSeen, &input("b", &key, &[])).unwrap();
        let interface = plan.config.interface.clone().unwrap();
        assert_eq!(interface.private_key, Some(key.clone()));
        assert_eq!(interface.listen_port, Some(51821));
        let ini = plan.config.to_ini();
        assert!(ini.starts_with("[Interface]\nPrivateKey = cHJpdg"), "{ini}");
        let keys: Vec<String> =
            plan.config.peers.iter().map(|p| p.public_key.to_base64()).collect();
        assert_eq!(
            keys,
            [
                "a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                "a2V5MgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                "a2V5NAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                "a2V5NAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            ]
        );
    }

    #[test]
    fn the_peers_routes_go_through_each_segments_wireguard_ip() {
        let key = key();
        let plan =
            peer_plan(&fixture(), Readiness::IgnoringLastSeen, &input("b", &key, &[])).unwrap();
        let text: Vec<String> = plan.routes.iter().map(|r| r.to_string()).collect();
        let first = &text[0];
        assert!(first.contains("10.2.1.0/24") && first.contains("10.4.0.1"), "{text:?}");
        assert!(text.iter().any(|r| r.contains("10.4.0.3/32") && r.contains("kilo0")), "{text:?}");
        assert!(text.iter().any(|r| r.contains("10.5.0.0/24")), "{text:?}");
    }

    #[test]
    fn extra_allowed_ips_go_to_the_alphabetically_first_node_and_get_a_route() {
        let key = key();
        let extra: Vec<Cidr> = vec!["10.96.0.0/12".parse().unwrap()];
        let plan =
            peer_plan(&fixture(), Readiness::IgnoringLastSeen, &input("b", &key, &extra)).unwrap();
        let segment_a = &plan.config.peers[0];
        assert!(segment_a.allowed_ips.contains(&extra[0]), "{segment_a:?}");
        assert!(plan.routes.iter().any(|r| r.to_string().contains("10.96.0.0/12")));
    }

    #[test]
    fn a_missing_peer_or_subnet_or_node_is_an_error() {
        let key = key();
        let snapshot = fixture();
        assert_eq!(
            peer_plan(&snapshot, Readiness::IgnoringLastSeen, &input("zz", &key, &[])),
            Err(ConnectError::PeerNotReady("zz".into()))
        );
        let mut stale = snapshot.clone();
        for node in &mut stale.nodes {
            node.last_seen = 1;
        }
        assert_eq!(
            peer_plan(&stale, Readiness::At(1_000_000), &input("b", &key, &[])),
            Err(ConnectError::NoNodes)
        );
        let mut no_subnet = snapshot.clone();
        for node in &mut no_subnet.nodes {
            node.wireguard_ip = None;
        }
        assert_eq!(
            peer_plan(&no_subnet, Readiness::IgnoringLastSeen, &input("b", &key, &[])),
            Err(ConnectError::NoSubnet)
        );
    }

    #[test]
    fn a_created_peer_has_the_allowed_ip_keepalive_and_public_key() {
        let key = key();
        let object = new_peer_object("laptop", "10.10.10.10/32".parse().unwrap(), 10, &key);
        let json = serde_json::to_value(&object).unwrap();
        assert_eq!(json["metadata"]["name"], "laptop");
        assert_eq!(json["spec"]["allowedIPs"][0], "10.10.10.10/32");
        assert_eq!(json["spec"]["persistentKeepalive"], 10);
        assert_eq!(json["spec"]["publicKey"], key.public_key().to_base64());
        assert_eq!(json["kind"], "Peer");
    }

    #[test]
    fn resync_periods_parse_like_go_durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("").is_err());
    }
}
