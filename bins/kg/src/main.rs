//! `kg`, the Kilo agent (contract 6): parses flags, sets up logging, and runs the agent loop of
//! `kilo-net-linux` around `kilo-core`'s state machine.

mod cli;
mod http;
mod keyfile;
mod run;

use std::process::ExitCode;

use clap::Parser;
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(&cli.log_level, cli.log_format) {
        eprintln!("kg: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Some(Command::Version) => {
            println!("{}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Some(Command::Pubkey) => keyfile::load_or_create(std::path::Path::new(&cli.key_file))
            .map(|key| println!("{}", key.public_key())),
        None => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(run::run(cli))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kg: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
