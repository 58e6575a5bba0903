//! Validates the flags (in upstream's order), builds the backend, the host and the agent, and
//! runs them until SIGTERM or SIGINT.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use kilo_backend_file::{FileBackend, Options};
use kilo_core::agent::{Agent, AgentConfig, HostFacts, ReadinessPolicy};
use kilo_core::plan::PlanOptions;
use kilo_core::routes::Interfaces;
use kilo_core::{Backend, Cidr, Compatibility, Encapsulation, Granularity, Node};
use kilo_net_linux::agent::{Detect, RunOptions, Shared};
use kilo_net_linux::host::{FirewallKind, Host, HostOptions};
use kilo_net_linux::wireguard::{WireGuardChoice, WireGuardKind};

use crate::cli::{BackendKind, Cli, WireGuardMode};

fn cidrs(flag: &str, values: &[String]) -> Result<Vec<Cidr>> {
    values
        .iter()
        .map(|v| v.parse::<Cidr>().map(|c| c.network()).map_err(|_| anyhow!("--{flag}: {v:?} is not a CIDR")))
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

/// Runs the agent.
pub async fn run(cli: Cli) -> Result<()> {
    let subnet: Cidr = cli.subnet.parse().map(|c: Cidr| c.network()).map_err(|_| anyhow!("failed to parse {:?} as CIDR", cli.subnet))?;
    let hostname = if cli.hostname.is_empty() {
        std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).context("failed to determine hostname")?
    } else {
        cli.hostname.clone()
    };
    let encapsulation: Encapsulation = cli.encapsulate.parse()?;
    let compatibility: Option<Compatibility> = cli.compatibility.as_deref().filter(|c| !c.is_empty()).map(str::parse).transpose()?;
    let granularity: Granularity = cli.mesh_granularity.parse()?;
    let port = u16::try_from(cli.port).ok().filter(|p| *p > 0).ok_or_else(|| anyhow!("invalid port: port must be in range [1:65535], but got {}", cli.port))?;
    let service_cidrs = cidrs("service-cidr", &cli.service_cidr)?;
    let internal_cidrs = cidrs("internal-cidr", &cli.internal_cidr)?;
    let mtu = match cli.mtu.as_str() {
        "auto" => None,
        m => Some(m.parse::<u32>().map_err(|_| anyhow!("--mtu: {m:?} is neither auto nor a number"))?),
    };
    let key = crate::keyfile::load_or_create(Path::new(&cli.key_file))?;

    let mut backend = match cli.backend {
        BackendKind::File => {
            let path = cli.file.clone().context("--backend file needs --file PATH")?;
            FileBackend::open(PathBuf::from(&path), Options { topology_label: cli.topology_label.clone() })?
        }
        BackendKind::Kubernetes => bail!("--backend kubernetes is not available in this build yet; use --backend file --file PATH"),
    };
    let snapshot = backend.snapshot().await?;
    let local: Node = kilo_backend_file::local_node(&snapshot, &hostname)
        .cloned()
        .ok_or_else(|| anyhow!("{}: no node named {hostname:?}; this host's public key is {}", cli.file.as_deref().unwrap_or("-"), key.public_key()))?;
    if local.key != key.public_key() {
        bail!("node {hostname:?} has public key {} in {}, but the key file {} holds the key of {}", local.key, cli.file.as_deref().unwrap_or("-"), cli.key_file, key.public_key());
    }

    let wireguard = match cli.wireguard {
        WireGuardMode::Auto => WireGuardChoice::Auto,
        WireGuardMode::Kernel => WireGuardChoice::Kind(WireGuardKind::Kernel),
        WireGuardMode::Userspace => WireGuardChoice::Kind(WireGuardKind::Userspace),
    };
    let host = Host::open(HostOptions {
        interface: cli.interface.clone(),
        wireguard,
        uapi_dir: PathBuf::from(&cli.wireguard_socket_dir),
        mtu,
        create_interface: cli.create_interface,
        firewall: FirewallKind::Iptables,
        tunnel: "tunl0".into(),
    })
    .await?;
    let private = match local.internal_ip {
        Some(ip) => interface_of(host.netlink(), ip.addr()).await,
        None => None,
    };
    let tunnel = match compatibility {
        Some(Compatibility::Flannel) => "flannel.1",
        _ => "tunl0",
    };
    let config = AgentConfig {
        hostname: hostname.clone(),
        granularity,
        port,
        subnet,
        service_cidrs,
        private_key: key,
        readiness: if snapshot.settings.static_mesh { ReadinessPolicy::StaticMesh } else { ReadinessPolicy::Snapshot },
        publishes: false,
        prioritise_private_addresses: cli.prioritise_private_addresses,
        plan: PlanOptions {
            node: hostname.clone(),
            interfaces: Interfaces { kilo: cli.interface.clone(), private: private.unwrap_or_else(|| "eth0".into()), tunnel: tunnel.into() },
            local: cli.local,
            cni: cli.cni,
            iptables_forward_rules: cli.iptables_forward_rules,
            encapsulation,
            compatibility,
        },
    };
    // A mesh file is the truth about every node, this one included: nothing is detected or
    // published, so every agent computes the same topology.
    let _ = internal_cidrs;
    let detect: Detect = Box::new(|| Box::pin(async { None::<HostFacts> }));

    let shared = Shared::new();
    let listener = tokio::net::TcpListener::bind(crate::http::listen_address(&cli.listen))
        .await
        .with_context(|| format!("--listen {}", cli.listen))?;
    let router = crate::http::router(shared.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    tracing::info!(node = %hostname, granularity = %granularity, "kg started");
    let options = RunOptions { resync: cli.resync_period, device_poll: Duration::from_secs(5), clean_up: cli.clean_up, clean_up_interface: cli.clean_up_interface };
    kilo_net_linux::agent::run(Agent::new(config), backend, host, detect, options, shared, shutdown_signal()).await?;
    Ok(())
}
