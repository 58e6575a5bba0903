//! What the driver needs from a host: apply a plan, observe the WireGuard device, detect the
//! host's addresses, keep the CNI configuration and the firewall in line, say when the
//! interface was deleted, and clean up. [`crate::LinuxHost`] is the real one;
//! [`crate::RecordingHost`] records what it is asked in memory.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use kilo_core::Cidr;
use kilo_core::agent::HostFacts;
use kilo_core::plan::Plan;
use kilo_net_linux::firewall::OpLabels;
use kilo_net_linux::host::ApplyReport;
use kilo_net_linux::wireguard::DeviceState;

/// Counters a host keeps, which the driver turns into metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostCounters {
    /// Route and rule writes made so far (including any made between plans, as the Linux route
    /// monitor's restores).
    pub route_writes: u64,
    /// Firewall operations so far, by upstream's metric labels.
    pub firewall: BTreeMap<OpLabels, u64>,
}

/// A host the agent manages. Every method carries out a decision the core made; none decides.
pub trait Host: Send + 'static {
    /// The host's error type.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Makes the host match `plan`, changing only what differs (`kilo_core::agent::Action::Apply`).
    fn apply(
        &mut self,
        plan: &Plan,
    ) -> impl Future<Output = Result<ApplyReport, Self::Error>> + Send;

    /// What the WireGuard device reports now (`Action::ObserveDevice`).
    fn observe(&mut self) -> impl Future<Output = Result<DeviceState, Self::Error>> + Send;

    /// The host's addresses (`Action::DetectHost`): `None` when detection is not wanted or
    /// failed.
    fn detect(&mut self) -> impl Future<Output = Option<HostFacts>> + Send;

    /// Sets the CNI configuration's pod ranges (`Action::UpdateCni`); returns whether they
    /// changed.
    fn update_cni(&mut self, subnets: &[Cidr]) -> Result<bool, Self::Error>;

    /// Restores firewall rules someone deleted (`Action::ReconcileFirewall`).
    fn reconcile_firewall(&mut self) -> Result<(), Self::Error>;

    /// Completes when the WireGuard interface has been deleted by someone else (the driver then
    /// has the plan applied again at once). A host that does not watch never completes.
    fn interface_deleted(&mut self) -> impl Future<Output = ()> + Send;

    /// Pings `targets` and says whether any answered within `timeout` (`Action::Probe`: other
    /// segments' WireGuard addresses, reached through the local node's leader). It runs on its
    /// own while the driver goes on, so it borrows nothing. An error means the host cannot
    /// probe at all (no permission to open the sockets); the driver then reports no answer.
    fn probe(
        &self,
        targets: Vec<IpAddr>,
        timeout: Duration,
    ) -> impl Future<Output = std::io::Result<bool>> + Send + 'static;

    /// The host's counters.
    fn counters(&self) -> HostCounters;

    /// Removes what the agent created: firewall rules, routes, and with `interface` the
    /// WireGuard interface.
    fn clean_up(
        self,
        interface: bool,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static;
}
