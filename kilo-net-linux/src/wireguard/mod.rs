//! WireGuard devices, kernel and userspace, behind one [`Device`] type.
//!
//! - [`WireGuardKind::Kernel`]: a `wireguard` link configured over generic netlink, on the same
//!   rust-netlink stack as rtnetlink (`netlink-packet-wireguard` over `netlink-proto`); see
//!   [`kernel`].
//! - [`WireGuardKind::Userspace`]: gotatun (Mullvad's maintained boringtun fork) running in this
//!   process on a TUN interface, serving the standard UAPI socket `<uapi_dir>/<iface>.sock` so
//!   `wg show` / `wg set` work; or any userspace implementation already serving that socket
//!   (wireguard-go). See [`userspace`] and [`uapi`].
//!
//! Changes are made ONE peer at a time ([`Device::set_peer`], [`Device::remove_peer`],
//! [`Device::set_interface`]); `replace_peers` is never sent, so a change to one peer never
//! disturbs the sessions of the others (upstream users lost connections every 30 s to full
//! re-configurations).
//!
//! All operations are async and meant for the agent's tokio runtime; devices in another network
//! namespace ([`DeviceOptions::netns`]) are handled from dedicated threads inside it.

pub mod apply;
pub mod error;
mod genl;
pub mod kernel;
pub mod netns;
pub mod offload;
pub mod state;
pub mod uapi;
pub mod udp_gso;
pub mod userspace;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use kilo_core::wireguard::PeerConfig;
use kilo_core::{Key, PrivateKey};

pub use error::WireGuardError;
pub use kernel::KernelDevice;
pub use state::{DeviceState, PeerState};
pub use uapi::UapiClient;
pub use userspace::UserspaceDevice;

/// The default directory of userspace WireGuard UAPI sockets (what `wg` looks in).
pub const DEFAULT_UAPI_DIR: &str = "/run/wireguard";

/// Which WireGuard implementation runs a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WireGuardKind {
    /// The kernel module.
    Kernel,
    /// The in-process userspace implementation (or one serving the UAPI socket).
    Userspace,
}

impl fmt::Display for WireGuardKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireGuardKind::Kernel => "kernel",
            WireGuardKind::Userspace => "userspace",
        })
    }
}

/// The `--wireguard` flag: a kind, or `auto` (kernel when the kernel can create a `wireguard`
/// link, else userspace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum WireGuardChoice {
    /// Probe the kernel.
    #[default]
    Auto,
    /// Exactly this kind.
    Kind(WireGuardKind),
}

impl FromStr for WireGuardChoice {
    type Err = WireGuardError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(WireGuardChoice::Auto),
            "kernel" => Ok(WireGuardChoice::Kind(WireGuardKind::Kernel)),
            "userspace" => Ok(WireGuardChoice::Kind(WireGuardKind::Userspace)),
            _ => Err(WireGuardError::UnknownKind { input: s.to_string() }),
        }
    }
}

impl fmt::Display for WireGuardChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireGuardChoice::Auto => f.write_str("auto"),
            WireGuardChoice::Kind(k) => k.fmt(f),
        }
    }
}

/// Resolves a choice to a kind. `Auto` creates and deletes a throwaway `wireguard` link
/// (`ip link add kgprobeN type wireguard`) in the namespace of `options`: kernel if that works,
/// userspace otherwise.
pub async fn select(choice: WireGuardChoice, options: &DeviceOptions) -> WireGuardKind {
    match choice {
        WireGuardChoice::Kind(kind) => kind,
        WireGuardChoice::Auto => {
            if kernel::probe(options.netns.clone()).await {
                WireGuardKind::Kernel
            } else {
                WireGuardKind::Userspace
            }
        }
    }
}

/// Where a device lives: [`DeviceOptions::default`], then fields set as needed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceOptions {
    /// The directory of UAPI sockets for userspace devices (default `/run/wireguard`; give each
    /// agent or test its own when several share one filesystem: the directory is not
    /// per-namespace).
    pub uapi_dir: PathBuf,
    /// The network namespace to create and run the device in (a file such as
    /// `/run/netns/NAME`); `None`: the caller's.
    pub netns: Option<PathBuf>,
    /// Whether an in-process userspace device asks its TUN interface for segmentation offloads
    /// (TCP and UDP super-packets in, coalesced packets out; see [`offload`]); default on. Off,
    /// or refused by the kernel: one packet per read and per write.
    pub offloads: bool,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        DeviceOptions { uapi_dir: PathBuf::from(DEFAULT_UAPI_DIR), netns: None, offloads: true }
    }
}

/// Checks a Linux interface name: 1 to 15 bytes, no `/`, no whitespace, not `.` or `..`.
pub fn validate_name(name: &str) -> Result<(), WireGuardError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > 15 {
        Some("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("reserved name")
    } else if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control()) {
        Some("contains '/', ':', whitespace or a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(WireGuardError::InvalidName { name: name.to_string(), reason }),
        None => Ok(()),
    }
}

/// A WireGuard device of either kind.
///
/// Keep it alive while the interface is wanted: dropping a `Device` that runs the userspace
/// implementation in-process stops it, and its TUN interface and socket disappear (a kernel
/// link, or another process's userspace device, stays).
#[derive(Debug)]
#[non_exhaustive]
pub enum Device {
    /// A kernel device.
    Kernel(KernelDevice),
    /// A userspace device.
    Userspace(UserspaceDevice),
}

impl Device {
    /// Opens the device `name`, creating it if missing, with `mtu` on creation (`ip link add
    /// NAME mtu MTU type wireguard`, or a TUN interface running gotatun). The link is left down
    /// and without addresses: those belong to the link manager.
    pub async fn open_or_create(
        kind: WireGuardKind,
        name: &str,
        mtu: u32,
        options: &DeviceOptions,
    ) -> Result<Device, WireGuardError> {
        validate_name(name)?;
        let netns = options.netns.as_deref();
        match kind {
            WireGuardKind::Kernel => {
                KernelDevice::open_or_create(name, mtu, netns).await.map(Device::Kernel)
            }
            WireGuardKind::Userspace => {
                let mtu = u16::try_from(mtu).map_err(|_| WireGuardError::Userspace {
                    name: name.to_string(),
                    message: format!("MTU {mtu} is larger than 65535"),
                })?;
                let tun = offload::TunOptions { offloads: options.offloads };
                UserspaceDevice::open_or_create(name, mtu, &options.uapi_dir, netns, tun)
                    .await
                    .map(Device::Userspace)
            }
        }
    }

    /// Opens an existing device without creating anything (`--create-interface=false`): the
    /// kernel link `name`, or the userspace implementation serving `<uapi_dir>/<name>.sock`.
    pub async fn open(
        kind: WireGuardKind,
        name: &str,
        options: &DeviceOptions,
    ) -> Result<Device, WireGuardError> {
        validate_name(name)?;
        match kind {
            WireGuardKind::Kernel => {
                KernelDevice::open(name, options.netns.as_deref()).await.map(Device::Kernel)
            }
            WireGuardKind::Userspace => {
                UserspaceDevice::open(name, &options.uapi_dir).await.map(Device::Userspace)
            }
        }
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        match self {
            Device::Kernel(d) => d.name(),
            Device::Userspace(d) => d.name(),
        }
    }

    /// The implementation.
    pub fn kind(&self) -> WireGuardKind {
        match self {
            Device::Kernel(_) => WireGuardKind::Kernel,
            Device::Userspace(_) => WireGuardKind::Userspace,
        }
    }

    /// Reads keys, port, and per peer the configuration, last handshake and traffic
    /// (`wg show IFACE dump`).
    pub async fn read(&self) -> Result<DeviceState, WireGuardError> {
        match self {
            Device::Kernel(d) => d.read().await,
            Device::Userspace(d) => d.read().await,
        }
    }

    /// Sets the private key and listen port, leaving peers alone (`wg set IFACE private-key F
    /// listen-port P`).
    pub async fn set_interface(
        &self,
        private_key: &PrivateKey,
        listen_port: u16,
    ) -> Result<(), WireGuardError> {
        match self {
            Device::Kernel(d) => d.set_interface(private_key, listen_port).await,
            Device::Userspace(d) => d.set_interface(private_key, listen_port).await,
        }
    }

    /// Sets only the given interface fields (`wg set IFACE [private-key F] [listen-port P]`); an
    /// all-zero private key removes the key. Nothing is sent when both are `None`.
    pub async fn configure_interface(
        &self,
        private_key: Option<&PrivateKey>,
        listen_port: Option<u16>,
    ) -> Result<(), WireGuardError> {
        match self {
            Device::Kernel(d) => d.configure_interface(private_key, listen_port).await,
            Device::Userspace(d) => d.configure_interface(private_key, listen_port).await,
        }
    }

    /// Creates or updates ONE peer: allowed IPs replaced (masked networks), endpoint set when
    /// given (must be resolved), keepalive set, pre-shared key set or cleared (`wg set IFACE peer
    /// K endpoint E persistent-keepalive N allowed-ips A preshared-key F`). Other peers and
    /// their sessions are untouched.
    pub async fn set_peer(&self, peer: &PeerConfig) -> Result<(), WireGuardError> {
        match self {
            Device::Kernel(d) => d.set_peer(peer).await,
            Device::Userspace(d) => d.set_peer(peer).await,
        }
    }

    /// Like [`Device::set_peer`], but only if the device already has the peer (UAPI
    /// `update_only`): an update never re-creates a peer that was removed meanwhile.
    pub async fn update_peer(&self, peer: &PeerConfig) -> Result<(), WireGuardError> {
        match self {
            Device::Kernel(d) => d.update_peer(peer).await,
            Device::Userspace(d) => d.update_peer(peer).await,
        }
    }

    /// Removes ONE peer (`wg set IFACE peer K remove`).
    pub async fn remove_peer(&self, key: &Key) -> Result<(), WireGuardError> {
        match self {
            Device::Kernel(d) => d.remove_peer(key).await,
            Device::Userspace(d) => d.remove_peer(key).await,
        }
    }

    /// Whether the device still runs: an in-process userspace device whose thread ended (its TUN
    /// interface was deleted, say) or that was stopped does not; a kernel device, or one
    /// attached to another implementation, is taken to run (whether its link still exists is
    /// the caller's to check).
    pub fn is_running(&self) -> bool {
        match self {
            Device::Kernel(_) => true,
            Device::Userspace(d) => d.is_running(),
        }
    }

    /// Stops an in-process userspace device in place (see [`UserspaceDevice::stop`]), before the
    /// device is opened again; nothing for the other kinds.
    pub async fn stop(&mut self) {
        if let Device::Userspace(d) = self {
            d.stop().await;
        }
    }

    /// Deletes the device: the kernel link (`ip link del IFACE`), or stops the in-process
    /// userspace device (its TUN interface and socket go away).
    pub async fn delete(self) -> Result<(), WireGuardError> {
        match self {
            Device::Kernel(d) => d.delete().await,
            Device::Userspace(d) => d.delete().await,
        }
    }

    /// The UAPI socket of a userspace device.
    pub fn socket_path(&self) -> Option<&Path> {
        match self {
            Device::Kernel(_) => None,
            Device::Userspace(d) => Some(d.socket_path()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wireguard_flag_parses_auto_kernel_and_userspace_and_names_bad_input() {
        assert_eq!("auto".parse::<WireGuardChoice>().unwrap(), WireGuardChoice::Auto);
        assert_eq!(
            "kernel".parse::<WireGuardChoice>().unwrap(),
            WireGuardChoice::Kind(WireGuardKind::Kernel)
        );
        assert_eq!(
            "userspace".parse::<WireGuardChoice>().unwrap(),
            WireGuardChoice::Kind(WireGuardKind::Userspace)
        );
        let err = "boringtun".parse::<WireGuardChoice>().unwrap_err();
        assert!(err.to_string().contains("\"boringtun\""), "{err}");
        for c in ["auto", "kernel", "userspace"] {
            assert_eq!(c.parse::<WireGuardChoice>().unwrap().to_string(), c);
        }
    }

    #[test]
    fn interface_names_are_checked_like_the_kernel_does() {
        assert!(validate_name("kilo0").is_ok());
        assert!(validate_name("abcdefghijklmno").is_ok());
        for bad in ["", "abcdefghijklmnop", "a/b", "a b", ".", "..", "a:b"] {
            assert!(
                matches!(validate_name(bad), Err(WireGuardError::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn device_futures_can_be_spawned_on_the_agents_runtime() {
        fn check(device: &Device, diff: &kilo_core::wireguard::ConfigDiff, peer: &PeerConfig) {
            assert_send(&device.read());
            assert_send(&device.apply(diff));
            assert_send(&device.set_peer(peer));
            assert_send(&device.remove_peer(&peer.public_key));
            let options = DeviceOptions::default();
            assert_send(&Device::open_or_create(WireGuardKind::Userspace, "x", 1420, &options));
            assert_send(&select(WireGuardChoice::Auto, &options));
        }
        let _ = check;
        fn sync<T: Send + Sync>() {}
        sync::<Device>();
    }

    #[tokio::test]
    async fn an_explicit_kind_is_used_without_probing() {
        let options = DeviceOptions::default();
        let kind = WireGuardChoice::Kind(WireGuardKind::Userspace);
        assert_eq!(select(kind, &options).await, WireGuardKind::Userspace);
    }
}
