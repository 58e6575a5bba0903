//! The host: one place that makes a Linux host match a [`Plan`] from `kilo-core`, as minimal
//! changes, and says what it changed. The agent calls [`Host::apply`] for every plan; when
//! nothing differs it performs no write at all (no WireGuard set, no netlink write, no firewall
//! write), so resyncs never disturb live connections.
//!
//! The host decides nothing: the plan states the interface's WireGuard configuration, address
//! and link state for both roles ([`kilo_core::plan::PlanInterface`]), and the one rule for DNS
//! endpoints that do not resolve is [`kilo_core::dns`]'s.
//!
//! Order of one apply (upstream 10.3 steps 5-12): the WireGuard interface itself (re-created,
//! empty, when it was deleted: see [`Host::apply`]), MTU, the WireGuard configuration (DNS
//! endpoints resolved, diffed peer by peer), the address, the link state; the encapsulation
//! tunnel; routes and rules; firewall rules.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kilo_core::dns::Resolved;
use kilo_core::plan::Plan;
use kilo_core::wireguard::{self, Config};

use crate::discovery::detect_mtu;
use crate::firewall::{
    Firewall, FirewallError, Iptables, NFT_TABLE, NFT_TABLE_IPV6, Nftables, Runner, TableWatch,
    Variant, write_count,
};
use crate::reconcile::{LinkMonitor, ReconcileError, RouteMonitor, RouteReconciler};
use crate::wireguard::{
    Device, DeviceOptions, DeviceState, WireGuardChoice, WireGuardError, WireGuardKind,
};
use crate::{Netlink, NetlinkError};

/// Which firewall implementation to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FirewallKind {
    /// What the host already uses ([`crate::firewall::Survey::choice`]): the `iptables`
    /// binaries when it has rules there (kubelet's hint chains or any rule, in either variant),
    /// native nftables otherwise or without the binaries.
    Auto,
    /// The `iptables`/`ip6tables` binaries (the variant the host already uses).
    Iptables,
    /// Native nftables over netlink.
    Nftables,
}

/// The firewall of `kind`; [`FirewallKind::Auto`] looks at the host first. When auto picks
/// `iptables`, tables that native nftables left behind (an earlier run on this host before
/// it used `iptables`) are removed, so Kilo's rules are never in both.
fn open_firewall(kind: FirewallKind) -> Firewall {
    let runner = Runner::new();
    match kind {
        FirewallKind::Iptables => Firewall::Iptables(Iptables::detect(runner)),
        FirewallKind::Nftables => Firewall::Nftables(Nftables::new()),
        FirewallKind::Auto => {
            let survey = crate::firewall::survey(&runner);
            match survey.choice() {
                crate::firewall::Choice::Iptables(variant) => {
                    tracing::info!(
                        ?variant,
                        legacy_rules = survey.legacy_rules,
                        nft_rules = survey.nft_rules,
                        kubelet_hint = survey.hint.is_some(),
                        "firewall: iptables (the host already has rules there)"
                    );
                    match Nftables::new().clean_up_leftovers() {
                        Ok(false) => {}
                        Ok(true) => tracing::info!("removed the native nftables tables of Kilo's"),
                        Err(e) => tracing::debug!(
                            error = %e,
                            "no native nftables tables of Kilo's to remove"
                        ),
                    }
                    Firewall::Iptables(Iptables::new(runner, variant))
                }
                _ => {
                    tracing::info!(
                        iptables_binaries = survey.binaries,
                        "firewall: native nftables (the host has no iptables rules)"
                    );
                    Firewall::Nftables(Nftables::new())
                }
            }
        }
    }
}

/// How to open the host: [`HostOptions::new`], then fields set as needed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HostOptions {
    /// The WireGuard interface (`--interface`).
    pub interface: String,
    /// Kernel, userspace or auto (`--wireguard`).
    pub wireguard: WireGuardChoice,
    /// Where userspace devices serve their UAPI sockets.
    pub uapi_dir: PathBuf,
    /// `--mtu`: `None` is auto (default-route interface MTU − 80, else 1420).
    pub mtu: Option<u32>,
    /// `--create-interface`.
    pub create_interface: bool,
    /// The firewall implementation.
    pub firewall: FirewallKind,
    /// The encapsulation tunnel's name (`tunl0`).
    pub tunnel: String,
    /// `--tun-offloads`: whether an in-process userspace device asks its TUN interface for
    /// segmentation offloads ([`DeviceOptions::offloads`]).
    pub offloads: bool,
}

impl HostOptions {
    /// The options for the WireGuard interface `interface`, the rest as `kg`'s flags default:
    /// the WireGuard implementation chosen automatically, UAPI sockets in
    /// [`DEFAULT_UAPI_DIR`](crate::wireguard::DEFAULT_UAPI_DIR), the MTU detected, the interface
    /// created if missing, `iptables`, and Kilo's own tunnel
    /// ([`IPIP_TUNNEL`](kilo_core::routes::IPIP_TUNNEL)).
    pub fn new(interface: impl Into<String>) -> HostOptions {
        HostOptions {
            interface: interface.into(),
            wireguard: WireGuardChoice::default(),
            uapi_dir: PathBuf::from(crate::wireguard::DEFAULT_UAPI_DIR),
            mtu: None,
            create_interface: true,
            firewall: FirewallKind::Auto,
            tunnel: kilo_core::routes::IPIP_TUNNEL.to_string(),
            offloads: true,
        }
    }
}

/// Why the host could not be opened or a plan applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// A netlink operation failed.
    #[error("netlink: {0}")]
    Netlink(#[from] NetlinkError),
    /// The WireGuard device failed.
    #[error("wireguard: {0}")]
    WireGuard(#[from] WireGuardError),
    /// Routes or rules could not all be applied.
    #[error("routes: {0}")]
    Routes(#[from] ReconcileError),
    /// The firewall failed.
    #[error("firewall: {0}")]
    Firewall(#[from] FirewallError),
    /// The WireGuard interface is gone and may not be created (`--create-interface=false`).
    #[error("the WireGuard interface {name} is gone and --create-interface is off")]
    InterfaceGone {
        /// The interface.
        name: String,
    },
}

/// What one [`Host::apply`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// WireGuard operations sent (one per changed peer, plus interface changes).
    pub wireguard: usize,
    /// Link, address and MTU writes.
    pub links: usize,
    /// Route and rule writes.
    pub routes: usize,
    /// Firewall writes.
    pub firewall: u64,
}

impl ApplyReport {
    /// Whether nothing at all was written.
    pub fn is_noop(&self) -> bool {
        *self == ApplyReport::default()
    }
}

/// A Linux host under Kilo's management.
pub struct Host {
    options: HostOptions,
    netlink: Netlink,
    device: Device,
    /// The interface index of the device's link when it was opened: another index (or none)
    /// means the link was deleted, perhaps re-created by someone else.
    link_index: Option<u32>,
    routes: RouteReconciler,
    firewall: Firewall,
    /// nf_tables notifications, when the firewall's rules live in nf_tables (native nftables or
    /// `iptables-nft`): the view that lets [`Host::reconcile_firewall`] skip its listing.
    firewall_watch: Option<TableWatch>,
    /// The watch's stamp when a listing last found every applied rule in place and restored
    /// nothing, with the time of that listing.
    firewall_whole: Option<(u64, Instant)>,
}

/// How long [`Host::reconcile_firewall`] trusts nf_tables notifications before listing anyway
/// (a safety net: a notification the kernel never sent, a bug of ours).
const FIREWALL_LISTING_EVERY: Duration = Duration::from_secs(300);

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("options", &self.options).finish_non_exhaustive()
    }
}

/// nf_tables notifications for `firewall`, when its rules live in nf_tables and the
/// subscription works; `None` otherwise (every resync then lists the firewall).
fn watch_firewall(firewall: &Firewall) -> Option<TableWatch> {
    let in_nf_tables = match firewall {
        Firewall::Nftables(_) => true,
        Firewall::Iptables(iptables) => iptables.variant() == Variant::Nft,
    };
    if !in_nf_tables {
        return None;
    }
    TableWatch::open()
        .inspect_err(|e| {
            tracing::info!(error = %e, "no nf_tables notifications; the firewall is listed on every resync");
        })
        .ok()
}

/// Where the host's device lives: this namespace, the options' socket directory and offloads.
fn device_options(options: &HostOptions) -> DeviceOptions {
    let mut device = DeviceOptions::default();
    device.uapi_dir.clone_from(&options.uapi_dir);
    device.offloads = options.offloads;
    device
}

impl Host {
    /// Connects to the kernel (this process's network namespace), opens or creates the
    /// WireGuard device (`ip link add kilo0 type wireguard`, or an in-process userspace device)
    /// and prepares the route reconciler and firewall.
    pub async fn open(options: HostOptions) -> Result<Host, HostError> {
        let netlink = Netlink::connect()?;
        let device_options = device_options(&options);
        let kind = crate::wireguard::select(options.wireguard, &device_options).await;
        let mtu = match options.mtu {
            Some(mtu) => mtu,
            None => detect_mtu(&netlink).await,
        };
        let device = if options.create_interface {
            Device::open_or_create(kind, &options.interface, mtu, &device_options).await?
        } else {
            Device::open(kind, &options.interface, &device_options).await?
        };
        tracing::info!(interface = %options.interface, kind = ?device.kind(), mtu, "WireGuard device ready");
        let link_index = device_link(&netlink, &device).await?;
        let routes = RouteReconciler::new(
            netlink.clone(),
            [options.interface.clone(), options.tunnel.clone()],
        );
        let firewall = open_firewall(options.firewall);
        let firewall_watch = watch_firewall(&firewall);
        Ok(Host {
            options,
            netlink,
            device,
            link_index,
            routes,
            firewall,
            firewall_watch,
            firewall_whole: None,
        })
    }

    /// The firewall implementation in use ([`FirewallKind::Auto`] resolved).
    pub fn firewall_kind(&self) -> FirewallKind {
        match self.firewall {
            Firewall::Iptables(_) => FirewallKind::Iptables,
            Firewall::Nftables(_) => FirewallKind::Nftables,
        }
    }

    /// The WireGuard device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The netlink connection.
    pub fn netlink(&self) -> &Netlink {
        &self.netlink
    }

    /// Route and rule writes made so far (including the route monitor's).
    pub fn route_writes(&self) -> u64 {
        self.routes.writes()
    }

    /// Reads of the kernel's routes and rules made so far (one route and one rule dump each):
    /// a resync of an unchanged host makes none while the route monitor runs.
    pub fn route_reads(&self) -> u64 {
        self.routes.reads()
    }

    /// Firewall operation counts by upstream's metric labels.
    pub fn firewall_operations(
        &self,
    ) -> std::collections::BTreeMap<crate::firewall::OpLabels, u64> {
        self.firewall.operations()
    }

    /// A monitor that restores managed routes as soon as someone deletes them.
    pub fn route_monitor(&self) -> Result<RouteMonitor, NetlinkError> {
        self.routes.monitor()
    }

    /// A monitor that tells when the WireGuard interface is deleted (the agent then applies its
    /// plan again at once, re-creating it).
    pub fn link_monitor(&self) -> Result<LinkMonitor, NetlinkError> {
        LinkMonitor::new(&self.netlink, &self.options.interface)
    }

    /// Whether the WireGuard interface is gone: its link is missing or is another link now
    /// (deleted, perhaps re-created by someone else), or the in-process device stopped.
    pub async fn interface_gone(&self) -> Result<bool, HostError> {
        let link = device_link(&self.netlink, &self.device).await?;
        Ok(!self.device.is_running() || link.is_none() || link != self.link_index)
    }

    /// Re-creates the WireGuard device when it is gone ([`Host::interface_gone`]): stops what is
    /// left of the old one, then opens or creates it again as at start (`ip link add kilo0 type
    /// wireguard`, or a new in-process userspace device). The new device is empty: the apply
    /// that follows configures its key, port, peers, address, MTU, state and routes. Returns
    /// whether it re-created the device.
    async fn ensure_device(&mut self) -> Result<bool, HostError> {
        if !self.interface_gone().await? {
            return Ok(false);
        }
        let name = self.options.interface.clone();
        if !self.options.create_interface {
            return Err(HostError::InterfaceGone { name });
        }
        tracing::warn!(interface = %name, "the WireGuard interface is gone; re-creating it");
        self.device.stop().await;
        let device_options = device_options(&self.options);
        let mtu = match self.options.mtu {
            Some(mtu) => mtu,
            None => detect_mtu(&self.netlink).await,
        };
        self.device =
            Device::open_or_create(self.device.kind(), &name, mtu, &device_options).await?;
        self.link_index = device_link(&self.netlink, &self.device).await?;
        tracing::info!(interface = %name, kind = ?self.device.kind(), "re-created the WireGuard interface");
        Ok(true)
    }

    /// What the WireGuard device reports now (peers, endpoints, handshakes, counters).
    pub async fn observe(&self) -> Result<DeviceState, HostError> {
        Ok(self.device.read().await?)
    }

    /// Makes the host match `plan`, changing only what differs. A WireGuard interface that was
    /// deleted is re-created first (an error with `--create-interface=false`, or while its name
    /// is taken by another link), and everything on it set again.
    pub async fn apply(&mut self, plan: &Plan) -> Result<ApplyReport, HostError> {
        let mut report = ApplyReport::default();
        let name = self.options.interface.clone();
        report.links += usize::from(self.ensure_device().await?);
        let mtu = match self.options.mtu {
            Some(mtu) => mtu,
            None => detect_mtu(&self.netlink).await,
        };
        report.links += usize::from(self.netlink.ensure_link_mtu(&name, mtu).await?);

        let current = self.device.read().await?.to_config();
        let desired = resolve_wireguard(&plan.interface.wireguard, &current).await;
        for unresolved in &desired.unresolved {
            tracing::warn!(interface = %name, "{unresolved}");
        }
        let diff = wireguard::diff(&current, &desired.config);
        if !diff.is_empty() {
            tracing::info!(interface = %name, "WireGuard changes:\n{diff}");
            report.wireguard += self.device.apply(&diff).await?;
        }

        let addresses = plan.interface.addresses();
        if !addresses.is_empty() {
            let link = self.netlink.link(&name).await?;
            report.links += self.netlink.set_only_addresses(&link, &addresses).await?;
        }
        report.links +=
            usize::from(self.netlink.ensure_link_state(&name, plan.interface.up).await?);

        if let Some(address) = plan.tunnel_address {
            let tunnel = self.netlink.ensure_ipip_tunnel(&self.options.tunnel).await?;
            report.links += self.netlink.set_only_address(&tunnel, address).await?;
            report.links += usize::from(self.netlink.ensure_link_state(&tunnel.name, true).await?);
        }

        let routes = self.routes.reconcile(&plan.routes, &plan.rules).await?;
        report.routes += routes.len();

        let before = write_count(&self.firewall.operations());
        let firewall = &mut self.firewall;
        tokio::task::block_in_place(|| firewall.set(&plan.firewall))?;
        report.firewall = write_count(&self.firewall.operations()) - before;
        Ok(report)
    }

    /// Restores firewall rules someone deleted (upstream's periodic iptables reconcile).
    ///
    /// Where the rules live in nf_tables (native nftables, `iptables-nft`), the kernel reports
    /// every change of a table, and a resync that finds no change of Kilo's tables since a
    /// listing found all its rules in place lists nothing and returns 0 (for at most
    /// five minutes in a row: then it lists anyway). Legacy iptables reports nothing, so there
    /// every call lists.
    pub fn reconcile_firewall(&mut self) -> Result<usize, HostError> {
        let stamp = self.firewall_stamp();
        if let (Some(now), Some((whole, at))) = (stamp, self.firewall_whole)
            && now == whole
            && at.elapsed() < FIREWALL_LISTING_EVERY
        {
            return Ok(0);
        }
        let firewall = &mut self.firewall;
        let restored = tokio::task::block_in_place(|| firewall.reconcile());
        self.firewall_whole = match (&restored, stamp) {
            (Ok(0), Some(stamp)) => Some((stamp, Instant::now())),
            _ => None,
        };
        Ok(restored?)
    }

    /// The watch's stamp of the tables Kilo's rules live in; `None` without a watch.
    fn firewall_stamp(&self) -> Option<u64> {
        let watch = self.firewall_watch.as_ref()?;
        match &self.firewall {
            Firewall::Nftables(_) => watch.stamp([NFT_TABLE, NFT_TABLE_IPV6]),
            Firewall::Iptables(_) => watch.stamp(kilo_core::firewall::TABLES),
        }
    }

    /// Removes what Kilo created (upstream 10.4): firewall rules, routes and rules, and with
    /// `interface` the WireGuard interface. Every step runs even when an earlier one fails; the
    /// first error is returned.
    pub async fn clean_up(mut self, interface: bool) -> Result<(), HostError> {
        let mut first: Option<HostError> = None;
        let firewall = &mut self.firewall;
        if let Err(e) = tokio::task::block_in_place(|| firewall.clean_up()) {
            tracing::error!(error = %e, "clean-up: firewall");
            first.get_or_insert(e.into());
        }
        if let Err(e) = self.routes.clean_up().await {
            tracing::error!(error = %e, "clean-up: routes");
            first.get_or_insert(e.into());
        }
        if interface && let Err(e) = self.device.delete().await {
            tracing::error!(error = %e, "clean-up: interface");
            first.get_or_insert(e.into());
        }
        first.map_or(Ok(()), Err)
    }
}

/// The interface index of `device`'s link: the link of its name, if it is of the kind the
/// device runs on (`wireguard` for the kernel, `tun` for userspace; a link the kernel does not
/// name a kind of is taken to be it).
async fn device_link(netlink: &Netlink, device: &Device) -> Result<Option<u32>, NetlinkError> {
    let expected = match device.kind() {
        WireGuardKind::Kernel => "wireguard",
        WireGuardKind::Userspace => "tun",
    };
    Ok(netlink
        .find_link(device.name())
        .await?
        .filter(|l| l.kind.as_deref().is_none_or(|k| k == expected))
        .map(|l| l.index))
}

/// Resolves the DNS endpoints of `config` (WireGuard needs addresses) with the rule of
/// [`kilo_core::dns`]: a name that does not resolve keeps its peer's last address (its
/// endpoint's, else the one `current`, the device's configuration, has for the peer), else
/// leaves the peer without an endpoint; each such name is reported in [`Resolved::unresolved`]
/// for the caller to log, and the rest of the configuration is applied. The names are looked up
/// as `getent hosts NAME` does, through the process's [`crate::resolve::Resolver::agent`]:
/// concurrently, the last good answer at once when DNS is slow or down, at most a short wait for
/// a name never resolved.
pub async fn resolve_wireguard(config: &Config, current: &Config) -> Resolved {
    crate::resolve::Resolver::agent().resolve_config(config, current).await
}

/// [`resolve_wireguard`] knowing nothing of the device: a name that does not resolve leaves
/// its peer without an endpoint unless the endpoint carries an address already. Returns the
/// configuration and the endpoints (`host:port`) whose names did not resolve. Prefer
/// [`resolve_wireguard`], which keeps the device's last address for such a peer.
pub async fn resolve_endpoints(config: &Config) -> (Config, Vec<String>) {
    let resolved = resolve_wireguard(config, &Config::default()).await;
    (resolved.config, resolved.unresolved.into_iter().map(|u| u.endpoint).collect())
}

#[cfg(test)]
mod tests {
    use kilo_core::Key;
    use kilo_core::dns::Unresolved;
    use kilo_core::wireguard::PeerConfig;

    use super::*;

    fn peer(n: u8, endpoint: &str) -> PeerConfig {
        PeerConfig {
            public_key: Key::from_bytes([n; 32]),
            endpoint: Some(endpoint.parse().unwrap()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn resolving_a_configuration_applies_the_cores_rule_to_the_resolvers_answers() {
        // `.invalid` never resolves (RFC 6761); `localhost` does, from /etc/hosts.
        let config = Config {
            interface: None,
            peers: vec![
                peer(1, "localhost:51820"),
                peer(2, "kilo-test.invalid:51821"),
                peer(3, "kilo-test.invalid:51822"),
            ],
        };
        let current = Config { interface: None, peers: vec![peer(2, "192.0.2.2:51821")] };
        let resolved = resolve_wireguard(&config, &current).await;
        let addrs: Vec<Option<std::net::SocketAddr>> = resolved
            .config
            .peers
            .iter()
            .map(|p| p.endpoint.as_ref().and_then(|e| e.addr()))
            .collect();
        let localhost = addrs[0].expect("localhost resolves");
        assert!(localhost.ip().is_loopback() && localhost.port() == 51820, "{localhost}");
        assert_eq!(addrs[1..], [Some("192.0.2.2:51821".parse().unwrap()), None]);
        assert_eq!(
            resolved.unresolved,
            [
                Unresolved {
                    peer: Key::from_bytes([2; 32]),
                    endpoint: "kilo-test.invalid:51821".into(),
                    kept: Some("192.0.2.2:51821".parse().unwrap()),
                },
                Unresolved {
                    peer: Key::from_bytes([3; 32]),
                    endpoint: "kilo-test.invalid:51822".into(),
                    kept: None,
                },
            ]
        );
        // Without the device's configuration, as kgctl connect used to ask.
        let (config, names) = resolve_endpoints(&config).await;
        assert_eq!(config.peers[1].endpoint, None);
        assert_eq!(names, ["kilo-test.invalid:51821", "kilo-test.invalid:51822"]);
    }
}
