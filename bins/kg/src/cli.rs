//! `kg`'s command line: every upstream flag with upstream's spelling and defaults (upstream 4.1),
//! plus contract 6's additions. Boolean flags take a value (`--cni=false`); a bare flag is true.

use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand, ValueEnum};

/// kg: the Kilo agent. Turns the mesh into a working encrypted network on this host.
#[derive(Debug, Parser)]
#[command(name = "kg", version, about, disable_version_flag = true, propagate_version = true)]
pub struct Cli {
    /// Print the version.
    #[arg(short = 'v', long, short_alias = 'V', global = true, action = ArgAction::Version)]
    pub version: Option<bool>,
    /// Where the mesh comes from.
    #[arg(long, value_enum, default_value_t = BackendKind::Kubernetes)]
    pub backend: BackendKind,
    /// The mesh file for the file backend; re-read when it changes.
    #[arg(long)]
    pub file: Option<String>,
    /// Clean up iptables rules, routes, node annotations and the encapsulation tunnel on exit.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub clean_up: bool,
    /// Also delete the WireGuard interface on exit.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub clean_up_interface: bool,
    /// Manage the CNI configuration file (also gates the pod-subnet NAT jump and forward rules).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub cni: bool,
    /// Path to the CNI configuration list.
    #[arg(long, default_value = "/etc/cni/net.d/10-kilo.conflist")]
    pub cni_path: String,
    /// flannel or cilium compatibility.
    #[arg(long)]
    pub compatibility: Option<String>,
    /// Create the WireGuard interface if it is missing.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub create_interface: bool,
    /// When to encapsulate traffic inside a location: never, crosssubnet or always.
    #[arg(long, default_value = "always")]
    pub encapsulate: String,
    /// The node's name (default: the OS hostname).
    #[arg(long, default_value = "")]
    pub hostname: String,
    /// The WireGuard interface.
    #[arg(long, default_value = "kilo0")]
    pub interface: String,
    /// CIDRs that private-IP detection is restricted to (repeatable, comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub internal_cidr: Vec<String>,
    /// Add FORWARD ACCEPT rules for the mesh's traffic.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub iptables_forward_rules: bool,
    /// The private key file (created 0600 in a 0700 directory if missing).
    #[arg(long, default_value = "/var/lib/kilo/key")]
    pub key_file: String,
    /// Path to the kubeconfig file.
    #[arg(long, default_value = "")]
    pub kubeconfig: String,
    /// Address of the metrics, health and graph server.
    #[arg(long, default_value = ":1107")]
    pub listen: String,
    /// Manage routes within a location.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub local: bool,
    /// all, debug, info, warn, error or none.
    #[arg(long, default_value = "info", global = true)]
    pub log_level: String,
    /// json (upstream's: one object a line with ts, caller, level and msg) or human (colours
    /// only on a terminal). The agent logs on stdout, as upstream's.
    #[arg(long, default_value = "json", global = true)]
    pub log_format: LogFormat,
    /// The Kubernetes API server address.
    #[arg(long, default_value = "")]
    pub master: String,
    /// location, full or cross.
    #[arg(long, default_value = "location")]
    pub mesh_granularity: String,
    /// The WireGuard interface MTU: auto (the default-route interface's MTU minus 80) or a number.
    #[arg(long, default_value = "auto")]
    pub mtu: String,
    /// The WireGuard listen port.
    #[arg(long, default_value_t = 51820)]
    pub port: i64,
    /// Use the private IP as the endpoint when no endpoint is set.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub prioritise_private_addresses: bool,
    /// Leader failover on data-path health: probe the location's leader through the tunnel and
    /// publish a verdict (kilo.squat.ai/leader-health) from which every agent elects leaders.
    /// Used only while every node publishes one; false turns it off (for the whole mesh).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub leader_health: bool,
    /// How often to reconcile everything (e.g. 30s, 1m). Routes and firewall rules are listed
    /// only when the kernel announced a change to them since they were last found in place (and at
    /// least every 5 minutes).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub resync_period: Duration,
    /// Service CIDRs, excluded from NAT (repeatable, comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub service_cidr: Vec<String>,
    /// The WireGuard subnet; once per address family for a dual-stack mesh (`--subnet
    /// 10.4.0.0/16 --subnet fd04::/64`, or comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10.4.0.0/16")]
    pub subnet: Vec<String>,
    /// The node label that gives a node's location when it has no location annotation.
    #[arg(long, default_value = "topology.kubernetes.io/region")]
    pub topology_label: String,
    /// kernel, userspace, or auto (the kernel module when it can create a wireguard link).
    #[arg(long, value_enum, default_value_t = WireGuardMode::Auto)]
    pub wireguard: WireGuardMode,
    /// auto (what the host already uses: iptables when it has iptables rules, native nftables
    /// when it has none), iptables (the binaries; the variant the host already uses) or
    /// nftables (native, over netlink, in Kilo's own tables).
    #[arg(long, value_enum, default_value_t = FirewallMode::Auto)]
    pub firewall: FirewallMode,
    /// Directory for the userspace implementation's UAPI sockets.
    #[arg(long, default_value = "/run/wireguard")]
    pub wireguard_socket_dir: String,
    /// In-process userspace WireGuard: ask the TUN interface for segmentation offloads (TCP
    /// and UDP super-packets in, coalesced packets out); false: one packet per read and write.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub tun_offloads: bool,
    /// Subcommands.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The flags given on the command line (by argument id, e.g. `mesh_granularity`), filled by
    /// [`Cli::parse_args`]: a mesh file's `[mesh]` settings apply only where no flag was given.
    #[arg(skip)]
    pub explicit: Vec<String>,
}

impl Cli {
    /// Parses the process's arguments and records which flags were given explicitly.
    pub fn parse_args() -> Cli {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Cli::command().get_matches();
        let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        cli.explicit = matches
            .ids()
            .filter(|id| {
                matches.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine)
            })
            .map(|id| id.as_str().to_string())
            .collect();
        cli
    }

    /// Whether flag `id` (e.g. `mesh_granularity`) was given on the command line.
    pub fn given(&self, id: &str) -> bool {
        self.explicit.iter().any(|e| e == id)
    }
}

/// Backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// The Kubernetes API.
    Kubernetes,
    /// A mesh file (`--file`).
    File,
}

/// WireGuard implementations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WireGuardMode {
    /// The kernel module.
    Kernel,
    /// The built-in userspace implementation.
    Userspace,
    /// The kernel when possible, else userspace.
    Auto,
}

/// Firewall implementations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FirewallMode {
    /// `iptables` when the host already has rules there (kubelet's hint chains or any rule, in
    /// either variant), native nftables otherwise.
    Auto,
    /// The `iptables`/`ip6tables` binaries, with upstream's rule strings.
    Iptables,
    /// Native nftables (tables `kilo` and `kilo6`).
    Nftables,
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// JSON lines.
    Json,
    /// Human-readable lines.
    Human,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the node's public key, creating the key file if it does not exist.
    Pubkey {
        /// The private key file (default: the agent's `--key-file`).
        #[arg(long = "key-file", id = "pubkey_key_file")]
        key_file: Option<String>,
    },
    /// Print the version.
    Version,
    /// Run the Peer admission webhook (HTTPS `POST /validate`).
    Webhook(WebhookArgs),
    /// Print the Peer CustomResourceDefinition (`manifests/crds.yaml`).
    Crds,
    /// Print a shell completion script (e.g. `source <(kg completion bash)`).
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

/// `kg webhook` flags (upstream 3.4).
#[derive(Debug, clap::Args)]
pub struct WebhookArgs {
    /// The PEM certificate chain to serve.
    #[arg(long, default_value = "")]
    pub cert_file: String,
    /// The PEM private key of the certificate.
    #[arg(long = "key-file", id = "webhook_key_file", default_value = "")]
    pub key_file: String,
    /// The HTTPS address.
    #[arg(long, id = "webhook_listen", default_value = ":8443")]
    pub listen: String,
    /// The plain HTTP address of `/metrics` (empty: none).
    #[arg(long, default_value = ":1107")]
    pub listen_metrics: String,
    /// The WireGuard subnet for the overlap check, once per address family in a dual-stack mesh
    /// (default: from the nodes, else 10.4.0.0/16).
    #[arg(long = "subnet", id = "webhook_subnet", value_delimiter = ',')]
    pub subnet: Vec<String>,
    /// Service CIDRs no Peer may route (repeatable, comma-separated).
    #[arg(long = "service-cidr", id = "webhook_service_cidr", value_delimiter = ',')]
    pub service_cidr: Vec<String>,
}

/// Parses Go-style durations: `30s`, `1m`, `1m30s`, `500ms`, `2h`
/// ([`kilo_core::duration::parse`]).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    kilo_core::duration::parse(s)
        .map_err(|_| format!("invalid duration {s:?} (use e.g. 30s, 1m, 1m30s)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn pubkey_takes_the_key_file_after_the_subcommand() {
        let cli = Cli::parse_from(["kg", "pubkey", "--key-file", "/tmp/k"]);
        assert!(
            matches!(cli.command, Some(Command::Pubkey { key_file: Some(ref k) }) if k == "/tmp/k")
        );
        let cli = Cli::parse_from(["kg", "--key-file", "/tmp/j", "pubkey"]);
        assert!(matches!(cli.command, Some(Command::Pubkey { key_file: None })));
        assert_eq!(cli.key_file, "/tmp/j");
        let cli =
            Cli::parse_from(["kg", "webhook", "--key-file", "tls.key", "--cert-file", "tls.crt"]);
        assert!(matches!(cli.command, Some(Command::Webhook(ref w)) if w.key_file == "tls.key"));
    }

    #[test]
    fn upstream_boolean_flag_spellings_work() {
        let cli = Cli::parse_from(["kg", "--cni=false", "--clean-up", "--local=true"]);
        assert!(!cli.cni && cli.clean_up && cli.local);
        let cli = Cli::parse_from(["kg", "--clean-up=false", "--iptables-forward-rules"]);
        assert!(!cli.clean_up && cli.iptables_forward_rules);
    }
}
