//! `kg`, the Kilo agent (contract 6): parses flags, sets up logging, and runs `kilo-agent`'s
//! node around `kilo-core`'s state machine.

mod cli;
mod options;

use std::process::ExitCode;

use cli::{Cli, Command, LogFormat};
use kilo_agent::logging::{self, Format, Stream};

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

/// Prints the completion script for `shell` on stdout; a reader that stops early is no error.
fn completion(shell: cli::Shell) -> anyhow::Result<()> {
    use clap::CommandFactory;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(&shell.script(&mut Cli::command())).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    // The agent and the webhook log on stdout as upstream's; subcommands whose stdout is their
    // result log on stderr.
    let stream = match cli.command {
        None | Some(Command::Webhook(_)) => Stream::Stdout,
        Some(_) => Stream::Stderr,
    };
    let format = match cli.log_format {
        LogFormat::Json => Format::Json,
        LogFormat::Human => Format::Human,
    };
    if let Err(e) = logging::init(&cli.log_level, format, stream) {
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
            kilo_agent::keyfile::load_or_create(path.as_ref())
                .map(|key| println!("{}", key.public_key()))
                .map_err(Into::into)
        }
        Some(Command::Completion { shell }) => completion(shell),
        Some(Command::Crds) => {
            print!("{}", kilo_agent::kube::crds());
            Ok(())
        }
        Some(Command::Webhook(ref args)) => options::webhook(&cli, args)
            .and_then(|options| Ok(runtime()?.block_on(kilo_agent::kube::webhook(options))?)),
        None => options::node(&cli).and_then(|options| {
            let rt = runtime()?;
            let result =
                rt.block_on(kilo_agent::node::run(options, kilo_agent::node::shutdown_signal()));
            // A clean-up step abandoned after its budget, or a DNS lookup still in flight, must
            // not hold the exit up.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            Ok(result?)
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The error and its causes on one line, leaving out a cause its parent quotes.
            eprintln!("kg: {}", kilo_agent::chain(e.as_ref()).replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
