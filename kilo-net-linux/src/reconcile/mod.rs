//! Routes and policy rules: the desired set from kilo-core against the kernel's, applied
//! minimally (upstream 7.5, with contract C7's route identity). The reconciler reads the kernel
//! into kilo-core's terms ([`installed_route`], [`installed_rule`]), asks kilo-core for the typed
//! [`RouteDiff`] ([`kilo_core::routes::diff`], which also owns the identities [`RouteKey`] and
//! [`RuleKey`], with their treatment of `onlink`, and the [`Ownership`] rules) and carries it out.
//!
//! A resync that finds nothing to change writes nothing ([`RouteReconciler::writes`] counts
//! every netlink write). Only managed routes and rules are ever deleted (see [`Ownership`]).
//! A [`RouteMonitor`] restores a managed route as soon as something deletes it.
//!
//! While a [`RouteMonitor`] runs, the kernel's route and rule notifications also keep the
//! reconciler's view current: a reconcile of the same routes and rules as the last one that found
//! everything in place, with no route or rule changed in the kernel since, reads nothing
//! ([`RouteReconciler::reads`] counts the dumps). It reads anyway once that view is five minutes
//! old, as a safety net.
//!
//! # Ownership, from the kernel alone
//!
//! An agent killed with SIGKILL records nothing; the next one must still find, in the kernel,
//! every route and rule it owns, delete those no plan wants and, with `--clean-up`, the rest.
//! Routes stay exactly what upstream Kilo writes (`proto static`, same tables, devices and
//! gateways), so either agent replaces and deletes the other's. A route or rule is Kilo's when:
//!
//! - it is a `lookup 1107` rule, or a `proto static` route in table 1107;
//! - it is a `proto static` route on one of Kilo's own devices (`kilo0`, `tunl0`);
//! - it is a `proto static` IPv4 route carrying realm 1107 ([`crate::netlink::KILO_REALM`]):
//!   every IPv4 route Kilo writes does. This is what marks Kilo's routes on the LAN device
//!   (a non-leader's routes to the mesh via its leader, a leader's routes to the pods of its
//!   location). The `proto static` routes of the user or of a network manager on that device
//!   carry no realm, so they are never deleted, unless Kilo plans that very route (it then takes
//!   it over, as upstream's `ip route replace` does);
//! - this reconciler added it, or found it in place while planning it (recorded in memory).
//!
//! A planned IPv4 route found without the mark (written by upstream Kilo or an older agent) is
//! rewritten once with it. Limits: the kernel has no realms for IPv6, so an IPv6 route on the LAN
//! device is known as Kilo's only through the record, and one left by a killed agent and no
//! longer planned stays; so does an IPv4 one written by upstream Kilo, which marks nothing. A
//! kernel built without `CONFIG_IP_ROUTE_CLASSID` drops realms, with the same consequence.
//!
//! ```no_run
//! # async fn agent(routes: Vec<kilo_core::routes::Route>, rules: Vec<kilo_core::routes::Rule>)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use kilo_net_linux::{Netlink, reconcile::RouteReconciler};
//!
//! let netlink = Netlink::connect()?;
//! let reconciler = RouteReconciler::new(netlink, ["kilo0", "tunl0"]);
//! tokio::spawn(reconciler.monitor()?.run());
//! let diff = reconciler.reconcile(&routes, &rules).await?; // on every resync
//! println!("{diff}");
//! reconciler.clean_up().await?; // on exit with --clean-up
//! # Ok(()) }
//! ```

mod diff;
mod monitor;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kilo_core::routes::{InstalledRoute, InstalledRule, Route, Rule};
use tokio::sync::Mutex;

pub use diff::{installed_route, installed_rule};
pub use kilo_core::routes::{Ownership, RouteDiff, RouteKey, RuleKey};
pub use monitor::{LinkMonitor, RouteMonitor};

use crate::error::NetlinkError;
use crate::netlink::{KernelRoute, KernelRule, Netlink};
use diff::Kernel;

/// Why a reconcile did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// The kernel's routes or rules could not be read; nothing was changed.
    #[error("cannot read the kernel's routes and rules: {0}")]
    Read(#[source] NetlinkError),
    /// Some changes failed; the others were applied.
    #[error("{} of {attempted} route and rule changes failed; first: {}", failures.len(), failures[0])]
    Apply {
        /// How many changes were attempted.
        attempted: usize,
        /// Each failure, naming its route or rule (never empty).
        failures: Vec<NetlinkError>,
    },
}

/// How long a reconcile trusts the notifications before reading the kernel anyway.
const READ_EVERY: Duration = Duration::from_secs(300);

#[derive(Debug, Default)]
struct State {
    /// The desired routes by identity (the first of each, normalised), for the monitor's
    /// restores.
    desired: HashMap<RouteKey, Route>,
    ownership: Ownership,
    /// The last reconcile that read the kernel and found nothing to change.
    whole: Option<Whole>,
}

/// What a reconcile that found the kernel in order saw: the notifications' count then, when,
/// and the desired routes and rules.
#[derive(Debug)]
struct Whole {
    events: u64,
    at: Instant,
    routes: Vec<Route>,
    rules: Vec<Rule>,
}

/// Route and rule notifications seen by the running monitors.
#[derive(Debug, Default)]
struct Events {
    /// Route and rule notifications received (and subscriptions lost).
    count: AtomicU64,
    /// How many monitors are listening.
    monitors: AtomicUsize,
}

/// The kernel's routes and rules, as read and in kilo-core's terms.
struct Read {
    routes: Vec<KernelRoute>,
    rules: Vec<KernelRule>,
    installed_routes: Vec<InstalledRoute>,
    installed_rules: Vec<InstalledRule>,
}

/// Keeps the kernel's routes and policy rules equal to the desired ones. Cheap to clone (clones
/// share state, the write counter and the connection).
#[derive(Debug, Clone)]
pub struct RouteReconciler {
    netlink: Netlink,
    state: Arc<Mutex<State>>,
    writes: Arc<AtomicU64>,
    reads: Arc<AtomicU64>,
    events: Arc<Events>,
}

impl RouteReconciler {
    /// A reconciler over `netlink`. `owned_devices` are the devices whose `proto static` routes
    /// all belong to Kilo (typically the WireGuard link and the IPIP tunnel); on other devices
    /// only the routes this reconciler added are deleted.
    pub fn new<I, S>(netlink: Netlink, owned_devices: I) -> RouteReconciler
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let state = State {
            desired: HashMap::new(),
            ownership: Ownership::with_devices(owned_devices),
            whole: None,
        };
        RouteReconciler {
            netlink,
            state: Arc::new(Mutex::new(state)),
            writes: Arc::new(AtomicU64::new(0)),
            reads: Arc::new(AtomicU64::new(0)),
            events: Arc::default(),
        }
    }

    /// How many times this reconciler has read the kernel's routes and rules (one route dump and
    /// one rule dump each).
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// The count of route and rule notifications while a monitor listens; `None` otherwise.
    fn events(&self) -> Option<u64> {
        (self.events.monitors.load(Ordering::Acquire) > 0)
            .then(|| self.events.count.load(Ordering::Acquire))
    }

    /// The connection this reconciler writes through.
    pub fn netlink(&self) -> &Netlink {
        &self.netlink
    }

    /// How many netlink writes (route and rule adds and deletes) this reconciler and its
    /// monitors have made so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// The changes [`RouteReconciler::reconcile`] would make now, without making them.
    pub async fn plan(
        &self,
        routes: &[Route],
        rules: &[Rule],
    ) -> Result<RouteDiff, ReconcileError> {
        let state = self.state.lock().await;
        let kernel = self.read().await?;
        Ok(kilo_core::routes::diff(
            &kernel.installed_routes,
            &kernel.installed_rules,
            routes,
            rules,
            &state.ownership,
        ))
    }

    /// Reads the kernel's routes and rules.
    async fn read(&self) -> Result<Read, ReconcileError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let routes = self.netlink.routes().await.map_err(ReconcileError::Read)?;
        let rules = self.netlink.rules().await.map_err(ReconcileError::Read)?;
        let installed_routes = routes.iter().map(installed_route).collect();
        let installed_rules = rules.iter().map(installed_rule).collect();
        Ok(Read { routes, rules, installed_routes, installed_rules })
    }

    /// The kernel's routes and rules that this reconciler manages now (what
    /// [`RouteReconciler::clean_up`] would delete): `ip route show proto static` on owned
    /// devices, in table 1107 or recorded, and `ip rule show lookup 1107`.
    pub async fn managed(&self) -> Result<(Vec<KernelRoute>, Vec<KernelRule>), ReconcileError> {
        let state = self.state.lock().await;
        let routes = self.netlink.routes().await.map_err(ReconcileError::Read)?;
        let rules = self.netlink.rules().await.map_err(ReconcileError::Read)?;
        Ok((
            routes
                .into_iter()
                .filter(|r| state.ownership.owns_route(&installed_route(r)))
                .collect(),
            rules.into_iter().filter(|r| state.ownership.owns_rule(&installed_rule(r))).collect(),
        ))
    }

    /// Makes the kernel's managed routes and rules equal to `routes` and `rules`: reads the
    /// kernel's state, asks kilo-core for the diff and carries it out (`ip rule del …;
    /// ip route del …; ip route replace …; ip rule add …`). Desired items found in place are
    /// recorded as Kilo's (they go at clean-up). Returns the diff it applied. Failed changes do
    /// not stop the others.
    ///
    /// With a monitor running, the same routes and rules as the last reconcile that found the
    /// kernel in order, and no route or rule notification since, read nothing and return an
    /// empty diff (see the module documentation).
    pub async fn reconcile(
        &self,
        routes: &[Route],
        rules: &[Rule],
    ) -> Result<RouteDiff, ReconcileError> {
        let mut state = self.state.lock().await;
        let events = self.events();
        if let (Some(events), Some(whole)) = (events, &state.whole)
            && whole.events == events
            && whole.at.elapsed() < READ_EVERY
            && whole.routes == routes
            && whole.rules == rules
        {
            return Ok(RouteDiff::default());
        }
        state.whole = None;
        state.desired.clear();
        for route in routes {
            state
                .desired
                .entry(RouteKey::of(route))
                .or_insert_with(|| InstalledRoute::written(route).route);
        }
        let kernel = self.read().await?;
        let diff = kilo_core::routes::diff(
            &kernel.installed_routes,
            &kernel.installed_rules,
            routes,
            rules,
            &state.ownership,
        );
        state.ownership.adopt(&kernel.installed_routes, &kernel.installed_rules, routes, rules);
        let mut failures = Vec::new();
        let mut kernel_rules = Kernel::new(&kernel.rules);
        for rule in &diff.delete_rules {
            let Some(found) = kernel_rules.take(rule, installed_rule) else { continue };
            match self.write(self.netlink.delete_rule(found)).await {
                Ok(()) => {
                    state.ownership.rules.remove(&RuleKey::of(&rule.rule));
                }
                Err(e) => failures.push(e),
            }
        }
        let mut kernel_routes = Kernel::new(&kernel.routes);
        for route in &diff.delete_routes {
            let Some(found) = kernel_routes.take(route, installed_route) else { continue };
            match self.write(self.netlink.delete_route(found)).await {
                Ok(()) => {
                    state.ownership.routes.remove(&RouteKey::of_installed(route));
                }
                Err(e) => failures.push(e),
            }
        }
        for route in diff.add_routes.iter().chain(&diff.replace_routes) {
            match self.write(self.netlink.replace_route(route)).await {
                Ok(()) => {
                    state.ownership.routes.insert(RouteKey::of(route));
                }
                Err(e) => failures.push(e),
            }
        }
        for route in &diff.mark_routes {
            // Recorded already (found in place): marked once, even if the kernel drops realms.
            if let Err(e) = self.write(self.netlink.replace_route(route)).await {
                failures.push(e);
            }
        }
        for rule in &diff.add_rules {
            match self.write(self.netlink.add_rule(rule)).await {
                Ok(()) => {
                    state.ownership.rules.insert(RuleKey::of(rule));
                }
                Err(e) => failures.push(e),
            }
        }
        if !diff.is_empty() {
            tracing::info!(
                changes = diff.len(),
                failed = failures.len(),
                "routes and rules reconciled:\n{diff}"
            );
        }
        if failures.is_empty() {
            if let Some(events) = events.filter(|_| diff.is_empty()) {
                state.whole = Some(Whole {
                    events,
                    at: Instant::now(),
                    routes: routes.to_vec(),
                    rules: rules.to_vec(),
                });
            }
            Ok(diff)
        } else {
            Err(ReconcileError::Apply { attempted: diff.len(), failures })
        }
    }

    /// Deletes every managed route and rule (upstream's route table `CleanUp`, on exit with
    /// `--clean-up`), and forgets the desired set. Failed deletions do not stop the others.
    pub async fn clean_up(&self) -> Result<RouteDiff, ReconcileError> {
        self.reconcile(&[], &[]).await
    }

    /// Opens a route monitor that restores managed routes as soon as they are deleted.
    pub fn monitor(&self) -> Result<RouteMonitor, NetlinkError> {
        RouteMonitor::new(self.clone())
    }

    /// Runs one kernel write and counts it (whether or not the kernel accepted it).
    async fn write<F: Future<Output = Result<(), NetlinkError>>>(
        &self,
        op: F,
    ) -> Result<(), NetlinkError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        op.await
    }

    /// Re-adds the desired route of identity `key`, if there is one (used by the monitor).
    async fn restore(&self, key: &RouteKey) -> Option<Result<Route, NetlinkError>> {
        let mut state = self.state.lock().await;
        let route = state.desired.get(key)?.clone();
        Some(match self.write(self.netlink.replace_route(&route)).await {
            Ok(()) => {
                state.ownership.routes.insert(key.clone());
                Ok(route)
            }
            Err(e) => Err(e),
        })
    }
}
