//! Criterion benchmarks of every stage of Kilo's pipeline on the upstream baseline's synthetic
//! cluster (see `BENCHMARKS.md`), for N = 100, 1,000 and 10,000 nodes, N/20 peers,
//! in location granularity (N/10 locations) and full granularity. The local host is `n00000`.
//!
//! `cargo bench -p kilo-core --bench pipeline`; `KILO_BENCH_SIZES=100,1000` narrows the sizes.
//! Group names are `stage/granularity`, ids are N. Times are the thread's CPU time
//! ([`common::cpu_time::CpuTime`]): the machine is shared.
//!
//! Outputs are dropped outside the timed region (`iter_batched`, one output at a time at N = 10,000), as the upstream
//! baseline ran Go's garbage collector before each stage so that freeing was not charged to it.

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{
    BatchSize, Bencher, BenchmarkGroup, BenchmarkId, Criterion, criterion_group, criterion_main,
};
use kilo_core::firewall::encapsulation_rules;
use kilo_core::plan::Plan;
use kilo_core::wireguard::diff;
use kilo_core::{Granularity, Topology};

use common::cpu_time::CpuTime;
use common::{GRANULARITIES, Mesh, encapsulation, interfaces, plan_options};

/// Fewer samples and a shorter window for the 10,000-node cases.
fn configure(group: &mut BenchmarkGroup<'_, CpuTime>, n: usize) {
    if n >= 10_000 {
        group.sample_size(10).warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
    } else {
        group.sample_size(20).warm_up_time(Duration::from_millis(300));
        group.measurement_time(Duration::from_secs(1));
    }
}

/// Runs `f`, dropping its output outside the timed region, one at a time for the big cases so
/// that outputs do not pile up in memory.
fn timed<T>(b: &mut Bencher<'_, CpuTime>, n: usize, mut f: impl FnMut() -> T) {
    let size = if n >= 10_000 { BatchSize::PerIteration } else { BatchSize::SmallInput };
    b.iter_batched(|| (), |()| f(), size)
}

fn translate(c: &mut Criterion<CpuTime>) {
    let mut group = c.benchmark_group("translate");
    for n in common::sizes() {
        configure(&mut group, n);
        let input = common::input(n);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            timed(b, n, || common::translate(black_box(&input)))
        });
    }
    group.finish();
}

/// One stage of one granularity at every size; `f` gets the mesh and its topology.
fn stage<T>(
    c: &mut Criterion<CpuTime>,
    name: &str,
    g: Granularity,
    f: impl Fn(&Mesh, &Topology) -> T,
) {
    let mut group = c.benchmark_group(format!("{name}/{g}"));
    for n in common::sizes() {
        configure(&mut group, n);
        let mesh = common::mesh(n);
        let topology = mesh.topology(g);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            timed(b, n, || f(black_box(&mesh), black_box(&topology)))
        });
    }
    group.finish();
}

fn stages(c: &mut Criterion<CpuTime>) {
    for g in GRANULARITIES {
        stage(c, "ready", g, |m, _| common::ready(&m.nodes, &m.peers));
        stage(c, "topology", g, |m, _| m.topology(g));
        stage(c, "conf", g, |_, t| t.conf());
        stage(c, "conf_ini", g, |_, t| t.conf().to_ini());
        let ifaces = interfaces();
        let enc = encapsulation();
        stage(c, "routes", g, |_, t| t.routes(&ifaces, true, &enc));
        stage(c, "firewall", g, |_, t| {
            let mut rules = encapsulation_rules(enc.encapsulator, &t.encapsulation_ips());
            rules.extend(t.rules(true, true));
            rules
        });
        let options = plan_options();
        stage(c, "plan", g, |_, t| Plan::new(t, Some(t.conf()), &options));
        // The target figure: the topology plus the local node's whole plan and its INI text
        // (upstream's NewTopology + Conf().Bytes() + Routes() + Rules()+enc).
        stage(c, "topology_plus_plan", g, |m, _| {
            let t = m.topology(g);
            let plan = Plan::new(&t, Some(t.conf()), &options);
            let ini = plan.wireguard.as_ref().map(|c| c.to_ini());
            (t, plan, ini)
        });
    }
}

/// The diff of two plans' WireGuard configurations: the mesh, and the mesh where one remote
/// segment's leader moved to another endpoint (one peer changes).
fn plan_diff(c: &mut Criterion<CpuTime>) {
    for g in GRANULARITIES {
        let mut group = c.benchmark_group(format!("diff/{g}"));
        for n in common::sizes() {
            configure(&mut group, n);
            let mesh = common::mesh(n);
            let topology = mesh.topology(g);
            let before = topology.conf();
            let moved = topology
                .segments
                .iter()
                .find(|s| s.members.iter().any(|m| m.name == "n00011"))
                .map(|s| s.leader_member().name.clone())
                .expect("n00011 is in the mesh");
            let mut nodes = mesh.nodes.clone();
            for node in nodes.iter_mut().filter(|node| node.name == moved) {
                node.endpoint = Some("34.200.0.1:51820".parse().expect("an endpoint"));
            }
            let after = mesh.topology_of(&nodes, g).conf();
            group.bench_function(BenchmarkId::from_parameter(n), |b| {
                timed(b, n, || diff(black_box(&before), black_box(&after)))
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(CpuTime);
    targets = translate, stages, plan_diff
}
criterion_main!(benches);
