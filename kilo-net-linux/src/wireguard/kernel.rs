//! The kernel WireGuard device: a `wireguard` link (created with rtnetlink) configured through
//! the kernel's generic-netlink WireGuard API on the same rust-netlink
//! stack as rtnetlink (`netlink-packet-wireguard` messages over `netlink-proto`).
//!
//! Every operation runs on a short-lived thread that enters the device's network namespace when
//! one is given (see [`super::netns`]) and opens its netlink sockets there, so a device in a
//! namespace is handled like one on the host. Each change names ONE peer; `replace_peers` is
//! never used.

use std::future::Future;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use kilo_core::wireguard::PeerConfig;
use kilo_core::{Cidr, Key, PrivateKey};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::{LinkUnspec, LinkWireguard};

use super::apply::Operation;
use super::error::WireGuardError;
use super::genl::{self, GenlError};
use super::netns;
use super::state::{DeviceState, RawDevice, RawPeer};
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
        super::validate_name(name)?;
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
        super::validate_name(name)?;
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

    /// Runs `work` on a generic-netlink WireGuard connection opened in the device's namespace.
    async fn genl<T, F, Fut>(&self, operation: &'static str, work: F) -> Result<T, WireGuardError>
    where
        T: Send + 'static,
        F: FnOnce(genl::WireGuard, String) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, GenlError>>,
    {
        let name = self.name.clone();
        netns::run(self.netns.clone(), move || async move {
            let result = match genl::WireGuard::open().await {
                Ok(wg) => work(wg, name.clone()).await,
                Err(e) => Err(e),
            };
            result.map_err(|e| kernel_err(operation, &name, e))
        })
        .await
    }

    /// Sends `WG_CMD_SET_DEVICE` for the interface fields and peers given, in as many messages
    /// as their size needs.
    async fn set(
        &self,
        operation: &'static str,
        interface: genl::InterfaceUpdate,
        peers: Vec<genl::PeerUpdate>,
    ) -> Result<(), WireGuardError> {
        let messages =
            genl::set_device_messages(&self.name, &interface, &peers, genl::MAX_MESSAGE_LEN)
                .map_err(|e| kernel_err(operation, &self.name, e))?;
        self.genl(operation, move |wg, _| async move { wg.set_device(messages).await }).await
    }

    /// Reads the device (`wg show IFACE dump`).
    pub async fn read(&self) -> Result<DeviceState, WireGuardError> {
        let device =
            self.genl("wg show", |wg, name| async move { wg.get_device(&name).await }).await?;
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
        let interface = genl::InterfaceUpdate { private_key: private_key.cloned(), listen_port };
        self.set("wg set private-key listen-port", interface, Vec::new()).await
    }

    /// Creates or updates ONE peer, replacing its allowed IPs (`wg set IFACE peer K ...`).
    pub async fn set_peer(&self, peer: &PeerConfig) -> Result<(), WireGuardError> {
        let update = to_update(peer)?;
        self.set("wg set peer", genl::InterfaceUpdate::default(), vec![update]).await
    }

    /// Updates ONE peer only if the device has it (the kernel's `WGPEER_F_UPDATE_ONLY`). A
    /// kernel that does not know the flag (`EOPNOTSUPP`) gets the device read first instead (a
    /// peer removed between the read and the write would then be re-created).
    pub async fn update_peer(&self, peer: &PeerConfig) -> Result<(), WireGuardError> {
        let update = to_update(peer)?;
        let only = genl::PeerUpdate { update_only: true, ..update.clone() };
        let result = self.set("wg set peer", genl::InterfaceUpdate::default(), vec![only]).await;
        match result {
            Err(WireGuardError::Kernel { message, .. })
                if message.contains(&format!("(os error {})", nix::libc::EOPNOTSUPP)) =>
            {
                if self.read().await?.peer(&peer.public_key).is_none() {
                    return Ok(());
                }
                self.set("wg set peer", genl::InterfaceUpdate::default(), vec![update]).await
            }
            other => other,
        }
    }

    /// Makes several peer operations in one `WG_CMD_SET_DEVICE` (split across netlink messages
    /// as `wg(8)` splits them), in order; interface operations are not among them.
    pub(crate) async fn set_peers(&self, ops: &[Operation]) -> Result<(), WireGuardError> {
        let mut updates = Vec::with_capacity(ops.len());
        for op in ops {
            updates.push(match op {
                Operation::SetPeer(peer) => to_update(peer)?,
                Operation::UpdatePeer(peer) => {
                    genl::PeerUpdate { update_only: true, ..to_update(peer)? }
                }
                Operation::RemovePeer(key) => {
                    genl::PeerUpdate { public_key: *key, remove: true, ..Default::default() }
                }
                Operation::Interface { .. } => continue,
            });
        }
        self.set("wg set peers", genl::InterfaceUpdate::default(), updates).await
    }

    /// Removes ONE peer (`wg set IFACE peer K remove`).
    pub async fn remove_peer(&self, key: &Key) -> Result<(), WireGuardError> {
        let remove = genl::PeerUpdate { public_key: *key, remove: true, ..Default::default() };
        self.set("wg set peer remove", genl::InterfaceUpdate::default(), vec![remove]).await
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

/// The `WG_CMD_SET_DEVICE` peer for one kilo-core peer: allowed IPs replaced by the masked
/// networks, endpoint set when given (resolved), keepalive set (0 disables), pre-shared key set
/// or cleared.
pub(crate) fn to_update(peer: &PeerConfig) -> Result<genl::PeerUpdate, WireGuardError> {
    Ok(genl::PeerUpdate {
        public_key: peer.public_key,
        replace_allowed_ips: true,
        preshared_key: Some(peer.preshared_key.filter(|k| !k.is_zero()).unwrap_or_default()),
        endpoint: endpoint_addr(peer)?,
        persistent_keepalive: Some(peer.persistent_keepalive),
        allowed_ips: peer
            .allowed_ips
            .iter()
            .map(|cidr| {
                let net = cidr.network();
                (net.addr(), net.prefix())
            })
            .collect(),
        ..Default::default()
    })
}

/// The state of a kernel device as `WG_CMD_GET_DEVICE` reports it: unset (all-zero) keys and
/// a zero firewall mark are `None`, a handshake at the epoch is no handshake.
pub(crate) fn from_device(name: &str, device: genl::DeviceInfo) -> DeviceState {
    RawDevice {
        private_key: device.private_key,
        listen_port: device.listen_port,
        fwmark: device.fwmark,
        peers: device.peers.into_iter().map(raw_peer).collect(),
    }
    .into_state(name)
}

fn raw_peer(info: genl::PeerInfo) -> RawPeer {
    RawPeer {
        public_key: info.public_key,
        preshared_key: info.preshared_key,
        endpoint: info.endpoint,
        allowed_ips: info
            .allowed_ips
            .iter()
            .filter_map(|(addr, prefix)| Cidr::new(*addr, *prefix))
            .collect(),
        persistent_keepalive: info.persistent_keepalive,
        last_handshake: info.last_handshake,
        rx_bytes: info.rx_bytes,
        tx_bytes: info.tx_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wireguard::PeerState;
    use kilo_core::PresharedKey;
    use std::net::IpAddr;
    use std::time::{Duration, SystemTime};

    fn peer_state(info: genl::PeerInfo) -> PeerState {
        raw_peer(info).into_state()
    }

    fn key(b: u8) -> Key {
        Key::from_bytes([b; 32])
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
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
        let expected = genl::PeerUpdate {
            public_key: key(1),
            remove: false,
            update_only: false,
            replace_allowed_ips: true,
            preshared_key: Some(PresharedKey::from_bytes([2; 32])),
            endpoint: Some("10.0.0.1:51820".parse().unwrap()),
            persistent_keepalive: Some(25),
            allowed_ips: vec![(ip("10.4.0.0"), 16)],
        };
        assert_eq!(to_update(&peer).unwrap(), expected);
    }

    #[test]
    fn a_peer_without_psk_clears_it_and_without_endpoint_keeps_the_device_endpoint() {
        let peer = PeerConfig { public_key: key(1), ..Default::default() };
        let expected = genl::PeerUpdate {
            public_key: key(1),
            replace_allowed_ips: true,
            preshared_key: Some(PresharedKey::ZERO),
            persistent_keepalive: Some(0),
            ..Default::default()
        };
        assert_eq!(to_update(&peer).unwrap(), expected);
    }

    #[test]
    fn an_unresolved_dns_endpoint_is_an_error_naming_the_peer() {
        let peer = PeerConfig {
            public_key: key(4),
            endpoint: Some("node.example.com:51820".parse().unwrap()),
            ..Default::default()
        };
        assert!(matches!(
            to_update(&peer),
            Err(WireGuardError::UnresolvedEndpoint { key: k, .. }) if k == key(4)
        ));
    }

    fn info(key: u8) -> genl::PeerInfo {
        genl::PeerInfo {
            public_key: Key::from_bytes([key; 32]),
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            allowed_ips: Vec::new(),
        }
    }

    #[test]
    fn a_kernel_device_converts_to_device_state_and_config() {
        let private = PrivateKey::from_bytes([7; 32]);
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut a = info(1);
        a.preshared_key = Some(PresharedKey::ZERO);
        a.endpoint = Some("192.168.0.1:51820".parse().unwrap());
        a.persistent_keepalive = Some(10);
        a.allowed_ips = vec![(ip("10.4.0.2"), 32)];
        a.last_handshake = Some(when);
        a.rx_bytes = 5;
        a.tx_bytes = 6;
        let mut b = info(2);
        b.preshared_key = Some(PresharedKey::from_bytes([3; 32]));
        b.last_handshake = Some(SystemTime::UNIX_EPOCH);
        let device = genl::DeviceInfo {
            private_key: Some(PrivateKey::from_bytes([7; 32])),
            listen_port: Some(51820),
            fwmark: Some(0),
            peers: vec![a, b],
        };
        let state = from_device("kilo0", device);
        let expected = DeviceState {
            name: "kilo0".into(),
            private_key: Some(private.clone()),
            public_key: Some(private.public_key()),
            listen_port: Some(51820),
            fwmark: None,
            peers: vec![
                PeerState {
                    config: PeerConfig {
                        public_key: key(1),
                        preshared_key: None,
                        endpoint: Some("192.168.0.1:51820".parse().unwrap()),
                        allowed_ips: vec!["10.4.0.2/32".parse().unwrap()],
                        persistent_keepalive: 10,
                    },
                    last_handshake: Some(when),
                    rx_bytes: 5,
                    tx_bytes: 6,
                },
                PeerState {
                    config: PeerConfig {
                        public_key: key(2),
                        preshared_key: Some(PresharedKey::from_bytes([3; 32])),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            ],
        };
        assert_eq!(state, expected);
        let config = state.to_config();
        assert_eq!(config.interface.unwrap().private_key, Some(private));
        assert_eq!(config.peers.len(), 2);
    }

    #[test]
    fn a_zero_private_key_is_no_key() {
        let device = genl::DeviceInfo {
            private_key: Some(PrivateKey::from_bytes([0; 32])),
            listen_port: Some(0),
            fwmark: Some(7),
            peers: Vec::new(),
        };
        let expected = DeviceState {
            name: "kilo0".into(),
            listen_port: Some(0),
            fwmark: Some(7),
            ..Default::default()
        };
        assert_eq!(from_device("kilo0", device), expected);
    }

    #[test]
    fn a_round_trip_through_the_kernel_messages_keeps_the_peer() {
        let peer = PeerConfig {
            public_key: key(9),
            preshared_key: Some(PresharedKey::from_bytes([8; 32])),
            endpoint: Some("[fd00::1]:51820".parse().unwrap()),
            allowed_ips: vec!["10.4.0.0/16".parse().unwrap(), "fd00:4::/64".parse().unwrap()],
            persistent_keepalive: 15,
        };
        let update = to_update(&peer).unwrap();
        let messages =
            genl::set_device_messages("kilo0", &genl::InterfaceUpdate::default(), &[update], 4096)
                .unwrap();
        // What the kernel would answer: the same attributes under WG_CMD_GET_DEVICE.
        let replies: Vec<_> = messages
            .into_iter()
            .map(|m| netlink_packet_wireguard::WireguardMessage {
                cmd: netlink_packet_wireguard::WireguardCmd::GetDevice,
                attributes: m.attributes,
            })
            .collect();
        let device = genl::device_from_replies(&replies).unwrap();
        let back: Vec<_> = device.peers.into_iter().map(|p| peer_state(p).config).collect();
        assert_eq!(back, vec![peer]);
    }

    #[tokio::test]
    async fn without_the_wireguard_module_an_operation_says_to_load_it() {
        if std::path::Path::new("/sys/module/wireguard").exists() {
            return;
        }
        let device = KernelDevice { name: "kilo0".into(), netns: None };
        let err = device.read().await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "wg show on WireGuard interface \"kilo0\" failed: generic netlink family \"wireguard\" \
             not found: No such file or directory (os error 2); this kernel has no WireGuard module: \
             load it (`modprobe wireguard`) or use the built-in userspace implementation \
             (--wireguard userspace)"
        );
        let err = device.remove_peer(&key(1)).await.unwrap_err();
        assert!(
            matches!(&err, WireGuardError::Kernel { operation: "wg set peer remove", name, .. } if name == "kilo0"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn operations_run_inside_the_devices_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-netns");
        let device = KernelDevice { name: "kilo0".into(), netns: Some(missing.clone()) };
        let err = device.read().await.unwrap_err();
        assert!(matches!(&err, WireGuardError::Netns { path, .. } if *path == missing), "{err}");
    }
}
