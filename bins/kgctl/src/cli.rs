//! Command-line syntax (contract 5).

use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use kilo_core::{Cidr, Encapsulation};

/// kgctl: inspect a Kilo mesh from Kubernetes or from a file.
#[derive(Debug, Parser)]
#[command(
    name = "kgctl",
    version,
    about,
    disable_version_flag = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// Print the version.
    #[arg(short = 'v', long, short_alias = 'V', action = ArgAction::Version)]
    pub version: Option<bool>,
    /// Where the mesh comes from.
    #[arg(long, global = true, value_enum, default_value_t = BackendKind::Kubernetes)]
    pub backend: BackendKind,
    /// The file backend's input: a mesh TOML or a Kubernetes YAML snapshot; `-` reads stdin.
    #[arg(long, global = true)]
    pub file: Option<String>,
    /// Path to the kubeconfig file.
    #[arg(long, global = true)]
    pub kubeconfig: Option<String>,
    /// location, full, cross, or auto (the source's setting, else location).
    #[arg(long, global = true, default_value = "auto")]
    pub mesh_granularity: String,
    /// The WireGuard listen port (default: the mesh file's `[mesh] port`, else 51820, as `kg`).
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// The WireGuard subnet, once per address family for a dual-stack mesh (default: the
    /// source's, else 10.4.0.0/16).
    #[arg(long, global = true, value_delimiter = ',')]
    pub subnet: Vec<Cidr>,
    /// The node label that gives a node's location when it has no location annotation.
    #[arg(long, global = true, default_value = "topology.kubernetes.io/region")]
    pub topology_label: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// The Kubernetes API.
    Kubernetes,
    /// A file (`--file`).
    File,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the mesh as a Graphviz graph.
    Graph {
        /// dot, or svg (needs Graphviz's `dot`).
        #[arg(short, long, default_value = "dot")]
        output: GraphFormat,
    },
    /// Print each location's leader, how it was elected and whether it carries traffic.
    Leaders,
    /// Print a node's or a peer's WireGuard configuration.
    Showconf {
        /// node or peer.
        kind: ObjectKind,
        /// Its name.
        name: String,
        /// Print the object as a peer of another interface.
        #[arg(long)]
        as_peer: bool,
        /// wireguard, yaml or json (yaml and json need --as-peer).
        #[arg(short, long, default_value = "wireguard")]
        output: ShowconfFormat,
        /// Extra allowed IPs for --as-peer (masked to their networks, as upstream).
        #[arg(long, value_delimiter = ',', value_parser = allowed_ip)]
        allowed_ips: Vec<Cidr>,
    },
    /// Print everything the agent on a node would apply.
    Plan {
        /// node.
        kind: PlanKind,
        /// The node's name.
        name: String,
        /// never, crosssubnet or always.
        #[arg(long, default_value = "always")]
        encapsulate: Encapsulation,
        /// Manage routes within a location.
        #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
        local: bool,
        /// Kilo manages the CNI (gates the pod-subnet NAT jump and forward rules).
        #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
        cni: bool,
        /// Add FORWARD ACCEPT rules.
        #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
        iptables_forward_rules: bool,
        /// Service CIDRs, excluded from NAT.
        #[arg(long, value_delimiter = ',')]
        service_cidr: Vec<Cidr>,
        /// The WireGuard interface.
        #[arg(long, default_value = "kilo0")]
        interface: String,
        /// The interface carrying the private IP (unknown offline).
        #[arg(long, default_value = "eth0")]
        private_interface: String,
        /// text or json.
        #[arg(short, long, default_value = "text")]
        output: PlanFormat,
    },
    /// Check the whole mesh; exit 1 if any error is found.
    Validate,
    /// Join the mesh as a Kilo Peer (Kubernetes backend; needs CAP_NET_ADMIN).
    Connect(ConnectFlags),
    /// Print a new WireGuard private key.
    Genkey,
    /// Read a private key on stdin and print its public key.
    Pubkey,
    /// Print a shell completion script (e.g. `source <(kgctl completion bash)`).
    Completion {
        /// bash, zsh, fish or powershell.
        shell: Shell,
    },
}

/// Shells `completion` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// Bash.
    Bash,
    /// Zsh.
    Zsh,
    /// Fish.
    Fish,
    /// PowerShell.
    Powershell,
}

impl Shell {
    /// `command`'s completion script for this shell.
    pub fn script(self, command: &mut clap::Command) -> Vec<u8> {
        use clap_complete::Shell as S;
        let shell = match self {
            Shell::Bash => S::Bash,
            Shell::Zsh => S::Zsh,
            Shell::Fish => S::Fish,
            Shell::Powershell => S::PowerShell,
        };
        let name = command.get_name().to_string();
        let mut script = Vec::new();
        clap_complete::generate(shell, command, name, &mut script);
        script
    }
}

/// `kgctl connect` flags (upstream 12.4).
#[derive(Debug, clap::Args)]
pub struct ConnectFlags {
    /// The Peer's name (default: this machine's hostname).
    pub peer_name: Option<String>,
    /// This machine's address in the mesh (the created Peer's allowed IP).
    #[arg(short = 'a', long, default_value = "10.10.10.10/32")]
    pub allowed_ip: Cidr,
    /// Extra CIDRs to reach through the mesh.
    #[arg(long, value_delimiter = ',', value_parser = allowed_ip)]
    pub allowed_ips: Vec<Cidr>,
    /// A file holding the private key ("": generate one).
    #[arg(long, default_value = "")]
    pub private_key: String,
    /// On exit, delete the interface, the routes and a Peer this command created.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub clean_up: bool,
    /// The WireGuard interface's MTU.
    #[arg(long, default_value_t = 1420)]
    pub mtu: u32,
    /// How often to recompute and apply the configuration (e.g. 30s, 1m).
    #[arg(long, default_value = "30s", value_parser = resync_period)]
    pub resync_period: std::time::Duration,
    /// The WireGuard interface.
    #[arg(short = 'i', long, default_value = "kilo0")]
    pub interface: String,
    /// The persistent keepalive (seconds) of a created Peer.
    #[arg(long, default_value_t = 10)]
    pub persistent_keepalive: u64,
    /// auto, kernel or userspace.
    #[arg(long, default_value = "auto")]
    pub wireguard: kilo_net_linux::wireguard::WireGuardChoice,
    /// The directory of userspace WireGuard UAPI sockets.
    #[arg(long, default_value = kilo_net_linux::wireguard::DEFAULT_UAPI_DIR)]
    pub wireguard_socket_dir: std::path::PathBuf,
}

/// `showconf` targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ObjectKind {
    /// A node.
    Node,
    /// A peer.
    Peer,
}

/// `plan` targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanKind {
    /// A node.
    Node,
}

/// `graph` formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// Graphviz DOT.
    Dot,
    /// SVG, rendered by Graphviz's `dot`.
    Svg,
}

/// `showconf` formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShowconfFormat {
    /// WireGuard INI.
    Wireguard,
    /// A Peer object in YAML.
    Yaml,
    /// A Peer object in JSON.
    Json,
}

/// `plan` formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// For people.
    Text,
    /// JSON, for programs (the shape is in docs/kgctl.md).
    Json,
}

/// Parses a resync period: Go-style `30s`, `1m`, `1m30s`, `500ms`, `1h`, or plain seconds.
fn resync_period(s: &str) -> Result<std::time::Duration, String> {
    kilo_core::duration::parse_period(s)
        .map_err(|_| format!("invalid duration {s:?}: want e.g. 30s, 1m, 1m30s or 500ms"))
}

/// Parses one `--allowed-ips` entry as upstream does: a CIDR, masked to its network.
fn allowed_ip(s: &str) -> Result<Cidr, String> {
    s.parse::<Cidr>()
        .map(|c| c.network())
        .map_err(|_| format!("allowed-ips must contain only valid CIDRs; got {s:?}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
