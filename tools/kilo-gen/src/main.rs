//! `kilo-gen`: writes a synthetic Kilo mesh to standard output, as the static mesh TOML or as a
//! `kubectl get nodes,peers -o yaml` document. The same flags always print the same bytes.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use kilo_gen::{Shape, generate, to_toml, to_yaml};

/// The output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// The static mesh file (contract 3).
    Toml,
    /// A `kubectl get nodes,peers -o yaml` `v1` List (contract 4).
    Yaml,
}

/// Generate a deterministic synthetic Kilo mesh.
#[derive(Debug, Parser)]
#[command(name = "kilo-gen", version)]
struct Cli {
    /// Number of nodes.
    #[arg(long)]
    nodes: usize,
    /// Number of locations [default: nodes/10].
    #[arg(long, conflicts_with = "baseline")]
    locations: Option<usize>,
    /// Number of peers [default: nodes/20].
    #[arg(long, conflicts_with = "baseline")]
    peers: Option<usize>,
    /// Seed of the random choices [default: 5000 + nodes].
    #[arg(long, conflicts_with = "baseline")]
    seed: Option<u64>,
    /// Give member 1 of every D-th location a DNS endpoint (0: none).
    #[arg(long, default_value_t = 0, value_name = "D", conflicts_with = "baseline")]
    dns_every: usize,
    /// Output format.
    #[arg(long, value_enum, default_value = "yaml")]
    format: Format,
    /// For TOML: write a `[mesh]` table with this granularity.
    #[arg(long, value_parser = ["location", "full", "cross"])]
    granularity: Option<String>,
    /// Exactly the cluster shape of the upstream baseline (see BENCHMARKS.md).
    #[arg(long)]
    baseline: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let base = Shape::baseline(cli.nodes);
    let shape = Shape {
        locations: cli.locations.unwrap_or(base.locations),
        peers: cli.peers.unwrap_or(base.peers),
        seed: cli.seed.unwrap_or(base.seed),
        dns_every: cli.dns_every,
        ..base
    };
    let mesh = match generate(&shape) {
        Ok(mesh) => mesh,
        Err(e) => {
            eprintln!("kilo-gen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = match cli.format {
        Format::Toml => to_toml(&mesh, cli.granularity.as_deref()),
        Format::Yaml => to_yaml(&mesh),
    };
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kilo-gen: writing standard output: {e}");
            ExitCode::FAILURE
        }
    }
}
