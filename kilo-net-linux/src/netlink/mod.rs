//! One rtnetlink connection and the kernel operations Kilo needs. Every operation's doc names its
//! `ip` equivalent.
//!
//! A [`Netlink`] can be opened inside another network namespace
//! ([`Netlink::connect_in_namespace`]): the socket is created by a short-lived thread that entered
//! the namespace, and a netlink socket stays in the namespace it was created in.

mod addr;
mod link;
mod route;
mod rule;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use futures::channel::mpsc::UnboundedReceiver;
use rtnetlink::MulticastGroup;
use rtnetlink::packet_core::NetlinkMessage;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::SocketAddr;

pub use addr::Address;
pub use link::{IPIP_TUNNEL, LinkInfo};
pub(crate) use route::from_message as route_from_message;
pub use route::{KILO_REALM, KernelRoute, PROTO_STATIC, RouteKind, describe_route};
pub use rule::{KernelRule, describe_rule};

use crate::error::NetlinkError;

/// Runs a dump again while the kernel answers `EBUSY`: a netlink socket serves one dump at a
/// time, and clones of a [`Netlink`] (the route monitor's restores, an apply) share one socket.
async fn dump<T, F, Fut>(mut run: F) -> Result<T, NetlinkError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, NetlinkError>>,
{
    const EBUSY: i32 = 16;
    let mut attempt = 0;
    loop {
        match run().await {
            Err(e) if e.errno() == Some(EBUSY) && attempt < 50 => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            other => return other,
        }
    }
}

/// Messages a multicast (monitor) connection receives.
pub(crate) type Notifications =
    UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>;

/// A handle on one rtnetlink connection. Cheap to clone (clones share the connection).
///
/// Must be created inside a tokio runtime: the connection's task is spawned on it.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
    namespace: Option<PathBuf>,
}

impl Netlink {
    /// Opens a connection in the current network namespace.
    pub fn connect() -> Result<Netlink, NetlinkError> {
        Netlink::open(None)
    }

    /// Opens a connection whose socket lives in the network namespace at `path`
    /// (`/run/netns/NAME` or `/proc/PID/ns/net`): the equivalent of `ip -n NAME …`.
    pub fn connect_in_namespace(path: impl AsRef<Path>) -> Result<Netlink, NetlinkError> {
        Netlink::open(Some(path.as_ref().to_path_buf()))
    }

    fn open(namespace: Option<PathBuf>) -> Result<Netlink, NetlinkError> {
        let (conn, handle, _) = in_namespace(namespace.as_deref(), rtnetlink::new_connection)?;
        tokio::spawn(conn);
        Ok(Netlink { handle, namespace })
    }

    /// The network namespace this connection lives in (`None`: the process's own).
    pub fn namespace(&self) -> Option<&Path> {
        self.namespace.as_deref()
    }

    pub(crate) fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }

    /// Opens a second connection, in the same namespace, subscribed to `groups` (as `ip monitor`).
    pub(crate) fn subscribe(
        &self,
        groups: &[MulticastGroup],
    ) -> Result<Notifications, NetlinkError> {
        let groups = groups.to_vec();
        let (conn, _handle, messages) = in_namespace(self.namespace.as_deref(), move || {
            rtnetlink::new_multicast_connection(&groups)
        })?;
        tokio::spawn(conn);
        Ok(messages)
    }
}

/// Runs `open` (which creates a socket) in the network namespace at `path`, or here.
fn in_namespace<T, F>(path: Option<&Path>, open: F) -> Result<T, NetlinkError>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let connect_err =
        |message: String| NetlinkError::Connect { namespace: path.map(Path::to_path_buf), message };
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|e| connect_err(format!("not inside a tokio runtime: {e}")))?;
    let Some(path) = path else {
        return open().map_err(|e| connect_err(e.to_string()));
    };
    let owned = path.to_path_buf();
    let thread = std::thread::spawn(move || -> Result<T, String> {
        let file =
            File::open(&owned).map_err(|e| format!("cannot open {}: {e}", owned.display()))?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("cannot enter {}: {e}", owned.display()))?;
        let _entered = runtime.enter();
        open().map_err(|e| e.to_string())
    });
    thread
        .join()
        .map_err(|_| connect_err("the namespace thread panicked".to_string()))?
        .map_err(connect_err)
}
