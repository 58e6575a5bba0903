//! Firewall rules as data rendering to upstream's iptables rule strings, so that
//! either agent finds and cleans up the other's rules (Kilo's own rules are typed, [`Spec`]); their canonical keys and Kilo's ownership
//! marks ([`RuleKey`], [`is_kilo_rule`]); and the pure decisions of the firewall controller
//! ([`set_diff`], [`restore_diff`], [`sweep`]) as typed [`Change`]s.

use std::borrow::Cow;
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

/// A table or chain name: a constant for the rules Kilo plans, owned for what is read back.
pub type Name = Cow<'static, str>;

/// A chain or a rule in a table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Entry {
    /// A chain Kilo owns (`iptables -t TABLE -N NAME`; appending it creates and flushes it).
    Chain {
        /// The family.
        family: Family,
        /// The table (`nat`, `filter`).
        table: Name,
        /// The chain name.
        name: Name,
    },
    /// A rule (`iptables -t TABLE -A CHAIN SPEC…`).
    Rule {
        /// The family.
        family: Family,
        /// The table.
        table: Name,
        /// The chain.
        chain: Name,
        /// The rule's arguments after the chain.
        spec: Spec,
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
mod spec;

pub use diff::{
    ChainRef, Change, Listed, RestoreDiff, SetDiff, SweepDiff, TABLES, TableListing, restore_diff,
    restore_reads, set_diff, sweep, sweep_tables,
};
pub use key::{
    COMMENT_PREFIX, RuleKey, canonical_address, canonical_protocol, is_kilo_chain, is_kilo_rule,
    split_args,
};
pub use rules::{IPIP_PROTOCOL, encapsulation_rules};
pub use spec::{Address, Arg, Match, Order, Spec};

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
    /// A chain in `table` (`&'static str` names are not copied).
    pub fn chain(family: Family, table: impl Into<Name>, name: impl Into<Name>) -> Entry {
        Entry::Chain { family, table: table.into(), name: name.into() }
    }

    /// A rule appended to `chain` of `table` with the arguments `spec`, as strings.
    pub fn rule(family: Family, table: &str, chain: &str, spec: &[&str]) -> Entry {
        Entry::Rule {
            family,
            table: Cow::Owned(table.to_string()),
            chain: Cow::Owned(chain.to_string()),
            spec: Spec::Args(spec.iter().map(|s| s.to_string()).collect()),
        }
    }

    /// A typed rule in `chain` of `table`: allocates nothing.
    pub const fn typed(
        family: Family,
        table: &'static str,
        chain: &'static str,
        spec: Match,
    ) -> Entry {
        Entry::Rule {
            family,
            table: Cow::Borrowed(table),
            chain: Cow::Borrowed(chain),
            spec: Spec::Typed(spec),
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
        spec.text()
    }

    /// The rule's arguments (`None` for a chain).
    pub fn spec(&self) -> Option<&Spec> {
        match self {
            Entry::Rule { spec, .. } => Some(spec),
            Entry::Chain { .. } => None,
        }
    }

    /// Upstream's string identity: `"<table> -A <chain> <spec>"` for a
    /// rule, the comment in double quotes, and `"<table> -N <name>"` for a chain. Both agents
    /// find each other's rules by it.
    pub fn identity(&self) -> String {
        match self {
            Entry::Chain { table, name, .. } => format!("{table} -N {name}"),
            Entry::Rule { table, chain, spec, .. } => {
                let mut out = String::with_capacity(table.len() + chain.len() + 100);
                out.push_str(table);
                out.push_str(" -A ");
                out.push_str(chain);
                out.push(' ');
                spec.write_text(&mut out);
                out
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
