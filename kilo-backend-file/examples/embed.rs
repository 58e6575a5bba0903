//! Embedding kilo-rs: read a mesh file and print the WireGuard configuration one node would apply,
//! exactly as `kgctl --backend file --file MESH-FILE showconf node NAME` prints it: the mesh
//! file's settings resolved as kgctl resolves them, the node's keepalive, and, for a node that
//! does not lead its location, upstream's message on stderr and nothing on stdout.
//!
//! `cargo run -p kilo-backend-file --example embed -- examples/three-locations.toml gcp-1`

use kilo_core::offline::{OfflineMesh, ShowConf};
use kilo_core::settings::{self, Explicit, Source};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (path, node) = match (args.next(), args.next()) {
        (Some(path), Some(node)) => (path, node),
        _ => return Err("usage: embed MESH-FILE NODE".into()),
    };
    let snapshot = kilo_backend_file::load(path.as_ref(), &Default::default())?;
    // No flags: the file's `[mesh]` settings, else the defaults.
    let settings = settings::resolve(&Explicit::default(), Source::MeshFile(&snapshot.settings));
    // A file is a snapshot: the time does not matter for its readiness.
    let mesh = OfflineMesh::with_settings(&snapshot, &settings, settings.readiness_at(0))?;
    match mesh.showconf_node(&node, None)? {
        ShowConf::Text(text) => print!("{text}"),
        ShowConf::NotLeader(message) => eprintln!("{message}"),
        // Only `--as-peer` prints a Peer object, and a newer core may print something else.
        other => return Err(format!("no WireGuard configuration: {other:?}").into()),
    }
    Ok(())
}
