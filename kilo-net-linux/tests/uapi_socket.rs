//! The userspace device's UAPI socket is mode 0600 from the moment it appears at its path: it was
//! bound with the umask's permissions (0755 under the usual umask 022) and chmod'ed afterwards,
//! so for a moment anyone could connect and reconfigure the device. A watcher thread stats the
//! path in a tight loop while sockets are created there and records every other mode it sees.

mod root_support;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use anyhow::{Context, Result, bail, ensure};
use kilo_net_linux::wireguard::userspace::bind_private_socket;
use kilo_net_linux::wireguard::{Device, DeviceOptions, WireGuardKind};

/// Stats `path` until stopped; returns (how many times a socket was seen, the modes other than
/// 0600 seen, in octal).
struct Watcher {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(u64, Vec<String>)>,
}

impl Watcher {
    fn start(path: PathBuf) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut seen, mut wrong) = (0u64, Vec::new());
            while !flag.load(Ordering::Relaxed) {
                if let Ok(m) = std::fs::symlink_metadata(&path)
                    && m.file_type().is_socket()
                {
                    seen += 1;
                    let mode = format!("{:o}", m.mode() & 0o7777);
                    if mode != "600" && !wrong.contains(&mode) {
                        wrong.push(mode);
                    }
                }
            }
            (seen, wrong)
        });
        Watcher { stop, thread }
    }

    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the watcher thread")
    }
}

fn entries(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    Ok(names)
}

#[test]
fn a_private_socket_is_0600_whenever_it_is_visible_at_its_path() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("kilo0.sock");
    let watcher = Watcher::start(path.clone());
    for _ in 0..300 {
        // A stale socket from the previous round is replaced.
        let listener = bind_private_socket(&path)?;
        let client = std::os::unix::net::UnixStream::connect(&path)?;
        let (server, _) = listener.accept()?;
        drop((client, server));
    }
    let (seen, wrong) = watcher.finish();
    assert!(seen > 0, "the watcher never saw the socket");
    assert_eq!(wrong, Vec::<String>::new(), "modes seen at {} besides 0600", path.display());
    // Nothing but the socket is left behind (no staging directories).
    assert_eq!(entries(dir.path())?, vec!["kilo0.sock".to_string()]);
    Ok(())
}

#[test]
fn a_private_socket_in_a_missing_directory_is_an_error_naming_the_path() {
    let err = bind_private_socket(Path::new("/nonexistent-kilo-dir/kilo0.sock")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent-kilo-dir/kilo0.sock"), "{err}");
}

fn sh(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd).args(args).output().with_context(|| format!("run {cmd}"))?;
    ensure!(
        out.status.success(),
        "{cmd} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace deleted on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_userspace_device_socket_never_appears_with_wider_permissions_than_0600() -> Result<()>
{
    if root_support::skip_unless_root() {
        return Ok(());
    }
    let ns = Netns(format!("kuapi-mode-{}", std::process::id()));
    sh("ip", &["netns", "add", &ns.0])?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("wg0.sock");
    let mut options = DeviceOptions::default();
    options.uapi_dir = dir.path().to_path_buf();
    options.netns = Some(format!("/run/netns/{}", ns.0).into());
    let watcher = Watcher::start(path.clone());
    for _ in 0..20 {
        let device =
            Device::open_or_create(WireGuardKind::Userspace, "wg0", 1420, &options).await?;
        let Device::Userspace(wg) = &device else { bail!("not a userspace device") };
        assert!(wg.is_in_process());
        wg.read().await?;
        device.delete().await?;
    }
    let (seen, wrong) = watcher.finish();
    assert!(seen > 0, "the watcher never saw the socket");
    assert_eq!(wrong, Vec::<String>::new(), "modes seen at {} besides 0600", path.display());
    assert_eq!(entries(dir.path())?, Vec::<String>::new());
    Ok(())
}
