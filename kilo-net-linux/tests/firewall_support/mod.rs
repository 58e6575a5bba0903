//! Shared by the firewall tests: a network namespace that is deleted even when a test fails,
//! upstream-style rule sets, and the order each chain should end up in.
#![allow(dead_code)]

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use kilo_core::firewall::{Entry, Family, RuleSet};

/// A network namespace of the test's own; `Drop` deletes it.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name =
            format!("kfw-{tag}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip netns add (the firewall tests need root and iproute2)");
        assert!(status.success(), "ip netns add {name} failed (root needed)");
        Netns { name }
    }

    pub fn path(&self) -> std::path::PathBuf {
        format!("/run/netns/{}", self.name).into()
    }

    /// Runs a command in the namespace; panics when it fails; returns standard output.
    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("run ip netns exec");
        assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

fn split(spec: &str) -> Vec<String> {
    // The specs below quote only the comment, without escapes.
    let mut out = Vec::new();
    let mut rest = spec.trim();
    while !rest.is_empty() {
        if let Some(stripped) = rest.strip_prefix('"') {
            let end = stripped.find('"').expect("closing quote");
            out.push(stripped[..end].to_string());
            rest = stripped[end + 1..].trim_start();
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            out.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
    }
    out
}

pub fn chain(family: Family, table: &str, name: &str) -> Entry {
    Entry::chain(family, table.to_string(), name.to_string())
}

pub fn rule(family: Family, table: &str, chain: &str, spec: &str) -> Entry {
    Entry::Rule {
        family,
        table: table.to_string().into(),
        chain: chain.to_string().into(),
        spec: split(spec).into(),
    }
}

/// A peer of the mesh with its allowed IPs.
#[derive(Clone, Copy)]
pub struct Peer {
    pub family: Family,
    pub allowed_ip: &'static str,
}

pub const PEERS: [Peer; 3] = [
    Peer { family: Family::Ipv4, allowed_ip: "10.5.0.1/32" },
    Peer { family: Family::Ipv4, allowed_ip: "10.5.0.2/32" },
    Peer { family: Family::Ipv6, allowed_ip: "fd00:5::1/128" },
];

/// The rule set of a leader with `--cni` and `--iptables-forward-rules` (upstream 8.2): pod CIDR
/// 10.2.1.0/24, WireGuard IP 10.4.0.1, private IP 10.1.0.1, a second segment 10.4.0.2 /
/// 10.2.2.0/24, service CIDR 10.43.0.0/16, and `peers`.
pub fn leader_rules(peers: &[Peer]) -> RuleSet {
    use Family::{Ipv4, Ipv6};
    let mut prepend = vec![
        rule(
            Ipv4,
            "nat",
            "POSTROUTING",
            r#"-s 10.2.1.0/24 -m comment --comment "Kilo: jump to KILO-NAT chain" -j KILO-NAT"#,
        ),
        rule(
            Ipv4,
            "filter",
            "FORWARD",
            r#"-m comment --comment "Kilo: forward packets from the pod subnet" -s 10.2.1.0/24 -j ACCEPT"#,
        ),
        rule(
            Ipv4,
            "filter",
            "FORWARD",
            r#"-m comment --comment "Kilo: forward packets to the pod subnet" -d 10.2.1.0/24 -j ACCEPT"#,
        ),
        rule(
            Ipv4,
            "filter",
            "FORWARD",
            r#"-m comment --comment "Kilo: forward packets from private IPs" -s 10.1.0.1/32 -j ACCEPT"#,
        ),
        rule(
            Ipv4,
            "filter",
            "FORWARD",
            r#"-m comment --comment "Kilo: forward packets to private IPs" -d 10.1.0.1/32 -j ACCEPT"#,
        ),
    ];
    for (wg, pods) in [("10.4.0.1/32", "10.2.1.0/24"), ("10.4.0.2/32", "10.2.2.0/24")] {
        prepend.push(rule(Ipv4, "nat", "KILO-NAT", &format!(r#"-d {wg} -m comment --comment "Kilo: do not NAT packets destined for WireGuared IPs" -j RETURN"#)));
        for aip in [pods, wg] {
            prepend.push(rule(Ipv4, "nat", "KILO-NAT", &format!(r#"-d {aip} -m comment --comment "Kilo: do not NAT packets destined for known IPs" -j RETURN"#)));
        }
    }
    for p in peers {
        let aip = p.allowed_ip;
        prepend.push(rule(
            p.family,
            "nat",
            "POSTROUTING",
            &format!(r#"-s {aip} -m comment --comment "Kilo: jump to NAT chain" -j KILO-NAT"#),
        ));
        prepend.push(rule(p.family, "nat", "KILO-NAT", &format!(r#"-d {aip} -m comment --comment "Kilo: do not NAT packets destined for peers" -j RETURN"#)));
    }
    RuleSet {
        append: vec![
            chain(Ipv4, "nat", "KILO-NAT"),
            chain(Ipv6, "nat", "KILO-NAT"),
            rule(
                Ipv4,
                "nat",
                "KILO-NAT",
                r#"-d 10.43.0.0/16 -m comment --comment "Kilo: do not NAT packets destined for service CIDRs" -j RETURN"#,
            ),
            rule(
                Ipv4,
                "nat",
                "KILO-NAT",
                r#"-m comment --comment "Kilo: NAT remaining packets" -j MASQUERADE"#,
            ),
            rule(
                Ipv6,
                "nat",
                "KILO-NAT",
                r#"-m comment --comment "Kilo: NAT remaining packets" -j MASQUERADE"#,
            ),
        ],
        prepend,
    }
}

/// A non-leader with forward rules (comments with an apostrophe) and IPIP encapsulation
/// rules (upstream 8.2, 8.3).
pub fn non_leader_rules() -> RuleSet {
    use Family::{Ipv4, Ipv6};
    RuleSet {
        append: vec![
            chain(Ipv4, "filter", "KILO-IPIP"),
            chain(Ipv6, "filter", "KILO-IPIP"),
            rule(
                Ipv4,
                "filter",
                "INPUT",
                r#"-p ipencap -m comment --comment "Kilo: jump to IPIP chain" -j KILO-IPIP"#,
            ),
            rule(
                Ipv6,
                "filter",
                "INPUT",
                r#"-p ipencap -m comment --comment "Kilo: jump to IPIP chain" -j KILO-IPIP"#,
            ),
            rule(
                Ipv4,
                "filter",
                "INPUT",
                r#"-p ipencap -m comment --comment "Kilo: reject other IPIP traffic" -j DROP"#,
            ),
            rule(
                Ipv6,
                "filter",
                "INPUT",
                r#"-p ipencap -m comment --comment "Kilo: reject other IPIP traffic" -j DROP"#,
            ),
            chain(Ipv4, "nat", "KILO-NAT"),
            chain(Ipv6, "nat", "KILO-NAT"),
            rule(
                Ipv4,
                "nat",
                "KILO-NAT",
                r#"-m comment --comment "Kilo: NAT remaining packets" -j MASQUERADE"#,
            ),
            rule(
                Ipv6,
                "nat",
                "KILO-NAT",
                r#"-m comment --comment "Kilo: NAT remaining packets" -j MASQUERADE"#,
            ),
        ],
        prepend: vec![
            rule(
                Ipv4,
                "filter",
                "KILO-IPIP",
                r#"-s 10.1.0.2/32 -m comment --comment "Kilo: allow IPIP traffic" -j ACCEPT"#,
            ),
            rule(
                Ipv4,
                "nat",
                "POSTROUTING",
                r#"-s 10.2.3.0/24 -m comment --comment "Kilo: jump to KILO-NAT chain" -j KILO-NAT"#,
            ),
            rule(
                Ipv4,
                "filter",
                "FORWARD",
                r#"-m comment --comment "Kilo: forward packets from the node's pod subnet" -s 10.2.3.0/24 -j ACCEPT"#,
            ),
            rule(
                Ipv4,
                "filter",
                "FORWARD",
                r#"-m comment --comment "Kilo: forward packets to the node's pod subnet" -d 10.2.3.0/24 -j ACCEPT"#,
            ),
        ],
    }
}

/// The spec of each rule of `family` in `table` / `chain`, in the order the chain should hold
/// them: prepend rules newest first (each was inserted at position 1), then append rules.
pub fn expected_order(
    rules: &RuleSet,
    family: Family,
    table: &str,
    chain: &str,
) -> Vec<Vec<String>> {
    let pick = |e: &Entry| match e {
        Entry::Rule { family: f, table: t, chain: c, spec }
            if *f == family && t == table && c == chain =>
        {
            Some(spec.args().into_owned())
        }
        _ => None,
    };
    let mut out: Vec<Vec<String>> = rules.prepend.iter().rev().filter_map(pick).collect();
    out.extend(rules.append.iter().filter_map(pick));
    out
}

/// The `(family, table, chain)` of every rule in a rule set.
pub fn chains_of(rules: &RuleSet) -> Vec<(Family, String, String)> {
    let mut out = Vec::new();
    for e in rules.append.iter().chain(&rules.prepend) {
        if let Entry::Rule { family, table, chain, .. } = e {
            let id = (*family, table.to_string(), chain.to_string());
            if !out.contains(&id) {
                out.push(id);
            }
        }
    }
    out
}

/// How `iptables -S` prints a spec: `-s`, `-d`, `-p` first, the comment in double quotes with
/// `'` escaped, the rest in order; addresses without a prefix get one.
pub fn iptables_line(chain: &str, spec: &[String]) -> String {
    let mut front = Vec::new();
    let mut rest = Vec::new();
    let mut i = 0;
    while i < spec.len() {
        let group = &spec[i..(i + 2).min(spec.len())];
        match spec[i].as_str() {
            "-s" => front.push((0, group.to_vec())),
            "-d" => front.push((1, group.to_vec())),
            "-p" => front.push((
                2,
                vec![
                    "-p".to_string(),
                    if group[1] == "4" { "ipencap".into() } else { group[1].clone() },
                ],
            )),
            "--comment" => rest.push(vec![
                "--comment".to_string(),
                format!("\"{}\"", group[1].replace('\'', "\\'")),
            ]),
            _ => rest.push(group.to_vec()),
        }
        i += 2;
    }
    front.sort_by_key(|(k, _)| *k);
    let mut words = vec!["-A".to_string(), chain.to_string()];
    words.extend(front.into_iter().flat_map(|(_, g)| g));
    words.extend(rest.into_iter().flatten());
    words.join(" ")
}
