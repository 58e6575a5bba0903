//! `kg`, the Kilo agent (contract 6): parses flags, sets up logging, and runs the agent loop of
//! `kilo-net-linux` around `kilo-core`'s state machine.

mod cli;
mod http;
mod keyfile;
mod kube;
mod run;

use std::process::ExitCode;

use cli::{Cli, Command, LogFormat};

fn init_logging(level: &str, format: LogFormat) -> Result<(), String> {
    let filter = match level {
        "all" => "trace",
        "debug" | "info" | "warn" | "error" => level,
        "none" => "off",
        other => {
            return Err(format!(
                "log level {other:?} unknown; possible values are: all, debug, info, warn, error, none"
            ));
        }
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_current_span(false).init(),
        LogFormat::Human => builder.init(),
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    if let Err(e) = init_logging(&cli.log_level, cli.log_format) {
        eprintln!("kg: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Some(Command::Version) => {
            println!("{}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Some(Command::Pubkey { ref key_file }) => {
            let path = key_file.as_deref().unwrap_or(&cli.key_file);
            keyfile::load_or_create(std::path::Path::new(path))
                .map(|key| println!("{}", key.public_key()))
        }
        Some(Command::Crds) => {
            print!("{}", kube::crds());
            Ok(())
        }
        Some(Command::Webhook(ref args)) => runtime().and_then(|rt| {
            rt.block_on(kube::webhook(args, &cli.kubeconfig, &cli.master, &cli.topology_label))
        }),
        None => runtime().and_then(|rt| rt.block_on(run::run(cli))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kg: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
