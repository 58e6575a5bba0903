//! The rule sets: `Topology::rules` and the encapsulators' `KILO-IPIP`
//! rules (8.3).

use std::net::IpAddr;

use super::{Address, Entry, Family, Match, Order, RuleSet};
use crate::routes::Encapsulator;
use crate::{Cidr, Topology};

/// The protocol name upstream's cgo-free release builds pass to `-p` for IP protocol 4.
pub const IPIP_PROTOCOL: &str = "ipencap";

const NAT_CHAIN: &str = "KILO-NAT";
const IPIP_CHAIN: &str = "KILO-IPIP";

fn fam(c: &Cidr) -> Family {
    Family::of(c.addr())
}

/// A typed rule `[-s|-d CIDR] -m comment --comment C -j TARGET`, in the CIDR's family.
fn addressed(
    table: &'static str,
    chain: &'static str,
    a: Address,
    comment: &'static str,
    target: &'static str,
) -> Entry {
    let m = Match { protocol: None, address: Some(a), comment, target, order: Order::AddressFirst };
    Entry::typed(fam(&a.cidr()), table, chain, m)
}

/// The `KILO-IPIP` rules of an encapsulator (8.3): IPIP traffic is accepted only from
/// `private_ips` (each as a /32 or /128) and dropped otherwise. Flannel and Noop add none.
pub fn encapsulation_rules(encapsulator: Encapsulator, private_ips: &[IpAddr]) -> RuleSet {
    let mut rules = RuleSet::default();
    if !encapsulator.has_ipip_tunnel() {
        return rules;
    }
    let both = [Family::Ipv4, Family::Ipv6];
    for f in both {
        rules.append.push(Entry::chain(f, "filter", IPIP_CHAIN));
    }
    for (comment, target) in
        [("Kilo: jump to IPIP chain", IPIP_CHAIN), ("Kilo: reject other IPIP traffic", "DROP")]
    {
        for f in both {
            let m = Match {
                protocol: Some(IPIP_PROTOCOL),
                address: None,
                comment,
                target,
                order: Order::AddressFirst,
            };
            rules.append.push(Entry::typed(f, "filter", "INPUT", m));
        }
    }
    rules.prepend.reserve(private_ips.len());
    for ip in private_ips {
        let host = Address::Source(Cidr::host(*ip));
        rules.prepend.push(addressed(
            "filter",
            IPIP_CHAIN,
            host,
            "Kilo: allow IPIP traffic",
            "ACCEPT",
        ));
    }
    rules
}

/// The comments of a `FORWARD` pair: packets from, and to, what the CIDR is.
#[derive(Clone, Copy)]
enum Forwarded {
    PodSubnet,
    AllowedLocationIps,
    PrivateIps,
    NodePodSubnet,
}

impl Forwarded {
    const fn comments(self) -> (&'static str, &'static str) {
        match self {
            Forwarded::PodSubnet => (
                "Kilo: forward packets from the pod subnet",
                "Kilo: forward packets to the pod subnet",
            ),
            Forwarded::AllowedLocationIps => (
                "Kilo: forward packets from allowed location IPs",
                "Kilo: forward packets to allowed location IPs",
            ),
            Forwarded::PrivateIps => {
                ("Kilo: forward packets from private IPs", "Kilo: forward packets to private IPs")
            }
            Forwarded::NodePodSubnet => (
                "Kilo: forward packets from the node's pod subnet",
                "Kilo: forward packets to the node's pod subnet",
            ),
        }
    }
}

fn forward(a: Address, comment: &'static str) -> Entry {
    let m = Match {
        protocol: None,
        address: Some(a),
        comment,
        target: "ACCEPT",
        order: Order::CommentFirst,
    };
    Entry::typed(fam(&a.cidr()), "filter", "FORWARD", m)
}

fn forward_pair(out: &mut Vec<Entry>, c: &Cidr, what: Forwarded) {
    let (from, to) = what.comments();
    out.push(forward(Address::Source(*c), from));
    out.push(forward(Address::Destination(*c), to));
}

fn nat_return(c: &Cidr, comment: &'static str) -> Entry {
    addressed("nat", NAT_CHAIN, Address::Destination(*c), comment, "RETURN")
}

fn jump_nat(a: Address) -> Entry {
    addressed("nat", "POSTROUTING", a, "Kilo: jump to NAT chain", NAT_CHAIN)
}

impl Topology {
    /// The private IPs whose IPIP traffic the local node accepts (the input of
    /// [`encapsulation_rules`]): those of the local segment when it is a `location:` segment
    /// (none in `full` granularity), and in `cross` granularity those of every node sharing the
    /// local node's location (they reach us over the private network).
    pub fn encapsulation_ips(&self) -> Vec<IpAddr> {
        self.segments
            .iter()
            .filter(|s| {
                (s.location == self.location && s.location.starts_with("location:"))
                    || (self.node_location.is_some() && s.node_location == self.node_location)
            })
            .flat_map(|s| s.members.iter().filter_map(|m| m.internal_ip.map(|c| c.addr())))
            .collect()
    }

    /// Upstream's `Topology.Rules(cni, iptablesForwardRules)`: the
    /// `KILO-NAT` chain, the jumps into it, the destinations that are not masqueraded and, with
    /// `cni` and `forward`, `FORWARD` accept rules. Rule strings are upstream's, verbatim (peer
    /// allowed IPs keep their host bits here: iptables normalises them itself).
    pub fn rules(&self, cni: bool, forward: bool) -> RuleSet {
        let mut rules = RuleSet::default();
        let allowed: usize = self.segments.iter().map(|s| s.allowed_ips.len() + 1).sum();
        let peers: usize = self.peers.iter().map(|p| 2 * p.allowed_ips.len()).sum();
        rules.prepend.reserve(allowed + peers + 8);
        rules.append.push(Entry::chain(Family::Ipv4, "nat", NAT_CHAIN));
        rules.append.push(Entry::chain(Family::Ipv6, "nat", NAT_CHAIN));
        let pre = &mut rules.prepend;
        if cni {
            for s in &self.subnets {
                let a = Address::Source(*s);
                pre.push(addressed(
                    "nat",
                    "POSTROUTING",
                    a,
                    "Kilo: jump to KILO-NAT chain",
                    NAT_CHAIN,
                ));
            }
            if forward && self.leader {
                for seg in self.segments.iter().filter(|s| s.location == self.location) {
                    for c in seg.members.iter().flat_map(|m| &m.subnets) {
                        forward_pair(pre, c, Forwarded::PodSubnet);
                    }
                    for c in &seg.allowed_location_ips {
                        forward_pair(pre, c, Forwarded::AllowedLocationIps);
                    }
                    for ip in
                        seg.members.iter().flat_map(|m| m.internal_ip.iter().chain(&m.internal_ip6))
                    {
                        forward_pair(pre, &Cidr::host(ip.addr()), Forwarded::PrivateIps);
                    }
                }
            } else if forward {
                for s in &self.subnets {
                    forward_pair(pre, s, Forwarded::NodePodSubnet);
                }
            }
        }
        for seg in &self.segments {
            for wg in seg.wireguard_ip.iter().chain(&seg.wireguard_ip6) {
                pre.push(nat_return(
                    &Cidr::host(*wg),
                    "Kilo: do not NAT packets destined for WireGuared IPs",
                ));
            }
            for aip in &seg.allowed_ips {
                pre.push(nat_return(aip, "Kilo: do not NAT packets destined for known IPs"));
            }
            if seg.location == self.location {
                for alip in &seg.allowed_location_ips {
                    pre.push(jump_nat(Address::Destination(*alip)));
                }
            }
        }
        for peer in &self.peers {
            for aip in &peer.allowed_ips {
                pre.push(jump_nat(Address::Source(*aip)));
                pre.push(nat_return(aip, "Kilo: do not NAT packets destined for peers"));
            }
        }
        for s in &self.service_cidrs {
            rules.append.push(nat_return(s, "Kilo: do not NAT packets destined for service CIDRs"));
        }
        for f in [Family::Ipv4, Family::Ipv6] {
            let m = Match {
                protocol: None,
                address: None,
                comment: "Kilo: NAT remaining packets",
                target: "MASQUERADE",
                order: Order::AddressFirst,
            };
            rules.append.push(Entry::typed(f, "nat", NAT_CHAIN, m));
        }
        rules
    }
}
