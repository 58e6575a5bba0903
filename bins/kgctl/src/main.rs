//! `kgctl`: inspect and check a Kilo mesh (contract 5). All decisions live in `kilo-core`; this
//! binary parses flags, loads the source and prints.

mod cli;

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use cli::{BackendKind, Cli, Command, GraphFormat, ObjectKind, PlanFormat, ShowconfFormat};
use kilo_agent::connect;
use kilo_agent::logging::Stream;
use kilo_backend_k8s::snapshot as k8s;
use kilo_core::offline::{AsPeer, OfflineMesh, ShowConf};
use kilo_core::plan::PlanOptions;
use kilo_core::routes::Interfaces;
use kilo_core::settings::{self, Explicit, Settings, Source};
use kilo_core::{Granularity, PrivateKey, Readiness, Snapshot};

/// The exit code of a usage error: clap's, the same as `kg`'s.
const USAGE_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Bare `kgctl`: the help, on stdout, as upstream's.
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            use clap::CommandFactory;
            let _ = Cli::command().print_help();
            return ExitCode::SUCCESS;
        }
        // `--help` and `--version` (success), or a usage error: clap's whole message (what is
        // wrong, the possible values, "did you mean", the usage line), not one line of it.
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(USAGE_ERROR) } else { ExitCode::SUCCESS };
        }
    };
    match run(cli) {
        Ok(code) => code,
        // A reader that stops early (`kgctl graph | head`) is not an error.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kgctl: {}", one_line(&*e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line ([`kilo_agent::chain()`]: a cause its parent already
/// quotes is left out), shortened.
fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    shorten(kilo_agent::chain(e).replace('\n', " "))
}

/// At most this many characters of an error or warning line: a megabyte of bad input is named,
/// not echoed.
const MAX_LINE: usize = 400;

fn shorten(line: String) -> String {
    match line.char_indices().nth(MAX_LINE) {
        Some((at, _)) => format!("{}… ({} more bytes)", &line[..at], line.len() - at),
        None => line,
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Loads the snapshot and resolves the mesh settings and readiness in force (flags, else the
/// source's, else the defaults: [`kilo_core::settings::resolve`]).
fn load(cli: &Cli, explicit: &Explicit) -> Result<(Snapshot, Settings, Readiness)> {
    let (snapshot, settings, now) = match cli.backend {
        BackendKind::Kubernetes => {
            let snapshot = k8s::load(cli.kubeconfig.as_deref(), &cli.topology_label)?;
            let source = Source::KubernetesNodes { nodes: &snapshot.nodes, live: true };
            let settings = settings::resolve(explicit, source);
            (snapshot, settings, k8s::now())
        }
        BackendKind::File => {
            let path = cli.file.as_deref().context("--backend file needs --file PATH")?;
            let mut options = kilo_backend_file::Options::default();
            options.topology_label = cli.topology_label.clone();
            let snapshot = kilo_backend_file::load(std::path::Path::new(path), &options)?;
            let settings = settings::resolve(explicit, Source::MeshFile(&snapshot.settings));
            (snapshot, settings, 0)
        }
    };
    let readiness = settings.readiness_at(now);
    Ok((snapshot, settings, readiness))
}

/// The mesh settings given on the command line (`--mesh-granularity auto`: none).
fn explicit(cli: &Cli) -> Result<Explicit> {
    let granularity = match cli.mesh_granularity.as_str() {
        "auto" => None,
        s => Some(s.parse::<Granularity>().map_err(|_| {
            anyhow!(
                "mesh granularity {s:?} unknown; possible values are: location, full, cross, auto"
            )
        })?),
    };
    let mut explicit = Explicit::default();
    explicit.granularity = granularity;
    (explicit.subnet, explicit.subnet6) =
        kilo_core::cidr::per_family(&cli.subnet).context("--subnet")?;
    explicit.port = cli.port;
    Ok(explicit)
}

fn run(cli: Cli) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match &cli.command {
        Command::Genkey => {
            writeln!(out, "{}", connect::generate_key()?.expose_base64())?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Pubkey => {
            let mut text = String::new();
            std::io::stdin().take(1024).read_to_string(&mut text).context("reading stdin")?;
            let key: PrivateKey =
                text.trim().parse().map_err(|e| anyhow!("stdin: not a private key: {e}"))?;
            writeln!(out, "{}", key.public_key())?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Connect(flags) => {
            connect_command(&cli, flags)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Completion { shell } => {
            use clap::CommandFactory;
            out.write_all(&shell.script(&mut Cli::command()))?;
            out.flush()?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let (snapshot, settings, readiness) = load(&cli, &explicit(&cli)?)?;
    if let Command::Validate = cli.command {
        let findings = OfflineMesh::validate_with_settings(&snapshot, &settings);
        for f in &findings {
            writeln!(out, "{f}")?;
        }
        let errors =
            findings.iter().filter(|f| f.severity == kilo_core::validate::Severity::Error).count();
        if findings.is_empty() {
            writeln!(
                out,
                "ok: {} nodes, {} peers, no findings",
                snapshot.nodes.len(),
                snapshot.peers.len()
            )?;
        }
        return Ok(if errors > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS });
    }
    let mesh = OfflineMesh::with_settings(&snapshot, &settings, readiness);
    let mesh = match (cli.backend, &cli.file) {
        (BackendKind::File, Some(file)) => mesh.with_context(|| file.clone())?,
        _ => mesh?,
    };
    // The rest of the mesh works; say what was left out (an error alone stays one line).
    for left_out in &snapshot.invalid {
        eprintln!("kgctl: warning: left out {}", shorten(left_out.to_string()));
    }
    match cli.command {
        Command::Graph { output } => {
            let dot = mesh.graph()?;
            match output {
                GraphFormat::Dot => out.write_all(dot.as_bytes())?,
                GraphFormat::Svg => out.write_all(&render_svg(&dot)?)?,
            }
        }
        Command::Leaders => out.write_all(mesh.leaders()?.as_bytes())?,
        Command::Showconf { kind, name, as_peer, output, allowed_ips } => {
            let as_peer = as_peer.then_some(AsPeer {
                allowed_ips: &allowed_ips,
                object: output != ShowconfFormat::Wireguard,
            });
            let shown = match kind {
                ObjectKind::Node => mesh.showconf_node(&name, as_peer)?,
                ObjectKind::Peer => mesh.showconf_peer(&name, as_peer)?,
            };
            match shown {
                ShowConf::Text(text) => out.write_all(text.as_bytes())?,
                ShowConf::NotLeader(message) => eprintln!("{message}"),
                ShowConf::Peer(object) if output == ShowconfFormat::Json => {
                    out.write_all(serde_json::to_string_pretty(&object)?.as_bytes())?
                }
                ShowConf::Peer(object) => {
                    out.write_all(kilo_backend_k8s::yaml::to_yaml(&object)?.as_bytes())?
                }
                other => bail!("showconf: cannot print {other:?}"),
            }
        }
        Command::Plan {
            name,
            encapsulate,
            local,
            cni,
            iptables_forward_rules,
            service_cidr,
            interface,
            private_interface,
            output,
            ..
        } => {
            let interfaces =
                Interfaces { kilo: interface, private: private_interface, tunnel: "tunl0".into() };
            let mut options = PlanOptions::new(name.clone(), interfaces);
            options.local = local;
            options.cni = cni;
            options.iptables_forward_rules = iptables_forward_rules;
            options.encapsulation = encapsulate;
            options.compatibility = None;
            let plan = mesh.plan(&name, &options, &service_cidr)?;
            match output {
                PlanFormat::Json => writeln!(out, "{}", plan.to_json_pretty())?,
                PlanFormat::Text => out.write_all(plan.to_text().as_bytes())?,
            }
        }
        Command::Validate
        | Command::Genkey
        | Command::Pubkey
        | Command::Connect(_)
        | Command::Completion { .. } => {}
    }
    Ok(ExitCode::SUCCESS)
}

fn connect_command(cli: &Cli, flags: &cli::ConnectFlags) -> Result<()> {
    if cli.backend != BackendKind::Kubernetes {
        bail!("connect works with --backend kubernetes only (it creates the Peer)");
    }
    let peer = flags.peer_name.clone().map_or_else(connect::hostname, Ok)?;
    let private_key = connect::private_key(&flags.private_key)?;
    let mut args = connect::ConnectArgs::new(peer, flags.allowed_ip, private_key);
    args.allowed_ips = flags.allowed_ips.clone();
    args.clean_up = flags.clean_up;
    args.mtu = flags.mtu;
    args.resync = flags.resync_period;
    args.interface = flags.interface.clone();
    args.keepalive = flags.persistent_keepalive;
    args.wireguard = flags.wireguard;
    args.socket_dir = flags.wireguard_socket_dir.clone();
    args.flags = explicit(cli)?;
    args.kubeconfig = cli.kubeconfig.clone();
    args.topology_label = cli.topology_label.clone();
    kilo_net_linux::wireguard::validate_name(&args.interface)?;
    // The loop reports on stderr what it applies, and why it cannot (no ready nodes yet, say).
    kilo_agent::logging::init_for_command(kilo_agent::logging::Format::Human, Stream::Stderr);
    let notify = |notice: connect::Notice<'_>| eprintln!("kgctl: {notice}");
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(connect::run(args, notify))?;
    Ok(())
}

fn render_svg(dot: &str) -> Result<Vec<u8>> {
    let mut child = std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("-o svg needs Graphviz's `dot` on PATH")?;
    child.stdin.take().context("dot stdin")?.write_all(dot.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!("dot -Tsvg failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(output.stdout)
}
