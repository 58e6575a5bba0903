//! A standalone userspace WireGuard daemon (gotatun, in-process), for hosts and tests without
//! the kernel module or wireguard-go: the external peer of the end-to-end tests and the demo.
//!
//! ```text
//! wg_userspace IFACE UAPI_DIR [CONFIG]
//! ```
//! Creates the TUN interface `IFACE` in the current network namespace (run it under
//! `ip netns exec NS`), serves `<UAPI_DIR>/<IFACE>.sock`, applies `CONFIG` (wg(8)'s format, as
//! `wg setconf`: `[Interface]` PrivateKey/ListenPort and `[Peer]` sections) when given, prints
//! `ready` on stdout, and runs until SIGTERM or SIGINT, when the interface goes away. Addresses,
//! link state and routes are the caller's (`ip addr`, `ip link`, `ip route`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use kilo_core::wireguard::Config;
use kilo_net_linux::wireguard::{Device, DeviceOptions, WireGuardKind};
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: wg_userspace IFACE UAPI_DIR [CONFIG]";
    let name = args.first().context(usage)?;
    let dir = PathBuf::from(args.get(1).context(usage)?);
    let config = match args.get(2) {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
            Some(
                Config::from_ini(&text)
                    .with_context(|| format!("{path}: not a WireGuard config"))?,
            )
        }
        None => None,
    };
    let mut options = DeviceOptions::default();
    options.uapi_dir = dir;
    options.netns = None;
    let device = Device::open_or_create(WireGuardKind::Userspace, name, 1420, &options).await?;
    if let Some(config) = config {
        if let Some(interface) = &config.interface {
            device
                .configure_interface(interface.private_key.as_ref(), interface.listen_port)
                .await?;
        }
        for peer in &config.peers {
            device.set_peer(peer).await?;
        }
    }
    println!("ready");
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    device.delete().await?;
    Ok(())
}
