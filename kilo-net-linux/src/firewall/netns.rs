//! Running netlink work inside another network namespace: a scoped thread enters it with
//! `setns(2)` (which only moves the calling thread) and does the work there, so sockets it opens
//! belong to that namespace (`ip netns exec NS nft …` without a process).

use std::fs::File;
use std::path::Path;

use nix::sched::{CloneFlags, setns};

use super::FirewallError;

/// Runs `work` in the network namespace at `path` (e.g. `/run/netns/NAME`), or right here when
/// `path` is `None`.
pub(crate) fn in_netns<T: Send>(
    path: Option<&Path>,
    work: impl FnOnce() -> Result<T, FirewallError> + Send,
) -> Result<T, FirewallError> {
    let Some(path) = path else {
        return work();
    };
    let failed =
        |message: String| FirewallError::Netns { path: path.display().to_string(), message };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = File::open(path).map_err(|e| failed(e.to_string()))?;
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| failed(e.to_string()))?;
                work()
            })
            .join()
            .unwrap_or_else(|_| Err(failed("the namespace thread panicked".into())))
    })
}
