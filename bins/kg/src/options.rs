//! Turns the flags into the library's checked options, in upstream's order (4.1), with no side
//! effect: a bad flag is one error line and leaves nothing behind.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use kilo_agent::kube::{Cluster, WebhookOptions};
use kilo_agent::{MeshSource, NodeOptions};
use kilo_core::{Cidr, Compatibility, Encapsulation, Granularity};
use kilo_net_linux::host::FirewallKind;
use kilo_net_linux::wireguard::WireGuardKind;

use crate::cli::{BackendKind, Cli, FirewallMode, WebhookArgs, WireGuardMode};

fn cidrs(flag: &str, values: &[String]) -> Result<Vec<Cidr>> {
    let parse = |v: &String| v.parse::<Cidr>().map(|c| c.network());
    values.iter().map(|v| parse(v).map_err(|_| anyhow!("--{flag}: {v:?} is not a CIDR"))).collect()
}

/// `--kubeconfig`, `--master` and `--topology-label` (empty: not given).
fn cluster(cli: &Cli) -> Cluster {
    Cluster {
        kubeconfig: (!cli.kubeconfig.is_empty()).then(|| PathBuf::from(&cli.kubeconfig)),
        master: (!cli.master.is_empty()).then(|| cli.master.clone()),
        topology_label: cli.topology_label.clone(),
    }
}

/// `--subnet`, given once per address family at most: the first range (IPv4 when both are
/// given) and the IPv6 one of a dual-stack mesh, masked to their networks.
fn subnets(values: &[String]) -> Result<(Option<Cidr>, Option<Cidr>)> {
    let cidrs = values
        .iter()
        .map(|v| {
            v.parse::<Cidr>()
                .map(|c| c.network())
                .map_err(|_| anyhow!("failed to parse {v:?} as CIDR"))
        })
        .collect::<Result<Vec<_>>>()?;
    kilo_core::cidr::per_family(&cidrs).context("--subnet")
}

/// The agent's options; every flag is checked here, before the first side effect.
pub fn node(cli: &Cli) -> Result<NodeOptions> {
    let (subnet, subnet6) = subnets(&cli.subnet)?;
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
        m => Some(m.parse().map_err(|_| anyhow!("--mtu: {m:?} is neither auto nor a number"))?),
    };
    if cli.resync_period.is_zero() {
        bail!("--resync-period: must be longer than zero");
    }
    // `:PORT` or `HOST:PORT`, checked without binding.
    if cli.listen.rsplit_once(':').is_none_or(|(_, port)| port.parse::<u16>().is_err()) {
        bail!("--listen: {:?} is not an address (use :PORT or HOST:PORT)", cli.listen);
    }
    kilo_net_linux::wireguard::validate_name(&cli.interface)
        .with_context(|| format!("--interface {:?}", cli.interface))?;
    if cli.key_file.is_empty() {
        bail!("--key-file: must not be empty");
    }
    let source = match cli.backend {
        BackendKind::File => MeshSource::File {
            path: cli.file.clone().context("--backend file needs --file PATH")?.into(),
            topology_label: cli.topology_label.clone(),
        },
        BackendKind::Kubernetes => MeshSource::Kubernetes(cluster(cli)),
    };
    let mut options = NodeOptions::new(hostname, source);
    // Flags that were not given leave the field to the mesh source, then to the default (the
    // flags' defaults are the defaults of `kilo_core::settings`).
    options.explicit.granularity = cli.given("mesh_granularity").then_some(granularity);
    if cli.given("subnet") {
        (options.explicit.subnet, options.explicit.subnet6) = (subnet, subnet6);
    }
    options.explicit.port = cli.given("port").then_some(port);
    options.key_file = cli.key_file.clone().into();
    options.interface = cli.interface.clone();
    options.wireguard = match cli.wireguard {
        WireGuardMode::Auto => None,
        WireGuardMode::Kernel => Some(WireGuardKind::Kernel),
        WireGuardMode::Userspace => Some(WireGuardKind::Userspace),
    };
    options.wireguard_socket_dir = cli.wireguard_socket_dir.clone().into();
    options.tun_offloads = cli.tun_offloads;
    options.create_interface = cli.create_interface;
    options.mtu = mtu;
    options.firewall = match cli.firewall {
        FirewallMode::Auto => FirewallKind::Auto,
        FirewallMode::Iptables => FirewallKind::Iptables,
        FirewallMode::Nftables => FirewallKind::Nftables,
    };
    options.encapsulation = encapsulation;
    options.compatibility = compatibility;
    options.service_cidrs = service_cidrs;
    options.internal_cidrs = internal_cidrs;
    options.local = cli.local;
    options.cni = cli.cni.then(|| cli.cni_path.clone().into());
    options.iptables_forward_rules = cli.iptables_forward_rules;
    options.prioritise_private_addresses = cli.prioritise_private_addresses;
    options.leader_health = cli.leader_health;
    options.listen = cli.listen.clone();
    options.resync = cli.resync_period;
    options.clean_up = cli.clean_up;
    options.clean_up_interface = cli.clean_up_interface;
    Ok(options)
}

/// `kg webhook`'s options. It serves HTTPS only: without a certificate and its key it cannot
/// start.
pub fn webhook(cli: &Cli, args: &WebhookArgs) -> Result<WebhookOptions> {
    let missing: Vec<&str> = [("--cert-file", &args.cert_file), ("--key-file", &args.key_file)]
        .into_iter()
        .filter_map(|(flag, value)| value.is_empty().then_some(flag))
        .collect();
    if !missing.is_empty() {
        bail!(
            "kg webhook needs {}: the PEM certificate and private key it serves HTTPS with, which \
             the API server must trust (e.g. from cert-manager, as upstream's webhook manifest)",
            missing.join(" and ")
        );
    }
    let address = |flag: &str, value: &str| {
        kilo_agent::http::listen_address(value).parse().with_context(|| format!("{flag} {value}"))
    };
    let (webhook_subnet, webhook_subnet6) = subnets(&args.subnet)?;
    Ok(WebhookOptions {
        listen: address("--listen", &args.listen)?,
        listen_metrics: (!args.listen_metrics.is_empty())
            .then(|| address("--listen-metrics", &args.listen_metrics))
            .transpose()?,
        cert_file: args.cert_file.clone().into(),
        key_file: args.key_file.clone().into(),
        subnet: webhook_subnet,
        subnet6: webhook_subnet6,
        service_cidrs: args
            .service_cidr
            .iter()
            .map(|v| v.parse::<Cidr>().map(|c| c.network()))
            .collect::<Result<_, _>>()
            .context("--service-cidr")?,
        cluster: cluster(cli),
    })
}
