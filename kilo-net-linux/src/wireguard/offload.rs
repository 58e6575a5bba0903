//! The TUN side of the in-process userspace device, with virtio-net segmentation offloads.
//!
//! Without offloads every IP packet crosses the TUN interface in a system call of its own, and
//! the kernel's TCP stack on both ends handles one MTU-sized segment at a time. With them (the
//! interface opened with `IFF_VNET_HDR` and `TUNSETOFFLOAD` granting checksum, TSO and, where the
//! kernel has it, USO), as in wireguard-go:
//!
//! - **In (TUN → WireGuard):** the kernel hands over TCP (and UDP) super-packets of up to 64 KiB
//!   behind a virtio-net header; [`OffloadRecv`] splits each into MTU-sized packets, filling in
//!   IP and transport checksums, and gives the device the whole batch from one read.
//! - **Out (WireGuard → TUN):** [`OffloadSend`] queues decrypted packets to a writer task that
//!   takes every packet waiting (up to [`IDEAL_BATCH_SIZE`]), coalesces consecutive segments of
//!   the same TCP or UDP flow into super-packets (GRO), and writes each with one system call.
//!
//! Segmentation ([`split_read`], which checks the header before tun-rs's `gso_split` cuts) and
//! coalescing (tun-rs's `send_multiple`) follow wireguard-go's `tun/offload_linux.go`, of which
//! tun-rs is a port. When the
//! kernel refuses the offloads, or [`TunOptions::offloads`] is off, the interface is plain
//! (`IFF_NO_PI`): one packet per read and per write. Packets the splitter rejects are dropped
//! and counted, never fatal for the device (a TUN read error would stop it).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gotatun::packet::{Ip, Packet, PacketBufPool};
use gotatun::tun::{IpRecv, IpSend, MtuWatcher};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tun_rs::{AsyncDevice, DeviceBuilder, GROTable, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

/// The size of the device's packet buffers (gotatun's [`PacketBufPool`] default): a segment the
/// splitter writes must fit in one, so offloads are used only for MTUs up to this.
const PACKET_BUF: usize = 4096;

/// The largest super-packet a TUN read can return (virtio-net header included).
const SUPER_PACKET: usize = VIRTIO_NET_HDR_LEN + 65_535;

/// How often the interface's MTU is read, for the device's padding (as gotatun's own TUN does).
const MTU_POLL: Duration = Duration::from_secs(3);

/// The capacity of each of the writer's buffers: a whole super-packet behind the virtio-net
/// header, with the slack tun-rs's coalescing asks for.
const COALESCE_CAPACITY: usize = 65_535 + 2 * VIRTIO_NET_HDR_LEN;

/// How many times the writer yields to gather a burst before writing (see [`gather`]).
const GATHER_ROUNDS: usize = 4;

/// Packets queued between the device and the TUN writer.
const SEND_QUEUE: usize = 1024;

/// How a TUN interface for the in-process device is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunOptions {
    /// Ask for segmentation offloads (falls back to a plain interface when refused).
    pub offloads: bool,
}

/// What the kernel granted a TUN interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offloads {
    /// Checksum and TCP segmentation offload in, TCP coalescing out.
    pub tcp: bool,
    /// UDP segmentation offload in, UDP coalescing out (Linux 6.2 and later).
    pub udp: bool,
}

/// Counters of the TUN path, shared by its two halves.
#[derive(Debug, Default)]
pub struct TunStats {
    /// Reads from the interface.
    pub reads: AtomicU64,
    /// IP packets handed to the device (after splitting).
    pub packets_in: AtomicU64,
    /// Reads dropped because the splitter rejected them (malformed or oversized).
    pub rejected: AtomicU64,
    /// IP packets the device wrote (before coalescing).
    pub packets_out: AtomicU64,
    /// Batches the writer wrote them in (each coalesced, then written).
    pub batches_out: AtomicU64,
    /// The bytes of those packets.
    pub packet_bytes_out: AtomicU64,
    /// Bytes written to the interface: less than `packet_bytes_out` when coalescing merged
    /// packets (each merged one saves its headers), more by the virtio-net headers otherwise.
    pub bytes_written: AtomicU64,
}

impl TunStats {
    /// The counters now.
    pub fn snapshot(&self) -> TunCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TunCounters {
            reads: get(&self.reads),
            packets_in: get(&self.packets_in),
            rejected: get(&self.rejected),
            packets_out: get(&self.packets_out),
            batches_out: get(&self.batches_out),
            packet_bytes_out: get(&self.packet_bytes_out),
            bytes_written: get(&self.bytes_written),
        }
    }
}

/// A snapshot of [`TunStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TunCounters {
    /// Reads from the interface.
    pub reads: u64,
    /// IP packets handed to the device: more than `reads` when super-packets were split.
    pub packets_in: u64,
    /// Reads dropped because the splitter rejected them.
    pub rejected: u64,
    /// IP packets the device wrote (before coalescing).
    pub packets_out: u64,
    /// Batches the writer wrote them in.
    pub batches_out: u64,
    /// The bytes of those packets.
    pub packet_bytes_out: u64,
    /// Bytes written to the interface (see [`TunStats::bytes_written`]).
    pub bytes_written: u64,
}

/// Opens TUN interface `name` (MTU `mtu`, left down) in the current network namespace, with
/// offloads when asked and granted; must run inside a tokio runtime (it spawns the writer task
/// and the MTU watch).
pub fn open(
    name: &str,
    mtu: u16,
    options: TunOptions,
) -> io::Result<(OffloadSend, OffloadRecv, Offloads, Arc<TunStats>)> {
    let want = options.offloads && usize::from(mtu) + 64 <= PACKET_BUF;
    let build = |offload| {
        DeviceBuilder::new().name(name).mtu(mtu).offload(offload).enable(false).build_async()
    };
    let device = match build(want) {
        Ok(device) => device,
        // A kernel without IFF_VNET_HDR or TCP offloads for TUN: a plain interface instead.
        Err(e) if want => {
            tracing::warn!(interface = name, error = %e, "TUN offloads refused; one packet per read and write");
            build(false)?
        }
        Err(e) => return Err(e),
    };
    let offloads = Offloads { tcp: device.tcp_gso(), udp: device.udp_gso() };
    let device = Arc::new(device);
    let stats = Arc::new(TunStats::default());

    let (mtu_tx, mtu_rx) = watch::channel(mtu);
    let watched = Arc::downgrade(&device);
    let mtu_task = tokio::spawn(async move {
        let mut current = mtu;
        loop {
            tokio::time::sleep(MTU_POLL).await;
            let Some(device) = watched.upgrade() else { return };
            match device.mtu() {
                Ok(m) if m != current => {
                    current = m;
                    if mtu_tx.send(m).is_err() {
                        return;
                    }
                }
                _ => {}
            }
        }
    });

    let (queue, pending) = mpsc::channel(SEND_QUEUE);
    let writer = tokio::spawn(write_loop(Arc::clone(&device), pending, Arc::clone(&stats)));
    let send = OffloadSend { queue, _writer: Abort(writer) };
    let recv = OffloadRecv {
        device,
        vnet_hdr: offloads.tcp,
        original: vec![0; if offloads.tcp { SUPER_PACKET } else { 0 }],
        segments: Vec::new(),
        sizes: vec![0; IDEAL_BATCH_SIZE],
        ready: Vec::with_capacity(IDEAL_BATCH_SIZE),
        mtu: mtu_rx.into(),
        stats: Arc::clone(&stats),
        _mtu_task: Abort(mtu_task),
    };
    Ok((send, recv, offloads, stats))
}

/// Aborts a task when dropped (the device drops its transports when it stops).
#[derive(Debug)]
struct Abort(JoinHandle<()>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A buffer from the device's pool that the splitter can write a segment into.
struct Segment(Packet<[u8]>);

impl AsRef<[u8]> for Segment {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl AsMut<[u8]> for Segment {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

/// The reading half: IP packets from the interface to the device.
pub struct OffloadRecv {
    device: Arc<AsyncDevice>,
    vnet_hdr: bool,
    /// The raw read: virtio-net header and super-packet (empty without offloads).
    original: Vec<u8>,
    /// Pool buffers the next read splits into (refilled from the pool after each read).
    segments: Vec<Segment>,
    sizes: Vec<usize>,
    /// The packets of the last read, handed to the device.
    ready: Vec<Packet<Ip>>,
    mtu: MtuWatcher,
    stats: Arc<TunStats>,
    _mtu_task: Abort,
}

impl OffloadRecv {
    /// Reads once from the interface into `self.ready`; `Ok(false)` when the read was dropped
    /// (rejected by the splitter, or not an IP packet).
    async fn read(&mut self, pool: &mut PacketBufPool) -> io::Result<bool> {
        let wanted = if self.vnet_hdr { IDEAL_BATCH_SIZE } else { 1 };
        while self.segments.len() < wanted {
            self.segments.push(Segment(pool.get()));
        }
        let result = if self.vnet_hdr {
            match self.device.recv(&mut self.original).await {
                Ok(n) => split_read(&mut self.original[..n], &mut self.segments, &mut self.sizes),
                Err(e) => Err(e),
            }
        } else {
            self.device.recv(&mut self.segments[0].0).await.map(|n| {
                self.sizes[0] = n;
                1
            })
        };
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        let n = match result {
            Ok(n) => n,
            // An error of the system call itself (the interface is gone, say) ends the device;
            // one the splitter raised about this read only drops it.
            Err(e) if e.raw_os_error().is_some() => return Err(e),
            Err(e) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "dropped a TUN read the offload splitter rejected");
                return Ok(false);
            }
        };
        for (Segment(mut packet), size) in self.segments.drain(..n).zip(&self.sizes) {
            packet.truncate(*size);
            if let Ok(ip) = packet.try_into_ip() {
                self.ready.push(ip);
            }
        }
        self.stats.packets_in.fetch_add(self.ready.len() as u64, Ordering::Relaxed);
        Ok(!self.ready.is_empty())
    }
}

impl IpRecv for OffloadRecv {
    async fn recv<'a>(
        &'a mut self,
        pool: &mut PacketBufPool,
    ) -> io::Result<impl Iterator<Item = Packet<Ip>> + Send + 'a> {
        self.ready.clear();
        while !self.read(pool).await? {}
        Ok(self.ready.drain(..))
    }

    fn mtu(&self) -> MtuWatcher {
        self.mtu.clone()
    }
}

/// Splits one read from a TUN interface with offloads (a virtio-net header, then an IP packet or
/// a TCP or UDP super-packet) into IP packets, each at the start of an element of `out`, their
/// lengths in `sizes`; returns how many (at least one). A packet whose checksum the kernel left partial
/// (`NEEDS_CSUM`) gets it completed; segments get their IP and transport headers and checksums.
///
/// The header is checked as wireguard-go checks it (the header length is re-derived from the
/// transport header; the kernel's can cover the whole first packet on the forward path) before
/// tun-rs's `gso_split` cuts the segments. Anything inconsistent is an error
/// ([`io::ErrorKind::InvalidData`]) and the read is dropped; nothing here panics on any input
/// (the `tun_offload` fuzz target).
pub fn split_read<B: AsRef<[u8]> + AsMut<[u8]>>(
    read: &mut [u8],
    out: &mut [B],
    sizes: &mut [usize],
) -> io::Result<usize> {
    use tun_rs::{VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP_L4};
    const GSO_NONE: u8 = 0;
    const GSO_ECN: u8 = 0x80;
    const NEEDS_CSUM: u8 = 1;
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    if read.len() <= VIRTIO_NET_HDR_LEN {
        return Err(invalid(format!("a read of {} bytes has no packet", read.len())));
    }
    if out.is_empty() || sizes.len() < out.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no room for packets"));
    }
    let (head, packet) = read.split_at_mut(VIRTIO_NET_HDR_LEN);
    let mut hdr = tun_rs::VirtioNetHdr::decode(head)?;
    let len = packet.len();
    if hdr.gso_type == GSO_NONE {
        if hdr.flags & NEEDS_CSUM != 0 {
            complete_checksum(packet, hdr.csum_start, hdr.csum_offset)?;
        }
        let first = out[0].as_mut();
        if first.len() < len {
            return Err(invalid(format!("a packet of {len} bytes is larger than the buffers")));
        }
        first[..len].copy_from_slice(packet);
        sizes[0] = len;
        return Ok(1);
    }
    if hdr.gso_size == 0 {
        return Err(invalid("a super-packet with segment size 0".into()));
    }
    let is_v6 = match packet[0] >> 4 {
        4 => false,
        6 => true,
        v => return Err(invalid(format!("a super-packet of IP version {v}"))),
    };
    let ecn = hdr.gso_type & GSO_ECN != 0;
    let udp = match (hdr.gso_type & !GSO_ECN, is_v6) {
        (VIRTIO_NET_HDR_GSO_TCPV4, false) | (VIRTIO_NET_HDR_GSO_TCPV6, true) => false,
        (VIRTIO_NET_HDR_GSO_UDP_L4, _) if !ecn => true,
        (t, _) => {
            return Err(invalid(format!(
                "segmentation type {t:#x} for IPv{}",
                if is_v6 { 6 } else { 4 }
            )));
        }
    };
    let start = usize::from(hdr.csum_start);
    let transport = if udp {
        8
    } else {
        let offset_byte =
            packet.get(start + 12).ok_or_else(|| invalid("a truncated TCP header".into()))?;
        let tcp = usize::from(offset_byte >> 4) * 4;
        if !(20..=60).contains(&tcp) {
            return Err(invalid(format!("a TCP header of {tcp} bytes")));
        }
        tcp
    };
    let header_len = start + transport;
    hdr.hdr_len = u16::try_from(header_len).map_err(|_| invalid("headers past 64 KiB".into()))?;
    let csum_at = start + usize::from(hdr.csum_offset);
    if header_len > len || csum_at + 2 > len {
        return Err(invalid(format!("headers of {header_len} bytes in a {len}-byte super-packet")));
    }
    match tun_rs::gso_split(packet, hdr, out, sizes, 0, is_v6)? {
        0 => Err(invalid(format!("a super-packet of {len} bytes without payload"))),
        n => Ok(n),
    }
}

/// Completes a checksum the kernel left partial: the ones' complement sum from `start` to the
/// end, folded with the pseudo-header sum already at `start + offset`, is written there.
fn complete_checksum(packet: &mut [u8], start: u16, offset: u16) -> io::Result<()> {
    let start = usize::from(start);
    let at = start + usize::from(offset);
    if at + 2 > packet.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("checksum at byte {at} of a {}-byte packet", packet.len()),
        ));
    }
    let initial = u16::from_be_bytes([packet[at], packet[at + 1]]);
    packet[at..at + 2].fill(0);
    let sum = tun_rs::checksum(&packet[start..], u64::from(initial));
    packet[at..at + 2].copy_from_slice(&(!sum).to_be_bytes());
    Ok(())
}

/// The writing half: IP packets from the device to the interface, through the writer task.
pub struct OffloadSend {
    queue: mpsc::Sender<Packet<Ip>>,
    _writer: Abort,
}

impl IpSend for OffloadSend {
    async fn send(&mut self, packet: Packet<Ip>) -> io::Result<()> {
        self.queue
            .send(packet)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the TUN writer stopped"))
    }
}

/// The writer task: every packet waiting, coalesced where the interface allows, written.
async fn write_loop(
    device: Arc<AsyncDevice>,
    mut pending: mpsc::Receiver<Packet<Ip>>,
    stats: Arc<TunStats>,
) {
    let mut batch: Vec<Packet<Ip>> = Vec::with_capacity(IDEAL_BATCH_SIZE);
    // One buffer per packet of a batch, each with room for a whole super-packet: coalescing
    // appends to the head of a run in place and skips a head without that room. Only the bytes
    // written are touched, so memory grows with what coalescing actually used.
    let mut bufs: Vec<Vec<u8>> =
        (0..IDEAL_BATCH_SIZE).map(|_| Vec::with_capacity(COALESCE_CAPACITY)).collect();
    let mut table = GROTable::default();
    while pending.recv_many(&mut batch, IDEAL_BATCH_SIZE).await > 0 {
        gather(&mut pending, &mut batch).await;
        stats.packets_out.fetch_add(batch.len() as u64, Ordering::Relaxed);
        stats.batches_out.fetch_add(1, Ordering::Relaxed);
        let n = batch.len();
        let mut bytes = 0;
        for (buf, packet) in bufs.iter_mut().zip(batch.drain(..)) {
            let packet = packet.into_bytes();
            bytes += packet.len();
            buf.clear();
            buf.resize(VIRTIO_NET_HDR_LEN, 0);
            buf.extend_from_slice(&packet);
        }
        stats.packet_bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
        match device.send_multiple(&mut table, &mut bufs[..n], VIRTIO_NET_HDR_LEN).await {
            Ok(bytes) => {
                stats.bytes_written.fetch_add(bytes as u64, Ordering::Relaxed);
            }
            Err(e) if is_fatal(&e) => {
                tracing::error!(error = %e, "the TUN interface is gone; the writer stops");
                return;
            }
            Err(e) => tracing::debug!(error = %e, "a TUN write failed"),
        }
    }
}

/// Lets the tasks that feed the writer run (a yield), then takes what they queued, while that
/// brings more: the device decrypts a burst of datagrams one at a time, and the writer, woken by
/// the first, would otherwise write the burst in small pieces that coalesce poorly.
async fn gather(pending: &mut mpsc::Receiver<Packet<Ip>>, batch: &mut Vec<Packet<Ip>>) {
    for _ in 0..GATHER_ROUNDS {
        if batch.len() >= IDEAL_BATCH_SIZE {
            return;
        }
        tokio::task::yield_now().await;
        let before = batch.len();
        while batch.len() < IDEAL_BATCH_SIZE {
            match pending.try_recv() {
                Ok(packet) => batch.push(packet),
                Err(_) => break,
            }
        }
        if batch.len() == before {
            return;
        }
    }
}

/// Whether a write error means the interface is gone (as gotatun's own TUN writer decides).
fn is_fatal(e: &io::Error) -> bool {
    use nix::errno::Errno;
    e.raw_os_error()
        .is_some_and(|n| [Errno::EBADF, Errno::EBADFD, Errno::ENODEV].contains(&Errno::from_raw(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ones' complement sum of `bytes` (RFC 1071), folded.
    fn sum(bytes: &[u8]) -> u16 {
        let mut s: u32 = bytes
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    /// An IPv4 TCP packet 10.2.1.1:5201 -> 10.2.2.1:40000 with `payload`, sequence `seq`, its
    /// IP checksum filled in and its TCP checksum left as the pseudo-header sum (what the
    /// kernel hands over with `NEEDS_CSUM`).
    fn tcp4(seq: u32, payload: &[u8]) -> Vec<u8> {
        let total = 40 + payload.len();
        let mut p = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 1, 0x40, 0, 64, 6, 0, 0];
        p.extend_from_slice(&[10, 2, 1, 1, 10, 2, 2, 1]);
        let ip = !sum(&p);
        p[10..12].copy_from_slice(&ip.to_be_bytes());
        p.extend_from_slice(&5201u16.to_be_bytes());
        p.extend_from_slice(&40000u16.to_be_bytes());
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
        p.extend_from_slice(payload);
        let tcp_len = (20 + payload.len()) as u16;
        let mut pseudo = vec![10, 2, 1, 1, 10, 2, 2, 1, 0, 6];
        pseudo.extend_from_slice(&tcp_len.to_be_bytes());
        p[36..38].copy_from_slice(&sum(&pseudo).to_be_bytes());
        p
    }

    fn read(flags: u8, gso_type: u8, gso_size: u16, packet: &[u8]) -> Vec<u8> {
        let mut r = vec![flags, gso_type];
        for v in [40u16, gso_size, 20, 16] {
            r.extend_from_slice(&v.to_le_bytes());
        }
        r.extend_from_slice(packet);
        r
    }

    /// A valid TCP checksum over an IPv4 packet sums, with the pseudo-header, to 0xffff.
    fn tcp4_checksum_ok(p: &[u8]) -> bool {
        let tcp = &p[20..];
        let mut pseudo = p[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(tcp);
        sum(&pseudo) == 0xffff && sum(&p[..20]) == 0xffff
    }

    #[test]
    fn a_tcp_super_packet_splits_into_segments_with_headers_and_checksums() {
        let payload: Vec<u8> = (0..4000u32).map(|i| i as u8).collect();
        let mut r = read(1, tun_rs::VIRTIO_NET_HDR_GSO_TCPV4, 1380, &tcp4(1000, &payload));
        let mut out = vec![vec![0u8; PACKET_BUF]; 8];
        let mut sizes = vec![0; 8];
        let n = split_read(&mut r, &mut out, &mut sizes).unwrap();
        assert_eq!(&sizes[..n], &[1420, 1420, 40 + 4000 - 2 * 1380]);
        for (i, (buf, size)) in out.iter().zip(&sizes[..n]).enumerate() {
            let seg = &buf[..*size];
            let seq = u32::from_be_bytes(seg[24..28].try_into().unwrap());
            assert_eq!(seq, 1000 + 1380 * i as u32, "segment {i}");
            assert_eq!(usize::from(u16::from_be_bytes([seg[2], seg[3]])), *size, "segment {i}");
            assert_eq!(&seg[40..], &payload[1380 * i..(1380 * i + size - 40)], "segment {i}");
            assert!(tcp4_checksum_ok(seg), "segment {i}: checksums");
        }
    }

    #[test]
    fn a_packet_with_a_partial_checksum_gets_it_completed() {
        let mut r = read(1, 0, 0, &tcp4(7, b"hello, tunnel"));
        let mut out = vec![vec![0u8; PACKET_BUF]; 2];
        let mut sizes = vec![0; 2];
        assert_eq!(split_read(&mut r, &mut out, &mut sizes).unwrap(), 1);
        assert_eq!(sizes[0], 53);
        assert!(tcp4_checksum_ok(&out[0][..53]));
    }

    #[test]
    fn inconsistent_reads_are_errors_not_panics() {
        let good = tcp4(1, &[0; 3000]);
        let mut out = vec![vec![0u8; PACKET_BUF]; 4];
        let mut sizes = vec![0; 4];
        let mut cases = vec![
            ("no packet", vec![0u8; VIRTIO_NET_HDR_LEN]),
            ("segment size 0", read(1, tun_rs::VIRTIO_NET_HDR_GSO_TCPV4, 0, &good)),
            ("IPv6 type on IPv4", read(1, tun_rs::VIRTIO_NET_HDR_GSO_TCPV6, 1380, &good)),
            ("headers only", read(1, tun_rs::VIRTIO_NET_HDR_GSO_TCPV4, 1380, &good[..40])),
            ("truncated TCP header", read(1, tun_rs::VIRTIO_NET_HDR_GSO_TCPV4, 1380, &good[..30])),
            ("checksum past the end", read(1, 0, 0, &good[..30])),
            ("too large for the buffers", read(0, 0, 0, &vec![0x45; PACKET_BUF + 1])),
        ];
        // IP version 5.
        let mut v5 = good.clone();
        v5[0] = 0x55;
        cases.push(("IP version 5", read(1, tun_rs::VIRTIO_NET_HDR_GSO_TCPV4, 1380, &v5)));
        for (what, mut r) in cases {
            let e = split_read(&mut r, &mut out, &mut sizes).expect_err(what);
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{what}: {e}");
        }
    }
}
