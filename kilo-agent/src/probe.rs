//! An active data-path probe: ICMP echo requests to a set of addresses, "did any answer?".
//!
//! With location granularity, the non-leader nodes of a location reach the other locations
//! through their leader. A leader that stops forwarding is detected by pinging remote segments'
//! WireGuard IPs through it: [`ping_any`] sends one echo request to each target at once and says
//! whether at least one answered before the timeout.
//!
//! The probe uses raw ICMP sockets (`SOCK_RAW` with `IPPROTO_ICMP` or `IPPROTO_ICMPV6`), so it
//! needs `CAP_NET_RAW` in the network namespace's user namespace (root has it). The kernel
//! picks each request's source address from the routes, as for any locally sent packet: the
//! sockets are not bound.
//!
//! Every echo request carries this process's identifier (random, chosen once) and a sequence
//! number of its own (a process-wide counter), so concurrent probes, and other programs' pings,
//! never answer for each other: a reply counts only when its identifier and sequence number are
//! those of a request of this probe and it comes from that request's target.

use std::io;
use std::net::{IpAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, SockaddrIn6, recvfrom,
    sendto, socket,
};
use tokio::io::unix::AsyncFd;

/// The payload of every echo request: a marker that says who sent it (16 bytes).
const PAYLOAD: &[u8; 16] = b"kilo-rs probe v1";

/// The length of an ICMP (or ICMPv6) echo header: type, code, checksum, identifier, sequence.
const ECHO_HEADER: usize = 8;

/// Room for any reply of ours with its IPv4 header (larger packets are not ours, and are cut).
const RECEIVE_BUFFER: usize = 2048;

/// The IP family of an ICMP socket or packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    /// ICMPv4: raw sockets receive the IPv4 header too.
    V4,
    /// ICMPv6: raw sockets receive the ICMPv6 message alone.
    V6,
}

impl Family {
    fn of(address: &IpAddr) -> Family {
        match address {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The ICMP type of an echo request.
    fn echo_request(self) -> u8 {
        match self {
            Family::V4 => 8,
            Family::V6 => 128,
        }
    }

    /// The ICMP type of an echo reply.
    fn echo_reply(self) -> u8 {
        match self {
            Family::V4 => 0,
            Family::V6 => 129,
        }
    }
}

/// Sends one ICMP echo request to each of `targets` at once (ICMPv4 to IPv4 addresses, ICMPv6 to
/// IPv6 addresses; a mix is allowed) and waits for the replies.
///
/// Returns `Ok(true)` as soon as one target answers with an echo reply to its request,
/// `Ok(false)` when none did within `timeout`: at once for no targets, or when no request could
/// be sent at all (no route to any target, for instance). A request that cannot be sent counts
/// as a target that does not answer.
///
/// # Errors
///
/// When the raw ICMP sockets cannot be opened or watched, typically for lack of `CAP_NET_RAW`:
/// the caller cannot probe, which says nothing about the targets.
pub async fn ping_any(targets: &[IpAddr], timeout: Duration) -> io::Result<bool> {
    // An IPv4-mapped IPv6 address is the IPv4 address, reached over ICMPv4.
    let targets: Vec<IpAddr> = targets.iter().map(IpAddr::to_canonical).collect();
    if targets.is_empty() {
        return Ok(false);
    }
    // Both sockets exist before the first request leaves, so no reply can come too early.
    let v4 = Prober::open_for(Family::V4, &targets)?;
    let v6 = Prober::open_for(Family::V6, &targets)?;
    let id = identifier();
    // The requests that left, with their sequence numbers, per family.
    let (mut sent_v4, mut sent_v6) = (Vec::new(), Vec::new());
    for target in targets {
        let (prober, sent) = match Family::of(&target) {
            Family::V4 => (v4.as_ref(), &mut sent_v4),
            Family::V6 => (v6.as_ref(), &mut sent_v6),
        };
        let sequence = next_sequence();
        if let Some(prober) = prober
            && prober.send(target, id, sequence).await
        {
            sent.push((target, sequence));
        }
    }
    if sent_v4.is_empty() && sent_v6.is_empty() {
        return Ok(false);
    }
    let wait = async {
        tokio::select! {
            answered = wait_on(v4.as_ref(), id, &sent_v4) => answered,
            answered = wait_on(v6.as_ref(), id, &sent_v6) => answered,
        }
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(answered) => answered.map(|()| true),
        Err(_elapsed) => Ok(false),
    }
}

/// Waits for a reply to one of the requests `sent` on `prober`, or forever when there is no
/// prober or no request.
async fn wait_on(prober: Option<&Prober>, id: u16, sent: &[(IpAddr, u16)]) -> io::Result<()> {
    match prober {
        Some(prober) if !sent.is_empty() => prober.wait(id, sent).await,
        _ => std::future::pending().await,
    }
}

/// This process's echo identifier: random, chosen once (the low bits of the process id when
/// the system has no randomness to give).
fn identifier() -> u16 {
    static ID: OnceLock<u16> = OnceLock::new();
    *ID.get_or_init(|| {
        let mut bytes = [0u8; 2];
        match getrandom::fill(&mut bytes) {
            Ok(()) => u16::from_be_bytes(bytes),
            Err(_) => (std::process::id() & 0xffff) as u16,
        }
    })
}

/// The next sequence number, process-wide, so that concurrent probes never share one.
fn next_sequence() -> u16 {
    static SEQUENCE: AtomicU16 = AtomicU16::new(0);
    SEQUENCE.fetch_add(1, Ordering::Relaxed)
}

/// One raw ICMP socket of one family.
struct Prober {
    family: Family,
    socket: AsyncFd<OwnedFd>,
}

impl Prober {
    /// A socket for the `family` targets among `targets`; none when there are none.
    fn open_for(family: Family, targets: &[IpAddr]) -> io::Result<Option<Prober>> {
        if !targets.iter().any(|t| Family::of(t) == family) {
            return Ok(None);
        }
        let (domain, protocol) = match family {
            Family::V4 => (AddressFamily::Inet, SockProtocol::Icmp),
            Family::V6 => (AddressFamily::Inet6, SockProtocol::IcmpV6),
        };
        let fd = socket(
            domain,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            protocol,
        )
        .map_err(|e| {
            let name = match family {
                Family::V4 => "ICMP",
                Family::V6 => "ICMPv6",
            };
            io::Error::new(
                io::Error::from(e).kind(),
                format!("cannot open a raw {name} socket (CAP_NET_RAW is needed): {e}"),
            )
        })?;
        // `AsyncFd::new` is deprecated for any `T` whose `as_raw_fd` could change or close
        // while registered; its replacement, `AsyncFd::register`, is `unsafe`, which this
        // workspace forbids. An `OwnedFd` moved into the `AsyncFd` stays open and the same
        // descriptor until the `AsyncFd` drops it: exactly what `register` asks its caller to
        // uphold.
        #[allow(deprecated)]
        let socket = AsyncFd::new(fd)?;
        Ok(Some(Prober { family, socket }))
    }

    /// Sends an echo request to `target`; whether it left.
    async fn send(&self, target: IpAddr, id: u16, sequence: u16) -> bool {
        let request = encode_request(self.family, id, sequence);
        loop {
            let Ok(mut guard) = self.socket.writable().await else {
                return false;
            };
            let result = guard.try_io(|fd| {
                let fd = fd.as_raw_fd();
                let sent = match target {
                    IpAddr::V4(ip) => {
                        let to = SockaddrIn::from(SocketAddrV4::new(ip, 0));
                        sendto(fd, &request, &to, MsgFlags::empty())
                    }
                    IpAddr::V6(ip) => {
                        let to = SockaddrIn6::from(SocketAddrV6::new(ip, 0, 0, 0));
                        sendto(fd, &request, &to, MsgFlags::empty())
                    }
                };
                sent.map_err(io::Error::from)
            });
            match result {
                Ok(Ok(_)) => return true,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => {
                    tracing::debug!("probe: cannot send an echo request to {target}: {e}");
                    return false;
                }
                Err(_would_block) => continue,
            }
        }
    }

    /// Reads packets until one is an echo reply, with identifier `id`, to one of the requests
    /// `sent` (each target with its sequence number), from that request's target.
    async fn wait(&self, id: u16, sent: &[(IpAddr, u16)]) -> io::Result<()> {
        let mut buffer = [0u8; RECEIVE_BUFFER];
        loop {
            let mut guard = self.socket.readable().await?;
            let received = guard.try_io(|fd| {
                let fd = fd.as_raw_fd();
                match self.family {
                    Family::V4 => recvfrom::<SockaddrIn>(fd, &mut buffer)
                        .map(|(n, from)| (n, from.map(|a| IpAddr::V4(a.ip())))),
                    Family::V6 => recvfrom::<SockaddrIn6>(fd, &mut buffer)
                        .map(|(n, from)| (n, from.map(|a| IpAddr::V6(a.ip())))),
                }
                .map_err(io::Error::from)
            });
            let (length, from) = match received {
                Err(_would_block) => continue,
                Ok(Ok(received)) => received,
                Ok(Err(e)) if ignorable(&e) => continue,
                Ok(Err(e)) => return Err(e),
            };
            let Some(from) = from else { continue };
            if let Some((reply_id, sequence)) = parse_reply(self.family, &buffer[..length])
                && reply_id == id
                && sent.contains(&(from, sequence))
            {
                return Ok(());
            }
        }
    }
}

/// Whether a receive error is one to read past: an interrupted call, or an error an ICMP message
/// reported on the socket (which reading clears).
fn ignorable(error: &io::Error) -> bool {
    if error.kind() == io::ErrorKind::Interrupted {
        return true;
    }
    let reported = [
        Errno::ECONNREFUSED,
        Errno::EHOSTUNREACH,
        Errno::ENETUNREACH,
        Errno::EHOSTDOWN,
        Errno::ENETDOWN,
        Errno::EMSGSIZE,
        Errno::EPROTO,
        Errno::ETIMEDOUT,
    ];
    error.raw_os_error().is_some_and(|code| reported.iter().any(|e| *e as i32 == code))
}

/// The internet checksum (RFC 1071) of `bytes`: the one's complement of the one's complement
/// sum of its 16-bit big-endian words, an odd last byte padded with zero.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut words = bytes.chunks_exact(2);
    for word in &mut words {
        sum += u32::from(u16::from_be_bytes([word[0], word[1]]));
    }
    if let [last] = words.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request of `family` with identifier `id`, sequence number `sequence` and the
/// [`PAYLOAD`]. ICMPv4 requests carry their checksum; for ICMPv6 the field stays zero, the
/// kernel computes it (it covers a pseudo-header with the source address it picks).
fn encode_request(family: Family, id: u16, sequence: u16) -> Vec<u8> {
    let mut packet = Vec::with_capacity(ECHO_HEADER + PAYLOAD.len());
    packet.extend_from_slice(&[family.echo_request(), 0, 0, 0]);
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&sequence.to_be_bytes());
    packet.extend_from_slice(PAYLOAD);
    if family == Family::V4 {
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    packet
}

/// The identifier and sequence number of an echo reply, as a raw socket of `family` receives
/// it (ICMPv4: with its IPv4 header, and only with a valid checksum; ICMPv6: the message alone,
/// the kernel checked its checksum); `None` for anything else (requests, errors, other
/// protocols, truncated or malformed packets).
fn parse_reply(family: Family, bytes: &[u8]) -> Option<(u16, u16)> {
    let icmp = match family {
        Family::V4 => {
            let first = *bytes.first()?;
            let (version, header) = (first >> 4, usize::from(first & 0x0f) * 4);
            const PROTOCOL_ICMP: u8 = 1;
            if version != 4 || header < 20 || *bytes.get(9)? != PROTOCOL_ICMP {
                return None;
            }
            let icmp = bytes.get(header..)?;
            if checksum(icmp) != 0 {
                return None;
            }
            icmp
        }
        Family::V6 => bytes,
    };
    let header = icmp.get(..ECHO_HEADER)?;
    if header[0] != family.echo_reply() || header[1] != 0 {
        return None;
    }
    Some((u16::from_be_bytes([header[4], header[5]]), u16::from_be_bytes([header[6], header[7]])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn checksum_matches_rfc_1071s_example() {
        // RFC 1071, section 3: the sum of 0001 f203 f4f5 f6f7 is ddf2, the checksum its
        // complement.
        assert_eq!(checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), 0x220d);
        // An odd length pads the last byte with zero.
        assert_eq!(checksum(&[0x00, 0x01, 0xf2]), !0xf201);
        assert_eq!(checksum(&[]), 0xffff);
    }

    #[test]
    fn a_message_with_its_checksum_sums_to_zero() {
        for (id, sequence) in [(0, 0), (0x1234, 1), (0xffff, 0xffff), (0xbeef, 0x8000)] {
            assert_eq!(checksum(&encode_request(Family::V4, id, sequence)), 0);
        }
    }

    #[test]
    fn an_icmpv4_echo_request_is_encoded_byte_for_byte() {
        let golden: [u8; 24] = [
            0x08, 0x00, 0xb2, 0x38, // type 8, code 0, checksum
            0x12, 0x34, 0x00, 0x01, // identifier 0x1234, sequence 1
            b'k', b'i', b'l', b'o', b'-', b'r', b's', b' ', // payload
            b'p', b'r', b'o', b'b', b'e', b' ', b'v', b'1',
        ];
        assert_eq!(encode_request(Family::V4, 0x1234, 1), golden);
    }

    #[test]
    fn an_icmpv6_echo_request_leaves_the_checksum_to_the_kernel() {
        let request = encode_request(Family::V6, 0x1234, 0xabcd);
        assert_eq!(request[..8], [128, 0, 0, 0, 0x12, 0x34, 0xab, 0xcd]);
        assert_eq!(&request[8..], PAYLOAD);
    }

    /// `icmp` behind a 20-byte IPv4 header (or a longer one, with `options` bytes of options).
    fn ipv4(options: usize, icmp: &[u8]) -> Vec<u8> {
        let header = 20 + options;
        let mut packet = vec![0u8; header];
        packet[0] = 0x40 | (header / 4) as u8;
        packet[8] = 64;
        packet[9] = 1;
        packet[12..16].copy_from_slice(&[10, 0, 0, 2]);
        packet[16..20].copy_from_slice(&[10, 0, 0, 1]);
        packet.extend_from_slice(icmp);
        packet
    }

    /// The reply a host sends to `encode_request(family, id, sequence)`.
    fn reply(family: Family, id: u16, sequence: u16) -> Vec<u8> {
        let mut packet = encode_request(family, id, sequence);
        packet[0] = family.echo_reply();
        packet[2..4].copy_from_slice(&[0, 0]);
        if family == Family::V4 {
            let sum = checksum(&packet);
            packet[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        packet
    }

    #[test]
    fn echo_replies_parse_to_their_identifier_and_sequence() {
        let v4 = reply(Family::V4, 0x1234, 7);
        assert_eq!(parse_reply(Family::V4, &ipv4(0, &v4)), Some((0x1234, 7)));
        assert_eq!(parse_reply(Family::V4, &ipv4(8, &v4)), Some((0x1234, 7)));
        assert_eq!(
            parse_reply(Family::V6, &reply(Family::V6, 0xfffe, 65535)),
            Some((0xfffe, 65535))
        );
    }

    #[test]
    fn anything_but_an_echo_reply_is_ignored() {
        // Requests (ours on loopback, other people's pings).
        assert_eq!(parse_reply(Family::V4, &ipv4(0, &encode_request(Family::V4, 1, 2))), None);
        assert_eq!(parse_reply(Family::V6, &encode_request(Family::V6, 1, 2)), None);
        // A corrupted reply.
        let mut bad = reply(Family::V4, 1, 2);
        bad[9] ^= 1;
        assert_eq!(parse_reply(Family::V4, &ipv4(0, &bad)), None);
        // Not IPv4, not ICMP, a header length below 20 bytes.
        let good = ipv4(0, &reply(Family::V4, 1, 2));
        let mut v6 = good.clone();
        v6[0] = 0x65;
        let mut udp = good.clone();
        udp[9] = 17;
        let mut short = good.clone();
        short[0] = 0x44;
        for packet in [v6, udp, short] {
            assert_eq!(parse_reply(Family::V4, &packet), None);
        }
        // An ICMPv4 reply is not an ICMPv6 one, and the other way round.
        assert_eq!(parse_reply(Family::V6, &reply(Family::V4, 1, 2)), None);
        // A destination unreachable.
        assert_eq!(parse_reply(Family::V6, &[1, 3, 0, 0, 0, 0, 0, 0, 0x60]), None);
        // Nonzero code.
        let mut code = reply(Family::V6, 1, 2);
        code[1] = 1;
        assert_eq!(parse_reply(Family::V6, &code), None);
    }

    #[test]
    fn truncated_packets_are_ignored() {
        let v4 = ipv4(0, &reply(Family::V4, 1, 2));
        for length in 0..20 + ECHO_HEADER {
            assert_eq!(parse_reply(Family::V4, &v4[..length]), None, "{length} bytes");
        }
        let v6 = reply(Family::V6, 1, 2);
        for length in 0..ECHO_HEADER {
            assert_eq!(parse_reply(Family::V6, &v6[..length]), None, "{length} bytes");
        }
        // An IHL that points past the end.
        let mut long = ipv4(0, &[]);
        long[0] = 0x4f;
        assert_eq!(parse_reply(Family::V4, &long), None);
    }

    #[test]
    fn the_probe_can_be_spawned() {
        fn send<T: Send>(_: &T) {}
        send(&ping_any(&[], Duration::ZERO));
    }

    #[tokio::test]
    async fn no_targets_answer_false_without_opening_sockets() {
        // No raw socket is needed for this, so it holds without CAP_NET_RAW too.
        assert!(!ping_any(&[], Duration::from_secs(60)).await.unwrap());
    }

    proptest! {
        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = parse_reply(Family::V4, &bytes);
            let _ = parse_reply(Family::V6, &bytes);
        }

        #[test]
        fn parsing_garbage_behind_a_plausible_header_never_panics(
            ihl in 0u8..16,
            rest in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let mut bytes = vec![0x40 | ihl, 0, 0, 0, 0, 0, 0, 0, 64, 1];
            bytes.extend_from_slice(&rest);
            let _ = parse_reply(Family::V4, &bytes);
        }

        #[test]
        fn every_reply_parses_back(id in any::<u16>(), sequence in any::<u16>(), options in 0usize..11) {
            let v4 = ipv4(options * 4, &reply(Family::V4, id, sequence));
            prop_assert_eq!(parse_reply(Family::V4, &v4), Some((id, sequence)));
            prop_assert_eq!(parse_reply(Family::V6, &reply(Family::V6, id, sequence)), Some((id, sequence)));
        }
    }
}
