//! The loop: drives `kilo-core`'s state machine ([`kilo_core::agent::Agent`]) with backend
//! events, the timers it asks for and what the host reports, and carries out its actions on a
//! [`Host`]. All decisions stay in the core; this loop only moves data and counts.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use kilo_core::Backend;
use kilo_core::agent::{Action, Agent, Input, ObservedPeer};
use kilo_net_linux::wireguard::DeviceState;

use crate::chain::chain;
use crate::clock::Clock;
use crate::host::Host;
use crate::metrics::Shared;

/// How long the host's clean-up on exit (firewall rules, routes, the interface) may take.
pub const CLEAN_UP_HOST: Duration = Duration::from_secs(15);

/// How long removing the node's published data on exit (the Kubernetes API) may take. With
/// [`CLEAN_UP_HOST`], the whole clean-up stays well within Kubernetes' 30 s grace period.
pub const CLEAN_UP_PUBLISHED: Duration = Duration::from_secs(5);

/// How long publishing the local node may take before the loop gives up on it (until the next
/// check-in).
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// What the loop does on exit: [`RunOptions::default`] (nothing cleaned up), then fields set as
/// needed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunOptions {
    /// `--clean-up`: remove firewall rules, routes and published annotations on exit.
    pub clean_up: bool,
    /// `--clean-up-interface`: also delete the WireGuard interface.
    pub clean_up_interface: bool,
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

struct Loop<B: Backend, H: Host, C: Clock> {
    agent: Agent,
    /// Probe results ([`Input::Probed`]) come back here from the tasks that run the probes.
    probed: tokio::sync::mpsc::UnboundedSender<Input>,
    /// Whether a probe that could not be sent has been logged (once, not every round; set by
    /// the probe's task when it fails).
    probe_failed: Arc<AtomicBool>,
    backend: B,
    host: H,
    clock: C,
    shared: Arc<Shared>,
    /// Route and rule writes already counted in the metrics.
    route_writes: u64,
}

impl<B: Backend, H: Host, C: Clock> Loop<B, H, C> {
    /// Hands `input` to the agent and carries out what it asks, including the inputs that
    /// carrying it out produces (a detection's answer, a device reading).
    async fn feed(&mut self, input: Input) {
        let now = self.clock.now();
        let actions = self.agent.handle(now, input);
        self.execute(actions).await;
    }

    /// Fires the agent's due timers and carries out what it asks.
    async fn timeout(&mut self) {
        let now = self.clock.now();
        let actions = self.agent.handle_timeout(now);
        self.execute(actions).await;
    }

    async fn execute(&mut self, actions: Vec<Action>) {
        let mut queue: VecDeque<Action> = actions.into();
        let mut large = false;
        while let Some(action) = queue.pop_front() {
            large |= matches!(action, Action::Apply(_) | Action::ObserveDevice);
            if let Some(input) = self.carry_out(action).await {
                let now = self.clock.now();
                queue.extend(self.agent.handle(now, input));
            }
        }
        self.sync_metrics();
        if large {
            // An apply or a device reading allocates in proportion to the mesh for a moment
            // (the plan and its stages, the kernel's and the device's answers); now that all of
            // it is dropped, its pages go back to the kernel rather than stay resident.
            crate::memory::release_freed_heap();
        }
    }

    /// Carries out one action; returns the input it yields, if any.
    async fn carry_out(&mut self, action: Action) -> Option<Input> {
        match action {
            Action::Publish(node) => {
                // A source that hangs (an API server that accepts and never answers) must
                // not stall the loop: the next check-in publishes again.
                match tokio::time::timeout(PUBLISH_TIMEOUT, self.backend.publish_local(&node)).await
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
                None
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
                None
            }
            Action::Blocked(why) => {
                tracing::warn!(reason = %why, "not applying");
                None
            }
            Action::Warn(what) => {
                tracing::warn!("{what}");
                None
            }
            Action::ObserveDevice => match self.host.observe().await {
                Ok(state) => {
                    self.shared.metrics.observe_device(&state);
                    Some(Input::Device(observed(&state)))
                }
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "cannot read the WireGuard device");
                    self.shared.metrics.error("run");
                    self.shared.set_unhealthy(format!("cannot read the WireGuard device: {e}"));
                    None
                }
            },
            Action::DetectHost => Some(Input::HostDetected(self.host.detect().await)),
            Action::UpdateCni(subnets) => {
                match self.host.update_cni(&subnets) {
                    Ok(true) => tracing::info!(?subnets, "updated the CNI configuration"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %chain(&e), "cannot update the CNI configuration");
                        self.shared.metrics.error("run");
                    }
                }
                None
            }
            Action::ReconcileFirewall => {
                if let Err(e) = self.host.reconcile_firewall() {
                    tracing::error!(error = %chain(&e), "firewall reconcile failed");
                    self.shared.metrics.error("run");
                }
                None
            }
            Action::Probe(probe) => {
                // The probe waits up to a second for answers: it runs on its own and its result
                // comes back as an input, so that the loop goes on meanwhile.
                let timeout = Duration::from_millis(kilo_core::health::PROBE_TIMEOUT_MS);
                let ping = self.host.probe(probe.targets, timeout);
                let sender = self.probed.clone();
                let failed = Arc::clone(&self.probe_failed);
                tokio::spawn(async move {
                    match ping.await {
                        Ok(ok) => {
                            let _ = sender.send(Input::Probed { via: probe.via, ok });
                        }
                        Err(e) if !failed.swap(true, Ordering::Relaxed) => tracing::warn!(
                            error = %e,
                            "cannot probe the leader's data path (raw ICMP sockets need \
                             CAP_NET_RAW); this node reports nothing about its leader"
                        ),
                        Err(_) => {}
                    }
                });
                None
            }
            Action::LeaderChanged(change) => {
                tracing::info!(
                    location = change.location.strip_prefix(kilo_core::topology::LOCATION_PREFIX)
                        .unwrap_or(&change.location),
                    from = %change.from,
                    to = %change.to,
                    reason = %change.reason,
                    "location leader changed"
                );
                None
            }
        }
    }

    /// Brings the metrics up to the agent's status and the host's counters.
    fn sync_metrics(&mut self) {
        let counters = self.host.counters();
        let m = &self.shared.metrics;
        // `kilo_netlink_writes_total` includes the route monitor's restores made between plans.
        m.netlink_writes.inc_by(counters.route_writes.saturating_sub(self.route_writes));
        self.route_writes = counters.route_writes;
        m.sync_iptables(&counters.firewall);
        let status = self.agent.status();
        m.leader.set(i64::from(status.leader));
        m.nodes.set(status.nodes as i64);
        m.peers.set(status.peers as i64);
        m.invalid.set(status.invalid as i64);
        let reconciles = m.reconciles.get();
        if status.reconciles > reconciles {
            m.reconciles.inc_by(status.reconciles - reconciles);
            // Leaders change only when the agent plans: not at every probe answer or timer.
            sync_leaders(m, status);
            // `/graph` draws the mesh as of the last reconcile; it is computed on request.
            *self.shared.mesh.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(Arc::new(self.agent.clone()));
        }
    }
}

/// Brings the per-location leader metrics up to the agent's status.
fn sync_leaders(m: &crate::metrics::Metrics, status: &kilo_core::agent::Status) {
    let location = |key: &str| {
        key.strip_prefix(kilo_core::topology::LOCATION_PREFIX).unwrap_or(key).to_string()
    };
    let leaders: Vec<(String, String, bool)> = status
        .leaders
        .iter()
        .map(|(key, view)| (location(key), view.node.clone(), view.election.healthy()))
        .collect();
    m.set_leaders(&leaders);
    // Every location's change counter exists from the start (at 0), not from its first
    // change.
    for (location, _, _) in &leaders {
        let labels = crate::metrics::LocationLabels { location: location.clone() };
        m.location_leader_changes.get_or_create(&labels).inc_by(0);
    }
    for (key, &count) in &status.leader_changes {
        let labels = crate::metrics::LocationLabels { location: location(key) };
        let counter = m.location_leader_changes.get_or_create(&labels);
        counter.inc_by(count.saturating_sub(counter.get()));
    }
}

/// Runs the agent until `shutdown` completes or the backend ends, then cleans up as asked.
///
/// At start the host is detected and the source's snapshot handed over; then the loop waits for
/// the source's next event, the agent's next timer ([`Agent::poll_timeout`], read from `clock`)
/// or the interface's deletion, whichever comes first, and carries out what the agent asks.
pub async fn run<B: Backend, H: Host, C: Clock>(
    agent: Agent,
    mut backend: B,
    host: H,
    clock: C,
    options: RunOptions,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), H::Error> {
    let hostname = agent.config().hostname.clone();
    let initial = backend.snapshot().await;
    let (probed, mut probe_results) = tokio::sync::mpsc::unbounded_channel();
    let mut l = Loop {
        agent,
        probed,
        probe_failed: Arc::default(),
        backend,
        host,
        clock,
        shared,
        route_writes: 0,
    };
    if let Some(facts) = l.host.detect().await {
        l.feed(Input::HostFacts(facts)).await;
    }
    match initial {
        Ok(snapshot) => l.feed(Input::Reset(snapshot)).await,
        Err(e) => {
            tracing::error!(error = %chain(&e), "cannot read the mesh");
            l.shared.metrics.error("run");
        }
    }
    // Scrapes of `/metrics` ask for the device's per-peer figures; a second driver on the same
    // `Shared` (none in practice) would find the receiver taken and leave them to the first.
    let mut device_reads = l.shared.take_device_reads();
    tokio::pin!(shutdown);
    // The shutdown signal ends the loop even in the middle of a step (a publication waiting on a
    // slow API, say): what was half done is cleaned up below or reconciled at the next start.
    let events = async {
        loop {
            let wait = match l.agent.poll_timeout() {
                Some(deadline) => l.clock.until(deadline),
                None => Duration::from_secs(1),
            };
            tokio::select! {
                event = l.backend.next_event() => match event {
                    Some(Ok(event)) => l.feed(Input::from(event)).await,
                    Some(Err(e)) => {
                        tracing::error!(error = %chain(&e), "the mesh source reported an error; keeping the last good state");
                        l.shared.metrics.error("run");
                    }
                    None => {
                        tracing::warn!("the mesh source ended");
                        break;
                    }
                },
                () = tokio::time::sleep(wait) => l.timeout().await,
                Some(input) = probe_results.recv() => l.feed(input).await,
                Some(done) = async {
                    match device_reads.as_mut() {
                        Some(reads) => reads.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    l.execute(vec![Action::ObserveDevice]).await;
                    let _ = done.send(());
                }
                () = l.host.interface_deleted() => {
                    tracing::warn!("the WireGuard interface was deleted; applying the plan again");
                    l.feed(Input::Resync).await;
                }
            }
        }
    };
    tokio::select! {
        () = events => {}
        () = &mut shutdown => {}
    }
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
async fn clean_up<B: Backend, H: Host>(
    mut backend: B,
    host: H,
    shared: &Shared,
    hostname: &str,
    interface: bool,
) -> Result<(), H::Error> {
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
