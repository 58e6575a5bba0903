//! What the firewall controller writes, decided purely (the same idiom as
//! [`crate::wireguard::diff`] and [`crate::routes::diff`]): typed [`Change`]s whose `Display`
//! reads as `iptables` commands, one line per change. `kilo-net-linux` reads the kernel, calls
//! these and carries the changes out through `iptables` or nftables.
//!
//! - [`set_diff`]: a new rule set against the one applied before (upstream's `Set`): the
//!   append list is rewritten from its first difference, the prepend list diffed by identity.
//! - [`restore_diff`]: what the kernel holds against the applied rule set (upstream's
//!   `reconcile`): what someone deleted is restored.
//! - [`sweep`]: the kernel's tables against a plan: every rule and chain that is recognisably
//!   Kilo's ([`is_kilo_rule`], [`is_kilo_chain`], or everything in a table that is Kilo's own)
//!   and that the plan lacks goes, and all but one copy of each planned rule of a built-in
//!   chain. Ownership is read from the kernel alone, so this finds what another agent wrote.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

use super::key::{RuleKey, is_kilo_chain, is_kilo_rule};
use super::{Entry, Family, RuleSet, Spec};

/// The tables Kilo writes to; swept even when a plan has no entry in them.
pub const TABLES: [&str; 2] = ["filter", "nat"];

/// A chain's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainRef {
    /// The family.
    pub family: Family,
    /// The table.
    pub table: String,
    /// The chain's name.
    pub name: String,
}

impl ChainRef {
    /// The chain an entry is in (a chain entry's own chain).
    pub fn of(entry: &Entry) -> ChainRef {
        ChainRef {
            family: entry.family(),
            table: entry.table().to_string(),
            name: entry.chain_name().to_string(),
        }
    }
}

/// One write to the kernel's firewall.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Change {
    /// An entry of the append list: a chain is created if missing and flushed, a rule appended
    /// unless present.
    Append(Entry),
    /// An entry of the prepend list: a rule is inserted at position 1 unless present (a chain
    /// is created if missing and flushed).
    Insert(Entry),
    /// A rule deleted, or a chain flushed then deleted.
    Delete(Entry),
    /// A built-in chain's stand-in that Kilo created (nftables base chains in Kilo's own
    /// tables), deleted if empty.
    DeleteBaseChain(ChainRef),
}

fn binary(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "iptables",
        Family::Ipv6 => "ip6tables",
    }
}

impl fmt::Display for Change {
    /// As an `iptables` / `ip6tables` command: `-N` (created if missing, flushed), `-A`,
    /// `-I CHAIN 1`, `-D`, `-X` (flushed first).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Append(Entry::Chain { family, table, name })
            | Change::Insert(Entry::Chain { family, table, name }) => {
                write!(f, "{} -t {table} -N {name} (flushed if present)", binary(*family))
            }
            Change::Append(e @ Entry::Rule { family, table, chain, .. }) => {
                write!(f, "{} -t {table} -A {chain} {}", binary(*family), e.spec_text())
            }
            Change::Insert(e @ Entry::Rule { family, table, chain, .. }) => {
                write!(f, "{} -t {table} -I {chain} 1 {}", binary(*family), e.spec_text())
            }
            Change::Delete(e @ Entry::Rule { family, table, chain, .. }) => {
                write!(f, "{} -t {table} -D {chain} {}", binary(*family), e.spec_text())
            }
            Change::Delete(Entry::Chain { family, table, name }) => {
                write!(f, "{} -t {table} -X {name} (flushed first)", binary(*family))
            }
            Change::DeleteBaseChain(c) => write!(
                f,
                "{} -t {} -X {} (Kilo's stand-in of a built-in chain, if empty)",
                binary(c.family),
                c.table,
                c.name
            ),
        }
    }
}

/// What an entry is compared by: its family and upstream's identity (which leaves the family
/// out: an IPv4 and an IPv6 rule with the same arguments are different rules).
fn identity(entry: &Entry) -> (Family, String) {
    (entry.family(), entry.identity())
}

fn write_lines<'a>(
    f: &mut fmt::Formatter<'_>,
    changes: impl IntoIterator<Item = &'a Change>,
) -> fmt::Result {
    for change in changes {
        writeln!(f, "{change}")?;
    }
    Ok(())
}

/// A new rule set against the one applied before, as [`set_diff`] returns it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetDiff {
    /// How many applied append entries stay (the common prefix, by identity).
    pub kept: usize,
    /// The applied append entries after the kept ones, deleted in order.
    pub delete_append: Vec<Entry>,
    /// The new append entries after the kept ones, appended in order.
    pub append: Vec<Entry>,
    /// Chains flushed by the deletions and appends above: applied prepend rules in them are
    /// forgotten (the kernel lost them) and are in `insert` again when still wanted.
    pub flushed: BTreeSet<ChainRef>,
    /// New prepend entries, inserted in order.
    pub insert: Vec<Entry>,
    /// Applied prepend entries no longer wanted, deleted in order.
    pub delete_prepend: Vec<Entry>,
}

impl SetDiff {
    /// The changes in the order they are made: append deletions, appends, inserts, prepend
    /// deletions.
    pub fn changes(&self) -> Vec<Change> {
        let mut out = Vec::with_capacity(self.len());
        out.extend(self.delete_append.iter().cloned().map(Change::Delete));
        out.extend(self.append.iter().cloned().map(Change::Append));
        out.extend(self.insert.iter().cloned().map(Change::Insert));
        out.extend(self.delete_prepend.iter().cloned().map(Change::Delete));
        out
    }

    /// The number of changes.
    pub fn len(&self) -> usize {
        self.delete_append.len() + self.append.len() + self.insert.len() + self.delete_prepend.len()
    }

    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether an applied prepend entry survives the flushes (chains are never forgotten).
    pub fn survives_flush(&self, entry: &Entry) -> bool {
        matches!(entry, Entry::Chain { .. }) || !self.flushed.contains(&ChainRef::of(entry))
    }

    /// The applied rule set once every change is made: the kept append entries and the new
    /// ones; the surviving prepend entries, then the inserted ones. Its entries' identities are
    /// `desired`'s.
    pub fn apply(&self, applied: &RuleSet) -> RuleSet {
        let mut append = applied.append[..self.kept.min(applied.append.len())].to_vec();
        append.extend(self.append.iter().cloned());
        let deleted: HashSet<(Family, String)> = self.delete_prepend.iter().map(identity).collect();
        let mut prepend: Vec<Entry> = applied
            .prepend
            .iter()
            .filter(|e| self.survives_flush(e) && !deleted.contains(&identity(e)))
            .cloned()
            .collect();
        prepend.extend(self.insert.iter().cloned());
        RuleSet { append, prepend }
    }
}

impl fmt::Display for SetDiff {
    /// One line per change ([`SetDiff::changes`]), each ending in a newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_lines(f, &self.changes())
    }
}

/// The changes that turn the rule set `applied` (what this controller applied before) into
/// `desired` (upstream's `Set`).
///
/// Append list: from the first index whose identity differs, every applied entry is deleted and
/// the rest of the new list appended. Prepend list: new rules are inserted at position 1,
/// dropped ones deleted. Two fixes over upstream: entries are compared by family and identity
/// (upstream's identity leaves the family out, so an IPv6 twin of an applied IPv4 rule was
/// never inserted); prepend rules that live in a chain this diff flushes are inserted again now
/// instead of at the next reconcile.
pub fn set_diff(applied: &RuleSet, desired: &RuleSet) -> SetDiff {
    let kept = applied
        .append
        .iter()
        .zip(&desired.append)
        .take_while(|(a, d)| identity(a) == identity(d))
        .count();
    let mut out = SetDiff {
        kept,
        delete_append: applied.append[kept..].to_vec(),
        append: desired.append[kept..].to_vec(),
        ..SetDiff::default()
    };
    out.flushed = out
        .delete_append
        .iter()
        .chain(&out.append)
        .filter(|e| matches!(e, Entry::Chain { .. }))
        .map(ChainRef::of)
        .collect();
    let surviving: Vec<&Entry> = applied.prepend.iter().filter(|e| out.survives_flush(e)).collect();
    let recorded: HashSet<(Family, String)> = surviving.iter().map(|e| identity(e)).collect();
    out.insert =
        desired.prepend.iter().filter(|e| !recorded.contains(&identity(e))).cloned().collect();
    let wanted: HashSet<(Family, String)> = desired.prepend.iter().map(identity).collect();
    out.delete_prepend =
        surviving.into_iter().filter(|e| !wanted.contains(&identity(e))).cloned().collect();
    out
}

/// What the kernel holds of the entries a controller applied, as it listed them for a
/// restore ([`restore_reads`] names the listings).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listed {
    /// The chains of each listed table.
    pub chains: HashMap<(Family, String), HashSet<String>>,
    /// The rules of each listed chain (empty for a missing chain).
    pub rules: HashMap<ChainRef, HashSet<RuleKey>>,
}

impl Listed {
    /// Whether the kernel holds `entry`; `None` when its table or chain was not listed (an
    /// entry of a disabled family, say: then it is left alone).
    pub fn holds(&self, entry: &Entry) -> Option<bool> {
        match entry {
            Entry::Chain { family, table, name } => self
                .chains
                .get(&(*family, table.to_string()))
                .map(|chains| chains.contains(&**name)),
            Entry::Rule { .. } => {
                let rules = self.rules.get(&ChainRef::of(entry))?;
                Some(RuleKey::of_entry(entry).is_some_and(|k| rules.contains(&k)))
            }
        }
    }
}

/// The listings [`restore_diff`] needs for `applied`: the tables of its chain entries and the
/// chains of its rules.
pub fn restore_reads(applied: &RuleSet) -> (BTreeSet<(Family, String)>, BTreeSet<ChainRef>) {
    let mut tables = BTreeSet::new();
    let mut chains = BTreeSet::new();
    for entry in applied.append.iter().chain(&applied.prepend) {
        match entry {
            Entry::Chain { family, table, .. } => {
                tables.insert((*family, table.to_string()));
            }
            Entry::Rule { .. } => {
                chains.insert(ChainRef::of(entry));
            }
        }
    }
    (tables, chains)
}

/// What restores the applied entries someone removed, as [`restore_diff`] returns it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RestoreDiff {
    /// The applied append entries from the first missing one on: each deleted and appended
    /// again, in order (the append list's order matters: MASQUERADE last).
    pub reset: Vec<Entry>,
    /// Applied prepend entries missing (or in a chain the reset flushes), inserted in order.
    pub insert: Vec<Entry>,
}

impl RestoreDiff {
    /// The changes in the order they are made.
    pub fn changes(&self) -> Vec<Change> {
        let mut out = Vec::with_capacity(self.len());
        for entry in &self.reset {
            out.push(Change::Delete(entry.clone()));
            out.push(Change::Append(entry.clone()));
        }
        out.extend(self.insert.iter().cloned().map(Change::Insert));
        out
    }

    /// The number of changes.
    pub fn len(&self) -> usize {
        2 * self.reset.len() + self.insert.len()
    }

    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many entries are restored (upstream's count: each reset entry once).
    pub fn restored(&self) -> usize {
        self.reset.len() + self.insert.len()
    }
}

impl fmt::Display for RestoreDiff {
    /// One line per change ([`RestoreDiff::changes`]), each ending in a newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_lines(f, &self.changes())
    }
}

/// The changes that restore the applied rule set where the kernel lost some of it (upstream's
/// `reconcile`): the first missing append entry and every one after it are deleted and
/// appended again; missing prepend entries inserted again, and so are the prepend rules of the
/// chains that reset flushes. Entries whose table or chain `kernel` did not list are left
/// alone. Finding everything present changes nothing.
pub fn restore_diff(applied: &RuleSet, kernel: &Listed) -> RestoreDiff {
    let reset = applied
        .append
        .iter()
        .position(|e| kernel.holds(e) == Some(false))
        .map_or_else(Vec::new, |i| applied.append[i..].to_vec());
    let flushed: HashSet<ChainRef> =
        reset.iter().filter(|e| matches!(e, Entry::Chain { .. })).map(ChainRef::of).collect();
    let insert = applied
        .prepend
        .iter()
        .filter(|e| match kernel.holds(e) {
            None => false,
            Some(present) => {
                let flushed = flushed.contains(&ChainRef::of(e));
                match e {
                    Entry::Rule { .. } => !present || flushed,
                    Entry::Chain { .. } => !present && !flushed,
                }
            }
        })
        .cloned()
        .collect();
    RestoreDiff { reset, insert }
}

/// One table of the kernel, as the sweep reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableListing {
    /// The family.
    pub family: Family,
    /// The table.
    pub table: String,
    /// Its chains, built-in and user-defined.
    pub chains: Vec<String>,
    /// Its rules, as (chain, spec).
    pub rules: Vec<(String, Vec<String>)>,
    /// Whether the table is Kilo's own (nftables: `table ip kilo`): then every rule in it is
    /// Kilo's, and its built-in chains are stand-ins Kilo may delete when they are empty.
    /// Otherwise (`iptables`) only [`is_kilo_rule`]'s rules and [`is_kilo_chain`]'s chains are.
    pub own: bool,
}

impl TableListing {
    /// Whether a rule of this table is Kilo's.
    pub fn owns_rule(&self, chain: &str, spec: &[String]) -> bool {
        self.own || is_kilo_rule(chain, spec)
    }
}

/// The tables [`sweep`] must read for `planned`: those its entries use and Kilo's usual ones
/// ([`TABLES`]), in both families.
pub fn sweep_tables(planned: &RuleSet) -> BTreeSet<(Family, String)> {
    let mut tables: BTreeSet<(Family, String)> = planned
        .append
        .iter()
        .chain(&planned.prepend)
        .map(|e| (e.family(), e.table().to_string()))
        .collect();
    for family in [Family::Ipv4, Family::Ipv6] {
        tables.extend(TABLES.iter().map(|t| (family, t.to_string())));
    }
    tables
}

/// The changes of a [`sweep`], in the order they are made: per table, its stale rules then its
/// stale chains; then the stand-ins of built-in chains the plan does not use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SweepDiff {
    /// The changes: [`Change::Delete`] of rules and chains, then [`Change::DeleteBaseChain`].
    pub changes: Vec<Change>,
}

impl SweepDiff {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The number of changes.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// `kernel` once every change is made (a base chain goes only if no rule is left in it).
    pub fn apply(&self, kernel: &[TableListing]) -> Vec<TableListing> {
        let mut out = kernel.to_vec();
        for change in &self.changes {
            let (family, table) = match change {
                Change::Delete(e) | Change::Append(e) | Change::Insert(e) => {
                    (e.family(), e.table())
                }
                Change::DeleteBaseChain(c) => (c.family, c.table.as_str()),
            };
            let Some(t) = out.iter_mut().find(|t| t.family == family && t.table == table) else {
                continue;
            };
            match change {
                Change::Delete(Entry::Rule { chain, spec, .. }) => {
                    let key = RuleKey::of_spec(table, chain, spec);
                    if let Some(i) = t
                        .rules
                        .iter()
                        .position(|(c, s)| *c == **chain && RuleKey::new(table, c, s) == key)
                    {
                        t.rules.remove(i);
                    }
                }
                Change::Delete(Entry::Chain { name, .. }) => {
                    t.rules.retain(|(c, _)| *c != **name);
                    t.chains.retain(|c| *c != **name);
                }
                Change::DeleteBaseChain(c) => {
                    if !t.rules.iter().any(|(chain, _)| *chain == c.name) {
                        t.chains.retain(|n| *n != c.name);
                    }
                }
                Change::Append(_) | Change::Insert(_) => {}
            }
        }
        out
    }
}

impl fmt::Display for SweepDiff {
    /// One line per change, each ending in a newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_lines(f, &self.changes)
    }
}

/// The changes that rid `kernel` of every rule and chain that is Kilo's (see
/// [`TableListing::own`]) but that `planned` lacks, and of all but one copy of each planned rule
/// of a built-in chain (per family: the IPv4 and IPv6 copies of a rule are two rules). Rules in Kilo chains are left to the chains: a planned Kilo chain is
/// flushed when set, an unplanned one deleted whole. Built-in chains' stand-ins that no planned
/// rule uses go too (when empty).
pub fn sweep(planned: &RuleSet, kernel: &[TableListing]) -> SweepDiff {
    let mut wanted: HashSet<(Family, RuleKey)> = HashSet::new();
    let mut chains: HashSet<ChainRef> = HashSet::new();
    let mut used: HashSet<ChainRef> = HashSet::new();
    for entry in planned.append.iter().chain(&planned.prepend) {
        match entry {
            Entry::Chain { .. } => {
                chains.insert(ChainRef::of(entry));
            }
            Entry::Rule { .. } => {
                used.insert(ChainRef::of(entry));
                wanted.extend(RuleKey::of_entry(entry).map(|k| (entry.family(), k)));
            }
        }
    }
    let chain_ref = |t: &TableListing, name: &str| ChainRef {
        family: t.family,
        table: t.table.clone(),
        name: name.to_string(),
    };
    let mut out = SweepDiff::default();
    let mut seen: HashSet<(Family, RuleKey)> = HashSet::new();
    for t in kernel {
        for (chain, spec) in &t.rules {
            if is_kilo_chain(chain) || !t.owns_rule(chain, spec) {
                continue;
            }
            let key = (t.family, RuleKey::new(&t.table, chain, spec));
            if wanted.contains(&key) && seen.insert(key) {
                continue;
            }
            out.changes.push(Change::Delete(Entry::Rule {
                family: t.family,
                table: t.table.clone().into(),
                chain: chain.clone().into(),
                spec: Spec::Args(spec.clone()),
            }));
        }
        for name in t.chains.iter().filter(|n| is_kilo_chain(n)) {
            if !chains.contains(&chain_ref(t, name)) {
                out.changes.push(Change::Delete(Entry::chain(
                    t.family,
                    t.table.clone(),
                    name.clone(),
                )));
            }
        }
    }
    for t in kernel.iter().filter(|t| t.own) {
        for name in t.chains.iter().filter(|n| !is_kilo_chain(n)) {
            if !used.contains(&chain_ref(t, name)) {
                out.changes.push(Change::DeleteBaseChain(chain_ref(t, name)));
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "diff_tests.rs"]
mod tests;
