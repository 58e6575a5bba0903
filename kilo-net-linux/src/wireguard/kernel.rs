//! The kernel WireGuard device: a `wireguard` link (created with rtnetlink) configured through
//! the kernel's generic-netlink WireGuard API via the `wireguard-control` crate.
//!
//! Every operation runs on a short-lived thread that enters the device's network namespace when
//! one is given (see [`super::netns`]), so a device in a namespace is handled like one on the
//! host. Each change names ONE peer; `replace_peers` is never used.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use futures::TryStreamExt;
use kilo_core::wireguard::PeerConfig;
use kilo_core::{Cidr, Endpoint, Key, PresharedKey, PrivateKey};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::{LinkUnspec, LinkWireguard};
use wireguard_control as wgc;

use super::error::WireGuardError;
use super::netns;
use super::state::{DeviceState, PeerState};
use super::uapi::endpoint_addr;

/// A kernel WireGuard device.
#[derive(Debug, Clone)]
pub struct KernelDevice {
    name: String,
    netns: Option<PathBuf>,
}

fn kernel_err(operation: &'static str, name: &str, message: impl ToString) -> WireGuardError {
    WireGuardError::Kernel { operation, name: name.to_string(), message: message.to_string() }
}

fn iface(name: &str) -> Result<wgc::InterfaceName, WireGuardError> {
    name.parse().map_err(|_| WireGuardError::InvalidName {
        name: name.to_string(),
        reason: "not a valid interface name",
    })
}

/// Whether a link message is a `wireguard` link.
fn is_wireguard(link: &LinkMessage) -> bool {
    link.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.contains(&LinkInfo::Kind(InfoKind::Wireguard)),
        _ => false,
    })
}

/// The link called `name`, if it exists (`ip link show NAME`).
async fn find_link(
    handle: &rtnetlink::Handle,
    name: &str,
) -> Result<Option<LinkMessage>, WireGuardError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(rtnetlink::Error::NetlinkError(e))
            if e.code.map(|c| c.get().abs()) == Some(nix::libc::ENODEV) =>
        {
            Ok(None)
        }
        Err(e) => Err(kernel_err("ip link show", name, e)),
    }
}

fn connect(name: &str) -> Result<rtnetlink::Handle, WireGuardError> {
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|e| kernel_err("netlink connect", name, e))?;
    tokio::spawn(connection);
    Ok(handle)
}

/// Creates a `wireguard` link and deletes it again: whether this kernel can run WireGuard
/// (`ip link add NAME type wireguard && ip link del NAME`).
pub async fn probe(netns: Option<PathBuf>) -> bool {
    static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 100;
    let name = format!("kgprobe{}-{n}", std::process::id() % 100_000);
    let result = netns::run(netns, move || async move {
        let handle = connect(&name)?;
        handle
            .link()
            .add(LinkWireguard::new(&name).build())
            .execute()
            .await
            .map_err(|e| kernel_err("ip link add type wireguard", &name, e))?;
        if let Some(link) = find_link(&handle, &name).await? {
            let _ = handle.link().del(link.header.index).execute().await;
        }
        Ok(())
    })
    .await;
    if let Err(e) = &result {
        tracing::debug!(error = %e, "kernel WireGuard is not available");
    }
    result.is_ok()
}

impl KernelDevice {
    /// Uses the `wireguard` link `name` if it exists, else creates it with `mtu`
    /// (`ip link add NAME mtu MTU type wireguard`), inside `netns` when given. The link is left
    /// down. An existing link of another type is an error.
    pub async fn open_or_create(
        name: &str,
        mtu: u32,
        netns: Option<&Path>,
    ) -> Result<Self, WireGuardError> {
        iface(name)?;
        let n = name.to_string();
        netns::run(netns.map(Path::to_path_buf), move || async move {
            let handle = connect(&n)?;
            match find_link(&handle, &n).await? {
                Some(link) if is_wireguard(&link) => Ok(()),
                Some(_) => Err(kernel_err(
                    "ip link show",
                    &n,
                    "the link exists and is not of type wireguard",
                )),
                None => handle
                    .link()
                    .add(LinkWireguard::new(&n).mtu(mtu).build())
                    .execute()
                    .await
                    .map_err(|e| kernel_err("ip link add type wireguard", &n, e)),
            }
        })
        .await?;
        Ok(KernelDevice { name: name.to_string(), netns: netns.map(Path::to_path_buf) })
    }

    /// Uses the existing `wireguard` link `name` (`--create-interface=false`); an error when it
    /// is missing or of another type.
    pub async fn open(name: &str, netns: Option<&Path>) -> Result<Self, WireGuardError> {
        iface(name)?;
        let n = name.to_string();
        netns::run(netns.map(Path::to_path_buf), move || async move {
            let handle = connect(&n)?;
            match find_link(&handle, &n).await? {
                Some(link) if is_wireguard(&link) => Ok(()),
                Some(_) => Err(kernel_err("ip link show", &n, "the link is not of type wireguard")),
                None => Err(kernel_err("ip link show", &n, "no such link")),
            }
        })
        .await?;
        Ok(KernelDevice { name: name.to_string(), netns: netns.map(Path::to_path_buf) })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a blocking `wireguard-control` call in the device's namespace.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&wgc::InterfaceName) -> std::io::Result<T> + Send + 'static,
        operation: &'static str,
    ) -> Result<T, WireGuardError> {
        let name = self.name.clone();
        let ifname = iface(&name)?;
        netns::run(self.netns.clone(), move || async move {
            f(&ifname).map_err(|e| kernel_err(operation, &name, e))
        })
        .await
    }

    /// Reads the device (`wg show IFACE dump`).
    pub async fn read(&self) -> Result<DeviceState, WireGuardError> {
        let device = self.run(|i| wgc::Device::get(i, wgc::Backend::Kernel), "wg show").await?;
        Ok(from_device(&self.name, device))
    }

    /// Sets the private key and listen port (`wg set IFACE private-key F listen-port P`).
    pub async fn set_interface(
        &self,
        private_key: &PrivateKey,
        listen_port: u16,
    ) -> Result<(), WireGuardError> {
        self.configure_interface(Some(private_key), Some(listen_port)).await
    }

    /// Sets only the given interface fields; an all-zero private key removes the key.
    pub async fn configure_interface(
        &self,
        private_key: Option<&PrivateKey>,
        listen_port: Option<u16>,
    ) -> Result<(), WireGuardError> {
        if private_key.is_none() && listen_port.is_none() {
            return Ok(());
        }
        let mut update = wgc::DeviceUpdate::new();
        if let Some(k) = private_key {
            update = update.set_private_key(wgc::Key(*k.expose_bytes()));
        }
        if let Some(p) = listen_port {
            update = update.set_listen_port(p);
        }
        self.run(move |i| update.apply(i, wgc::Backend::Kernel), "wg set private-key listen-port")
            .await
    }

    /// Creates or updates ONE peer, replacing its allowed IPs (`wg set IFACE peer K ...`).
    pub async fn set_peer(&self, peer: &PeerConfig) -> Result<(), WireGuardError> {
        let update = wgc::DeviceUpdate::new().add_peer(to_builder(peer)?);
        self.run(move |i| update.apply(i, wgc::Backend::Kernel), "wg set peer").await
    }

    /// Updates ONE peer only if the device has it. `wireguard-control` does not expose the
    /// kernel's update-only flag, so the device is read first (a peer removed between the read
    /// and the write would be re-created).
    pub async fn update_peer(&self, peer: &PeerConfig) -> Result<(), WireGuardError> {
        let update = wgc::DeviceUpdate::new().add_peer(to_builder(peer)?);
        if self.read().await?.peer(&peer.public_key).is_none() {
            return Ok(());
        }
        self.run(move |i| update.apply(i, wgc::Backend::Kernel), "wg set peer").await
    }

    /// Removes ONE peer (`wg set IFACE peer K remove`).
    pub async fn remove_peer(&self, key: &Key) -> Result<(), WireGuardError> {
        let update = wgc::DeviceUpdate::new().remove_peer_by_key(&wgc::Key(*key.as_bytes()));
        self.run(move |i| update.apply(i, wgc::Backend::Kernel), "wg set peer remove").await
    }

    /// Deletes the link (`ip link del IFACE`).
    pub async fn delete(self) -> Result<(), WireGuardError> {
        let name = self.name.clone();
        netns::run(self.netns.clone(), move || async move {
            let handle = connect(&name)?;
            if let Some(link) = find_link(&handle, &name).await? {
                handle
                    .link()
                    .del(link.header.index)
                    .execute()
                    .await
                    .map_err(|e| kernel_err("ip link del", &name, e))?;
            }
            Ok(())
        })
        .await
    }

    /// Sets the link's MTU (`ip link set IFACE mtu MTU`).
    pub async fn set_mtu(&self, mtu: u32) -> Result<(), WireGuardError> {
        let name = self.name.clone();
        netns::run(self.netns.clone(), move || async move {
            let handle = connect(&name)?;
            handle
                .link()
                .change(LinkUnspec::new_with_name(&name).mtu(mtu).build())
                .execute()
                .await
                .map_err(|e| kernel_err("ip link set mtu", &name, e))
        })
        .await
    }
}

/// The `wireguard-control` peer update for one kilo-core peer: allowed IPs replaced by the masked
/// networks, endpoint set when given (resolved), keepalive set (0 disables), pre-shared key set
/// or cleared.
pub fn to_builder(peer: &PeerConfig) -> Result<wgc::PeerConfigBuilder, WireGuardError> {
    let mut b = wgc::PeerConfigBuilder::new(&wgc::Key(*peer.public_key.as_bytes()))
        .replace_allowed_ips()
        .set_persistent_keepalive_interval(peer.persistent_keepalive);
    if let Some(addr) = endpoint_addr(peer)? {
        b = b.set_endpoint(addr);
    }
    b = match peer.preshared_key.filter(|k| !k.is_zero()) {
        Some(k) => b.set_preshared_key(wgc::Key(*k.expose_bytes())),
        None => b.unset_preshared_key(),
    };
    for cidr in &peer.allowed_ips {
        let net = cidr.network();
        b = b.add_allowed_ip(net.addr(), net.prefix());
    }
    Ok(b)
}

/// The state of a kernel device as `wireguard-control` reports it.
pub fn from_device(name: &str, device: wgc::Device) -> DeviceState {
    from_parts(name, device.private_key, device.listen_port, device.fwmark, device.peers)
}

fn from_parts(
    name: &str,
    private_key: Option<wgc::Key>,
    listen_port: Option<u16>,
    fwmark: Option<u32>,
    peers: Vec<wgc::PeerInfo>,
) -> DeviceState {
    let private_key = private_key.map(|k| PrivateKey::from_bytes(k.0)).filter(|k| !k.is_zero());
    DeviceState {
        name: name.to_string(),
        public_key: private_key.as_ref().map(PrivateKey::public_key),
        private_key,
        listen_port,
        fwmark: fwmark.filter(|m| *m != 0),
        peers: peers.into_iter().map(peer_state).collect(),
    }
}

fn peer_state(info: wgc::PeerInfo) -> PeerState {
    let c = info.config;
    PeerState {
        config: PeerConfig {
            public_key: Key::from_bytes(c.public_key.0),
            preshared_key: c
                .preshared_key
                .map(|k| PresharedKey::from_bytes(k.0))
                .filter(|k| !k.is_zero()),
            endpoint: c.endpoint.map(Endpoint::from_addr),
            allowed_ips: c
                .allowed_ips
                .iter()
                .filter_map(|a| Cidr::new(a.address, a.cidr))
                .collect(),
            persistent_keepalive: c.persistent_keepalive_interval.unwrap_or(0),
        },
        last_handshake: info.stats.last_handshake_time.filter(|t| *t != SystemTime::UNIX_EPOCH),
        rx_bytes: info.stats.rx_bytes,
        tx_bytes: info.stats.tx_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(b: u8) -> Key {
        Key::from_bytes([b; 32])
    }

    #[test]
    fn a_peer_becomes_one_update_that_replaces_its_allowed_ips() {
        let peer = PeerConfig {
            public_key: key(1),
            preshared_key: Some(PresharedKey::from_bytes([2; 32])),
            endpoint: Some("10.0.0.1:51820".parse().unwrap()),
            allowed_ips: vec!["10.4.0.1/16".parse().unwrap()],
            persistent_keepalive: 25,
        };
        let expected = wgc::PeerConfigBuilder::new(&wgc::Key([1; 32]))
            .replace_allowed_ips()
            .set_persistent_keepalive_interval(25)
            .set_endpoint("10.0.0.1:51820".parse().unwrap())
            .set_preshared_key(wgc::Key([2; 32]))
            .add_allowed_ip("10.4.0.0".parse().unwrap(), 16);
        assert_eq!(to_builder(&peer).unwrap(), expected);
    }

    #[test]
    fn a_peer_without_psk_clears_it_and_without_endpoint_keeps_the_device_endpoint() {
        let peer = PeerConfig { public_key: key(1), ..Default::default() };
        let expected = wgc::PeerConfigBuilder::new(&wgc::Key([1; 32]))
            .replace_allowed_ips()
            .set_persistent_keepalive_interval(0)
            .unset_preshared_key();
        assert_eq!(to_builder(&peer).unwrap(), expected);
    }

    #[test]
    fn an_unresolved_dns_endpoint_is_an_error_naming_the_peer() {
        let peer = PeerConfig {
            public_key: key(4),
            endpoint: Some("node.example.com:51820".parse().unwrap()),
            ..Default::default()
        };
        assert!(matches!(
            to_builder(&peer),
            Err(WireGuardError::UnresolvedEndpoint { key: k, .. }) if k == key(4)
        ));
    }

    fn info(key: u8) -> wgc::PeerInfo {
        wgc::PeerInfo::from_public_key(wgc::Key([key; 32]))
    }

    #[test]
    fn a_kernel_device_converts_to_device_state_and_config() {
        let private = PrivateKey::from_bytes([7; 32]);
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut a = info(1);
        a.config.preshared_key = Some(wgc::Key([0; 32]));
        a.config.endpoint = Some("192.168.0.1:51820".parse().unwrap());
        a.config.persistent_keepalive_interval = Some(10);
        a.config.allowed_ips =
            vec![wgc::AllowedIp { address: "10.4.0.2".parse().unwrap(), cidr: 32 }];
        a.stats.last_handshake_time = Some(when);
        a.stats.rx_bytes = 5;
        a.stats.tx_bytes = 6;
        let mut b = info(2);
        b.config.preshared_key = Some(wgc::Key([3; 32]));
        let state = from_parts("kilo0", Some(wgc::Key([7; 32])), Some(51820), Some(0), vec![a, b]);
        assert_eq!(state.public_key, Some(private.public_key()));
        assert_eq!(state.listen_port, Some(51820));
        assert_eq!(state.fwmark, None);
        let a = &state.peers[0];
        assert_eq!(a.config.preshared_key, None);
        assert_eq!(a.config.endpoint.as_ref().unwrap().to_string(), "192.168.0.1:51820");
        assert_eq!(a.config.allowed_ips, vec!["10.4.0.2/32".parse::<Cidr>().unwrap()]);
        assert_eq!(a.config.persistent_keepalive, 10);
        assert_eq!((a.last_handshake, a.rx_bytes, a.tx_bytes), (Some(when), 5, 6));
        let b = &state.peers[1];
        assert!(b.has_preshared_key());
        assert_eq!(b.config.persistent_keepalive, 0);
        assert_eq!(b.last_handshake, None);
        let config = state.to_config();
        assert_eq!(config.interface.unwrap().private_key, Some(private));
        assert_eq!(config.peers.len(), 2);
    }

    #[test]
    fn a_round_trip_through_the_kernel_types_keeps_the_peer() {
        let peer = PeerConfig {
            public_key: key(9),
            preshared_key: Some(PresharedKey::from_bytes([8; 32])),
            endpoint: Some("[fd00::1]:51820".parse().unwrap()),
            allowed_ips: vec!["10.4.0.0/16".parse().unwrap(), "fd00:4::/64".parse().unwrap()],
            persistent_keepalive: 15,
        };
        let config = to_builder(&peer).unwrap().into_peer_config();
        let mut info = info(9);
        info.config = config;
        let back = peer_state(info);
        assert_eq!(back.config, peer);
    }
}
