//! `Host::apply` against the real kernel, inside a network namespace the test creates and deletes
//! (even when it fails): the host applies what the plan states for the WireGuard interface, in
//! both roles. Needs root (CI runs as root); without it the test skips, saying so.
//!
//! The host runs on a thread that entered the namespace before building its tokio runtime, so
//! its netlink sockets, WireGuard device and firewall are all inside the namespace. The plans'
//! routes, rules, firewall rules and tunnel are emptied: this test is about the interface.

mod root_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use kilo_core::firewall::RuleSet;
use kilo_core::plan::{Plan, PlanOptions};
use kilo_core::routes::Interfaces;
use kilo_core::wireguard::{Config, InterfaceConfig};
use kilo_core::{Encapsulation, Granularity, Topology, TopologyInput, fixtures};
use kilo_net_linux::host::{FirewallKind, Host, HostOptions};
use kilo_net_linux::wireguard::{WireGuardChoice, netns};

/// A network namespace deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Result<Netns> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("khost-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip").args(args).output().context("cannot run ip")?;
    ensure!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The whole plan of fixture node `hostname` (location granularity: `b` leads location 2, `c`
/// does not), without encapsulation, CNI or local routes; FORWARD accepts when `forward_rules`.
fn whole_plan(hostname: &str, forward_rules: bool) -> Plan {
    let topology = Topology::new(TopologyInput {
        nodes: &fixtures::nodes(),
        peers: &fixtures::peers(),
        granularity: Granularity::Location,
        hostname,
        port: 51821,
        key: fixtures::private_key(),
        subnet: fixtures::subnet(),
        subnet6: None,
        service_cidrs: &[],
        persistent_keepalive: Duration::ZERO,
    })
    .expect("the fixture's topology");
    let interfaces =
        Interfaces { kilo: "kilo0".into(), private: "eth0".into(), tunnel: "tunl0".into() };
    let mut options = PlanOptions::new(hostname, interfaces);
    options.local = false;
    options.cni = false;
    options.iptables_forward_rules = forward_rules;
    options.encapsulation = Encapsulation::Never;
    options.compatibility = None;
    let wireguard = topology.leader.then(|| topology.conf_for_device());
    Plan::new(&topology, wireguard, &options)
}

/// The plan of fixture node `hostname` with only the interface part left.
fn plan(hostname: &str) -> Plan {
    let mut plan = whole_plan(hostname, false);
    plan.routes.clear();
    plan.rules.clear();
    plan.firewall = RuleSet::default();
    plan.tunnel_address = None;
    plan
}

/// The host's options: `kilo0` created with MTU 1420, WireGuard as available, sockets in
/// `uapi_dir`.
fn host_options(uapi_dir: PathBuf, firewall: FirewallKind) -> HostOptions {
    let mut options = HostOptions::new("kilo0");
    options.wireguard = WireGuardChoice::Auto;
    options.uapi_dir = uapi_dir;
    options.mtu = Some(1420);
    options.create_interface = true;
    options.firewall = firewall;
    options.tunnel = "tunl0".into();
    options
}

/// The link as `ip -details link show` prints it (flags `<…,UP,…>`).
fn link(ns: &Netns) -> Result<String> {
    ns.ip(&["-details", "link", "show", "kilo0"])
}

/// The link's addresses, as `ip -brief addr show` prints them.
fn addresses(ns: &Netns) -> Result<String> {
    ns.ip(&["-brief", "addr", "show", "kilo0"])
}

#[test]
fn a_leader_turned_non_leader_gets_exactly_what_its_plan_states_for_the_interface() {
    if root_support::skip_unless_root() {
        return;
    }
    let ns = Netns::new().unwrap();
    let uapi = tempfile::tempdir().unwrap();
    let (path, uapi_dir) = (ns.path(), uapi.path().to_path_buf());
    let leader = plan("b");
    let follower = plan("c");
    assert!(leader.leader && !follower.leader);
    let leader_wireguard = leader.interface.wireguard.clone();
    let (tx, rx) = std::sync::mpsc::channel::<(&'static str, Config)>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let host_thread = std::thread::spawn(move || -> Result<()> {
        netns::enter(&path)?;
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        runtime.block_on(async move {
            let mut host = Host::open(host_options(uapi_dir, FirewallKind::Nftables)).await?;
            host.apply(&leader).await?;
            tx.send(("leader", host.observe().await?.to_config()))?;
            go_rx.recv()?;
            host.apply(&follower).await?;
            tx.send(("follower", host.observe().await?.to_config()))?;
            go_rx.recv()?;
            let again = host.apply(&follower).await?;
            ensure!(again.is_noop(), "applying the same plan again wrote: {again:?}");
            host.clean_up(true).await?;
            Ok(())
        })
    });
    let own = Some(InterfaceConfig {
        private_key: Some(fixtures::private_key()),
        listen_port: Some(51821),
    });

    let Ok((role, device)) = rx.recv() else {
        panic!("the leader's apply: {:?}", host_thread.join());
    };
    assert_eq!(role, "leader");
    assert_eq!(device.interface, own);
    assert_eq!(device.normalized(), leader_wireguard.normalized());
    assert!(!device.peers.is_empty());
    let flags = link(&ns).unwrap();
    assert!(flags.contains(",UP") || flags.contains("<UP"), "the leader's link is up: {flags}");
    assert!(addresses(&ns).unwrap().contains("10.4.0.2/16"), "{}", addresses(&ns).unwrap());
    go_tx.send(()).unwrap();

    let Ok((role, device)) = rx.recv() else {
        panic!("the follower's apply: {:?}", host_thread.join());
    };
    assert_eq!(role, "follower");
    assert_eq!(device, Config { interface: own, peers: Vec::new() });
    let flags = link(&ns).unwrap();
    assert!(
        !flags.contains(",UP") && !flags.contains("<UP"),
        "a non-leader's link is down: {flags}"
    );
    go_tx.send(()).unwrap();

    host_thread.join().expect("the host thread").unwrap();
}

/// The read operations (listings) among `Host::firewall_operations`.
fn firewall_listings(host: &Host) -> u64 {
    host.firewall_operations().iter().filter(|(l, _)| !l.operation.is_write()).map(|(_, n)| n).sum()
}

/// What one resync of the agent costs the host (its `apply` of the same plan and its firewall
/// reconcile): route dumps, firewall listings, and every write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ResyncCost {
    route_reads: u64,
    firewall_listings: u64,
    route_writes: u64,
    firewall_writes: u64,
}

fn cost(host: &Host) -> ResyncCost {
    ResyncCost {
        route_reads: host.route_reads(),
        firewall_listings: firewall_listings(host),
        route_writes: host.route_writes(),
        firewall_writes: kilo_net_linux::firewall::write_count(&host.firewall_operations()),
    }
}

/// One resync as the agent makes it, after the notifications of the last one had time to arrive.
async fn resync(host: &mut Host, plan: &Plan) -> Result<usize> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    host.apply(plan).await?;
    Ok(host.reconcile_firewall()?)
}

/// Leader `b`'s plan with its routes on the WireGuard interface and its firewall rules (the
/// namespace has no `eth0` for the others, nor the node's private IP for their sources).
fn plan_with_routes() -> Plan {
    let mut leader = whole_plan("b", true);
    leader.routes = leader
        .routes
        .into_iter()
        .filter(|r| r.dev == "kilo0")
        .map(|r| kilo_core::routes::Route { src: None, ..r })
        .collect();
    leader.rules.clear();
    leader.tunnel_address = None;
    leader
}

/// Resyncs of an unchanged host read nothing (no route dump, no firewall listing) once the
/// kernel's notifications show nothing changed; a route added and a firewall chain flushed behind
/// Kilo's back are found and repaired at the next resync. With native nftables and with
/// `iptables-nft` (both in nf_tables, which notifies); legacy iptables lists every time.
#[test]
fn an_unchanged_host_reads_nothing_on_resync_and_a_change_behind_its_back_is_repaired() {
    if root_support::skip_unless_root() {
        return;
    }
    for (kind, flush) in [
        (FirewallKind::Nftables, &["nft", "flush", "chain", "ip", "kilo", "nat-KILO-NAT"][..]),
        (FirewallKind::Iptables, &["iptables-nft", "-t", "nat", "-F", "KILO-NAT"][..]),
    ] {
        let ns = Netns::new().unwrap();
        let uapi = tempfile::tempdir().unwrap();
        let (path, uapi_dir) = (ns.path(), uapi.path().to_path_buf());
        let plan = plan_with_routes();
        assert!(!plan.routes.is_empty() && !plan.firewall.append.is_empty());
        let (tx, rx) = std::sync::mpsc::channel::<ResyncCost>();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let host_thread = std::thread::spawn(move || -> Result<Vec<ResyncCost>> {
            netns::enter(&path)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let mut host = Host::open(host_options(uapi_dir, kind)).await?;
                let monitor = tokio::spawn(host.route_monitor()?.run());
                host.apply(&plan).await?;
                // Settling: the first resyncs read (the apply's own notifications arrive).
                for _ in 0..3 {
                    resync(&mut host, &plan).await?;
                }
                let settled = cost(&host);
                for _ in 0..3 {
                    ensure!(resync(&mut host, &plan).await? == 0, "a quiet resync restored rules");
                }
                let quiet = cost(&host);
                tx.send(quiet)?;
                go_rx.recv()?;
                // The test changed the kernel behind the host's back.
                let restored = resync(&mut host, &plan).await?;
                let repaired = cost(&host);
                monitor.abort();
                host.clean_up(true).await?;
                Ok(vec![
                    settled,
                    quiet,
                    repaired,
                    ResyncCost { route_reads: restored as u64, ..quiet },
                ])
            })
        });
        let Ok(quiet) = rx.recv() else {
            panic!("{kind:?}: the host's resyncs: {:?}", host_thread.join());
        };
        // Behind Kilo's back: a `proto static` route on kilo0 no plan has, and a flushed chain.
        ns.ip(&["route", "add", "10.99.0.0/24", "dev", "kilo0", "proto", "static"]).unwrap();
        let out =
            Command::new("ip").args(["netns", "exec", &ns.name]).args(flush).output().unwrap();
        assert!(out.status.success(), "{flush:?}: {}", String::from_utf8_lossy(&out.stderr));
        go_tx.send(()).unwrap();
        let costs = host_thread.join().expect("the host thread").unwrap();
        let (settled, repaired, restored) = (costs[0], costs[2], costs[3].route_reads);
        eprintln!("{kind:?}: settled {settled:?}, repaired {repaired:?}, {restored} restored");
        assert_eq!(quiet, costs[1]);
        assert_eq!(
            quiet, settled,
            "{kind:?}: three quiet resyncs read or wrote something (settled {settled:?}, then {quiet:?})"
        );
        assert_eq!(repaired.route_reads, quiet.route_reads + 1, "{kind:?}: {repaired:?}");
        assert_eq!(
            repaired.route_writes,
            quiet.route_writes + 1,
            "{kind:?}: the stray route deleted"
        );
        assert!(repaired.firewall_listings > quiet.firewall_listings, "{kind:?}: {repaired:?}");
        assert!(restored > 0, "{kind:?}: the flushed chain's rules restored");
        assert!(repaired.firewall_writes > quiet.firewall_writes, "{kind:?}: {repaired:?}");
    }
}
