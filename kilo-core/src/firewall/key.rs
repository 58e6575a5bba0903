//! Rule identities: the canonical keys that compare a wanted rule with a listed one, and how
//! Kilo's rules and chains are recognised in the kernel (moved here from `kilo-net-linux`, so
//! that [`super::diff`] decides with them).
//!
//! Upstream compares the rule's string identity ([`super::Entry::identity`]) with `iptables -S`
//! output verbatim. `iptables` reorders matches (`-s` before `-m comment`), masks host bits and
//! escapes `'` in comments, so a verbatim comparison misses rules that are present. We compare
//! canonical keys instead: the option groups of the rule, with their aliases, addresses and
//! protocols normalised, in sorted order.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{Entry, Spec};

/// Splits an `iptables -S` line or an identity string into arguments: blanks separate them,
/// double or single quotes group them, and inside quotes a backslash escapes the next character
/// (`iptables` writes `node\'s`).
pub fn split_args(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut in_arg = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        let quoted = quote.is_some();
        match c {
            '"' | '\'' if quote.is_none() || quote == Some(c) => {
                quote = if quoted { None } else { Some(c) };
                in_arg = true;
            }
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if in_arg {
                    args.push(std::mem::take(&mut current));
                    in_arg = false;
                }
            }
            c => {
                current.push(c);
                in_arg = true;
            }
        }
    }
    if in_arg {
        args.push(current);
    }
    args
}

/// A rule's canonical form: table, chain and the sorted, normalised option groups of its spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleKey {
    table: String,
    chain: String,
    groups: Vec<Vec<String>>,
}

impl RuleKey {
    /// The key of a rule in `table`, `chain` with the given spec arguments.
    pub fn new(table: &str, chain: &str, spec: &[String]) -> RuleKey {
        let mut groups: Vec<Vec<String>> = Vec::new();
        let mut negate = false;
        for arg in spec {
            if arg == "!" {
                negate = true;
                continue;
            }
            let option = arg.starts_with('-') && arg.len() > 1 && !is_number(arg);
            if option || groups.is_empty() {
                let mut group = vec![canonical_option(arg).to_string()];
                if negate {
                    group.insert(0, "!".to_string());
                    negate = false;
                }
                groups.push(group);
            } else if let Some(group) = groups.last_mut() {
                let option = group.iter().rev().find(|g| *g != "!").cloned();
                group.push(canonical_value(option.as_deref().unwrap_or(""), arg));
            }
        }
        groups.sort();
        RuleKey { table: table.to_string(), chain: chain.to_string(), groups }
    }

    /// A spec equivalent to the rule's (its option groups in canonical order).
    pub fn spec(&self) -> Vec<String> {
        self.groups.iter().flatten().cloned().collect()
    }

    /// The key of a rule in `table`, `chain` with the arguments `spec`: a typed spec's key is
    /// built from its fields (no parsing), and equals the key of its rendered arguments.
    pub fn of_spec(table: &str, chain: &str, spec: &Spec) -> RuleKey {
        let m = match spec {
            Spec::Args(args) => return RuleKey::new(table, chain, args),
            Spec::Typed(m) => m,
        };
        let pair = |a: &str, b: String| vec![a.to_string(), b];
        let mut groups = Vec::with_capacity(5);
        if let Some(p) = m.protocol {
            groups.push(pair("-p", canonical_protocol(p)));
        }
        if let Some(a) = m.address {
            groups.push(pair(a.option(), a.cidr().network().to_string()));
        }
        groups.push(pair("-m", "comment".to_string()));
        groups.push(pair("--comment", m.comment.to_string()));
        groups.push(pair("-j", m.target.to_string()));
        groups.sort();
        RuleKey { table: table.to_string(), chain: chain.to_string(), groups }
    }

    /// The key of an entry that is a rule (`None` for a chain).
    pub fn of_entry(entry: &Entry) -> Option<RuleKey> {
        match entry {
            Entry::Rule { table, chain, spec, .. } => Some(RuleKey::of_spec(table, chain, spec)),
            Entry::Chain { .. } => None,
        }
    }

    /// The key of an `iptables -S` line (`-A CHAIN spec…`) of `table`; `None` for other lines
    /// (`-N`, `-P`).
    pub fn from_listing(table: &str, line: &str) -> Option<RuleKey> {
        let args = split_args(line);
        match args.as_slice() {
            [a, chain, spec @ ..] if a == "-A" => Some(RuleKey::new(table, chain, spec)),
            _ => None,
        }
    }

    /// The key of an upstream identity string (`<table> -A <chain> <spec…>`); `None` for a chain
    /// identity or anything else.
    pub fn from_identity(identity: &str) -> Option<RuleKey> {
        let args = split_args(identity);
        match args.as_slice() {
            [table, a, chain, spec @ ..] if a == "-A" => Some(RuleKey::new(table, chain, spec)),
            _ => None,
        }
    }
}

/// The prefix of every comment Kilo (and upstream Kilo) puts on its rules.
pub const COMMENT_PREFIX: &str = "Kilo:";

/// Whether a chain is one of Kilo's own (`KILO-NAT`, `KILO-IPIP`, …).
pub fn is_kilo_chain(chain: &str) -> bool {
    chain.starts_with("KILO-")
}

/// Whether a rule found in `chain` is recognisably Kilo's, whichever agent wrote it: it lives in
/// a Kilo chain, carries a `Kilo: …` comment, or jumps to a Kilo chain. This is how a restarted
/// agent finds what a killed one left in built-in chains.
pub fn is_kilo_rule(chain: &str, spec: &[String]) -> bool {
    is_kilo_chain(chain)
        || spec.windows(2).any(|w| match w[0].as_str() {
            "--comment" => w[1].starts_with(COMMENT_PREFIX),
            "-j" | "--jump" | "-g" | "--goto" => is_kilo_chain(&w[1]),
            _ => false,
        })
}

fn is_number(arg: &str) -> bool {
    arg[1..].chars().all(|c| c.is_ascii_digit())
}

fn canonical_option(option: &str) -> &str {
    match option {
        "--source" | "--src" => "-s",
        "--destination" | "--dst" => "-d",
        "--protocol" => "-p",
        "--jump" => "-j",
        "--match" => "-m",
        "--in-interface" => "-i",
        "--out-interface" => "-o",
        other => other,
    }
}

fn canonical_value(option: &str, value: &str) -> String {
    match option {
        "-s" | "-d" => canonical_address(value).unwrap_or_else(|| value.to_string()),
        "-p" => canonical_protocol(value),
        _ => value.to_string(),
    }
}

/// `10.2.1.5/24` → `10.2.1.0/24`; `10.4.0.1` → `10.4.0.1/32` (what `iptables -S` prints).
pub fn canonical_address(value: &str) -> Option<String> {
    let net = match value.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => IpNet::from(value.parse::<IpAddr>().ok()?),
    };
    Some(net.trunc().to_string())
}

/// Protocol names as `iptables -S` prints them (from the protocol database), numbers mapped.
pub fn canonical_protocol(value: &str) -> String {
    let lower = value.to_ascii_lowercase();
    match lower.as_str() {
        "1" => "icmp",
        "4" | "ip-encap" => "ipencap",
        "6" => "tcp",
        "17" => "udp",
        "41" => "ipv6",
        "47" => "gre",
        "58" | "icmpv6" | "ipv6-icmp" => "ipv6-icmp",
        "0" => "all",
        other => other,
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::Family;

    fn rule(table: &str, chain: &str, spec: &[&str]) -> Entry {
        Entry::rule(Family::Ipv4, table, chain, spec)
    }

    #[test]
    fn a_listed_rule_matches_the_wanted_rule_despite_reordering_masking_and_escapes() {
        let wanted = rule(
            "filter",
            "FORWARD",
            &[
                "-m",
                "comment",
                "--comment",
                "Kilo: forward packets from the node's pod subnet",
                "-s",
                "10.2.1.5/24",
                "-j",
                "ACCEPT",
            ],
        );
        let line = r#"-A FORWARD -s 10.2.1.0/24 -m comment --comment "Kilo: forward packets from the node\'s pod subnet" -j ACCEPT"#;
        assert_eq!(RuleKey::from_listing("filter", line), RuleKey::of_entry(&wanted));
    }

    #[test]
    fn protocols_and_bare_addresses_are_normalised() {
        let wanted = rule("filter", "INPUT", &["-p", "4", "-d", "10.0.0.1", "-j", "DROP"]);
        let line = "-A INPUT -d 10.0.0.1/32 -p ipencap -j DROP";
        assert_eq!(RuleKey::from_listing("filter", line), RuleKey::of_entry(&wanted));
    }

    #[test]
    fn different_comments_give_different_keys() {
        let a = rule("nat", "KILO-NAT", &["-m", "comment", "--comment", "a", "-j", "RETURN"]);
        let b = rule("nat", "KILO-NAT", &["-m", "comment", "--comment", "b", "-j", "RETURN"]);
        assert_ne!(RuleKey::of_entry(&a), RuleKey::of_entry(&b));
    }

    #[test]
    fn chain_and_policy_lines_are_not_rules() {
        assert_eq!(RuleKey::from_listing("nat", "-N KILO-NAT"), None);
        assert_eq!(RuleKey::from_listing("nat", "-P POSTROUTING ACCEPT"), None);
    }
}
