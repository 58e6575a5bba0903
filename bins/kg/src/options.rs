//! Validates the flags (in upstream's order), builds the backend, the host and the agent, and
//! runs them until SIGTERM or SIGINT.
//!
//! Every flag is checked before the first side effect: the flags, then the mesh source (the mesh
//! file is read; the Kubernetes client is built), then the key file is created, then the
//! WireGuard interface, then the HTTP listener is bound. A bad flag is one error line and leaves
//! nothing behind.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use kilo_backend_file::{FileBackend, Options};
use kilo_core::agent::{Agent, AgentConfig, HostFacts};
use kilo_core::plan::PlanOptions;
use kilo_core::routes::Interfaces;
use kilo_core::settings::{self, Explicit, Settings};
use kilo_core::{
    Backend, Cidr, Compatibility, Encapsulation, Granularity, Node, PrivateKey, Snapshot,
};
use kilo_agent::{Detect, RunOptions, Shared};
use kilo_net_linux::host::{FirewallKind, Host, HostOptions};
use kilo_net_linux::wireguard::{WireGuardChoice, WireGuardKind};

use crate::cli::{BackendKind, Cli, FirewallMode, WireGuardMode};

fn cidrs(flag: &str, values: &[String]) -> Result<Vec<Cidr>> {
    values
        .iter()
        .map(|v| {
            v.parse::<Cidr>()
                .map(|c| c.network())
                .map_err(|_| anyhow!("--{flag}: {v:?} is not a CIDR"))
        })
        .collect()
}

async fn shutdown_signal() {
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

/// The flags every backend needs, validated in upstream's order (4.1), with no side effect.
struct Flags {
    hostname: String,
    /// `--mesh-granularity`, `--subnet` and `--port` where given on the command line.
    explicit: Explicit,
    encapsulation: Encapsulation,
    compatibility: Option<Compatibility>,
    service_cidrs: Vec<Cidr>,
    internal_cidrs: Vec<Cidr>,
    mtu: Option<u32>,
}

/// Checks `--listen` without binding: `:PORT` or `HOST:PORT`.
fn check_listen(listen: &str) -> Result<()> {
    let port = listen.rsplit_once(':').map(|(_, port)| port);
    match port.map(str::parse::<u16>) {
        Some(Ok(_)) => Ok(()),
        _ => bail!("--listen: {listen:?} is not an address (use :PORT or HOST:PORT)"),
    }
}

fn flags(cli: &Cli) -> Result<Flags> {
    let subnet: Cidr = cli
        .subnet
        .parse()
        .map(|c: Cidr| c.network())
        .map_err(|_| anyhow!("failed to parse {:?} as CIDR", cli.subnet))?;
    let hostname = if cli.hostname.is_empty() {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .context("failed to determine hostname")?
    } else {
        cli.hostname.clone()
    };
    let encapsulation: Encapsulation = cli.encapsulate.parse()?;
    // Contract C14: an unknown compatibility mode is an error listing the valid ones.
    let compatibility: Option<Compatibility> =
        cli.compatibility.as_deref().filter(|c| !c.is_empty()).map(str::parse).transpose()?;
    let granularity: Granularity = cli.mesh_granularity.parse()?;
    let port = u16::try_from(cli.port).ok().filter(|p| *p > 0).ok_or_else(|| {
        anyhow!("invalid port: port must be in range [1:65535], but got {}", cli.port)
    })?;
    let service_cidrs = cidrs("service-cidr", &cli.service_cidr)?;
    let internal_cidrs = cidrs("internal-cidr", &cli.internal_cidr)?;
    let mtu = match cli.mtu.as_str() {
        "auto" => None,
        m => Some(
            m.parse::<u32>().map_err(|_| anyhow!("--mtu: {m:?} is neither auto nor a number"))?,
        ),
    };
    if cli.resync_period.is_zero() {
        bail!("--resync-period: must be longer than zero");
    }
    check_listen(&cli.listen)?;
    kilo_net_linux::wireguard::validate_name(&cli.interface)
        .with_context(|| format!("--interface {:?}", cli.interface))?;
    if cli.key_file.is_empty() {
        bail!("--key-file: must not be empty");
    }
    // Flags that were not given leave the field to the mesh source, then to the default (the
    // flags' defaults are the defaults of `kilo_core::settings`).
    let explicit = Explicit {
        granularity: cli.given("mesh_granularity").then_some(granularity),
        subnet: cli.given("subnet").then_some(subnet),
        port: cli.given("port").then_some(port),
    };
    Ok(Flags {
        hostname,
        explicit,
        encapsulation,
        compatibility,
        service_cidrs,
        internal_cidrs,
        mtu,
    })
}

async fn open_host(cli: &Cli, mtu: Option<u32>) -> Result<Host> {
    let sidecar = crate::sidecar::serves_interface(
        cli.create_interface,
        Path::new(&cli.wireguard_socket_dir),
        &cli.interface,
    );
    let wireguard = match cli.wireguard {
        WireGuardMode::Auto if sidecar => WireGuardChoice::Kind(WireGuardKind::Userspace),
        WireGuardMode::Auto => WireGuardChoice::Auto,
        WireGuardMode::Kernel => WireGuardChoice::Kind(WireGuardKind::Kernel),
        WireGuardMode::Userspace => WireGuardChoice::Kind(WireGuardKind::Userspace),
    };
    Ok(Host::open(HostOptions {
        interface: cli.interface.clone(),
        wireguard,
        uapi_dir: PathBuf::from(&cli.wireguard_socket_dir),
        mtu,
        create_interface: cli.create_interface,
        firewall: match cli.firewall {
            FirewallMode::Iptables => FirewallKind::Iptables,
            FirewallMode::Nftables => FirewallKind::Nftables,
        },
        tunnel: "tunl0".into(),
    })
    .await?)
}

/// How the agent sees the mesh, by backend.
struct Mode {
    settings: Settings,
    publishes: bool,
    private_interface: Option<String>,
}

fn agent_config(cli: &Cli, f: Flags, key: PrivateKey, mode: Mode) -> AgentConfig {
    let tunnel = match f.compatibility {
        Some(Compatibility::Flannel) => "flannel.1",
        _ => "tunl0",
    };
    AgentConfig {
        hostname: f.hostname.clone(),
        granularity: mode.settings.granularity,
        port: mode.settings.port,
        subnet: mode.settings.subnet,
        service_cidrs: f.service_cidrs,
        private_key: key,
        readiness: mode.settings.readiness,
        publishes: mode.publishes,
        prioritise_private_addresses: cli.prioritise_private_addresses,
        plan: PlanOptions {
            node: f.hostname,
            interfaces: Interfaces {
                kilo: cli.interface.clone(),
                private: mode.private_interface.unwrap_or_else(|| "eth0".into()),
                tunnel: tunnel.into(),
            },
            local: cli.local,
            cni: cli.cni,
            iptables_forward_rules: cli.iptables_forward_rules,
            encapsulation: f.encapsulation,
            compatibility: f.compatibility,
        },
    }
}

/// The mesh source, opened once the flags are valid.
enum Source {
    File { path: String, backend: FileBackend, snapshot: Snapshot },
    Kubernetes(kilo_backend_k8s::KubeBackend),
}

/// Opens the mesh source without side effects on the host: reads (and watches) the mesh file,
/// or builds the Kubernetes client.
async fn open_source(cli: &Cli) -> Result<Source> {
    match cli.backend {
        BackendKind::File => {
            let path = cli.file.clone().context("--backend file needs --file PATH")?;
            let mut backend = FileBackend::open(
                PathBuf::from(&path),
                Options { topology_label: cli.topology_label.clone() },
            )?;
            let snapshot = backend.snapshot().await?;
            Ok(Source::File { path, backend, snapshot })
        }
        BackendKind::Kubernetes => Ok(Source::Kubernetes(
            crate::kube::backend(&cli.kubeconfig, &cli.master, &cli.topology_label).await?,
        )),
    }
}

/// Runs the agent.
pub async fn run(cli: Cli) -> Result<()> {
    let f = flags(&cli)?;
    let source = open_source(&cli).await?;
    // The first side effect: the key file (its public key is named if this host is not in the
    // mesh file, so that it can be added).
    let key = crate::keyfile::load_or_create(Path::new(&cli.key_file))?;
    match source {
        Source::File { path, backend, snapshot } => {
            run_file(cli, f, key, path, backend, snapshot).await
        }
        Source::Kubernetes(backend) => run_kubernetes(cli, f, key, backend).await,
    }
}

async fn run_file(
    cli: Cli,
    f: Flags,
    key: PrivateKey,
    path: String,
    backend: FileBackend,
    snapshot: Snapshot,
) -> Result<()> {
    // The mesh file's `[mesh]` settings (contract 3) apply where no flag was given, so that kg
    // and `kgctl --backend file` compute the same mesh from the same file.
    let settings = settings::resolve(&f.explicit, settings::Source::MeshFile(&snapshot.settings));
    let hostname = f.hostname.clone();
    let local: Node =
        kilo_backend_file::local_node(&snapshot, &hostname).cloned().ok_or_else(|| {
            anyhow!(
                "{path}: no node named {hostname:?}; this host's public key is {}",
                key.public_key()
            )
        })?;
    if local.key != key.public_key() {
        bail!(
            "node {hostname:?} has public key {} in {path}, but the key file {} holds the key of {}",
            local.key,
            cli.key_file,
            key.public_key()
        );
    }
    let host = open_host(&cli, f.mtu).await?;
    let private_interface = match local.internal_ip {
        Some(ip) => Some(interface_of(host.netlink(), ip.addr()).await.ok_or_else(|| {
            anyhow!(
                "{path}: the internal-ip {} of node {hostname:?} is not an address of this host; \
                 set it to one of this host's addresses (`ip -o addr`) or leave it out",
                ip.addr()
            )
        })?),
        None => None,
    };
    let mode = Mode { settings, publishes: false, private_interface };
    let config = agent_config(&cli, f, key, mode);
    // A mesh file is the truth about every node, this one included: nothing is detected or
    // published, so every agent computes the same topology.
    let detect: Detect = Box::new(|| Box::pin(async { None::<HostFacts> }));
    serve_and_run(&cli, config, backend, host, detect, None).await
}

async fn run_kubernetes(
    cli: Cli,
    f: Flags,
    key: PrivateKey,
    backend: kilo_backend_k8s::KubeBackend,
) -> Result<()> {
    // Upstream 4.1: the agent's own flags (and their defaults), nothing derived from other nodes.
    let settings = settings::resolve(&f.explicit, settings::Source::KubernetesAgent);
    let host = open_host(&cli, f.mtu).await?;
    let ignored = vec![cli.interface.clone(), "tunl0".to_string(), "kube-bridge".to_string()];
    // Upstream 4.2: a node without a usable IP cannot join.
    let facts =
        crate::kube::detect_once(host.netlink(), &f.hostname, &ignored, &f.internal_cidrs).await?;
    let private_interface = match facts.private_ip {
        Some(ip) => interface_of(host.netlink(), ip.addr()).await,
        None => None,
    };
    let detect =
        crate::kube::detector(f.hostname.clone(), cli.interface.clone(), f.internal_cidrs.clone())?;
    let mode = Mode { settings, publishes: true, private_interface };
    let cni = cli.cni.then(|| PathBuf::from(&cli.cni_path));
    let config = agent_config(&cli, f, key, mode);
    serve_and_run(&cli, config, backend, host, detect, cni).await
}

async fn serve_and_run<B: Backend>(
    cli: &Cli,
    config: AgentConfig,
    backend: B,
    host: Host,
    detect: Detect,
    cni_path: Option<PathBuf>,
) -> Result<()> {
    let shared = Shared::new();
    let listener =
        crate::http::bind(&cli.listen).with_context(|| format!("--listen {}", cli.listen))?;
    let router = crate::http::router(shared.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %kilo_agent::chain(&e), "HTTP server stopped");
        }
    });
    tracing::info!(node = %config.hostname, granularity = %config.granularity, "kg started");
    let options = RunOptions {
        resync: cli.resync_period,
        device_poll: Duration::from_secs(5),
        clean_up: cli.clean_up,
        clean_up_interface: cli.clean_up_interface,
        cni_path,
    };
    kilo_agent::run(
        Agent::new(config),
        backend,
        host,
        detect,
        options,
        shared,
        shutdown_signal(),
    )
    .await?;
    Ok(())
}
