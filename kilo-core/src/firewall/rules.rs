//! The rule sets: `Topology::rules` and the encapsulators' `KILO-IPIP`
//! rules (8.3).

use std::net::IpAddr;

use super::{Entry, Family, RuleSet};
use crate::routes::Encapsulator;
use crate::{Cidr, Topology};

/// The protocol name upstream's cgo-free release builds pass to `-p` for IP protocol 4.
pub const IPIP_PROTOCOL: &str = "ipencap";

const NAT_CHAIN: &str = "KILO-NAT";
const IPIP_CHAIN: &str = "KILO-IPIP";

fn fam(c: &Cidr) -> Family {
    Family::of(c.addr())
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
            rules.append.push(Entry::rule(
                f,
                "filter",
                "INPUT",
                &["-p", IPIP_PROTOCOL, "-m", "comment", "--comment", comment, "-j", target],
            ));
        }
    }
    for ip in private_ips {
        let host = Cidr::host(*ip).to_string();
        rules.prepend.push(Entry::rule(
            Family::of(*ip),
            "filter",
            IPIP_CHAIN,
            &[
                "-s",
                &host,
                "-m",
                "comment",
                "--comment",
                "Kilo: allow IPIP traffic",
                "-j",
                "ACCEPT",
            ],
        ));
    }
    rules
}

/// A rule whose spec is `before`, the CIDR's text, then `after`: the text is moved in rather
/// than copied (tens of thousands of these rules are built per plan).
fn with_cidr(
    family: Family,
    table: &str,
    chain: &str,
    before: &[&str],
    c: &Cidr,
    after: &[&str],
) -> Entry {
    let mut spec = Vec::with_capacity(before.len() + 1 + after.len());
    spec.extend(before.iter().map(|s| s.to_string()));
    spec.push(c.to_string());
    spec.extend(after.iter().map(|s| s.to_string()));
    Entry::Rule { family, table: table.to_string(), chain: chain.to_string(), spec }
}

fn forward(c: &Cidr, comment: &str, flag: &str) -> Entry {
    with_cidr(
        fam(c),
        "filter",
        "FORWARD",
        &["-m", "comment", "--comment", comment, flag],
        c,
        &["-j", "ACCEPT"],
    )
}

fn forward_pair(out: &mut Vec<Entry>, c: &Cidr, what: &str) {
    out.push(forward(c, &format!("Kilo: forward packets from {what}"), "-s"));
    out.push(forward(c, &format!("Kilo: forward packets to {what}"), "-d"));
}

fn nat_return(c: &Cidr, comment: &str) -> Entry {
    with_cidr(
        fam(c),
        "nat",
        NAT_CHAIN,
        &["-d"],
        c,
        &["-m", "comment", "--comment", comment, "-j", "RETURN"],
    )
}

fn jump_nat(c: &Cidr, flag: &str) -> Entry {
    with_cidr(
        fam(c),
        "nat",
        "POSTROUTING",
        &[flag],
        c,
        &["-m", "comment", "--comment", "Kilo: jump to NAT chain", "-j", NAT_CHAIN],
    )
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
                let s_text = s.to_string();
                pre.push(Entry::rule(
                    fam(s),
                    "nat",
                    "POSTROUTING",
                    &[
                        "-s",
                        &s_text,
                        "-m",
                        "comment",
                        "--comment",
                        "Kilo: jump to KILO-NAT chain",
                        "-j",
                        NAT_CHAIN,
                    ],
                ));
            }
            if forward && self.leader {
                for seg in self.segments.iter().filter(|s| s.location == self.location) {
                    for c in seg.members.iter().flat_map(|m| &m.subnets) {
                        forward_pair(pre, c, "the pod subnet");
                    }
                    for c in &seg.allowed_location_ips {
                        forward_pair(pre, c, "allowed location IPs");
                    }
                    for ip in seg.members.iter().filter_map(|m| m.internal_ip) {
                        forward_pair(pre, &Cidr::host(ip.addr()), "private IPs");
                    }
                }
            } else if forward {
                for s in &self.subnets {
                    forward_pair(pre, s, "the node's pod subnet");
                }
            }
        }
        for seg in &self.segments {
            if let Some(wg) = seg.wireguard_ip {
                pre.push(nat_return(
                    &Cidr::host(wg),
                    "Kilo: do not NAT packets destined for WireGuared IPs",
                ));
            }
            for aip in &seg.allowed_ips {
                pre.push(nat_return(aip, "Kilo: do not NAT packets destined for known IPs"));
            }
            if seg.location == self.location {
                for alip in &seg.allowed_location_ips {
                    pre.push(jump_nat(alip, "-d"));
                }
            }
        }
        for peer in &self.peers {
            for aip in &peer.allowed_ips {
                pre.push(jump_nat(aip, "-s"));
                pre.push(nat_return(aip, "Kilo: do not NAT packets destined for peers"));
            }
        }
        for s in &self.service_cidrs {
            rules.append.push(nat_return(s, "Kilo: do not NAT packets destined for service CIDRs"));
        }
        for f in [Family::Ipv4, Family::Ipv6] {
            rules.append.push(Entry::rule(
                f,
                "nat",
                NAT_CHAIN,
                &["-m", "comment", "--comment", "Kilo: NAT remaining packets", "-j", "MASQUERADE"],
            ));
        }
        rules
    }
}
