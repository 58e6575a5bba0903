//! The UDP side of the in-process userspace device: gotatun's sockets (batched receive with UDP
//! GRO), sending runs of equal-sized datagrams to one peer as one UDP GSO super-datagram
//! (`UDP_SEGMENT`), and with large socket buffers.
//!
//! A TCP super-packet read from the TUN interface becomes some 45 WireGuard datagrams of one size
//! for one peer. Sent with `sendmmsg` each still crosses the kernel's UDP, IP, netfilter and
//! device layers alone; sent with `UDP_SEGMENT` they cross them as one buffer and are cut at the
//! last moment (in the NIC, or by the kernel just before it), and a receiver with UDP GRO (gotatun
//! enables it) takes them in one read. Where the kernel refuses GSO (`EIO`, `EINVAL`,
//! `ENOPROTOOPT`), the socket falls back to `sendmmsg` for good; a run whose datagrams are larger
//! than the path's MTU (`EMSGSIZE`) goes one by one, as the kernel fragments single datagrams.
//!
//! Socket buffers: a userspace device that falls behind for a moment must not have the kernel
//! drop datagrams at once (each drop costs a TCP retransmission inside the tunnel), so both
//! buffers are raised to [`SOCKET_BUFFER`] (`SO_RCVBUFFORCE`/`SO_SNDBUFFORCE` where the process
//! may, as wireguard-go does; else as far as `net.core.rmem_max`/`wmem_max` allow).

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use gotatun::packet::Packet;
use gotatun::udp::socket::{UdpSocket, UdpSocketFactory};
use gotatun::udp::{UdpSend, UdpTransportFactory, UdpTransportFactoryParams};
use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrStorage, setsockopt, sockopt};
use tokio::io::Interest;

/// The socket buffers asked for (wireguard-go's 7 MiB).
pub const SOCKET_BUFFER: usize = 7 << 20;

/// The most segments in one super-datagram (the kernel's `UDP_MAX_SEGMENTS` is 128; the total
/// must also stay under 64 KiB).
const MAX_SEGMENTS: usize = 64;

/// The largest super-datagram payload.
const MAX_GSO_BYTES: usize = 65_000;

/// How many datagrams the device hands over at most in one call.
const MAX_BATCH: usize = 128;

/// Binds gotatun's sockets and wraps their sending half in [`GsoSend`].
#[derive(Debug, Default)]
pub struct GsoSocketFactory {
    inner: UdpSocketFactory,
}

impl UdpTransportFactory for GsoSocketFactory {
    type Send = GsoSend;
    type Recv = UdpSocket;

    async fn bind(
        &mut self,
        params: &UdpTransportFactoryParams,
    ) -> io::Result<(Self::Send, Self::Recv)> {
        let (send, recv) = self.inner.bind(params).await?;
        raise_buffers(&send);
        Ok((GsoSend { socket: send, gso: Arc::new(AtomicBool::new(true)) }, recv))
    }
}

/// Raises both socket buffers to [`SOCKET_BUFFER`]: forced when allowed (CAP_NET_ADMIN), else
/// as far as the system's maximum allows. Failing leaves the defaults, which work, slower.
fn raise_buffers(socket: &UdpSocket) {
    let fd = socket.as_fd();
    if setsockopt(&fd, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(&fd, sockopt::RcvBuf, &SOCKET_BUFFER);
    }
    if setsockopt(&fd, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(&fd, sockopt::SndBuf, &SOCKET_BUFFER);
    }
}

/// The sending half: runs of datagrams of one size to one destination go out as one
/// super-datagram.
#[derive(Clone)]
pub struct GsoSend {
    socket: UdpSocket,
    /// Whether the kernel takes `UDP_SEGMENT` (cleared on its first refusal).
    gso: Arc<AtomicBool>,
}

/// What [`GsoSend::send_many_to`] keeps between calls: `sendmmsg`'s buffer.
#[derive(Default)]
pub struct GsoBuf {
    mmsg: <UdpSocket as UdpSend>::SendManyBuf,
}

/// Splits `packets` into runs that can go as one super-datagram: the same destination, every
/// datagram of the first one's size but the last (which may be shorter), at most
/// [`MAX_SEGMENTS`] of them and [`MAX_GSO_BYTES`] in all. Returns the runs' lengths, in order.
fn gso_runs(packets: &[(usize, SocketAddr)]) -> Vec<usize> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < packets.len() {
        let (size, dst) = packets[i];
        let mut n = 1;
        let mut total = size;
        while i + n < packets.len() && n < MAX_SEGMENTS {
            let (next, next_dst) = packets[i + n];
            if next_dst != dst || next > size || total + next > MAX_GSO_BYTES || size == 0 {
                break;
            }
            n += 1;
            total += next;
            if next < size {
                break; // a shorter datagram ends the run
            }
        }
        runs.push(n);
        i += n;
    }
    runs
}

impl GsoSend {
    /// Sends `run` (datagrams for one destination, all but the last of the first's size) as one
    /// super-datagram: one `sendmsg` whose iovecs are the datagrams (the kernel joins them; no
    /// copy here) and whose `UDP_SEGMENT` says where to cut.
    async fn send_run(&self, run: &[(Packet, SocketAddr)]) -> io::Result<()> {
        let segment = u16::try_from(run[0].0.len())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let dst = SockaddrStorage::from(run[0].1);
        let iov: Vec<IoSlice<'_>> = run.iter().map(|(packet, _)| IoSlice::new(packet)).collect();
        let socket = self.socket.socket();
        let fd = socket.as_raw_fd();
        let cmsg = [ControlMessage::UdpGsoSegments(&segment)];
        socket
            .async_io(Interest::WRITABLE, || {
                nix::sys::socket::sendmsg(fd, &iov, &cmsg, MsgFlags::MSG_DONTWAIT, Some(&dst))
                    .map_err(io::Error::from)
            })
            .await
            .map(|_| ())
    }

    /// Sends `packets` in order: runs as super-datagrams, the datagrams between them with
    /// `sendmmsg`.
    async fn send_all(
        &self,
        buf: &mut GsoBuf,
        packets: &mut Vec<(Packet, SocketAddr)>,
    ) -> io::Result<()> {
        let runs = if self.gso.load(Ordering::Relaxed) {
            let shape: Vec<(usize, SocketAddr)> =
                packets.iter().map(|(p, dst)| (p.len(), *dst)).collect();
            gso_runs(&shape)
        } else {
            vec![1; packets.len()]
        };
        let mut singles = Vec::new();
        let mut datagrams = packets.drain(..);
        for n in runs {
            if n == 1 || !self.gso.load(Ordering::Relaxed) {
                singles.extend(datagrams.by_ref().take(n));
                continue;
            }
            let run: Vec<_> = datagrams.by_ref().take(n).collect();
            self.flush(buf, &mut singles).await?;
            match self.send_run(&run).await {
                Ok(()) => {}
                // Segments larger than the path's MTU: these go one by one (the kernel fragments
                // a single datagram where it refuses to cut a super-datagram).
                Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EMSGSIZE as i32) => {
                    singles.extend(run);
                }
                Err(e) if gso_refused(&e) => {
                    tracing::info!(error = %e, "the kernel refuses UDP segmentation offload; sending datagrams one by one");
                    self.gso.store(false, Ordering::Relaxed);
                    singles.extend(run);
                }
                Err(e) => return Err(e),
            }
        }
        self.flush(buf, &mut singles).await
    }

    /// Sends `singles` with `sendmmsg`, in order, and empties it.
    async fn flush(
        &self,
        buf: &mut GsoBuf,
        singles: &mut Vec<(Packet, SocketAddr)>,
    ) -> io::Result<()> {
        while !singles.is_empty() {
            let max = self.socket.max_number_of_packets_to_send();
            let mut chunk: Vec<_> = singles.drain(..singles.len().min(max)).collect();
            if let [_] = chunk[..] {
                let (packet, dst) = chunk.pop().expect("one datagram");
                self.socket.send_to(packet, dst).await?;
            } else {
                self.socket.send_many_to(&mut buf.mmsg, &mut chunk).await?;
            }
        }
        Ok(())
    }
}

/// Whether a send error means the kernel does not do UDP GSO here.
fn gso_refused(e: &io::Error) -> bool {
    use nix::errno::Errno;
    e.raw_os_error().is_some_and(|n| {
        [Errno::EIO, Errno::EINVAL, Errno::ENOPROTOOPT, Errno::EOPNOTSUPP]
            .contains(&Errno::from_raw(n))
    })
}

impl UdpSend for GsoSend {
    type SendManyBuf = GsoBuf;

    async fn send_to(&self, packet: Packet, destination: SocketAddr) -> io::Result<()> {
        self.socket.send_to(packet, destination).await
    }

    fn max_number_of_packets_to_send(&self) -> usize {
        MAX_BATCH
    }

    async fn send_many_to(
        &self,
        buf: &mut GsoBuf,
        packets: &mut Vec<(Packet, SocketAddr)>,
    ) -> io::Result<()> {
        let sent = self.send_all(buf, packets).await;
        packets.clear();
        sent
    }

    fn local_addr(&self) -> io::Result<Option<SocketAddr>> {
        UdpSend::local_addr(&self.socket)
    }

    fn set_fwmark(&self, mark: u32) -> io::Result<()> {
        self.socket.set_fwmark(mark)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 168, 0, 1], port))
    }

    #[test]
    fn runs_are_one_destination_one_size_with_a_shorter_last() {
        let (a, b) = (addr(1), addr(2));
        let shape = [
            (1452, a),
            (1452, a),
            (1452, a),
            (300, a),  // a run ended by a shorter datagram
            (1452, a), // the destination changes after it
            (100, b),  // a larger datagram follows
            (1452, b),
            (1452, b),
        ];
        assert_eq!(gso_runs(&shape), vec![4, 1, 1, 2]);
        assert_eq!(gso_runs(&[]), Vec::<usize>::new());
    }

    #[test]
    fn runs_stop_at_the_segment_and_byte_limits() {
        let many = vec![(100, addr(1)); MAX_SEGMENTS + 5];
        assert_eq!(gso_runs(&many), vec![MAX_SEGMENTS, 5]);
        let big = vec![(1452, addr(1)); 50];
        let per_run = MAX_GSO_BYTES / 1452;
        assert_eq!(gso_runs(&big), vec![per_run, 50 - per_run]);
        // Every datagram is in exactly one run, in order.
        assert_eq!(gso_runs(&big).iter().sum::<usize>(), 50);
    }
}
