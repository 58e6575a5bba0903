//! The agent's runtime: drives `kilo-core`'s state machine ([`kilo_core::agent::Agent`]) with
//! backend events, timers and the observed WireGuard device, and carries out its actions on a
//! [`Host`]. All decisions stay in the core; this loop only moves data and counts.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kilo_core::agent::{Action, Agent, HostFacts, Input, ObservedPeer};
use kilo_core::{Backend, Event};

use crate::chain::chain;
use crate::metrics::Shared;

use kilo_net_linux::host::{Host, HostError};
use kilo_net_linux::wireguard::DeviceState;

/// Upstream's check-in period.
pub const CHECK_IN: Duration = Duration::from_secs(30);

/// How long the host's clean-up on exit (firewall rules, routes, the interface) may take.
pub const CLEAN_UP_HOST: Duration = Duration::from_secs(15);

/// How long removing the node's published data on exit (the Kubernetes API) may take. With
/// [`CLEAN_UP_HOST`], the whole clean-up stays well within Kubernetes' 30 s grace period.
pub const CLEAN_UP_PUBLISHED: Duration = Duration::from_secs(5);

/// How long publishing the local node may take before the loop gives up on it (until the next
/// check-in).
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// `--resync-period`: reconcile everything this often.
    pub resync: Duration,
    /// How often the WireGuard device is read (NAT discovery, per-peer metrics).
    pub device_poll: Duration,
    /// `--clean-up`: remove firewall rules, routes and published annotations on exit.
    pub clean_up: bool,
    /// `--clean-up-interface`: also delete the WireGuard interface.
    pub clean_up_interface: bool,
    /// `--cni` with `--cni-path`: keep the CNI conflist's pod subnet equal to the local node's
    /// (upstream 9.5), at start and on every resync.
    pub cni_path: Option<std::path::PathBuf>,
}

/// Re-detects the host's addresses (upstream 9.1) on every resync; returns `None` when
/// detection is not wanted or failed (the last facts stay in force).
pub type Detect =
    Box<dyn FnMut() -> std::pin::Pin<Box<dyn Future<Output = Option<HostFacts>> + Send>> + Send>;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn observed(state: &DeviceState) -> Vec<ObservedPeer> {
    state
        .peers
        .iter()
        .map(|p| ObservedPeer {
            public_key: p.config.public_key,
            endpoint: p.config.endpoint.as_ref().and_then(|e| e.addr()),
            last_handshake: p
                .last_handshake
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        })
        .collect()
}

fn input_of(event: Event) -> Input {
    match event {
        Event::NodeChanged(n) => Input::NodeChanged(n),
        Event::NodeRemoved(n) => Input::NodeRemoved(n),
        Event::PeerChanged(p) => Input::PeerChanged(p),
        Event::PeerRemoved(p) => Input::PeerRemoved(p),
        Event::Reset(s) => Input::Reset(s),
        Event::Invalid(i) => Input::Invalid(i),
    }
}

struct Loop<B: Backend> {
    agent: Agent,
    backend: B,
    host: Host,
    shared: Arc<Shared>,
    /// Route and rule writes already counted in the metrics.
    route_writes: u64,
}

impl<B: Backend> Loop<B> {
    async fn feed(&mut self, input: Input) {
        let actions = self.agent.handle(now(), input);
        for action in actions {
            match action {
                Action::Publish(node) => {
                    // A source that hangs (an API server that accepts and never answers) must
                    // not stall the loop: the next check-in publishes again.
                    match tokio::time::timeout(PUBLISH_TIMEOUT, self.backend.publish_local(&node))
                        .await
                    {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::error!(error = %chain(&e), "failed to publish the local node");
                            self.shared.metrics.error("local");
                        }
                        Err(_) => {
                            tracing::error!(
                                "failed to publish the local node: no answer within {} s",
                                PUBLISH_TIMEOUT.as_secs()
                            );
                            self.shared.metrics.error("local");
                        }
                    }
                }
                Action::Apply(plan) => {
                    let started = Instant::now();
                    match self.host.apply(&plan).await {
                        Ok(report) => {
                            if !report.is_noop() {
                                tracing::info!(?report, leader = plan.leader, "applied plan");
                            } else {
                                tracing::debug!("plan already in force");
                            }
                            let m = &self.shared.metrics;
                            m.wireguard_operations.inc_by(report.wireguard as u64);
                            m.netlink_writes.inc_by(report.links as u64);
                            self.shared.set_healthy();
                        }
                        Err(e) => {
                            tracing::error!(error = %chain(&e), "failed to apply the plan");
                            self.shared.metrics.error("apply");
                            self.shared.set_unhealthy(format!("applying the plan failed: {e}"));
                        }
                    }
                    self.shared.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
                    self.shared.metrics.sync_iptables(&self.host.firewall_operations());
                }
                Action::Blocked(why) => tracing::warn!(reason = %why, "not applying"),
                Action::Warn(what) => tracing::warn!("{what}"),
            }
        }
        self.sync_route_writes();
        let status = self.agent.status().clone();
        let m = &self.shared.metrics;
        m.leader.set(i64::from(status.leader));
        m.nodes.set(status.nodes as i64);
        m.peers.set(status.peers as i64);
        m.invalid.set(status.invalid as i64);
        let reconciles = m.reconciles.get();
        if status.reconciles > reconciles {
            m.reconciles.inc_by(status.reconciles - reconciles);
            // `/graph` draws the mesh as of the last reconcile; it is computed on request.
            *self.shared.mesh.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(Arc::new(self.agent.clone()));
        }
    }

    /// Brings `kilo_netlink_writes_total` up to the route reconciler's count, which includes the
    /// route monitor's restores made between plans.
    fn sync_route_writes(&mut self) {
        let writes = self.host.route_writes();
        self.shared.metrics.netlink_writes.inc_by(writes.saturating_sub(self.route_writes));
        self.route_writes = writes;
    }

    /// Upstream 9.5: the CNI conflist's IPAM range follows the local node's pod CIDR.
    fn update_cni(&self, path: Option<&std::path::Path>, hostname: &str) {
        let Some(path) = path else { return };
        let Some(subnet) = self.agent.nodes().get(hostname).and_then(kilo_core::Node::subnet)
        else {
            return;
        };
        match kilo_net_linux::cni::update_cni_config(path, subnet) {
            Ok(true) => {
                tracing::info!(path = %path.display(), %subnet, "updated the CNI configuration")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %chain(&e), "cannot update the CNI configuration");
                self.shared.metrics.error("run");
            }
        }
    }

    async fn observe(&mut self) {
        match self.host.observe().await {
            Ok(state) => {
                self.shared.metrics.observe_device(&state);
                self.feed(Input::Device(observed(&state))).await;
            }
            Err(e) => {
                tracing::warn!(error = %chain(&e), "cannot read the WireGuard device");
                self.shared.metrics.error("run");
                self.shared.set_unhealthy(format!("cannot read the WireGuard device: {e}"));
            }
        }
    }
}

/// Runs the agent until `shutdown` completes or the backend ends, then cleans up as asked.
pub async fn run<B: Backend>(
    agent: Agent,
    mut backend: B,
    host: Host,
    mut detect: Detect,
    options: RunOptions,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), HostError> {
    let hostname = agent.config().hostname.clone();
    let monitor = host.route_monitor()?;
    let monitor = tokio::spawn(monitor.run());
    // A deleted WireGuard interface is re-created by the next apply: make that now.
    let mut links = host.link_monitor()?;
    let initial = backend.snapshot().await;
    let mut l = Loop { agent, backend, host, shared, route_writes: 0 };
    if let Some(facts) = detect().await {
        l.feed(Input::HostFacts(facts)).await;
    }
    match initial {
        Ok(snapshot) => {
            l.feed(Input::Reset(snapshot)).await;
            l.update_cni(options.cni_path.as_deref(), &hostname);
        }
        Err(e) => {
            tracing::error!(error = %chain(&e), "cannot read the mesh");
            l.shared.metrics.error("run");
        }
    }
    let mut resync = tokio::time::interval(options.resync);
    let mut check_in = tokio::time::interval(CHECK_IN);
    let mut poll = tokio::time::interval(options.device_poll);
    for timer in [&mut resync, &mut check_in, &mut poll] {
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        timer.reset();
    }
    tokio::pin!(shutdown);
    // The shutdown signal ends the loop even in the middle of a step (a publication waiting on a
    // slow API, say): what was half done is cleaned up below or reconciled at the next start.
    let events = async {
        loop {
            tokio::select! {
                event = l.backend.next_event() => match event {
                    Some(Ok(event)) => l.feed(input_of(event)).await,
                    Some(Err(e)) => {
                        tracing::error!(error = %chain(&e), "the mesh source reported an error; keeping the last good state");
                        l.shared.metrics.error("run");
                    }
                    None => {
                        tracing::warn!("the mesh source ended");
                        break;
                    }
                },
                _ = resync.tick() => {
                    if let Some(facts) = detect().await {
                        l.feed(Input::HostFacts(facts)).await;
                    }
                    l.update_cni(options.cni_path.as_deref(), &hostname);
                    l.feed(Input::Resync).await;
                    if let Err(e) = l.host.reconcile_firewall() {
                        tracing::error!(error = %chain(&e), "firewall reconcile failed");
                        l.shared.metrics.error("run");
                    }
                    l.shared.metrics.sync_iptables(&l.host.firewall_operations());
                }
                Some(()) = links.deleted() => {
                    tracing::warn!("the WireGuard interface was deleted; applying the plan again");
                    l.feed(Input::Resync).await;
                }
                _ = check_in.tick() => l.feed(Input::CheckIn).await,
                _ = poll.tick() => l.observe().await,
            }
        }
    };
    tokio::select! {
        () = events => {}
        () = &mut shutdown => {}
    }
    monitor.abort();
    if !options.clean_up {
        return Ok(());
    }
    clean_up(l.backend, l.host, &l.shared, &hostname, options.clean_up_interface).await
}

/// Upstream 10.4, bounded: the host first (firewall rules and routes left behind break traffic;
/// stale annotations only age out), then the published node data. Each step has its own budget
/// ([`CLEAN_UP_HOST`], [`CLEAN_UP_PUBLISHED`]) and its outcome is logged; a step that runs out
/// of time is abandoned so that the agent exits within Kubernetes' grace period. The host's
/// error, if any, is returned.
async fn clean_up<B: Backend>(
    mut backend: B,
    host: Host,
    shared: &Shared,
    hostname: &str,
    interface: bool,
) -> Result<(), HostError> {
    tracing::info!("cleaning up");
    let started = Instant::now();
    // Its own task, so that the budget holds even while a step blocks its thread (the
    // iptables binaries run in `block_in_place`).
    let host_step = tokio::spawn(host.clean_up(interface));
    let result = match tokio::time::timeout(CLEAN_UP_HOST, host_step).await {
        Ok(Ok(Ok(()))) => {
            tracing::info!(elapsed = ?started.elapsed(), "clean-up: host done (firewall, routes{})",
                if interface { ", interface" } else { "" });
            Ok(())
        }
        Ok(Ok(Err(e))) => {
            tracing::error!(error = %chain(&e), "clean-up: host failed");
            shared.metrics.error("cleanUp");
            Err(e)
        }
        Ok(Err(e)) => {
            tracing::error!(error = %chain(&e), "clean-up: host step ended abnormally");
            shared.metrics.error("cleanUp");
            Ok(())
        }
        Err(_) => {
            tracing::error!(budget = ?CLEAN_UP_HOST, "clean-up: host did not finish in time; giving up");
            shared.metrics.error("cleanUp");
            Ok(())
        }
    };
    let step = Instant::now();
    match tokio::time::timeout(CLEAN_UP_PUBLISHED, backend.clean_up_local(hostname)).await {
        Ok(Ok(())) => {
            tracing::info!(elapsed = ?step.elapsed(), "clean-up: node annotations removed")
        }
        Ok(Err(e)) => {
            tracing::error!(error = %chain(&e), "clean-up: node annotations");
            shared.metrics.error("cleanUp");
        }
        Err(_) => {
            tracing::error!(budget = ?CLEAN_UP_PUBLISHED, "clean-up: node annotations: no answer in time; leaving them");
            shared.metrics.error("cleanUp");
        }
    }
    tracing::info!(elapsed = ?started.elapsed(), "clean-up finished");
    result
}
