//! The kernel's WireGuard generic-netlink API on the rust-netlink stack that rtnetlink uses:
//! `WG_CMD_GET_DEVICE` and `WG_CMD_SET_DEVICE` messages from `netlink-packet-wireguard`, sent
//! over a `netlink-proto` connection on a `NETLINK_GENERIC` socket, after resolving the
//! `wireguard` family with the generic-netlink controller (`CTRL_CMD_GETFAMILY`).
//!
//! A socket belongs to the network namespace of the thread that creates it: [`WireGuard::open`]
//! is called from inside [`super::netns::run`] for a device in another namespace.
//!
//! A `WG_CMD_SET_DEVICE` message is kept within [`MAX_MESSAGE_LEN`] bytes as `wg(8)` does: peers
//! go to several messages, and a peer whose allowed IPs do not fit continues in the next message
//! (its public key again, without `WGPEER_F_REPLACE_ALLOWEDIPS`, with the remaining allowed IPs).
//! A dump reply is read back the same way: a peer repeated in consecutive messages is one peer.

use std::fmt::Debug;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use kilo_core::{Key, PresharedKey, PrivateKey};
use netlink_packet_core::{
    Emitable, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkMessage,
    NetlinkPayload, ParseableParametrized,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardMessage, WireguardPeer, WireguardPeerAttribute, WireguardPeerFlags,
};
use netlink_proto::ConnectionHandle;
use netlink_proto::sys::SocketAddr as NetlinkAddr;
use netlink_proto::sys::protocols::NETLINK_GENERIC;

/// The largest `WG_CMD_SET_DEVICE` message sent, netlink and generic-netlink headers included:
/// `wg(8)`'s buffer (one page, at most 8 KiB; 4 KiB on the usual page size).
pub(crate) const MAX_MESSAGE_LEN: usize = 4096;

/// The start of the message of a failed `wireguard` family lookup (the kernel has no WireGuard
/// module); [`super::error`] adds what to do about it.
pub(crate) const NO_FAMILY: &str = "generic netlink family \"wireguard\" not found";

/// The netlink (16 bytes) and generic-netlink (4 bytes) headers of a message.
const HEADERS_LEN: usize = 16 + 4;

/// How long one request may wait for the kernel's answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a dump interrupted by a concurrent change (`NLM_F_DUMP_INTR`) is run again.
const DUMP_ATTEMPTS: usize = 10;

/// Why a generic-netlink WireGuard request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GenlError {
    /// The kernel has no `wireguard` generic-netlink family: no WireGuard module.
    #[error("{NO_FAMILY}: {0}")]
    NoFamily(#[source] io::Error),
    /// The socket failed, or the kernel refused the request (its errno).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The kernel's answer is not what the API describes.
    #[error("unexpected answer from the kernel: {0}")]
    Answer(String),
    /// One peer's public key and a single allowed IP do not fit in a message.
    #[error("peer {0} does not fit in a {MAX_MESSAGE_LEN}-byte netlink message")]
    TooLarge(Key),
}

/// The interface fields of a `WG_CMD_SET_DEVICE` (`wg set IFACE private-key F listen-port P`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct InterfaceUpdate {
    /// The private key to set; all zeros removes it.
    pub private_key: Option<PrivateKey>,
    /// The UDP listen port to set; 0 picks a random one.
    pub listen_port: Option<u16>,
}

/// One peer of a `WG_CMD_SET_DEVICE`: its `WGPEER_A_*` attributes and `WGPEER_F_*` flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PeerUpdate {
    /// The peer's public key.
    pub public_key: Key,
    /// `WGPEER_F_REMOVE_ME`: remove the peer (nothing else is applied).
    pub remove: bool,
    /// `WGPEER_F_UPDATE_ONLY`: change the peer only if the device has it.
    pub update_only: bool,
    /// `WGPEER_F_REPLACE_ALLOWEDIPS`: the allowed IPs given replace the peer's.
    pub replace_allowed_ips: bool,
    /// The pre-shared key to set; all zeros clears it.
    pub preshared_key: Option<PresharedKey>,
    /// The endpoint to set.
    pub endpoint: Option<SocketAddr>,
    /// The persistent-keepalive interval to set, in seconds; 0 disables it.
    pub persistent_keepalive: Option<u16>,
    /// Allowed IPs to add (address and prefix length).
    pub allowed_ips: Vec<(IpAddr, u8)>,
}

/// A device as `WG_CMD_GET_DEVICE` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DeviceInfo {
    /// `WGDEVICE_A_PRIVATE_KEY`, when the device has one.
    pub private_key: Option<PrivateKey>,
    /// `WGDEVICE_A_LISTEN_PORT`.
    pub listen_port: Option<u16>,
    /// `WGDEVICE_A_FWMARK`.
    pub fwmark: Option<u32>,
    /// The peers, in the kernel's order.
    pub peers: Vec<PeerInfo>,
}

/// One peer as `WG_CMD_GET_DEVICE` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerInfo {
    /// `WGPEER_A_PUBLIC_KEY`.
    pub public_key: Key,
    /// `WGPEER_A_PRESHARED_KEY` (all zeros when unset).
    pub preshared_key: Option<PresharedKey>,
    /// `WGPEER_A_ENDPOINT`.
    pub endpoint: Option<SocketAddr>,
    /// `WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL`.
    pub persistent_keepalive: Option<u16>,
    /// `WGPEER_A_LAST_HANDSHAKE_TIME` (the epoch when there was none).
    pub last_handshake: Option<SystemTime>,
    /// `WGPEER_A_RX_BYTES`.
    pub rx_bytes: u64,
    /// `WGPEER_A_TX_BYTES`.
    pub tx_bytes: u64,
    /// `WGPEER_A_ALLOWEDIPS`, across every message the peer spans.
    pub allowed_ips: Vec<(IpAddr, u8)>,
}

/// The `WG_CMD_GET_DEVICE` dump request for the interface `ifname` (`wg show IFACE dump`).
pub(crate) fn get_device_request(ifname: &str) -> WireguardMessage {
    WireguardMessage {
        cmd: WireguardCmd::GetDevice,
        attributes: vec![WireguardAttribute::IfName(ifname.to_string())],
    }
}

fn peer_flags(peer: &PeerUpdate, continued: bool) -> WireguardPeerFlags {
    let mut flags = WireguardPeerFlags::empty();
    if peer.remove {
        flags |= WireguardPeerFlags::RemoveMe;
    }
    if peer.update_only {
        flags |= WireguardPeerFlags::UpdateOnly;
    }
    if peer.replace_allowed_ips && !continued {
        flags |= WireguardPeerFlags::ReplaceAllowedIps;
    }
    flags
}

/// A peer's attributes before its allowed IPs, in `wg(8)`'s order. A peer `continued` from the
/// previous message has only its public key and the flags that still apply.
fn peer_head(peer: &PeerUpdate, continued: bool) -> Vec<WireguardPeerAttribute> {
    let mut attributes = vec![WireguardPeerAttribute::PublicKey(*peer.public_key.as_bytes())];
    if !continued {
        if let Some(k) = &peer.preshared_key {
            attributes.push(WireguardPeerAttribute::PresharedKey(*k.expose_bytes()));
        }
        if let Some(e) = peer.endpoint {
            attributes.push(WireguardPeerAttribute::Endpoint(e));
        }
        if let Some(k) = peer.persistent_keepalive {
            attributes.push(WireguardPeerAttribute::PersistentKeepalive(k));
        }
    }
    let flags = peer_flags(peer, continued);
    if !flags.is_empty() {
        attributes.push(WireguardPeerAttribute::Flags(flags));
    }
    attributes
}

fn allowed_ip((addr, prefix): (IpAddr, u8)) -> WireguardAllowedIp {
    let family =
        if addr.is_ipv4() { WireguardAddressFamily::Ipv4 } else { WireguardAddressFamily::Ipv6 };
    WireguardAllowedIp(vec![
        WireguardAllowedIpAttr::Family(family),
        WireguardAllowedIpAttr::IpAddr(addr),
        WireguardAllowedIpAttr::Cidr(prefix),
    ])
}

/// The `WG_CMD_SET_DEVICE` messages that apply `interface` and `peers` to `ifname`, in order,
/// each at most `max_len` bytes: the interface fields in the first; peers (and a peer's allowed
/// IPs) split across messages as `wg(8)` splits them.
pub(crate) fn set_device_messages(
    ifname: &str,
    interface: &InterfaceUpdate,
    peers: &[PeerUpdate],
    max_len: usize,
) -> Result<Vec<WireguardMessage>, GenlError> {
    let mut messages = Vec::new();
    // The next peer to send, and the next of its allowed IPs (> 0: it continues a peer).
    let (mut next_peer, mut next_ip) = (0, 0);
    loop {
        let first = messages.is_empty();
        let mut attributes = vec![WireguardAttribute::IfName(ifname.to_string())];
        if first {
            if let Some(k) = &interface.private_key {
                attributes.push(WireguardAttribute::PrivateKey(*k.expose_bytes()));
            }
            if let Some(p) = interface.listen_port {
                attributes.push(WireguardAttribute::ListenPort(p));
            }
        }
        // The message so far, with the (empty) WGDEVICE_A_PEERS nest.
        let mut len = HEADERS_LEN + attributes.as_slice().buffer_len() + 4;
        let mut nested = Vec::new();
        while let Some(peer) = peers.get(next_peer) {
            let mut head = peer_head(peer, next_ip > 0);
            let head_len = WireguardPeer(head.clone()).buffer_len();
            if peer.allowed_ips.is_empty() {
                if len + head_len > max_len {
                    break;
                }
                nested.push(WireguardPeer(head));
                len += head_len;
                next_peer += 1;
                continue;
            }
            // The peer with its (empty) WGPEER_A_ALLOWEDIPS nest, then as many allowed IPs as fit.
            let mut used = len + head_len + 4;
            let mut ips = Vec::new();
            while let Some(ip) = peer.allowed_ips.get(next_ip) {
                let ip = allowed_ip(*ip);
                if used + ip.buffer_len() > max_len {
                    break;
                }
                used += ip.buffer_len();
                ips.push(ip);
                next_ip += 1;
            }
            if ips.is_empty() {
                break;
            }
            head.push(WireguardPeerAttribute::AllowedIps(ips));
            nested.push(WireguardPeer(head));
            len = used;
            if next_ip < peer.allowed_ips.len() {
                break;
            }
            (next_peer, next_ip) = (next_peer + 1, 0);
        }
        let sent_peers = !nested.is_empty();
        if sent_peers {
            attributes.push(WireguardAttribute::Peers(nested));
        }
        if first || sent_peers {
            messages.push(WireguardMessage { cmd: WireguardCmd::SetDevice, attributes });
        }
        match peers.get(next_peer) {
            None => return Ok(messages),
            Some(peer) if !first && !sent_peers => {
                return Err(GenlError::TooLarge(peer.public_key));
            }
            Some(_) => {}
        }
    }
}

fn handshake_time(seconds: i64, nanos: i64) -> Option<SystemTime> {
    let seconds = u64::try_from(seconds).ok()?;
    let nanos = u32::try_from(nanos).ok().filter(|n| *n < 1_000_000_000)?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(seconds, nanos))
}

fn allowed_ips_of(ips: &[WireguardAllowedIp]) -> Result<Vec<(IpAddr, u8)>, GenlError> {
    ips.iter()
        .map(|ip| {
            let addr = ip.iter().find_map(|a| match a {
                WireguardAllowedIpAttr::IpAddr(addr) => Some(*addr),
                _ => None,
            });
            let prefix = ip.iter().find_map(|a| match a {
                WireguardAllowedIpAttr::Cidr(p) => Some(*p),
                _ => None,
            });
            match (addr, prefix) {
                (Some(addr), Some(prefix)) => Ok((addr, prefix)),
                _ => Err(GenlError::Answer(format!("allowed IP without address or mask: {ip:?}"))),
            }
        })
        .collect()
}

/// Adds one `WGDEVICE_A_PEERS` entry of a dump to `peers`: a new peer, or more allowed IPs of
/// the last one when it repeats that peer's public key (a peer spanning two messages).
fn add_peer(
    peers: &mut Vec<PeerInfo>,
    attributes: &[WireguardPeerAttribute],
) -> Result<(), GenlError> {
    let Some(public_key) = attributes.iter().find_map(|a| match a {
        WireguardPeerAttribute::PublicKey(k) => Some(Key::from_bytes(*k)),
        _ => None,
    }) else {
        return Err(GenlError::Answer("a peer without a public key".into()));
    };
    let mut ips = Vec::new();
    for a in attributes {
        if let WireguardPeerAttribute::AllowedIps(list) = a {
            ips.extend(allowed_ips_of(list)?);
        }
    }
    if let Some(last) = peers.last_mut().filter(|p| p.public_key == public_key) {
        last.allowed_ips.extend(ips);
        return Ok(());
    }
    let mut peer = PeerInfo {
        public_key,
        preshared_key: None,
        endpoint: None,
        persistent_keepalive: None,
        last_handshake: None,
        rx_bytes: 0,
        tx_bytes: 0,
        allowed_ips: ips,
    };
    for a in attributes {
        match a {
            WireguardPeerAttribute::PresharedKey(k) => {
                peer.preshared_key = Some(PresharedKey::from_bytes(*k));
            }
            WireguardPeerAttribute::Endpoint(e) => peer.endpoint = Some(*e),
            WireguardPeerAttribute::PersistentKeepalive(k) => peer.persistent_keepalive = Some(*k),
            WireguardPeerAttribute::LastHandshake(t) => {
                peer.last_handshake = handshake_time(t.seconds, t.nano_seconds);
            }
            WireguardPeerAttribute::RxBytes(n) => peer.rx_bytes = *n,
            WireguardPeerAttribute::TxBytes(n) => peer.tx_bytes = *n,
            _ => {}
        }
    }
    peers.push(peer);
    Ok(())
}

/// The device described by the messages of one `WG_CMD_GET_DEVICE` dump, in order.
pub(crate) fn device_from_replies(replies: &[WireguardMessage]) -> Result<DeviceInfo, GenlError> {
    let mut device = DeviceInfo::default();
    for reply in replies {
        for attribute in &reply.attributes {
            match attribute {
                WireguardAttribute::PrivateKey(k) => {
                    device.private_key = Some(PrivateKey::from_bytes(*k));
                }
                WireguardAttribute::ListenPort(p) => device.listen_port = Some(*p),
                WireguardAttribute::Fwmark(m) => device.fwmark = Some(*m),
                WireguardAttribute::Peers(peers) => {
                    for peer in peers {
                        add_peer(&mut device.peers, peer)?;
                    }
                }
                _ => {}
            }
        }
    }
    Ok(device)
}

/// The netlink message carrying `payload` of a family whose id is `family_id`, with `flags`
/// (the sequence number is the connection's to set).
pub(crate) fn netlink_message<F>(
    payload: F,
    family_id: u16,
    flags: u16,
) -> NetlinkMessage<GenlMessage<F>>
where
    F: GenlFamily + Emitable + Debug,
{
    let mut genl = GenlMessage::from_payload(payload);
    genl.set_resolved_family_id(family_id);
    let mut message = NetlinkMessage::from(genl);
    message.header.flags = flags;
    message.finalize();
    message
}

/// A generic-netlink connection for the messages of one family, on a socket created in the
/// calling thread's network namespace; its task runs on the current tokio runtime.
fn connect<F>() -> io::Result<ConnectionHandle<GenlMessage<F>>>
where
    F: GenlFamily
        + Emitable
        + ParseableParametrized<[u8], GenlHeader>
        + Debug
        + Send
        + Unpin
        + 'static,
{
    let (connection, handle, _) = netlink_proto::new_connection(NETLINK_GENERIC)?;
    tokio::spawn(connection);
    Ok(handle)
}

/// The answer to one request: its messages, and whether a dump was interrupted by a change.
struct Answer<F> {
    messages: Vec<F>,
    interrupted: bool,
}

/// Sends one request and collects the answer until the kernel's acknowledgement or the end of
/// the dump; an error the kernel answers is its errno.
async fn request<F>(
    handle: &ConnectionHandle<GenlMessage<F>>,
    payload: F,
    family_id: u16,
    flags: u16,
) -> Result<Answer<F>, GenlError>
where
    F: GenlFamily + Emitable + Debug,
{
    let message = netlink_message(payload, family_id, flags);
    let mut replies = handle
        .request(message, NetlinkAddr::new(0, 0))
        .map_err(|e| GenlError::Io(io::Error::other(e.to_string())))?;
    let collect = async {
        let mut answer = Answer { messages: Vec::new(), interrupted: false };
        while let Some(reply) = replies.next().await {
            answer.interrupted |= reply.header.flags & NLM_F_DUMP_INTR != 0;
            match reply.payload {
                NetlinkPayload::InnerMessage(m) => answer.messages.push(m.payload),
                NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io().into()),
                NetlinkPayload::Done(d) if d.code != 0 => {
                    return Err(io::Error::from_raw_os_error(d.code.saturating_abs()).into());
                }
                NetlinkPayload::Overrun(_) => {
                    return Err(GenlError::Answer("the netlink socket overran".into()));
                }
                _ => {}
            }
        }
        Ok(answer)
    };
    tokio::time::timeout(REQUEST_TIMEOUT, collect).await.map_err(|_| {
        GenlError::Io(io::Error::new(io::ErrorKind::TimedOut, "no answer from the kernel"))
    })?
}

/// The id of the generic-netlink family `name` (`CTRL_CMD_GETFAMILY`); a missing `wireguard`
/// family is [`GenlError::NoFamily`].
pub(crate) async fn resolve_family(name: &str) -> Result<u16, GenlError> {
    let handle = connect::<GenlCtrl>()?;
    let lookup = GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(name.to_string())],
    };
    let family_id = lookup.family_id();
    match request(&handle, lookup, family_id, NLM_F_REQUEST | NLM_F_ACK).await {
        Ok(answer) => answer
            .messages
            .iter()
            .flat_map(|m| &m.nlas)
            .find_map(|a| match a {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            })
            .ok_or_else(|| GenlError::Answer(format!("no id for generic netlink family {name:?}"))),
        Err(GenlError::Io(e))
            if name == WireguardMessage::family_name()
                && e.raw_os_error() == Some(nix::libc::ENOENT) =>
        {
            Err(GenlError::NoFamily(e))
        }
        Err(e) => Err(e),
    }
}

/// A connection to the kernel's WireGuard family, in the calling thread's network namespace.
pub(crate) struct WireGuard {
    handle: ConnectionHandle<GenlMessage<WireguardMessage>>,
    family_id: u16,
}

impl WireGuard {
    /// Resolves the `wireguard` family and opens the connection.
    pub(crate) async fn open() -> Result<WireGuard, GenlError> {
        let family_id = resolve_family(WireguardMessage::family_name()).await?;
        Ok(WireGuard { handle: connect()?, family_id })
    }

    /// Reads the device `ifname` (`wg show IFACE dump`); a dump interrupted by a concurrent
    /// change is run again.
    pub(crate) async fn get_device(&self, ifname: &str) -> Result<DeviceInfo, GenlError> {
        let mut attempt = 1;
        loop {
            let answer = request(
                &self.handle,
                get_device_request(ifname),
                self.family_id,
                NLM_F_REQUEST | NLM_F_DUMP,
            )
            .await?;
            if !answer.interrupted || attempt == DUMP_ATTEMPTS {
                return device_from_replies(&answer.messages);
            }
            attempt += 1;
        }
    }

    /// Sends `WG_CMD_SET_DEVICE` messages one after the other, each acknowledged before the next.
    pub(crate) async fn set_device(
        &self,
        messages: Vec<WireguardMessage>,
    ) -> Result<(), GenlError> {
        for message in messages {
            request(&self.handle, message, self.family_id, NLM_F_REQUEST | NLM_F_ACK).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of `payload` as sent: family 0x15, sequence number 1, port 0.
    fn bytes<F: GenlFamily + Emitable + Debug>(payload: F, flags: u16) -> Vec<u8> {
        let mut message = netlink_message(payload, 0x15, flags);
        message.header.sequence_number = 1;
        let mut buffer = vec![0; message.buffer_len()];
        message.serialize(&mut buffer);
        buffer
    }

    /// The WireGuard messages in `buffer` (netlink messages one after the other), up to the end
    /// of the dump.
    fn parse(mut buffer: &[u8]) -> Vec<(u16, WireguardMessage)> {
        let mut messages = Vec::new();
        while !buffer.is_empty() {
            let len = u32::from_le_bytes(buffer[..4].try_into().unwrap()) as usize;
            let message =
                NetlinkMessage::<GenlMessage<WireguardMessage>>::deserialize(&buffer[..len])
                    .unwrap();
            match message.payload {
                NetlinkPayload::InnerMessage(m) => messages.push((message.header.flags, m.payload)),
                NetlinkPayload::Done(_) => break,
                other => panic!("unexpected {other:?}"),
            }
            buffer = &buffer[len..];
        }
        messages
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn key(b: u8) -> Key {
        Key::from_bytes([b; 32])
    }

    fn peer(b: u8) -> PeerUpdate {
        PeerUpdate {
            public_key: key(b),
            replace_allowed_ips: true,
            preshared_key: Some(PresharedKey::ZERO),
            endpoint: Some("192.168.1.1:51820".parse().unwrap()),
            persistent_keepalive: Some(25),
            ..Default::default()
        }
    }

    const HEADER_SET: [u8; 20] = [
        0x04, 0x01, 0x00, 0x00, // length 260
        0x15, 0x00, 0x05, 0x00, // family 0x15, NLM_F_REQUEST | NLM_F_ACK
        0x01, 0x00, 0x00, 0x00, // sequence 1
        0x00, 0x00, 0x00, 0x00, // port 0
        0x01, 0x01, 0x00, 0x00, // WG_CMD_SET_DEVICE, version 1
    ];
    const IFNAME: [u8; 8] = [0x08, 0x00, 0x02, 0x00, b'w', b'g', b'0', 0x00];

    fn key_nla(kind: u8, b: u8) -> Vec<u8> {
        [vec![0x24, 0x00, kind, 0x00], vec![b; 32]].concat()
    }

    /// `wg set wg0 private-key K listen-port 51820 peer P preshared-key /dev/null endpoint
    /// 192.168.1.1:51820 persistent-keepalive 25 allowed-ips 10.4.0.0/16,fd00::/64`, in
    /// `wg(8)`'s encoding.
    fn golden_set() -> Vec<u8> {
        [
            HEADER_SET.to_vec(),
            IFNAME.to_vec(),
            key_nla(0x03, 0x22), // WGDEVICE_A_PRIVATE_KEY
            vec![0x06, 0x00, 0x06, 0x00, 0x6c, 0xca, 0x00, 0x00], // WGDEVICE_A_LISTEN_PORT
            vec![0xbc, 0x00, 0x08, 0x80], // WGDEVICE_A_PEERS, nested
            vec![0xb8, 0x00, 0x00, 0x80], // one peer, nested
            key_nla(0x01, 0x11), // WGPEER_A_PUBLIC_KEY
            key_nla(0x02, 0x00), // WGPEER_A_PRESHARED_KEY (cleared)
            vec![
                0x14, 0x00, 0x04, 0x00, // WGPEER_A_ENDPOINT: sockaddr_in
                0x02, 0x00, 0xca, 0x6c, // AF_INET, port 51820 (big-endian)
                0xc0, 0xa8, 0x01, 0x01, // 192.168.1.1
                0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            ],
            vec![0x06, 0x00, 0x05, 0x00, 0x19, 0x00, 0x00, 0x00], // keepalive 25
            vec![0x08, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00], // WGPEER_F_REPLACE_ALLOWEDIPS
            vec![0x48, 0x00, 0x09, 0x80],                         // WGPEER_A_ALLOWEDIPS, nested
            vec![
                0x1c, 0x00, 0x00, 0x80, // one allowed IP, nested
                0x06, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, // family AF_INET
                0x08, 0x00, 0x02, 0x00, 0x0a, 0x04, 0x00, 0x00, // 10.4.0.0
                0x05, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x00, // /16
            ],
            vec![
                0x28, 0x00, 0x00, 0x80, // one allowed IP, nested
                0x06, 0x00, 0x01, 0x00, 0x0a, 0x00, 0x00, 0x00, // family AF_INET6
                0x14, 0x00, 0x02, 0x00, 0xfd, 0x00, 0x00, 0x00, // fd00::
                0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00,
                0x03, 0x00, 0x40, 0x00, 0x00, 0x00, // /64
            ],
        ]
        .concat()
    }

    #[test]
    fn a_device_and_peer_update_is_one_message_encoded_as_wg_encodes_it() {
        let interface = InterfaceUpdate {
            private_key: Some(PrivateKey::from_bytes([0x22; 32])),
            listen_port: Some(51820),
        };
        let update = PeerUpdate {
            allowed_ips: vec![(ip("10.4.0.0"), 16), (ip("fd00::"), 64)],
            ..peer(0x11)
        };
        let messages = set_device_messages("wg0", &interface, &[update], MAX_MESSAGE_LEN).unwrap();
        assert_eq!(messages.len(), 1);
        let sent = bytes(messages[0].clone(), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(sent, golden_set());
        // And the golden bytes read back as the same message.
        assert_eq!(parse(&golden_set()), vec![(NLM_F_REQUEST | NLM_F_ACK, messages[0].clone())]);
    }

    #[test]
    fn removing_and_updating_only_set_the_kernels_flags() {
        let remove = PeerUpdate { public_key: key(0x11), remove: true, ..Default::default() };
        let messages =
            set_device_messages("wg0", &InterfaceUpdate::default(), &[remove], MAX_MESSAGE_LEN)
                .unwrap();
        let golden = [
            vec![0x50, 0x00, 0x00, 0x00, 0x15, 0x00, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00],
            vec![0x00, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00],
            IFNAME.to_vec(),
            vec![0x34, 0x00, 0x08, 0x80, 0x30, 0x00, 0x00, 0x80], // peers, one peer
            key_nla(0x01, 0x11),
            vec![0x08, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00], // WGPEER_F_REMOVE_ME
        ]
        .concat();
        assert_eq!(messages.len(), 1);
        assert_eq!(bytes(messages[0].clone(), NLM_F_REQUEST | NLM_F_ACK), golden);
        assert_eq!(parse(&golden), vec![(NLM_F_REQUEST | NLM_F_ACK, messages[0].clone())]);

        let update = PeerUpdate { update_only: true, ..peer(0x11) };
        let messages =
            set_device_messages("wg0", &InterfaceUpdate::default(), &[update], MAX_MESSAGE_LEN)
                .unwrap();
        let expected = WireguardMessage {
            cmd: WireguardCmd::SetDevice,
            attributes: vec![
                WireguardAttribute::IfName("wg0".into()),
                WireguardAttribute::Peers(vec![WireguardPeer(vec![
                    WireguardPeerAttribute::PublicKey([0x11; 32]),
                    WireguardPeerAttribute::PresharedKey([0; 32]),
                    WireguardPeerAttribute::Endpoint("192.168.1.1:51820".parse().unwrap()),
                    WireguardPeerAttribute::PersistentKeepalive(25),
                    WireguardPeerAttribute::Flags(
                        WireguardPeerFlags::UpdateOnly | WireguardPeerFlags::ReplaceAllowedIps,
                    ),
                ])]),
            ],
        };
        assert_eq!(messages, vec![expected]);
        // The flags attribute: WGPEER_F_REPLACE_ALLOWEDIPS | WGPEER_F_UPDATE_ONLY.
        let sent = bytes(messages[0].clone(), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(sent[sent.len() - 8..], [0x08, 0x00, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00]);
    }

    #[test]
    fn the_device_is_read_with_a_dump_request_naming_it() {
        let golden = [
            0x1c, 0x00, 0x00, 0x00, // length 28
            0x15, 0x00, 0x01, 0x03, // family 0x15, NLM_F_REQUEST | NLM_F_DUMP
            0x01, 0x00, 0x00, 0x00, // sequence 1
            0x00, 0x00, 0x00, 0x00, // port 0
            0x00, 0x01, 0x00, 0x00, // WG_CMD_GET_DEVICE, version 1
            0x08, 0x00, 0x02, 0x00, b'w', b'g', b'0', 0x00, // WGDEVICE_A_IFNAME
        ];
        assert_eq!(bytes(get_device_request("wg0"), NLM_F_REQUEST | NLM_F_DUMP), golden);
        assert_eq!(parse(&golden), vec![(NLM_F_REQUEST | NLM_F_DUMP, get_device_request("wg0"))]);
    }

    /// A dump of `wg0` as the kernel sends it: the device and peer A with its first allowed IP in
    /// the first message; peer A again (its public key and its second allowed IP) and peer B in
    /// the second; then the end of the dump.
    fn golden_dump() -> Vec<u8> {
        [
            // Message 1: 316 bytes, NLM_F_MULTI.
            vec![0x3c, 0x01, 0x00, 0x00, 0x15, 0x00, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00],
            vec![0x34, 0x12, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00],
            vec![0x06, 0x00, 0x06, 0x00, 0x6c, 0xca, 0x00, 0x00], // listen port 51820
            vec![0x08, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00], // fwmark 0
            vec![0x08, 0x00, 0x01, 0x00, 0x05, 0x00, 0x00, 0x00], // ifindex 5
            IFNAME.to_vec(),
            key_nla(0x03, 0x22),                                  // private key
            key_nla(0x04, 0x33),                                  // public key
            vec![0xc0, 0x00, 0x08, 0x80, 0xbc, 0x00, 0x00, 0x80], // peers, peer A
            key_nla(0x01, 0x11),                                  // public key
            key_nla(0x02, 0x00),                                  // no pre-shared key
            vec![
                0x14, 0x00, 0x06, 0x00, // last handshake: 1700000000 s, 500 ns
                0x00, 0xf1, 0x53, 0x65, 0x00, 0x00, 0x00, 0x00, 0xf4, 0x01, 0x00, 0x00, 0x00, 0x00,
                0x00, 0x00,
            ],
            vec![0x06, 0x00, 0x05, 0x00, 0x19, 0x00, 0x00, 0x00], // keepalive 25
            vec![0x0c, 0x00, 0x08, 0x00, 0xe8, 0x03, 0, 0, 0, 0, 0, 0], // tx 1000
            vec![0x0c, 0x00, 0x07, 0x00, 0xd0, 0x07, 0, 0, 0, 0, 0, 0], // rx 2000
            vec![0x08, 0x00, 0x0a, 0x00, 0x01, 0x00, 0x00, 0x00], // protocol version 1
            vec![
                0x14, 0x00, 0x04, 0x00, 0x02, 0x00, 0xca, 0x6c, 0xc0, 0xa8, 0x01, 0x01, 0, 0, 0, 0,
                0, 0, 0, 0,
            ], // endpoint 192.168.1.1:51820
            vec![0x20, 0x00, 0x09, 0x80, 0x1c, 0x00, 0x00, 0x80], // allowed IPs, one
            vec![0x05, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x00], // /16
            vec![0x08, 0x00, 0x02, 0x00, 0x0a, 0x04, 0x00, 0x00], // 10.4.0.0
            vec![0x06, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00], // AF_INET
            // Message 2: 244 bytes, NLM_F_MULTI, peers only.
            vec![0xf4, 0x00, 0x00, 0x00, 0x15, 0x00, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00],
            vec![0x34, 0x12, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00],
            vec![0xe0, 0x00, 0x08, 0x80, 0x54, 0x00, 0x00, 0x80], // peers, peer A continued
            key_nla(0x01, 0x11),
            vec![0x2c, 0x00, 0x09, 0x80, 0x28, 0x00, 0x00, 0x80], // allowed IPs, one
            vec![0x05, 0x00, 0x03, 0x00, 0x40, 0x00, 0x00, 0x00], // /64
            vec![0x14, 0x00, 0x02, 0x00, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            vec![0x06, 0x00, 0x01, 0x00, 0x0a, 0x00, 0x00, 0x00], // AF_INET6
            vec![0x88, 0x00, 0x00, 0x80],                         // peer B
            key_nla(0x01, 0x44),
            key_nla(0x02, 0x55),
            vec![0x14, 0x00, 0x06, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            vec![0x06, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00], // keepalive 0
            vec![0x0c, 0x00, 0x08, 0x00, 0, 0, 0, 0, 0, 0, 0, 0], // tx 0
            vec![0x0c, 0x00, 0x07, 0x00, 0, 0, 0, 0, 0, 0, 0, 0], // rx 0
            vec![0x08, 0x00, 0x0a, 0x00, 0x01, 0x00, 0x00, 0x00], // protocol version 1
            // NLMSG_DONE.
            vec![0x14, 0x00, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00],
            vec![0x34, 0x12, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
        ]
        .concat()
    }

    #[test]
    fn a_dump_reads_back_as_one_device_with_a_peer_spanning_two_messages() {
        let replies: Vec<_> = parse(&golden_dump()).into_iter().map(|(_, m)| m).collect();
        assert_eq!(replies.len(), 2);
        let expected = DeviceInfo {
            private_key: Some(PrivateKey::from_bytes([0x22; 32])),
            listen_port: Some(51820),
            fwmark: Some(0),
            peers: vec![
                PeerInfo {
                    public_key: key(0x11),
                    preshared_key: Some(PresharedKey::ZERO),
                    endpoint: Some("192.168.1.1:51820".parse().unwrap()),
                    persistent_keepalive: Some(25),
                    last_handshake: Some(
                        SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 500),
                    ),
                    rx_bytes: 2000,
                    tx_bytes: 1000,
                    allowed_ips: vec![(ip("10.4.0.0"), 16), (ip("fd00::"), 64)],
                },
                PeerInfo {
                    public_key: key(0x44),
                    preshared_key: Some(PresharedKey::from_bytes([0x55; 32])),
                    endpoint: None,
                    persistent_keepalive: Some(0),
                    last_handshake: Some(SystemTime::UNIX_EPOCH),
                    rx_bytes: 0,
                    tx_bytes: 0,
                    allowed_ips: Vec::new(),
                },
            ],
        };
        assert_eq!(device_from_replies(&replies).unwrap(), expected);
    }

    #[test]
    fn a_dump_peer_without_a_public_key_is_an_error() {
        let reply = WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![WireguardAttribute::Peers(vec![WireguardPeer(vec![
                WireguardPeerAttribute::RxBytes(1),
            ])])],
        };
        let err = device_from_replies(&[reply]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unexpected answer from the kernel: a peer without a public key"
        );
    }

    /// The peers of `messages` read back as a dump would be, and each message's size.
    fn reassemble(messages: &[WireguardMessage]) -> (Vec<PeerInfo>, Vec<usize>) {
        let sizes = messages.iter().map(|m| bytes(m.clone(), NLM_F_REQUEST).len()).collect();
        let replies: Vec<_> = messages
            .iter()
            .map(|m| WireguardMessage {
                cmd: WireguardCmd::GetDevice,
                attributes: m.attributes.clone(),
            })
            .collect();
        (device_from_replies(&replies).unwrap().peers, sizes)
    }

    fn ips_per_message(messages: &[WireguardMessage]) -> Vec<Vec<usize>> {
        messages
            .iter()
            .map(|m| {
                m.attributes
                    .iter()
                    .filter_map(|a| match a {
                        WireguardAttribute::Peers(peers) => Some(
                            peers
                                .iter()
                                .map(|p| {
                                    p.iter()
                                        .map(|a| match a {
                                            WireguardPeerAttribute::AllowedIps(ips) => ips.len(),
                                            _ => 0,
                                        })
                                        .sum()
                                })
                                .collect::<Vec<usize>>(),
                        ),
                        _ => None,
                    })
                    .flatten()
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_peer_with_many_allowed_ips_continues_in_the_next_messages_as_wg_does() {
        let ips: Vec<_> = (0..300u32)
            .map(|n| (IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + (n << 8))), 24))
            .collect();
        let update = PeerUpdate { allowed_ips: ips.clone(), update_only: true, ..peer(0x11) };
        let messages =
            set_device_messages("wg0", &InterfaceUpdate::default(), &[update], MAX_MESSAGE_LEN)
                .unwrap();
        // 4096 bytes: 141 allowed IPs with the peer's settings, 143 with its key and flags alone,
        // the rest.
        assert_eq!(ips_per_message(&messages), vec![vec![141], vec![143], vec![16]]);
        let (peers, sizes) = reassemble(&messages);
        assert_eq!(sizes, vec![4096, 4088, 532]);
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].allowed_ips, ips);
        // Only the first part replaces the allowed IPs and carries the settings; every part is
        // an update only.
        let heads: Vec<Vec<WireguardPeerAttribute>> = messages
            .iter()
            .map(|m| match &m.attributes[1] {
                WireguardAttribute::Peers(p) => p[0]
                    .iter()
                    .filter(|a| !matches!(a, WireguardPeerAttribute::AllowedIps(_)))
                    .cloned()
                    .collect(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        let continued = vec![
            WireguardPeerAttribute::PublicKey([0x11; 32]),
            WireguardPeerAttribute::Flags(WireguardPeerFlags::UpdateOnly),
        ];
        assert_eq!(
            heads,
            vec![
                vec![
                    WireguardPeerAttribute::PublicKey([0x11; 32]),
                    WireguardPeerAttribute::PresharedKey([0; 32]),
                    WireguardPeerAttribute::Endpoint("192.168.1.1:51820".parse().unwrap()),
                    WireguardPeerAttribute::PersistentKeepalive(25),
                    WireguardPeerAttribute::Flags(
                        WireguardPeerFlags::UpdateOnly | WireguardPeerFlags::ReplaceAllowedIps
                    ),
                ],
                continued.clone(),
                continued,
            ]
        );
    }

    #[test]
    fn many_peers_are_split_across_messages_with_the_interface_fields_in_the_first() {
        let peers: Vec<_> = (0..100u8)
            .map(|n| PeerUpdate { allowed_ips: vec![(ip(&format!("10.5.0.{n}")), 32)], ..peer(n) })
            .collect();
        let interface = InterfaceUpdate {
            private_key: Some(PrivateKey::from_bytes([7; 32])),
            listen_port: Some(1),
        };
        let messages = set_device_messages("wg0", &interface, &peers, MAX_MESSAGE_LEN).unwrap();
        let counts: Vec<usize> = ips_per_message(&messages).iter().map(Vec::len).collect();
        assert_eq!(counts, vec![27, 28, 28, 17]);
        let (read, sizes) = reassemble(&messages);
        assert!(sizes.iter().all(|s| *s <= MAX_MESSAGE_LEN), "{sizes:?}");
        let keys: Vec<Key> = read.iter().map(|p| p.public_key).collect();
        assert_eq!(keys, (0..100u8).map(key).collect::<Vec<_>>());
        let kinds = |m: &WireguardMessage| -> Vec<u16> {
            m.attributes.iter().map(netlink_packet_core::Nla::kind).collect()
        };
        // IFNAME, PRIVATE_KEY, LISTEN_PORT, PEERS; then IFNAME, PEERS.
        assert_eq!(kinds(&messages[0]), vec![2, 3, 6, 0x8008]);
        assert_eq!(kinds(&messages[1]), vec![2, 0x8008]);
    }

    #[test]
    fn an_interface_only_update_is_one_message_and_a_peer_that_never_fits_is_an_error() {
        let interface = InterfaceUpdate { private_key: None, listen_port: Some(51820) };
        let messages = set_device_messages("wg0", &interface, &[], MAX_MESSAGE_LEN).unwrap();
        assert_eq!(
            messages,
            vec![WireguardMessage {
                cmd: WireguardCmd::SetDevice,
                attributes: vec![
                    WireguardAttribute::IfName("wg0".into()),
                    WireguardAttribute::ListenPort(51820),
                ],
            }]
        );
        let update = PeerUpdate { allowed_ips: vec![(ip("10.0.0.0"), 8)], ..peer(1) };
        let err = set_device_messages("wg0", &interface, &[update], 100).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("peer {} does not fit in a 4096-byte netlink message", key(1))
        );
    }

    #[tokio::test]
    async fn the_controller_resolves_families_and_a_missing_wireguard_module_is_named() {
        assert_eq!(resolve_family("nlctrl").await.unwrap(), 0x10);
        match resolve_family("wireguard").await {
            Ok(id) => assert!(id > 0x10 && std::path::Path::new("/sys/module/wireguard").exists()),
            Err(e) => assert_eq!(
                e.to_string(),
                "generic netlink family \"wireguard\" not found: No such file or directory (os \
                 error 2)"
            ),
        }
    }
}
