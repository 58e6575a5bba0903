//! Mesh-wide settings, resolved once: the granularity, WireGuard subnet, listen port and readiness
//! policy in force, from explicit flags, what the mesh source reports, and the defaults.
//!
//! Every caller (`kg`, `kgctl`, embedders) resolves with [`resolve`]; backends only report what
//! they read ([`MeshSettings`]) and never fill defaults or filter readiness.
//!
//! Precedence, for each field: an explicit flag, else the source's value, else the default
//! (granularity `location`, subnet `10.4.0.0/16`, port 51820). What the source says depends on
//! its kind:
//!
//! - a mesh file: its `[mesh]` table; readiness is [`ReadinessPolicy::StaticMesh`] for a static
//!   mesh, else [`ReadinessPolicy::Snapshot`];
//! - the Kubernetes nodes as `kgctl` reads them (upstream-kilo 12.1): the granularity annotation
//!   of the **first** listed node, and the subnet of the `wireguard-ip` annotation (masked to its
//!   network) of the **last** listed node that has one, ready or not; a port is never derived.
//!   Upstream's `kgctl connect` takes the first node's `wireguard-ip` instead; the two agree
//!   whenever the nodes agree on the subnet, and kilo-rs applies this one rule to every command;
//! - the Kubernetes agent (`kg`, upstream 4.1): its own flags and the defaults, nothing derived
//!   from other nodes (each agent publishes its WireGuard IP from its own `--subnet`).

use crate::agent::ReadinessPolicy;
use crate::backend::MeshSettings;
use crate::{Cidr, Granularity, Node, Readiness};

/// The default listen port.
pub const DEFAULT_PORT: u16 = 51820;

/// The default WireGuard subnet, `10.4.0.0/16`.
pub fn default_subnet() -> Cidr {
    Cidr::new(std::net::Ipv4Addr::new(10, 4, 0, 0).into(), 16).unwrap_or_else(|| unreachable!())
}

/// The settings given explicitly (on the command line or by an embedder); `None` = not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Explicit {
    /// `--mesh-granularity` (`None` also for kgctl's `auto`).
    pub granularity: Option<Granularity>,
    /// `--subnet`.
    pub subnet: Option<Cidr>,
    /// `--port`.
    pub port: Option<u16>,
}

/// Where the mesh comes from, with what it reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source<'a> {
    /// A mesh file: its `[mesh]` settings as the backend read them.
    MeshFile(&'a MeshSettings),
    /// Kubernetes nodes read as `kgctl` reads them: settings derived from the nodes' annotations,
    /// in list order. `live`: last-seen is checked (the API); otherwise a snapshot (a YAML file).
    KubernetesNodes {
        /// All listed nodes, ready or not, in list order.
        nodes: &'a [Node],
        /// Whether the nodes come from the live API (last-seen checked).
        live: bool,
    },
    /// The agent on Kubernetes: its flags and the defaults only, live readiness.
    KubernetesAgent,
}

/// Where a resolved value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// An explicit flag.
    Explicit,
    /// The mesh source.
    Source,
    /// The default.
    Default,
}

/// The mesh settings in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// The granularity.
    pub granularity: Granularity,
    /// The WireGuard subnet, masked to its network.
    pub subnet: Cidr,
    /// Where [`Settings::subnet`] came from (`kgctl connect` needs a subnet that is not the
    /// default).
    pub subnet_origin: Origin,
    /// The listen port.
    pub port: u16,
    /// How nodes are selected.
    pub readiness: ReadinessPolicy,
}

impl Settings {
    /// The readiness to select nodes with at `now` (Unix seconds).
    pub fn readiness_at(&self, now: i64) -> Readiness {
        match self.readiness {
            ReadinessPolicy::Live => Readiness::At(now),
            ReadinessPolicy::Snapshot => Readiness::IgnoringLastSeen,
            ReadinessPolicy::StaticMesh => Readiness::StaticMesh,
        }
    }
}

/// What a source reports, derived from Kubernetes nodes as upstream's `kgctl` does (see the
/// module documentation): granularity of the first node, subnet of the last node with a
/// `wireguard-ip`, no port, not static.
pub fn from_kubernetes_nodes(nodes: &[Node]) -> MeshSettings {
    MeshSettings {
        granularity: nodes.first().and_then(|n| n.granularity),
        subnet: nodes.iter().rev().find_map(|n| n.wireguard_ip),
        port: None,
        static_mesh: false,
    }
}

fn pick<T>(explicit: Option<T>, source: Option<T>, default: T) -> (T, Origin) {
    match (explicit, source) {
        (Some(v), _) => (v, Origin::Explicit),
        (None, Some(v)) => (v, Origin::Source),
        (None, None) => (default, Origin::Default),
    }
}

/// Resolves the settings in force: for each field the explicit value, else the source's, else
/// the default.
pub fn resolve(explicit: &Explicit, source: Source<'_>) -> Settings {
    let (reported, readiness) = match source {
        Source::MeshFile(settings) => (
            settings.clone(),
            if settings.static_mesh {
                ReadinessPolicy::StaticMesh
            } else {
                ReadinessPolicy::Snapshot
            },
        ),
        Source::KubernetesNodes { nodes, live } => (
            from_kubernetes_nodes(nodes),
            if live { ReadinessPolicy::Live } else { ReadinessPolicy::Snapshot },
        ),
        Source::KubernetesAgent => (MeshSettings::default(), ReadinessPolicy::Live),
    };
    let (granularity, _) = pick(explicit.granularity, reported.granularity, Granularity::Location);
    let (subnet, subnet_origin) = pick(explicit.subnet, reported.subnet, default_subnet());
    let (port, _) = pick(explicit.port, reported.port, DEFAULT_PORT);
    Settings { granularity, subnet: subnet.network(), subnet_origin, port, readiness }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn node(name: &str, granularity: Option<Granularity>, wireguard_ip: Option<&str>) -> Node {
        Node {
            name: name.into(),
            granularity,
            wireguard_ip: wireguard_ip.map(cidr),
            ..Node::default()
        }
    }

    fn file(granularity: Granularity, subnet: &str, port: u16, static_mesh: bool) -> MeshSettings {
        MeshSettings {
            granularity: Some(granularity),
            subnet: Some(cidr(subnet)),
            port: Some(port),
            static_mesh,
        }
    }

    const NOTHING: Explicit = Explicit { granularity: None, subnet: None, port: None };

    #[test]
    fn with_nothing_given_and_nothing_reported_the_defaults_apply() {
        for source in [
            Source::MeshFile(&MeshSettings::default()),
            Source::KubernetesNodes { nodes: &[], live: true },
            Source::KubernetesAgent,
        ] {
            let s = resolve(&NOTHING, source);
            assert_eq!(
                (s.granularity, s.subnet, s.subnet_origin, s.port),
                (Granularity::Location, cidr("10.4.0.0/16"), Origin::Default, 51820),
                "{source:?}"
            );
        }
    }

    #[test]
    fn a_mesh_files_settings_apply_where_no_flag_is_given() {
        let reported = file(Granularity::Full, "10.9.0.0/16", 51821, false);
        assert_eq!(
            resolve(&NOTHING, Source::MeshFile(&reported)),
            Settings {
                granularity: Granularity::Full,
                subnet: cidr("10.9.0.0/16"),
                subnet_origin: Origin::Source,
                port: 51821,
                readiness: ReadinessPolicy::Snapshot,
            }
        );
    }

    #[test]
    fn each_flag_wins_over_the_mesh_file_on_its_own() {
        let reported = file(Granularity::Full, "10.9.0.0/16", 51821, true);
        let source = Source::MeshFile(&reported);
        let g = resolve(&Explicit { granularity: Some(Granularity::Cross), ..NOTHING }, source);
        assert_eq!(
            (g.granularity, g.subnet, g.port),
            (Granularity::Cross, cidr("10.9.0.0/16"), 51821)
        );
        let s = resolve(&Explicit { subnet: Some(cidr("10.7.0.0/24")), ..NOTHING }, source);
        assert_eq!(
            (s.granularity, s.subnet, s.subnet_origin, s.port),
            (Granularity::Full, cidr("10.7.0.0/24"), Origin::Explicit, 51821)
        );
        let p = resolve(&Explicit { port: Some(4000), ..NOTHING }, source);
        assert_eq!(
            (p.granularity, p.subnet, p.port),
            (Granularity::Full, cidr("10.9.0.0/16"), 4000)
        );
        assert_eq!(p.readiness, ReadinessPolicy::StaticMesh);
    }

    #[test]
    fn a_static_mesh_file_selects_nodes_by_key_only() {
        let reported = MeshSettings { static_mesh: true, ..MeshSettings::default() };
        let s = resolve(&NOTHING, Source::MeshFile(&reported));
        assert_eq!(s.readiness, ReadinessPolicy::StaticMesh);
        assert_eq!(s.readiness_at(5), Readiness::StaticMesh);
    }

    #[test]
    fn kubernetes_nodes_give_the_first_nodes_granularity_and_the_last_wireguard_ips_subnet() {
        let nodes = [
            node("a", Some(Granularity::Full), Some("10.5.0.1/16")),
            node("b", Some(Granularity::Location), Some("10.6.0.2/24")),
            node("c", None, None),
        ];
        let live = resolve(&NOTHING, Source::KubernetesNodes { nodes: &nodes, live: true });
        assert_eq!(
            live,
            Settings {
                granularity: Granularity::Full,
                subnet: cidr("10.6.0.0/24"),
                subnet_origin: Origin::Source,
                port: 51820,
                readiness: ReadinessPolicy::Live,
            }
        );
        assert_eq!(live.readiness_at(7), Readiness::At(7));
        let file = resolve(&NOTHING, Source::KubernetesNodes { nodes: &nodes, live: false });
        assert_eq!(file.readiness, ReadinessPolicy::Snapshot);
        assert_eq!(file.readiness_at(7), Readiness::IgnoringLastSeen);
    }

    #[test]
    fn a_first_node_without_granularity_means_the_default_even_if_later_nodes_have_one() {
        let nodes = [node("a", None, None), node("b", Some(Granularity::Full), None)];
        let s = resolve(&NOTHING, Source::KubernetesNodes { nodes: &nodes, live: true });
        assert_eq!((s.granularity, s.subnet_origin), (Granularity::Location, Origin::Default));
    }

    #[test]
    fn flags_win_over_what_kubernetes_nodes_say() {
        let nodes = [node("a", Some(Granularity::Full), Some("10.5.0.1/16"))];
        let flags = Explicit {
            granularity: Some(Granularity::Location),
            subnet: Some(cidr("10.8.1.9/24")),
            port: Some(6000),
        };
        assert_eq!(
            resolve(&flags, Source::KubernetesNodes { nodes: &nodes, live: true }),
            Settings {
                granularity: Granularity::Location,
                subnet: cidr("10.8.1.0/24"),
                subnet_origin: Origin::Explicit,
                port: 6000,
                readiness: ReadinessPolicy::Live,
            }
        );
    }

    #[test]
    fn the_kubernetes_agent_uses_its_flags_and_the_defaults_only() {
        let flags = Explicit { port: Some(6000), ..NOTHING };
        assert_eq!(
            resolve(&flags, Source::KubernetesAgent),
            Settings {
                granularity: Granularity::Location,
                subnet: cidr("10.4.0.0/16"),
                subnet_origin: Origin::Default,
                port: 6000,
                readiness: ReadinessPolicy::Live,
            }
        );
    }
}
