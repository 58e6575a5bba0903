//! The UAPI client against the in-process userspace device (gotatun), in a network namespace the
//! test creates and deletes: a burst of configuration changes leaves no error in the log. The
//! client used to close each connection right after the `errno=` line, before the blank line
//! that ends the reply, and the device logged `Failed to write API response: Broken pipe` at
//! ERROR for many of them. Needs root (TUN interface, namespace); CI runs as root.
//!
//! Its own test binary: the log capture is process-wide.

mod root_support;

use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail, ensure};
use kilo_core::wireguard::PeerConfig;
use kilo_core::{Key, PrivateKey};
use kilo_net_linux::wireguard::{Device, DeviceOptions, WireGuardKind};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Every ERROR event of the process, as `target: fields`.
static ERRORS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A process-wide subscriber that records ERROR events (every thread: the device runs on its own).
struct Capture;

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0 += &format!(" {}={value:?}", field.name());
    }
}

impl Subscriber for Capture {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() == Level::ERROR
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(format!("{}:", event.metadata().target()));
        event.record(&mut fields);
        ERRORS.lock().unwrap_or_else(|e| e.into_inner()).push(fields.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
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

impl Netns {
    fn new(tag: &str) -> Result<Netns> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let uid = sh("id", &["-u"])?;
        ensure!(uid.trim() == "0", "this test creates a namespace and a TUN device: run as root");
        let name =
            format!("kuapi-{tag}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        sh("ip", &["netns", "add", &name])?;
        Ok(Netns(name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn key(i: u16) -> Key {
    let mut bytes = [7u8; 32];
    bytes[..2].copy_from_slice(&i.to_be_bytes());
    PrivateKey::from_random_bytes(bytes).public_key()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_set_operations_on_the_userspace_device_logs_no_error() -> Result<()> {
    if root_support::skip_unless_root() {
        return Ok(());
    }
    tracing::subscriber::set_global_default(Capture).context("install the log capture")?;
    let ns = Netns::new("burst")?;
    let dir = tempfile::tempdir()?;
    let mut options = DeviceOptions::default();
    options.uapi_dir = dir.path().to_path_buf();
    options.netns = Some(format!("/run/netns/{}", ns.0).into());
    let device = Device::open_or_create(WireGuardKind::Userspace, "wg0", 1420, &options).await?;
    let Device::Userspace(wg) = &device else { bail!("not a userspace device") };
    wg.set_interface(&PrivateKey::from_random_bytes([1; 32]), 51820).await?;
    // 100 peers added, each updated once, then all removed: 300 set requests, one connection each.
    const PEERS: u16 = 100;
    for i in 0..PEERS {
        let peer = PeerConfig {
            public_key: key(i),
            endpoint: Some(format!("192.0.2.1:{}", 10000 + i).parse().unwrap()),
            allowed_ips: vec![format!("10.{}.{}.0/24", 100 + i / 256, i % 256).parse().unwrap()],
            persistent_keepalive: 25,
            ..Default::default()
        };
        wg.set_peer(&peer).await?;
        wg.update_peer(&PeerConfig { persistent_keepalive: 0, ..peer }).await?;
    }
    assert_eq!(wg.read().await?.peers.len(), usize::from(PEERS));
    for i in 0..PEERS {
        wg.remove_peer(&key(i)).await?;
    }
    assert_eq!(wg.read().await?.peers.len(), 0);
    // The device answers on its own threads: give a late write failure time to be logged.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let errors = ERRORS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(errors.is_empty(), "{} error lines, first: {:?}", errors.len(), errors.first());
    // Deleting the device may log its TUN reader's end; never a UAPI write failure.
    device.delete().await?;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let errors = ERRORS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(!errors.iter().any(|e| e.contains("Broken pipe")), "{errors:?}");
    Ok(())
}
