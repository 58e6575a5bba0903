//! Criterion benchmarks of `kgctl graph`'s DOT output on the upstream baseline's cluster: location
//! granularity at N = 100, 1,000 and 10,000, full granularity at N = 100 and 1,000 (at 10,000 the
//! full mesh has 50 million leader edges, about 2 GB of DOT).
//!
//! `cargo bench -p kilo-core --bench dot`.

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::cpu_time::CpuTime;
use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use kilo_core::Granularity;

fn dot(c: &mut Criterion<CpuTime>) {
    for g in common::GRANULARITIES {
        let mut group = c.benchmark_group(format!("dot/{g}"));
        group.sample_size(10).warm_up_time(Duration::from_millis(300));
        group.measurement_time(Duration::from_secs(4));
        for n in common::sizes() {
            if g == Granularity::Full && n > 1_000 {
                continue;
            }
            let topology = common::mesh(n).topology(g);
            group.bench_function(BenchmarkId::from_parameter(n), |b| {
                b.iter_batched(|| (), |()| black_box(&topology).dot(), BatchSize::PerIteration)
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(CpuTime);
    targets = dot
}
criterion_main!(benches);
