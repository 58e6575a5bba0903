//! The Linux host: [`kilo_net_linux::host::Host`] with the route and link monitors running, the
//! CNI configuration file and the host's address detection.

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use kilo_core::Cidr;
use kilo_core::agent::HostFacts;
use kilo_core::plan::Plan;
use kilo_net_linux::NetlinkError;
use kilo_net_linux::cni::CniError;
use kilo_net_linux::host::{ApplyReport, HostError};
use kilo_net_linux::reconcile::LinkMonitor;
use kilo_net_linux::wireguard::DeviceState;

use crate::host::{Host, HostCounters};

/// Re-detects the host's addresses (upstream 9.1); returns `None` when detection is not wanted
/// or failed (the last facts stay in force).
pub type Detect =
    Box<dyn FnMut() -> Pin<Box<dyn Future<Output = Option<HostFacts>> + Send>> + Send>;

/// What can go wrong on the Linux host.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinuxHostError {
    /// Applying, reading or cleaning up the host.
    #[error(transparent)]
    Host(#[from] HostError),
    /// Updating the CNI configuration.
    #[error("cannot update the CNI configuration")]
    Cni(#[source] CniError),
}

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A Linux host under the agent's management.
pub struct LinuxHost {
    host: kilo_net_linux::host::Host,
    cni_path: Option<PathBuf>,
    detect: Option<Detect>,
    links: Option<LinkMonitor>,
    _route_monitor: AbortOnDrop,
}

impl std::fmt::Debug for LinuxHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxHost")
            .field("host", &self.host)
            .field("cni_path", &self.cni_path)
            .finish_non_exhaustive()
    }
}

impl LinuxHost {
    /// Wraps `host`: starts its route monitor (deleted routes are restored at once) and its link
    /// monitor (a deleted WireGuard interface is re-created at once). `cni_path`: the CNI
    /// conflist to keep in line with the local pod subnet; `detect`: how to re-detect the
    /// host's addresses at every resync (`None`: never, as for a mesh file). Needs a tokio
    /// runtime.
    pub fn new(
        host: kilo_net_linux::host::Host,
        cni_path: Option<PathBuf>,
        detect: Option<Detect>,
    ) -> Result<LinuxHost, NetlinkError> {
        let monitor = host.route_monitor()?;
        let links = Some(host.link_monitor()?);
        let route_monitor = AbortOnDrop(tokio::spawn(monitor.run()));
        Ok(LinuxHost { host, cni_path, detect, links, _route_monitor: route_monitor })
    }

    /// The Linux host inside.
    pub fn inner(&self) -> &kilo_net_linux::host::Host {
        &self.host
    }
}

/// [`crate::probe::ping_any`] owning its targets, so that the probe borrows nothing.
async fn ping(targets: Vec<IpAddr>, timeout: Duration) -> std::io::Result<bool> {
    crate::probe::ping_any(&targets, timeout).await
}

impl Host for LinuxHost {
    type Error = LinuxHostError;

    async fn apply(&mut self, plan: &Plan) -> Result<ApplyReport, LinuxHostError> {
        Ok(self.host.apply(plan).await?)
    }

    async fn observe(&mut self) -> Result<DeviceState, LinuxHostError> {
        Ok(self.host.observe().await?)
    }

    async fn detect(&mut self) -> Option<HostFacts> {
        match self.detect.as_mut() {
            Some(detect) => detect().await,
            None => None,
        }
    }

    fn update_cni(&mut self, subnets: &[Cidr]) -> Result<bool, LinuxHostError> {
        let Some(path) = self.cni_path.as_deref() else { return Ok(false) };
        kilo_net_linux::cni::update_cni_config(path, subnets).map_err(LinuxHostError::Cni)
    }

    fn reconcile_firewall(&mut self) -> Result<(), LinuxHostError> {
        Ok(self.host.reconcile_firewall().map(|_| ())?)
    }

    async fn interface_deleted(&mut self) {
        match self.links.as_mut() {
            Some(links) => {
                if links.deleted().await.is_none() {
                    // The subscription ended: no more notifications (resyncs still repair).
                    self.links = None;
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    }

    fn probe(
        &self,
        targets: Vec<IpAddr>,
        timeout: Duration,
    ) -> impl Future<Output = std::io::Result<bool>> + Send + 'static {
        ping(targets, timeout)
    }

    fn counters(&self) -> HostCounters {
        HostCounters {
            route_writes: self.host.route_writes(),
            firewall: self.host.firewall_operations(),
        }
    }

    fn clean_up(
        self,
        interface: bool,
    ) -> impl Future<Output = Result<(), LinuxHostError>> + Send + 'static {
        // The route monitor stops first: it would restore the routes being removed.
        let LinuxHost { host, _route_monitor, .. } = self;
        drop(_route_monitor);
        async move { Ok(host.clean_up(interface).await?) }
    }
}
