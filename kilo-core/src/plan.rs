//! The plan: everything the agent applies on one node, computed from a [`Topology`]
//! (upstream-kilo.md 10.3 steps 9-12): the WireGuard interface and its configuration, routes,
//! policy rules, firewall rules and the tunnel address. `kgctl plan` prints it
//! ([`Plan::to_json_pretty`], [`Plan::to_text`]); `kilo-net-linux` applies it.

use serde::Serialize;
use serde::ser::Serializer;

use crate::cidr::Allocator;
use crate::firewall::{Entry, RuleSet, encapsulation_rules};
use crate::routes::{Encapsulator, EncapsulatorConfig, Interfaces, Route, Rule};
use crate::wireguard::Config;
use crate::{Cidr, Compatibility, Encapsulation, Topology};

mod text;

/// The agent's settings that shape a plan (upstream `kg` flags of the same names).
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// The WireGuard interface's desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanInterface {
    /// The device name.
    pub name: String,
    /// Its only address: the leader's WireGuard CIDR (`10.4.0.1/16`); `None` on non-leaders.
    pub address: Option<Cidr>,
    /// Whether the link is up (leaders only; non-leaders keep it down with no peers).
    pub up: bool,
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
    /// The WireGuard configuration (leaders only).
    pub wireguard: Option<Config>,
    /// Routes, in upstream's order.
    pub routes: Vec<Route>,
    /// Policy rules, in upstream's order.
    pub rules: Vec<Rule>,
    /// Firewall rules: encapsulation rules first, then the topology's.
    pub firewall: RuleSet,
    /// The encapsulator and strategy the routes were computed with.
    pub encapsulation: EncapsulatorConfig,
    /// The IPIP tunnel's address (first IP of the local pod CIDR, /32), when the strategy is not
    /// `never`, `--local` is set and the encapsulator owns an IPIP tunnel (IPIP, Cilium).
    pub tunnel_address: Option<Cidr>,
    /// What was left out of the plan and why (allowed IPs refused by the topology, routes the
    /// kernel would refuse), for the agent to log and `kgctl` to show. Not applied.
    pub warnings: Vec<String>,
}

impl Plan {
    /// The plan of the topology's local node. `wireguard` is the local interface's
    /// configuration (`Topology::conf()`), kept only when the node leads its segment.
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
            topology
                .subnets
                .first()
                .and_then(|s| Allocator::new(*s).next_ip())
                .map(|c| Cidr::host(c.addr()))
        } else {
            None
        };
        Plan {
            node: options.node.clone(),
            segment: topology.location.clone(),
            leader,
            interface: PlanInterface {
                name: options.interfaces.kilo.clone(),
                address: leader.then_some(topology.wireguard_cidr),
                up: leader,
            },
            wireguard: if leader { wireguard } else { None },
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
