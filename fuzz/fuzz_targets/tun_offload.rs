//! The in-process WireGuard device's TUN offload path, on any bytes:
//! - a read from the TUN interface (virtio-net header, then a packet or a TCP/UDP super-packet)
//!   split into packets as the device does (`kilo_net_linux::wireguard::offload::split_read`):
//!   never panics, and every packet it returns fits its buffer;
//! - a batch of packets as decrypted from a peer (whose contents the peer chooses), coalesced
//!   as the device's TUN writer does before writing (tun-rs's GRO, with and without UDP):
//!   never panics.
#![no_main]

use kilo_net_linux::wireguard::offload::split_read;
use libfuzzer_sys::fuzz_target;
use tun_rs::{GROTable, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

/// The device's packet buffers (gotatun's pool) are 4 KiB.
const BUF: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        let mut read = rest.to_vec();
        let mut out = vec![vec![0u8; BUF]; IDEAL_BATCH_SIZE];
        let mut sizes = vec![0usize; IDEAL_BATCH_SIZE];
        if let Ok(n) = split_read(&mut read, &mut out, &mut sizes) {
            assert!((1..=IDEAL_BATCH_SIZE).contains(&n), "{n} packets");
            assert!(sizes[..n].iter().all(|&s| s <= BUF), "{:?}", &sizes[..n]);
        }
    } else {
        // Length-prefixed packets (two bytes, little-endian, taken modulo 2048), each behind
        // room for the virtio-net header, as the writer lays them out.
        let mut bufs = Vec::new();
        let mut rest = rest;
        while rest.len() >= 2 && bufs.len() < IDEAL_BATCH_SIZE {
            let n = usize::from(u16::from_le_bytes([rest[0], rest[1]])) % 2048;
            let n = n.min(rest.len() - 2);
            let mut buf = vec![0u8; VIRTIO_NET_HDR_LEN];
            buf.extend_from_slice(&rest[2..2 + n]);
            bufs.push(buf);
            rest = &rest[2 + n..];
        }
        let mut table = GROTable::default();
        let _ = table.apply_gro(&mut bufs, VIRTIO_NET_HDR_LEN, mode & 2 != 0);
    }
});
