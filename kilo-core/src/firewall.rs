//! Firewall rules as data carrying upstream's iptables rule strings (upstream-kilo.md 8), so that
//! either agent finds and cleans up the other's rules.

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
