//! Firewall rules as data carrying upstream's iptables rule strings, so that
//! either agent finds and cleans up the other's rules; their canonical keys and Kilo's ownership
//! marks ([`RuleKey`], [`is_kilo_rule`]); and the pure decisions of the firewall controller
//! ([`set_diff`], [`restore_diff`], [`sweep`]) as typed [`Change`]s.

use std::net::IpAddr;

/// The IP family of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// `iptables`.
    Ipv4,
    /// `ip6tables`.
    Ipv6,
}

/// A chain or a rule in a table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Entry {
    /// A chain Kilo owns (`iptables -t TABLE -N NAME`; appending it creates and flushes it).
    Chain {
        /// The family.
        family: Family,
        /// The table (`nat`, `filter`).
        table: String,
        /// The chain name.
        name: String,
    },
    /// A rule (`iptables -t TABLE -A CHAIN SPEC…`).
    Rule {
        /// The family.
        family: Family,
        /// The table.
        table: String,
        /// The chain.
        chain: String,
        /// The rule's arguments after the chain.
        spec: Vec<String>,
    },
}

/// The rules a node needs: `append` in order (chains first, MASQUERADE last), `prepend` each
/// inserted at position 1 of its chain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleSet {
    /// Rules appended in order.
    pub append: Vec<Entry>,
    /// Rules inserted at the top of their chains.
    pub prepend: Vec<Entry>,
}

mod diff;
mod key;
mod rules;

pub use diff::{
    ChainRef, Change, Listed, RestoreDiff, SetDiff, SweepDiff, TABLES, TableListing, restore_diff,
    restore_reads, set_diff, sweep, sweep_tables,
};
pub use key::{
    COMMENT_PREFIX, RuleKey, canonical_address, canonical_protocol, is_kilo_chain, is_kilo_rule,
    split_args,
};
pub use rules::{IPIP_PROTOCOL, encapsulation_rules};

impl Family {
    /// The family of an address (IPv4-mapped IPv6 counts as IPv4, as upstream's `GetProtocol`).
    pub fn of(ip: IpAddr) -> Family {
        if crate::cidr::canonical(ip).is_ipv4() { Family::Ipv4 } else { Family::Ipv6 }
    }

    /// `IPv4` or `IPv6`, as upstream names the protocols in logs and metrics.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        }
    }
}

impl Entry {
    /// A chain in `table`.
    pub fn chain(family: Family, table: &str, name: &str) -> Entry {
        Entry::Chain { family, table: table.to_string(), name: name.to_string() }
    }

    /// A rule appended to `chain` of `table` with the arguments `spec`.
    pub fn rule(family: Family, table: &str, chain: &str, spec: &[&str]) -> Entry {
        Entry::Rule {
            family,
            table: table.to_string(),
            chain: chain.to_string(),
            spec: spec.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The family.
    pub fn family(&self) -> Family {
        match self {
            Entry::Chain { family, .. } | Entry::Rule { family, .. } => *family,
        }
    }

    /// The table.
    pub fn table(&self) -> &str {
        match self {
            Entry::Chain { table, .. } | Entry::Rule { table, .. } => table,
        }
    }

    /// The chain the entry is in (a chain's own name for [`Entry::Chain`]).
    pub fn chain_name(&self) -> &str {
        match self {
            Entry::Chain { name, .. } => name,
            Entry::Rule { chain, .. } => chain,
        }
    }

    /// The rule's arguments joined by spaces, with the argument after `--comment` in double
    /// quotes (empty for a chain).
    pub fn spec_text(&self) -> String {
        let Entry::Rule { spec, .. } = self else { return String::new() };
        let mut out = Vec::with_capacity(spec.len());
        let mut quote_next = false;
        for arg in spec {
            if quote_next {
                out.push(format!("\"{arg}\""));
            } else {
                out.push(arg.clone());
            }
            quote_next = arg == "--comment";
        }
        out.join(" ")
    }

    /// Upstream's string identity: `"<table> -A <chain> <spec>"` for a
    /// rule, the comment in double quotes, and `"<table> -N <name>"` for a chain. Both agents
    /// find each other's rules by it.
    pub fn identity(&self) -> String {
        match self {
            Entry::Chain { table, name, .. } => format!("{table} -N {name}"),
            Entry::Rule { table, chain, .. } => {
                format!("{table} -A {chain} {}", self.spec_text())
            }
        }
    }
}

impl RuleSet {
    /// Appends `other`'s lists after this set's (encapsulation rules first, then the topology's,
    /// as the agent combines them).
    pub fn extend(&mut self, other: RuleSet) {
        self.append.extend(other.append);
        self.prepend.extend(other.prepend);
    }

    /// Whether both lists are empty.
    pub fn is_empty(&self) -> bool {
        self.append.is_empty() && self.prepend.is_empty()
    }
}
