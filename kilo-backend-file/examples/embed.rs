//! Embedding kilo-rs: read a mesh file and print the WireGuard configuration one node would apply,
//! exactly as `kgctl showconf node NAME` prints it.
//!
//! `cargo run -p kilo-backend-file --example embed -- examples/three-locations.toml gcp-1`

use kilo_core::{Granularity, PrivateKey, Topology, TopologyInput};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (path, node) = match (args.next(), args.next()) {
        (Some(path), Some(node)) => (path, node),
        _ => return Err("usage: embed MESH-FILE NODE".into()),
    };
    let snapshot = kilo_backend_file::load(path.as_ref(), &Default::default())?;
    let topology = Topology::new(TopologyInput {
        nodes: &snapshot.nodes,
        peers: &snapshot.peers,
        granularity: snapshot.settings.granularity.unwrap_or(Granularity::Location),
        hostname: &node,
        port: 51820,
        key: PrivateKey::from_bytes([0; 32]),
        subnet: snapshot.settings.subnet.unwrap_or(kilo_core::offline::default_subnet()),
        service_cidrs: &[],
        persistent_keepalive: std::time::Duration::ZERO,
    })?;
    print!("{}", topology.conf().to_ini());
    Ok(())
}
