//! Embedding the agent: run one agent per node of a mesh file on kilo-agent's driver, each with
//! its own file backend and an in-memory recording host instead of a Linux host, and print the
//! plan each would apply, as `kgctl --backend file --file MESH-FILE plan node NAME -o json`
//! prints it (one JSON document per node, in the file's order). Nothing touches the kernel, no
//! root needed: the same loop `kg` runs, pointed at a host that records.
//!
//! `cargo run -p kilo-agent --example simulate -- examples/three-locations.toml`

use std::time::Duration;

use kilo_agent::{RecordingHost, RunOptions, Shared, SystemClock};
use kilo_backend_file::{FileBackend, Options};
use kilo_core::agent::{Agent, AgentConfig};
use kilo_core::plan::PlanOptions;
use kilo_core::routes::Interfaces;
use kilo_core::settings::{self, Explicit, Source};
use kilo_core::{Backend, PrivateKey};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: simulate MESH-FILE")?;
    let snapshot = kilo_backend_file::load(path.as_ref(), &Options::default())?;
    // No flags: the file's `[mesh]` settings, else the defaults (what kg and kgctl do).
    let settings = settings::resolve(&Explicit::default(), Source::MeshFile(&snapshot.settings));
    let mut agents = Vec::new();
    for node in &snapshot.nodes {
        let plan = PlanOptions::new(node.name.clone(), Interfaces::of_agent("kilo0", None, None));
        let mut config = AgentConfig::new(plan, PrivateKey::from_bytes([0; 32]));
        config.granularity = settings.granularity;
        config.subnet = settings.subnet;
        config.port = settings.port;
        config.readiness = settings.readiness;
        // A mesh file is read-only: every agent uses its entry as written.
        config.publishes = false;
        let mut backend = FileBackend::open(&path, Options::default())?;
        backend.snapshot().await?;
        let (host, recorder) = RecordingHost::new(None);
        let run = kilo_agent::run(
            Agent::new(config),
            backend,
            host,
            SystemClock,
            RunOptions::default(),
            Shared::new(),
            tokio::time::sleep(Duration::from_millis(300)),
        );
        agents.push((node.name.clone(), recorder, run));
    }
    let mut recorders = Vec::new();
    for (name, recorder, run) in agents {
        run.await?;
        recorders.push((name, recorder));
    }
    for (name, recorder) in recorders {
        let plan = recorder.last_plan().ok_or_else(|| format!("{name}: no plan applied"))?;
        println!("{}", plan.to_json_pretty());
    }
    Ok(())
}
