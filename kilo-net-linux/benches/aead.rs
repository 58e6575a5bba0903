//! Criterion benchmarks of the AEAD the userspace WireGuard device encrypts its data packets with:
//! ChaCha20-Poly1305 from `ring`, the crate gotatun uses when built with its `ring` feature (as the
//! workspace builds it), called as gotatun's session code calls it (`seal_in_place_separate_tag`
//! and `open_in_place`, an empty AAD, a 12-byte nonce holding a little-endian counter).
//!
//! Buffers of 1,420 bytes (one packet's payload at kg's default MTU) and 64 kB (the cipher alone,
//! without the per-call overhead). One thread, timed by its CPU time (`CLOCK_THREAD_CPUTIME_ID`,
//! so that the figures hold on a shared, loaded machine), so the throughput is one core's: the
//! ceiling of a userspace tunnel's crypto on this machine, before any I/O. Throughput is printed
//! in GB/s (10^9 bytes per CPU second).
//!
//! `cargo bench -p kilo-net-linux --bench aead`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

/// The buffer sizes, in bytes.
const SIZES: [usize; 2] = [1_420, 65_536];

fn key() -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[0x42; 32]).expect("a 32-byte key"))
}

/// WireGuard's nonce: four zero bytes, then the 64-bit counter, little-endian.
fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

/// The benchmark thread's CPU time, shared with kilo-core's benches.
#[path = "../../kilo-core/benches/common/cpu_time.rs"]
mod cpu_time;
use cpu_time::CpuTime;

fn seal(c: &mut Criterion<CpuTime>) {
    let key = key();
    let mut group = c.benchmark_group("chacha20poly1305/seal");
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0x5a_u8; size];
        let mut counter = 0_u64;
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter(|| {
                counter += 1;
                let tag = key
                    .seal_in_place_separate_tag(nonce(counter), Aad::empty(), black_box(&mut buf))
                    .expect("seal");
                black_box(tag)
            })
        });
    }
    group.finish();
}

fn open(c: &mut Criterion<CpuTime>) {
    let key = key();
    let mut group = c.benchmark_group("chacha20poly1305/open");
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        // One sealed packet (ciphertext then tag), copied afresh before every open (the copy is
        // outside the timing), since opening decrypts in place.
        let mut sealed = vec![0x5a_u8; size];
        let tag =
            key.seal_in_place_separate_tag(nonce(1), Aad::empty(), &mut sealed).expect("seal");
        sealed.extend_from_slice(tag.as_ref());
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter_batched_ref(
                || sealed.clone(),
                |buf| {
                    let plain = key.open_in_place(nonce(1), Aad::empty(), buf).expect("open");
                    black_box(plain.len())
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(CpuTime);
    targets = seal, open
}
criterion_main!(benches);
