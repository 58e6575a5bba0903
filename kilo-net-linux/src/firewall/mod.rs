//! Applies a [`RuleSet`] to the kernel and keeps it there.
//!
//! Two implementations behind one enum, [`Firewall`]:
//! - [`Iptables`] runs the `iptables` / `ip6tables` binaries (legacy or nft variant, detected the
//!   way kube-proxy's wrapper does), with rule strings identical to upstream Kilo so either agent
//!   finds and cleans up the other's rules; a call with more than 8 writes makes them in one
//!   `iptables-restore --noflush` transaction per family, after one `iptables-save` that tells
//!   what exists (one process per rule otherwise, and as the fallback when a batch fails);
//! - [`Nftables`] speaks nf_tables netlink directly (no binary) and keeps the same rules, natively
//!   translated, in tables of its own (`table ip kilo`, `table ip6 kilo6`).
//!
//! Which one a host gets by default is [`Survey::choice`]: `iptables` where the host already keeps
//! rules in `iptables`, native nftables elsewhere.
//!
//! Both follow upstream's controller semantics exactly (8.4): [`Firewall::set`] walks the append
//! list and diffs the prepend list against what was applied before, [`Firewall::reconcile`]
//! restores what someone deleted and writes nothing when all is present, [`Firewall::clean_up`]
//! removes everything. Every kernel call is counted under upstream's labels of
//! `kilo_iptables_operations_total` ([`Firewall::operations`]).
//!
//! Ownership is read from the kernel alone, so that what a killed agent (or upstream Kilo) left is
//! found again: a rule is Kilo's when it carries a `Kilo: …` comment, jumps to a `KILO-*` chain
//! or lives in one; every `KILO-*` chain is Kilo's, and with nftables everything in our tables.
//! The first [`Firewall::set`] of an agent removes Kilo's rules and chains its plan lacks (and
//! duplicates of planned rules in built-in chains); [`Firewall::clean_up`] removes all of them,
//! recorded or not. Other rules are never touched.
//!
//! ```no_run
//! use kilo_core::firewall::RuleSet;
//! use kilo_net_linux::firewall::{Firewall, Iptables, Nftables, Runner};
//!
//! # fn main() -> Result<(), kilo_net_linux::firewall::FirewallError> {
//! // `iptables` of whichever variant the host uses, in the current network namespace
//! // (`Runner::netns("NS")` would run `ip netns exec NS iptables …`).
//! let mut firewall = Firewall::Iptables(Iptables::detect(Runner::new()));
//! // Or: let mut firewall = Firewall::Nftables(Nftables::new());
//! # let _ = Nftables::new;
//! let rules = RuleSet::default(); // from kilo-core's topology
//! firewall.set(&rules)?; // on every topology change
//! firewall.reconcile()?; // on every resync tick
//! for (labels, count) in firewall.operations() {
//!     println!("{} {} {} {} {count}", labels.protocol_label(), labels.operation, labels.table, labels.chain);
//! }
//! firewall.clean_up()?; // on exit with --clean-up
//! # Ok(())
//! # }
//! ```

mod batch;
mod controller;
mod detect;
mod iptables;
mod netns;
mod nftables;
mod rule;
mod watch;

use std::collections::BTreeMap;
use std::fmt;

use kilo_core::firewall::{Family, RuleSet};

pub use detect::{Choice, Survey, detect_variant, survey};
pub use iptables::{Iptables, Runner, Variant, ipv6_disabled};
pub use nftables::{Nftables, TABLE_NAME as NFT_TABLE, TABLE_NAME_IPV6 as NFT_TABLE_IPV6};
pub use watch::TableWatch;

/// An error from a firewall operation. Each names what it was doing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FirewallError {
    /// A binary ran and failed.
    #[error("`{command}` failed (exit code {code:?}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit code (`None` when killed by a signal).
        code: Option<i32>,
        /// What it printed on standard error.
        stderr: String,
    },
    /// A binary could not be started.
    #[error("cannot run `{command}`: {message}")]
    Spawn {
        /// The command line.
        command: String,
        /// The operating system's message.
        message: String,
    },
    /// An nf_tables netlink request failed.
    #[error("nftables {operation} failed: {message}")]
    Netlink {
        /// What was being done (`list rules of ip kilo nat-KILO-NAT`, …).
        operation: String,
        /// The kernel's or the library's message.
        message: String,
    },
    /// The network namespace could not be entered.
    #[error("cannot enter network namespace {path}: {message}")]
    Netns {
        /// The namespace file.
        path: String,
        /// The operating system's message.
        message: String,
    },
    /// A rule uses a match or target the nftables translation does not know.
    #[error("rule `{rule}` cannot be expressed in nftables: {reason}")]
    Unsupported {
        /// The rule's identity.
        rule: String,
        /// What is not supported.
        reason: String,
    },
}

/// A client operation, named as upstream's metric label `operation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Operation {
    /// Check, then append (`iptables -C`, `-A`).
    AppendUnique,
    /// Check, then insert at position 1 (`iptables -C`, `-I CHAIN 1`).
    InsertUnique,
    /// Delete a rule (`iptables -D`).
    Delete,
    /// Check a rule (`iptables -C`).
    Exists,
    /// List a chain's rules (`iptables -S CHAIN`).
    List,
    /// Create if missing and flush a chain (`iptables -N`, `-F`).
    ClearChain,
    /// Delete a chain (`iptables -X`).
    DeleteChain,
    /// Create a chain (`iptables -N`).
    NewChain,
    /// List a table's chains (`iptables -S`); label chain `*`.
    ListChains,
}

impl Operation {
    /// Upstream's label value (`AppendUnique`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::AppendUnique => "AppendUnique",
            Operation::InsertUnique => "InsertUnique",
            Operation::Delete => "Delete",
            Operation::Exists => "Exists",
            Operation::List => "List",
            Operation::ClearChain => "ClearChain",
            Operation::DeleteChain => "DeleteChain",
            Operation::NewChain => "NewChain",
            Operation::ListChains => "ListChains",
        }
    }

    /// Whether the operation may change the kernel's state (everything but checks and lists).
    pub fn is_write(self) -> bool {
        !matches!(self, Operation::Exists | Operation::List | Operation::ListChains)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The labels of one `kilo_iptables_operations_total` series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpLabels {
    /// The family (label `protocol`: `IPv4` / `IPv6`, see [`OpLabels::protocol_label`]).
    pub protocol: Family,
    /// The operation.
    pub operation: Operation,
    /// The table (`nat`, `filter`).
    pub table: String,
    /// The chain (`*` for [`Operation::ListChains`]).
    pub chain: String,
}

impl OpLabels {
    /// Upstream's `protocol` label value: `IPv4` or `IPv6`.
    pub fn protocol_label(&self) -> &'static str {
        match self.protocol {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        }
    }
}

/// The firewall implementation in use.
#[non_exhaustive]
pub enum Firewall {
    /// The `iptables` / `ip6tables` binaries.
    Iptables(Iptables),
    /// Native nf_tables over netlink.
    Nftables(Nftables),
}

impl Firewall {
    /// Applies `rules` as the minimal diff against what was applied before (upstream `Set`).
    pub fn set(&mut self, rules: &RuleSet) -> Result<(), FirewallError> {
        match self {
            Firewall::Iptables(f) => f.set(rules),
            Firewall::Nftables(f) => f.set(rules),
        }
    }

    /// Restores applied rules that are missing from the kernel; returns how many entries it
    /// re-applied (0: nothing was written).
    pub fn reconcile(&mut self) -> Result<usize, FirewallError> {
        match self {
            Firewall::Iptables(f) => f.reconcile(),
            Firewall::Nftables(f) => f.reconcile(),
        }
    }

    /// Removes every rule and chain this firewall applied, then every other rule and chain of
    /// Kilo's in the kernel (see the module docs).
    pub fn clean_up(&mut self) -> Result<(), FirewallError> {
        match self {
            Firewall::Iptables(f) => f.clean_up(),
            Firewall::Nftables(f) => f.clean_up(),
        }
    }

    /// How many times each operation ran, by upstream's metric labels.
    pub fn operations(&self) -> BTreeMap<OpLabels, u64> {
        match self {
            Firewall::Iptables(f) => f.operations(),
            Firewall::Nftables(f) => f.operations(),
        }
    }

    /// The rule set currently applied.
    pub fn applied(&self) -> RuleSet {
        match self {
            Firewall::Iptables(f) => f.applied(),
            Firewall::Nftables(f) => f.applied(),
        }
    }
}

/// The total of the write operations in a snapshot of [`Firewall::operations`].
pub fn write_count(operations: &BTreeMap<OpLabels, u64>) -> u64 {
    operations.iter().filter(|(labels, _)| labels.operation.is_write()).map(|(_, n)| n).sum()
}
