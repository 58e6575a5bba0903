//! The plan: everything the agent applies on one node, computed from a [`Topology`]:
//! the WireGuard interface and its configuration, routes,
//! policy rules, firewall rules and the tunnel address. `kgctl plan` prints it
//! ([`Plan::to_json_pretty`], [`Plan::to_text`]); `kilo-net-linux` applies it.

use serde::Serialize;
use serde::ser::Serializer;

use crate::cidr::Allocator;
use crate::firewall::{Entry, RuleSet, encapsulation_rules};
use crate::routes::{Encapsulator, EncapsulatorConfig, Interfaces, Route, Rule};
use crate::wireguard::{Config, InterfaceConfig};
use crate::{Cidr, Compatibility, Encapsulation, Topology};

mod text;

/// The agent's settings that shape a plan (upstream `kg` flags of the same names).
///
/// Built with [`PlanOptions::new`], then fields set as needed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlanOptions {
    /// The local node's name (`--hostname`); the topology does not carry it.
    pub node: String,
    /// The device names: WireGuard (`--interface`), private, and tunnel.
    pub interfaces: Interfaces,
    /// `--local`: route to the other nodes of the location over the private network.
    pub local: bool,
    /// `--cni`: Kilo manages the pod network (NAT jump for the pod subnet).
    pub cni: bool,
    /// `--iptables-forward-rules`: accept forwarded pod traffic in the `FORWARD` chain.
    pub iptables_forward_rules: bool,
    /// `--encapsulate`.
    pub encapsulation: Encapsulation,
    /// `--compatibility` (none means Kilo's own IPIP).
    pub compatibility: Option<Compatibility>,
}

impl PlanOptions {
    /// The options of node `node` with these interfaces, and the rest as `kg`'s flags default:
    /// `--local` and `--cni` on, `--iptables-forward-rules` off, `--encapsulate always`, no
    /// compatibility mode.
    pub fn new(node: impl Into<String>, interfaces: Interfaces) -> PlanOptions {
        PlanOptions {
            node: node.into(),
            interfaces,
            local: true,
            cni: true,
            iptables_forward_rules: false,
            encapsulation: Encapsulation::Always,
            compatibility: None,
        }
    }
}

/// The WireGuard interface's desired state, for both roles: everything the host sets on it.
///
/// | | leader | non-leader (contract C8) |
/// |---|---|---|
/// | [`wireguard`](PlanInterface::wireguard) | the segment's configuration | the node's key and listen port, no peers |
/// | [`up`](PlanInterface::up) | `true` | `false` |
/// | [`address`](PlanInterface::address) | its WireGuard CIDR, the only address | `None`: addresses left as they are |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanInterface {
    /// The device name.
    pub name: String,
    /// When set, the interface's only address: the leader's WireGuard CIDR (`10.4.0.1/16`).
    /// `None` on non-leaders: the host leaves the link's addresses as they are (as upstream;
    /// the link is down).
    pub address: Option<Cidr>,
    /// In a dual-stack mesh, the leader's IPv6 WireGuard CIDR (`fd04::1/64`), the interface's
    /// other address besides link-local ones.
    pub address6: Option<Cidr>,
    /// Whether the link is up: leaders only; a non-leader's link is down.
    pub up: bool,
    /// The configuration the WireGuard device must hold, DNS endpoints not yet resolved: the
    /// `[Interface]` section (private key, listen port) in both roles, and the peers of a
    /// leader only (a non-leader has none, contract C8). The host applies it as it is, after
    /// resolving DNS endpoints ([`crate::dns`]).
    pub wireguard: Config,
}

impl PlanInterface {
    /// The addresses the interface must hold (besides link-local ones): `address`, then
    /// `address6`; empty on non-leaders.
    pub fn addresses(&self) -> Vec<Cidr> {
        self.address.into_iter().chain(self.address6).collect()
    }
}

/// Everything the agent applies on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The node's name.
    pub node: String,
    /// The node's segment key (`location:1`, `node:d`).
    pub segment: String,
    /// Whether the node leads its segment.
    pub leader: bool,
    /// The WireGuard interface.
    pub interface: PlanInterface,
    /// The segment's WireGuard configuration as `kgctl plan` shows it: leaders only, `None` on
    /// non-leaders (only a segment's leader runs WireGuard). What the device gets, in both
    /// roles, is [`PlanInterface::wireguard`].
    pub wireguard: Option<Config>,
    /// Routes, in upstream's order.
    pub routes: Vec<Route>,
    /// Policy rules, in upstream's order.
    pub rules: Vec<Rule>,
    /// Firewall rules: encapsulation rules first, then the topology's.
    pub firewall: RuleSet,
    /// The encapsulator and strategy the routes were computed with.
    pub encapsulation: EncapsulatorConfig,
    /// The IPIP tunnel's address (first IP of the local (IPv4) pod CIDR, /32), when the strategy is not
    /// `never`, `--local` is set and the encapsulator owns an IPIP tunnel (IPIP, Cilium).
    pub tunnel_address: Option<Cidr>,
    /// What was left out of the plan and why (allowed IPs refused by the topology, routes the
    /// kernel would refuse), for the agent to log and `kgctl` to show. Not applied.
    pub warnings: Vec<String>,
}

impl Plan {
    /// The plan of the topology's local node. `wireguard` is the local interface's
    /// configuration (`Topology::conf_for_device()`), kept only when the node leads its
    /// segment; see [`PlanInterface`] for what each role's interface gets.
    pub fn new(topology: &Topology, wireguard: Option<Config>, options: &PlanOptions) -> Plan {
        let leader = topology.leader;
        let encapsulator =
            Encapsulator::select(options.compatibility, topology.private_ip.is_some());
        let enc = EncapsulatorConfig { encapsulator, strategy: options.encapsulation };
        let encapsulating = options.encapsulation != Encapsulation::Never && options.local;
        let (routes, rules, route_warnings) =
            topology.routes_checked(&options.interfaces, options.local, &enc);
        let mut warnings = topology.warnings.clone();
        warnings.extend(route_warnings);
        let mut firewall = if encapsulating {
            encapsulation_rules(encapsulator, &topology.encapsulation_ips())
        } else {
            RuleSet::default()
        };
        firewall.extend(topology.rules(options.cni, options.iptables_forward_rules));
        let tunnel_address = if encapsulating && encapsulator.has_ipip_tunnel() {
            // IPIP carries IPv4: a dual-stack node's tunnel takes its IPv4 pod CIDR's first IP.
            let ipv4 = topology.subnets.iter().find(|s| s.is_ipv4());
            ipv4.or(topology.subnets.first())
                .and_then(|s| Allocator::new(*s).next_ip())
                .map(|c| Cidr::host(c.addr()))
        } else {
            None
        };
        let wireguard = if leader { wireguard } else { None };
        Plan {
            node: options.node.clone(),
            segment: topology.location.clone(),
            leader,
            interface: PlanInterface {
                name: options.interfaces.kilo.clone(),
                address: leader.then_some(topology.wireguard_cidr),
                address6: topology.wireguard_cidr6.filter(|_| leader),
                up: leader,
                wireguard: device_config(topology, wireguard.as_ref()),
            },
            wireguard,
            routes,
            rules,
            firewall,
            encapsulation: enc,
            tunnel_address,
            warnings,
        }
    }

    /// The `kgctl plan -o json` text (contract 5): keys in the contract's order, `null` where a
    /// value is absent, two-space indentation, no trailing newline.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
    }

    /// The `kgctl plan -o text` view for people: headings Interface, WireGuard peers, Routes
    /// (`ip route` syntax), Rules (`ip rule` syntax) and Firewall (`iptables-restore` input).
    pub fn to_text(&self) -> String {
        text::render(self)
    }
}

/// What the WireGuard device holds (see [`PlanInterface`]): the leader's configuration, else no
/// peers; the `[Interface]` section is the configuration's, else the node's own key and port.
fn device_config(topology: &Topology, leader: Option<&Config>) -> Config {
    let own = InterfaceConfig {
        private_key: Some(topology.key.clone()),
        listen_port: Some(topology.port),
    };
    match leader {
        Some(config) => Config {
            interface: Some(config.interface.clone().unwrap_or(own)),
            peers: config.peers.clone(),
        },
        None => Config { interface: Some(own), peers: Vec::new() },
    }
}

#[derive(Serialize)]
struct JsonPlan<'a> {
    node: &'a str,
    segment: &'a str,
    leader: bool,
    interface: JsonInterface<'a>,
    wireguard: Option<JsonWireGuard>,
    routes: &'a [Route],
    rules: &'a [Rule],
    firewall: JsonFirewall,
}

#[derive(Serialize)]
struct JsonInterface<'a> {
    name: &'a str,
    address: Option<Cidr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    address6: Option<Cidr>,
    up: bool,
}

#[derive(Serialize)]
struct JsonWireGuard {
    listen_port: Option<u16>,
    peers: Vec<JsonPeer>,
}

/// What `-o json` shows in place of a preshared key.
const HIDDEN: &str = "(hidden)";

#[derive(Serialize)]
struct JsonPeer {
    public_key: String,
    endpoint: Option<String>,
    allowed_ips: Vec<Cidr>,
    persistent_keepalive: u16,
    preshared_key: Option<String>,
}

#[derive(Serialize)]
struct JsonFirewall {
    append: Vec<JsonEntry>,
    prepend: Vec<JsonEntry>,
}

#[derive(Serialize)]
struct JsonEntry {
    family: crate::firewall::Family,
    rule: String,
}

fn json_entries(entries: &[Entry]) -> Vec<JsonEntry> {
    entries.iter().map(|e| JsonEntry { family: e.family(), rule: e.identity() }).collect()
}

fn json_wireguard(c: &Config) -> JsonWireGuard {
    JsonWireGuard {
        listen_port: c.interface.as_ref().and_then(|i| i.listen_port),
        peers: c
            .peers
            .iter()
            .map(|p| JsonPeer {
                public_key: p.public_key.to_string(),
                endpoint: p.endpoint.as_ref().map(|e| e.to_string()).filter(|s| !s.is_empty()),
                allowed_ips: p.allowed_ips.clone(),
                persistent_keepalive: p.persistent_keepalive,
                // Hidden as in the text view: a plan is for reading and sharing, not a secret.
                preshared_key: p.preshared_key.map(|_| HIDDEN.to_string()),
            })
            .collect(),
    }
}

impl Serialize for Plan {
    /// The shape of contract 5 (`kgctl plan -o json`).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        JsonPlan {
            node: &self.node,
            segment: &self.segment,
            leader: self.leader,
            interface: JsonInterface {
                name: &self.interface.name,
                address: self.interface.address,
                address6: self.interface.address6,
                up: self.interface.up,
            },
            wireguard: self.wireguard.as_ref().map(json_wireguard),
            routes: &self.routes,
            rules: &self.rules,
            firewall: JsonFirewall {
                append: json_entries(&self.firewall.append),
                prepend: json_entries(&self.firewall.prepend),
            },
        }
        .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::fixtures;
    use crate::{Granularity, TopologyInput};

    fn topology(hostname: &str) -> Topology {
        Topology::new(TopologyInput {
            nodes: &fixtures::nodes(),
            peers: &fixtures::peers(),
            granularity: Granularity::Location,
            hostname,
            port: 51821,
            key: fixtures::private_key(),
            subnet: fixtures::subnet(),
            subnet6: None,
            service_cidrs: &[],
            persistent_keepalive: Duration::ZERO,
        })
        .unwrap()
    }

    fn options(node: &str) -> PlanOptions {
        PlanOptions {
            node: node.into(),
            interfaces: Interfaces {
                kilo: "kilo0".into(),
                private: "eth0".into(),
                tunnel: "tunl0".into(),
            },
            local: true,
            cni: true,
            iptables_forward_rules: false,
            encapsulation: Encapsulation::Always,
            compatibility: None,
        }
    }

    fn own_interface() -> Option<InterfaceConfig> {
        Some(InterfaceConfig {
            private_key: Some(fixtures::private_key()),
            listen_port: Some(51821),
        })
    }

    #[test]
    fn a_leaders_interface_holds_the_segments_configuration_its_address_and_an_up_link() {
        let t = topology("b");
        assert!(t.leader);
        let conf = t.conf_for_device();
        let plan = Plan::new(&t, Some(conf.clone()), &options("b"));
        assert_eq!(
            plan.interface,
            PlanInterface {
                name: "kilo0".into(),
                address: Some("10.4.0.2/16".parse().unwrap()),
                address6: None,
                up: true,
                wireguard: conf.clone(),
            }
        );
        assert_eq!(conf.interface, own_interface());
        assert!(!conf.peers.is_empty());
        assert_eq!(plan.wireguard, Some(conf));
    }

    #[test]
    fn a_non_leaders_interface_holds_its_own_key_and_port_no_peers_no_address_and_is_down() {
        let t = topology("c");
        assert!(!t.leader);
        // Even handed a configuration, a non-leader gets no peers (contract C8).
        for given in [None, Some(t.conf_for_device())] {
            let plan = Plan::new(&t, given, &options("c"));
            assert_eq!(
                plan.interface,
                PlanInterface {
                    name: "kilo0".into(),
                    address: None,
                    address6: None,
                    up: false,
                    wireguard: Config { interface: own_interface(), peers: Vec::new() },
                }
            );
            assert_eq!(plan.wireguard, None, "kgctl plan shows no configuration");
        }
    }

    #[test]
    fn a_leaders_configuration_without_an_interface_section_gets_the_nodes_own() {
        let t = topology("b");
        let peers = t.conf_for_device().peers;
        let given = Config { interface: None, peers: peers.clone() };
        let plan = Plan::new(&t, Some(given.clone()), &options("b"));
        assert_eq!(plan.interface.wireguard, Config { interface: own_interface(), peers });
        assert_eq!(plan.wireguard, Some(given));
    }
}
