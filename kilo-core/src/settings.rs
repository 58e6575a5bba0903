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
//! - the Kubernetes nodes as `kgctl` reads them (as upstream's kgctl does): the granularity annotation
//!   of the **first** listed node, and the subnet of the `wireguard-ip` annotation (masked to its
//!   network) of the **last** listed node that has one, ready or not; a port is never derived.
//!   Upstream's `kgctl connect` takes the first node's `wireguard-ip` instead; the two agree
//!   whenever the nodes agree on the subnet, and kilo-rs applies this one rule to every command;
//! - the Kubernetes agent (`kg`, upstream 4.1): its own flags and the defaults, nothing derived
//!   from other nodes (each agent publishes its WireGuard IP from its own `--subnet`).
//!
//! A dump of Kubernetes objects read from a file (`kubectl get nodes,peers -o yaml`) is read raw
//! by the file backend ([`KubernetesDump`]); [`KubernetesDump::settle`] turns it into what every
//! command sees: the settings derived from its nodes, and the nodes and peers that are not ready
//! left out with the reason ([`not_ready`], [`peer_not_ready`]).

use crate::agent::ReadinessPolicy;
use crate::backend::MeshSettings;
use crate::mesh::READINESS_WINDOW_SECS;
use crate::{Cidr, Endpoint, Granularity, Invalid, Node, ObjectKind, Peer, Readiness, Snapshot};

/// The default listen port.
pub const DEFAULT_PORT: u16 = 51820;

/// The default WireGuard subnet, `10.4.0.0/16`.
pub fn default_subnet() -> Cidr {
    Cidr::new(std::net::Ipv4Addr::new(10, 4, 0, 0).into(), 16).unwrap_or_else(|| unreachable!())
}

/// The settings given explicitly (on the command line or by an embedder); `None` = not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Explicit {
    /// `--mesh-granularity` (`None` also for kgctl's `auto`).
    pub granularity: Option<Granularity>,
    /// `--subnet` (the IPv4 one when given once per family).
    pub subnet: Option<Cidr>,
    /// The IPv6 `--subnet` when `--subnet` is given once per family (dual stack).
    pub subnet6: Option<Cidr>,
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
    /// The IPv6 WireGuard subnet of a dual-stack mesh (then [`Settings::subnet`] is IPv4),
    /// masked to its network.
    pub subnet6: Option<Cidr>,
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
        subnet: nodes.iter().rev().find_map(|n| n.wireguard_ip).map(|c| c.network()),
        subnet6: nodes
            .iter()
            .rev()
            .find_map(|n| n.wireguard_ip6)
            .filter(|c| !c.is_ipv4())
            .map(|c| c.network()),
        port: None,
        static_mesh: false,
    }
}

/// What a node lacks to take part in the mesh under `readiness`, as the message of its
/// [`Invalid`] entry (`not ready: it has no endpoint (…), no WireGuard key (…)`); `None` when it
/// takes part. `issues` are the node's annotations that were ignored, appended to the message.
pub fn not_ready<'a>(
    node: &Node,
    readiness: Readiness,
    issues: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    if node.is_ready(readiness) {
        return None;
    }
    let mut missing = Vec::new();
    let upstream = !matches!(readiness, Readiness::StaticMesh);
    if upstream && !node.endpoint.as_ref().is_some_and(Endpoint::is_ready) {
        missing.push("endpoint (kilo.squat.ai/endpoint or force-endpoint)".to_string());
    }
    if node.key.is_zero() {
        missing.push("WireGuard key (kilo.squat.ai/key)".to_string());
    }
    if upstream && node.subnets.is_empty() {
        missing.push("pod CIDR (spec.podCIDR)".to_string());
    }
    if let Readiness::At(now) = readiness
        && now.saturating_sub(node.last_seen) >= READINESS_WINDOW_SECS
    {
        missing.push(format!(
            "check-in in the last {READINESS_WINDOW_SECS} s (kilo.squat.ai/last-seen)"
        ));
    }
    let mut message = format!("not ready: it has no {}", missing.join(", no "));
    for issue in issues {
        message.push_str("; ");
        message.push_str(issue);
    }
    Some(message)
}

/// Why a peer does not take part in the mesh (upstream's readiness), as the message of its
/// [`Invalid`] entry; `None` when it takes part.
pub fn peer_not_ready(peer: &Peer) -> Option<&'static str> {
    if peer.public_key.is_zero() {
        Some("not ready: publicKey is the all-zero key")
    } else if peer.allowed_ips.is_empty() {
        Some("not ready: allowedIPs is empty")
    } else {
        None
    }
}

/// One object of a dump of Kubernetes objects, as the file backend read it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[expect(
    clippy::large_enum_variant,
    reason = "a node is moved once per event; boxing would allocate for every event"
)]
pub enum Listed {
    /// A node that translated, ready or not.
    Node(Node),
    /// A peer that translated, ready or not.
    Peer(Peer),
    /// An object the backend could not read (another kind, no name, a repeated name, a peer
    /// that fails upstream's `Validate()`), with the reason.
    Unread(Invalid),
}

/// A dump of Kubernetes objects (`kubectl get nodes,peers -o yaml` saved to a file) as the file
/// backend read it, deciding nothing: every object in listing order, and the annotations it
/// ignored because they do not parse (their nodes kept). [`KubernetesDump::settle`] makes it
/// what every command reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KubernetesDump {
    /// The objects, in listing order (items of a `List` in place).
    pub objects: Vec<Listed>,
    /// Node annotations that were ignored, by node name, in listing order.
    pub ignored: Vec<Invalid>,
}

impl KubernetesDump {
    /// The snapshot every command reads from the dump:
    ///
    /// - the settings derived from all its nodes, ready or not ([`from_kubernetes_nodes`]);
    /// - nodes that are not ready without the last-seen check ([`Readiness::IgnoringLastSeen`]:
    ///   a file is a snapshot) and peers that are not ready left out, each with an [`Invalid`]
    ///   entry saying what it lacks ([`not_ready`], with the node's ignored annotations;
    ///   [`peer_not_ready`]), in listing order among the objects the backend could not read.
    pub fn settle(self) -> Snapshot {
        let KubernetesDump { objects, ignored } = self;
        let mut snapshot = Snapshot::default();
        let mut all_nodes = Vec::new();
        for object in objects {
            match object {
                Listed::Node(node) => {
                    let issues = ignored
                        .iter()
                        .filter(|i| i.kind == ObjectKind::Node && i.name == node.name)
                        .map(|i| i.message.as_str());
                    match not_ready(&node, Readiness::IgnoringLastSeen, issues) {
                        Some(message) => snapshot.invalid.push(Invalid {
                            kind: ObjectKind::Node,
                            name: node.name.clone(),
                            message,
                        }),
                        None => snapshot.nodes.push(node.clone()),
                    }
                    all_nodes.push(node);
                }
                Listed::Peer(peer) => match peer_not_ready(&peer) {
                    Some(message) => snapshot.invalid.push(Invalid {
                        kind: ObjectKind::Peer,
                        name: peer.name,
                        message: message.to_string(),
                    }),
                    None => snapshot.peers.push(peer),
                },
                Listed::Unread(invalid) => snapshot.invalid.push(invalid),
            }
        }
        snapshot.settings = from_kubernetes_nodes(&all_nodes);
        snapshot.ignored = ignored;
        snapshot
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
    // The ranges are one value: explicit ones replace the source's, both families at once.
    let explicit_ranges = explicit.subnet.map(|s| (s, explicit.subnet6));
    let reported_ranges = reported.subnet.map(|s| (s, reported.subnet6));
    let ((subnet, subnet6), subnet_origin) =
        pick(explicit_ranges, reported_ranges, (default_subnet(), None));
    let subnet6 = subnet6.filter(|s6| s6.is_ipv4() != subnet.is_ipv4()).map(|c| c.network());
    let (port, _) = pick(explicit.port, reported.port, DEFAULT_PORT);
    Settings { granularity, subnet: subnet.network(), subnet6, subnet_origin, port, readiness }
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
            subnet6: None,
            port: Some(port),
            static_mesh,
        }
    }

    const NOTHING: Explicit =
        Explicit { granularity: None, subnet: None, subnet6: None, port: None };

    #[test]
    fn dual_stack_ranges_resolve_as_one_value_ipv4_first() {
        let v6 = |t: &str| Some(cidr(t));
        // The source's two ranges (a mesh file), masked.
        let mut reported = file(Granularity::Location, "10.9.0.0/16", 51820, false);
        reported.subnet6 = v6("fd09::1/64");
        let s = resolve(&NOTHING, Source::MeshFile(&reported));
        assert_eq!(
            (s.subnet, s.subnet6, s.subnet_origin),
            (cidr("10.9.0.0/16"), v6("fd09::/64"), Origin::Source)
        );
        // An explicit `--subnet` replaces both: one IPv4 range is an IPv4-only mesh.
        let explicit = Explicit { subnet: Some(cidr("10.4.0.0/16")), ..NOTHING };
        let s = resolve(&explicit, Source::MeshFile(&reported));
        assert_eq!(
            (s.subnet, s.subnet6, s.subnet_origin),
            (cidr("10.4.0.0/16"), None, Origin::Explicit)
        );
        // A second range of the first's family is ignored.
        let explicit =
            Explicit { subnet: Some(cidr("10.4.0.0/16")), subnet6: v6("10.5.0.0/16"), ..NOTHING };
        assert_eq!(resolve(&explicit, Source::KubernetesAgent).subnet6, None);
        // From Kubernetes nodes: the last published `wireguard-ip6`, IPv6 only.
        let nodes = [
            Node {
                wireguard_ip: Some(cidr("10.4.0.1/16")),
                wireguard_ip6: v6("fd04::1/64"),
                ..Node::default()
            },
            Node { wireguard_ip: Some(cidr("10.4.0.2/16")), ..Node::default() },
        ];
        let s = resolve(&NOTHING, Source::KubernetesNodes { nodes: &nodes, live: true });
        assert_eq!((s.subnet, s.subnet6), (cidr("10.4.0.0/16"), v6("fd04::/64")));
    }

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
                subnet6: None,
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
                subnet6: None,
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
            subnet6: None,
            port: Some(6000),
        };
        assert_eq!(
            resolve(&flags, Source::KubernetesNodes { nodes: &nodes, live: true }),
            Settings {
                granularity: Granularity::Location,
                subnet: cidr("10.8.1.0/24"),
                subnet6: None,
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
                subnet6: None,
                subnet_origin: Origin::Default,
                port: 6000,
                readiness: ReadinessPolicy::Live,
            }
        );
    }

    fn ready(name: &str, wireguard_ip: Option<&str>) -> Node {
        Node {
            endpoint: Some("10.1.0.1:51820".parse().unwrap()),
            key: crate::fixtures::key(1),
            subnets: vec![cidr("10.2.1.0/24")],
            last_seen: i64::MAX,
            ..node(name, None, wireguard_ip)
        }
    }

    #[test]
    fn not_ready_names_what_a_node_lacks_under_each_readiness() {
        let bare = Node { last_seen: 100, ..node("a", None, None) };
        assert_eq!(
            not_ready(&bare, Readiness::IgnoringLastSeen, ["kilo.squat.ai/key=\"x\": bad"]),
            Some(
                "not ready: it has no endpoint (kilo.squat.ai/endpoint or force-endpoint), no \
                 WireGuard key (kilo.squat.ai/key), no pod CIDR (spec.podCIDR); \
                 kilo.squat.ai/key=\"x\": bad"
                    .into()
            )
        );
        assert_eq!(
            not_ready(&bare, Readiness::StaticMesh, []),
            Some("not ready: it has no WireGuard key (kilo.squat.ai/key)".into())
        );
        let stale = Node { last_seen: 100, ..ready("a", None) };
        assert_eq!(not_ready(&stale, Readiness::At(159), []), None);
        assert_eq!(
            not_ready(&stale, Readiness::At(160), []),
            Some("not ready: it has no check-in in the last 60 s (kilo.squat.ai/last-seen)".into())
        );
        assert_eq!(not_ready(&stale, Readiness::IgnoringLastSeen, []), None);
    }

    #[test]
    fn peer_not_ready_names_the_zero_key_first_then_missing_allowed_ips() {
        let ok = Peer {
            public_key: crate::fixtures::key(5),
            allowed_ips: vec![cidr("10.5.0.1/32")],
            ..Peer::default()
        };
        assert_eq!(peer_not_ready(&ok), None);
        let no_ips = Peer { allowed_ips: Vec::new(), ..ok.clone() };
        assert_eq!(peer_not_ready(&no_ips), Some("not ready: allowedIPs is empty"));
        assert_eq!(
            peer_not_ready(&Peer::default()),
            Some("not ready: publicKey is the all-zero key")
        );
    }

    #[test]
    fn a_settled_dump_gets_settings_from_all_its_nodes_and_leaves_out_what_is_not_ready_in_order() {
        let first = Node { granularity: Some(Granularity::Full), ..ready("a", None) };
        let not_ready_last = Node { endpoint: None, ..ready("b", Some("10.9.0.7/24")) };
        let peer_ok = Peer {
            name: "p".into(),
            public_key: crate::fixtures::key(5),
            allowed_ips: vec![cidr("10.5.0.1/32")],
            ..Peer::default()
        };
        let peer_bad = Peer { name: "q".into(), allowed_ips: Vec::new(), ..peer_ok.clone() };
        let earlier =
            Invalid { kind: ObjectKind::Other, name: "web".into(), message: "kind \"Pod\"".into() };
        let issue = Invalid {
            kind: ObjectKind::Node,
            name: "b".into(),
            message: "kilo.squat.ai/location: bad".into(),
        };
        let dump = KubernetesDump {
            objects: vec![
                Listed::Peer(peer_bad),
                Listed::Node(first.clone()),
                Listed::Unread(earlier.clone()),
                Listed::Node(not_ready_last),
                Listed::Peer(peer_ok.clone()),
            ],
            ignored: vec![issue.clone()],
        };
        assert_eq!(
            dump.settle(),
            Snapshot {
                settings: MeshSettings {
                    granularity: Some(Granularity::Full),
                    subnet: Some(cidr("10.9.0.0/24")),
                    subnet6: None,
                    port: None,
                    static_mesh: false,
                },
                nodes: vec![first],
                peers: vec![peer_ok],
                invalid: vec![
                    Invalid {
                        kind: ObjectKind::Peer,
                        name: "q".into(),
                        message: "not ready: allowedIPs is empty".into(),
                    },
                    earlier,
                    Invalid {
                        kind: ObjectKind::Node,
                        name: "b".into(),
                        message: "not ready: it has no endpoint (kilo.squat.ai/endpoint or \
                                  force-endpoint); kilo.squat.ai/location: bad"
                            .into(),
                    },
                ],
                ignored: vec![issue],
            }
        );
    }
}
