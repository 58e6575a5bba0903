//! Builds large topologies and prints how long `Topology::new` and `conf()` take.
//! Run with `cargo bench -p kilo-core --bench topology`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use kilo_core::{Cidr, Endpoint, Granularity, Key, Node, Topology, TopologyInput};

fn node(i: usize, locations: usize, location_ips: usize) -> Node {
    let (hi, lo) = (i / 256, i % 256);
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
    Node {
        name: format!("node-{i:05}"),
        endpoint: Some(format!("8.{hi}.{lo}.1:51820").parse::<Endpoint>().unwrap()),
        key: Key::from_bytes(key),
        internal_ip: Some(format!("10.{hi}.{lo}.1/32").parse().unwrap()),
        location: format!("loc-{}", i % locations),
        subnets: vec![format!("172.{}.{lo}.0/24", 16 + hi).parse().unwrap()],
        allowed_location_ips: if i < location_ips {
            vec![format!("198.{}.{}.0/24", 18 + i / 256, i % 256).parse().unwrap()]
        } else {
            vec![]
        },
        ..Node::default()
    }
}

/// The fastest of `runs` runs (the machine may be shared: the minimum is the stable figure).
fn time<T>(runs: u32, mut f: impl FnMut() -> T) -> Duration {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            black_box(f());
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let subnet: Cidr = "10.4.0.0/16".parse().unwrap();
    println!(
        "{:>7} {:>9} {:>9} {:>12} {:>12} {:>12}",
        "nodes", "gran.", "alips", "locations", "new", "conf"
    );
    for (n, granularity, locations, alips) in [
        (1_000, Granularity::Location, 10, 0),
        (10_000, Granularity::Location, 100, 0),
        (10_000, Granularity::Full, 1, 0),
        (10_000, Granularity::Full, 1, 10),
        (10_000, Granularity::Full, 1, 1_000),
        (10_000, Granularity::Cross, 100, 10),
    ] {
        let nodes: Vec<Node> = (0..n).map(|i| node(i, locations, alips)).collect();
        let build = || {
            Topology::new(TopologyInput {
                nodes: &nodes,
                peers: &[],
                granularity,
                hostname: "node-00000",
                port: 51820,
                key: kilo_core::fixtures::private_key(),
                subnet,
                subnet6: None,
                service_cidrs: &[],
                persistent_keepalive: Duration::ZERO,
            })
            .unwrap()
        };
        let t = build();
        let new = time(20, build);
        let conf = time(20, || t.conf());
        println!("{n:>7} {granularity:>9} {alips:>9} {locations:>12} {new:>12.2?} {conf:>12.2?}");
    }
}
