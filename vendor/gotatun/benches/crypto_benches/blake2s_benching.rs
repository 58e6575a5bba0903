// This Source Code Form is subject to the terms of the Mozilla Public
// License, v. 2.0. If a copy of the MPL was not distributed with this
// file, You can obtain one at https://mozilla.org/MPL/2.0/.
//
// This file incorporates work covered by the following copyright and
// permission notice:
//
//   Copyright (c) Mullvad VPN AB. All rights reserved.
//   Copyright (c) 2019 Cloudflare, Inc. All rights reserved.
//
// SPDX-License-Identifier: MPL-2.0
use blake2::digest::{FixedOutput, KeyInit};
use blake2::{Blake2s256, Blake2sMac, Digest};
use criterion::{BenchmarkId, Criterion, Throughput};
use rand::{TryRngCore, rngs::OsRng};

pub fn bench_blake2s_hash(c: &mut Criterion) {
    let mut group = c.benchmark_group("blake2s_hash");

    group.sample_size(1000);

    for size in [32, 64, 128] {
        group.throughput(Throughput::Bytes(size as u64));

        group.bench_with_input(BenchmarkId::new("blake2s_crate", size), &size, |b, _| {
            let buf_in = vec![0u8; size];

            b.iter(|| {
                let mut hasher = Blake2s256::new();
                hasher.update(&buf_in);
                hasher.finalize();
            });
        });
    }

    group.finish();
}

pub fn bench_blake2s_hmac(c: &mut Criterion) {
    let mut group = c.benchmark_group("blake2s_hmac");

    group.sample_size(1000);

    for size in [16, 32] {
        group.throughput(Throughput::Bytes(size as u64));

        group.bench_with_input(BenchmarkId::new("blake2s_crate", size), &size, |b, _| {
            let buf_in = vec![0u8; size];
            b.iter_batched(
                || {
                    let mut key = [0u8; 32];
                    OsRng.try_fill_bytes(&mut key).unwrap();
                    key
                },
                |key| {
                    use blake2::digest::Update;
                    type HmacBlake2s = hmac::SimpleHmac<blake2::Blake2s256>;
                    let mut hmac = HmacBlake2s::new_from_slice(&key).unwrap();
                    hmac.update(&buf_in);
                    hmac.finalize_fixed();
                },
                criterion::BatchSize::SmallInput,
            );
        });
    }

    group.finish();
}

pub fn bench_blake2s_keyed(c: &mut Criterion) {
    let mut group = c.benchmark_group("blake2s_keyed_mac");

    group.sample_size(1000);

    for size in [128, 1024] {
        group.throughput(Throughput::Bytes(size as u64));

        group.bench_with_input(BenchmarkId::new("blake2s_crate", size), &size, |b, _| {
            let buf_in = vec![0u8; size];
            b.iter_batched(
                || {
                    let mut key = [0u8; 16];
                    OsRng.try_fill_bytes(&mut key).unwrap();
                    key
                },
                |key| -> [u8; 16] {
                    let mut hmac = Blake2sMac::new_from_slice(&key).unwrap();
                    blake2::digest::Update::update(&mut hmac, &buf_in);
                    hmac.finalize_fixed().into()
                },
                criterion::BatchSize::SmallInput,
            );
        });
    }

    group.finish();
}
