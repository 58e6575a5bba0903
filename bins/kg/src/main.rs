//! `kg`, the Kilo agent (contract 6): parses flags, sets up logging, and runs the agent loop of
//! `kilo-net-linux` around `kilo-core`'s state machine.

mod cli;
mod graph;
mod http;
mod keyfile;
mod kube;
mod logging;
mod run;
mod sidecar;

use std::process::ExitCode;

use cli::{Cli, Command};

/// `kg webhook` serves HTTPS only: without a certificate and its key it cannot start.
fn webhook_tls_given(args: &cli::WebhookArgs) -> anyhow::Result<()> {
    let missing: Vec<&str> = [("--cert-file", &args.cert_file), ("--key-file", &args.key_file)]
        .into_iter()
        .filter(|(_, value)| value.is_empty())
        .map(|(flag, _)| flag)
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "kg webhook needs {}: the PEM certificate and private key it serves HTTPS with, which \
             the API server must trust (e.g. from cert-manager, as upstream's webhook manifest)",
            missing.join(" and ")
        );
    }
    Ok(())
}

/// The error and its causes on one line, leaving out a cause its parent already quotes.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string().replace('\n', " ");
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    // The agent and the webhook log on stdout as upstream's; subcommands whose stdout is their
    // result log on stderr.
    let stream = match cli.command {
        None | Some(Command::Webhook(_)) => logging::Stream::Stdout,
        Some(_) => logging::Stream::Stderr,
    };
    if let Err(e) = logging::init(&cli.log_level, cli.log_format, stream) {
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
        Some(Command::Completion { shell }) => {
            use clap::CommandFactory;
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            match out.write_all(&shell.script(&mut Cli::command())).and_then(|()| out.flush()) {
                // A reader that stops early is not an error.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            }
        }
        Some(Command::Crds) => {
            print!("{}", kube::crds());
            Ok(())
        }
        Some(Command::Webhook(ref args)) => {
            webhook_tls_given(args).and_then(|()| runtime()).and_then(|rt| {
                rt.block_on(kube::webhook(args, &cli.kubeconfig, &cli.master, &cli.topology_label))
            })
        }
        None => runtime().and_then(|rt| {
            let result = rt.block_on(run::run(cli));
            // A clean-up step abandoned after its budget, or a DNS lookup still in flight, must
            // not hold the exit up.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            result
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kg: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}
