//! Running work inside a network namespace.
//!
//! Sockets, netlink connections and TUN devices belong to the network namespace of the thread
//! that creates them. `setns(2)` with `CLONE_NEWNET` changes only the calling thread, and threads
//! it spawns afterwards inherit the namespace. So work meant for a namespace runs on a dedicated
//! thread that enters the namespace first and then builds its own tokio runtime there: every
//! worker thread of that runtime, and every socket they open, is inside the namespace.

use std::future::Future;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

use super::error::WireGuardError;

/// Moves the calling thread into the network namespace at `path` (such as `/run/netns/NAME`,
/// what `ip netns add NAME` creates, or `/proc/PID/ns/net`).
///
/// Only for a thread this code owns: a tokio worker (or any pooled thread) moved this way would
/// carry every later task into the namespace. Use [`run`] instead.
pub fn enter(path: &Path) -> Result<(), WireGuardError> {
    let err = |message: String| WireGuardError::Netns { path: path.to_path_buf(), message };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| err(e.to_string()))
}

/// Runs `work` to completion on a fresh thread with its own single-threaded tokio runtime, after
/// entering the network namespace `netns` when one is given, and returns its result to the
/// caller's runtime. Used for short operations (netlink requests, probes).
pub async fn run<T, F, Fut>(netns: Option<PathBuf>, work: F) -> Result<T, WireGuardError>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, WireGuardError>>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name("kilo-netns".into()).spawn(move || {
        let result = (|| {
            if let Some(path) = &netns {
                enter(path)?;
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| WireGuardError::Userspace {
                    name: String::new(),
                    message: format!("cannot build a tokio runtime: {e}"),
                })?;
            runtime.block_on(work())
        })();
        let _ = tx.send(result);
    });
    if let Err(e) = spawned {
        return Err(WireGuardError::Userspace {
            name: String::new(),
            message: format!("cannot spawn a thread: {e}"),
        });
    }
    rx.await.unwrap_or_else(|_| {
        Err(WireGuardError::Userspace {
            name: String::new(),
            message: "worker thread ended without an answer".into(),
        })
    })
}
