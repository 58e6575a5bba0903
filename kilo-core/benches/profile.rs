//! A profiling driver, not a benchmark: builds the baseline mesh once, then runs one stage many
//! times, so that `perf record` or `valgrind --tool=callgrind --toggle-collect=profile::run`
//! see the stage and not the set-up.
//!
//! `cargo bench -p kilo-core --bench profile -- [N] [location|full] [stage] [iterations]`, stage
//! one of `topology`, `conf`, `ini`, `routes`, `firewall`, `plan`, `whole` (topology plus plan
//! and its INI text, the default), `dot`.

mod common;

use std::hint::black_box;

use kilo_core::Granularity;
use kilo_core::firewall::encapsulation_rules;
use kilo_core::plan::Plan;

use common::{Mesh, encapsulation, interfaces, plan_options};

#[inline(never)]
fn run(mesh: &Mesh, g: Granularity, stage: &str) -> usize {
    let t = mesh.topology(g);
    match stage {
        "topology" => t.segments.len(),
        "conf" => t.conf().peers.len(),
        "ini" => t.conf().to_ini().len(),
        "routes" => t.routes(&interfaces(), true, &encapsulation()).0.len(),
        "firewall" => {
            let mut rules =
                encapsulation_rules(encapsulation().encapsulator, &t.encapsulation_ips());
            rules.extend(t.rules(true, true));
            rules.prepend.len()
        }
        "plan" => Plan::new(&t, Some(t.conf()), &plan_options()).routes.len(),
        "whole" => {
            let plan = Plan::new(&t, Some(t.conf()), &plan_options());
            plan.wireguard.as_ref().map_or(0, |c| c.to_ini().len()) + plan.routes.len()
        }
        "dot" => t.dot().len(),
        other => panic!("unknown stage {other}"),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; skip flags.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let n = args.first().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let g: Granularity = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(Granularity::Location);
    let stage = args.get(2).map(String::as_str).unwrap_or("whole");
    let iterations: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(50);
    let mesh = common::mesh(n);
    let mut total = 0;
    let mut wall = Vec::with_capacity(iterations.max(1));
    let mut cpu = Vec::with_capacity(iterations.max(1));
    for _ in 0..iterations.max(1) {
        let (start, start_cpu) = (std::time::Instant::now(), common::cpu_time::thread_cpu_ns());
        total += run(black_box(&mesh), g, stage);
        cpu.push(common::cpu_time::thread_cpu_ns() - start_cpu);
        wall.push(start.elapsed());
    }
    wall.sort();
    cpu.sort_unstable();
    let ms = |ns: u64| ns as f64 / 1e6;
    println!(
        "{n} {g} {stage} (topology included): CPU min {:.2} ms median {:.2} ms; wall min {:?} median {:?}; {iterations} runs, checksum {total}",
        ms(cpu[0]),
        ms(cpu[cpu.len() / 2]),
        wall[0],
        wall[wall.len() / 2],
    );
}
