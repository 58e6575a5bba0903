//! Prints a WireGuard device as kilo-rs reads it: the interface and, per peer, its configuration,
//! last handshake and traffic — the figures the agent exports as metrics.
//!
//! ```text
//! wg_show IFACE [userspace|kernel] [UAPI_DIR]
//! ```
//! `userspace` (the default) reads `<UAPI_DIR>/<IFACE>.sock` (default dir `/run/wireguard`),
//! from gotatun, wireguard-go or boringtun; `kernel` reads the kernel device over netlink.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use kilo_net_linux::wireguard::{DEFAULT_UAPI_DIR, KernelDevice, UapiClient, uapi};

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args.first().context("usage: wg_show IFACE [userspace|kernel] [UAPI_DIR]")?;
    let state = match args.get(1).map(String::as_str).unwrap_or("userspace") {
        "userspace" => {
            let dir = PathBuf::from(args.get(2).map(String::as_str).unwrap_or(DEFAULT_UAPI_DIR));
            UapiClient::new(uapi::socket_path(&dir, name)).get(name).await?
        }
        "kernel" => KernelDevice::open(name, None).await?.read().await?,
        other => bail!("unknown kind {other:?}: want userspace or kernel"),
    };
    println!("interface: {}", state.name);
    if let Some(key) = state.public_key {
        println!("  public key: {key}");
    }
    println!("  listening port: {}", state.listen_port.unwrap_or(0));
    for peer in &state.peers {
        let c = &peer.config;
        println!("\npeer: {}", c.public_key);
        if let Some(e) = &c.endpoint {
            println!("  endpoint: {e}");
        }
        let ips: Vec<String> = c.allowed_ips.iter().map(ToString::to_string).collect();
        println!(
            "  allowed ips: {}",
            if ips.is_empty() { "(none)".into() } else { ips.join(", ") }
        );
        if let Some(t) = peer.last_handshake {
            let ago = SystemTime::now().duration_since(t).unwrap_or_default().as_secs();
            println!("  latest handshake: {ago} seconds ago");
        }
        println!("  transfer: {} B received, {} B sent", peer.rx_bytes, peer.tx_bytes);
        println!("  preshared key: {}", if peer.has_preshared_key() { "set" } else { "none" });
        if c.persistent_keepalive != 0 {
            println!("  persistent keepalive: every {} seconds", c.persistent_keepalive);
        }
    }
    Ok(())
}
