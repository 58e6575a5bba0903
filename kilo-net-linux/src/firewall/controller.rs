//! Upstream's rule controller, generic over the client that talks to the
//! kernel: `set` walks the append list and diffs the prepend list, `reconcile` restores what
//! someone deleted, `clean_up` removes everything. Every client call is counted with upstream's
//! metric labels.
//!
//! What `set`, `reconcile` and the sweep write is decided by kilo-core
//! ([`kilo_core::firewall::set_diff`], [`kilo_core::firewall::restore_diff`],
//! [`kilo_core::firewall::sweep`]); the controller reads the kernel, keeps the record of what it
//! applied and carries the changes out.

use std::collections::{BTreeMap, HashSet};

use kilo_core::firewall::{
    Change, Entry, Family, Listed, RuleSet, Spec, TableListing, restore_diff, restore_reads,
    set_diff, sweep_tables,
};

use super::rule::{RuleKey, identity};
use super::{FirewallError, OpLabels, Operation};

/// What the controller needs from a firewall implementation. Each method is one counted
/// operation (upstream's `Client` interface, with upstream's operation names).
pub(crate) trait Client {
    /// Creates the chain if it is missing, then flushes it (`ClearChain`; `iptables -N`, `-F`;
    /// `nft add chain`, `nft flush chain`).
    fn clear_chain(&self, family: Family, table: &str, chain: &str) -> Result<(), FirewallError>;
    /// Deletes an (empty, unreferenced) chain (`DeleteChain`; `iptables -X`; `nft delete chain`).
    fn delete_chain(&self, family: Family, table: &str, chain: &str) -> Result<(), FirewallError>;
    /// Appends the rule unless it is present (`AppendUnique`; `iptables -C`, `-A`;
    /// `nft add rule`).
    fn append_unique(
        &self,
        family: Family,
        table: &str,
        chain: &str,
        spec: &Spec,
    ) -> Result<(), FirewallError>;
    /// Inserts the rule at position 1 unless it is present (`InsertUnique`; `iptables -C`,
    /// `-I CHAIN 1`; `nft insert rule`).
    fn insert_unique(
        &self,
        family: Family,
        table: &str,
        chain: &str,
        spec: &Spec,
    ) -> Result<(), FirewallError>;
    /// Deletes the rule (`Delete`; `iptables -D`; `nft delete rule … handle H`); an error when
    /// it is absent.
    fn delete(
        &self,
        family: Family,
        table: &str,
        chain: &str,
        spec: &Spec,
    ) -> Result<(), FirewallError>;
    /// The rules of a chain, `None` when the chain does not exist (`List`; `iptables -S CHAIN`;
    /// `nft list chain`).
    fn list(
        &self,
        family: Family,
        table: &str,
        chain: &str,
    ) -> Result<Option<Vec<RuleKey>>, FirewallError>;
    /// The chains of a table (`ListChains`; `iptables -S`; `nft list table`).
    fn list_chains(&self, family: Family, table: &str) -> Result<Vec<String>, FirewallError>;
    /// The chains and rules of a table, as the sweep reads them (one `iptables -t TABLE -S`;
    /// every chain and rule of our `kilo` tables for nftables, which are Kilo's own).
    fn table_listing(&self, family: Family, table: &str) -> Result<TableListing, FirewallError>;
    /// Deletes a built-in chain's stand-in if the implementation has one and it is empty (our
    /// nftables base chains, `nft delete chain`); returns whether it did. `iptables` cannot
    /// delete built-in chains: nothing to do.
    fn remove_base_chain(
        &self,
        _family: Family,
        _table: &str,
        _chain: &str,
    ) -> Result<bool, FirewallError> {
        Ok(false)
    }
    /// From now on the writes may be queued until [`Client::commit_batch`] (reads are not);
    /// a queued write reports success. By default writes happen at once.
    fn begin_batch(&self) {}
    /// Performs the queued writes, as the per-call path would have (present rules not written
    /// again, failed deletions ignored), and writes at once again.
    fn commit_batch(&self) -> Result<(), FirewallError> {
        Ok(())
    }
}

/// Upstream's controller over a client.
pub(crate) struct Controller<C> {
    client: C,
    ipv6: bool,
    append: Vec<Entry>,
    prepend: Vec<Entry>,
    ops: BTreeMap<OpLabels, u64>,
    /// Whether the kernel has been swept of Kilo rules this controller did not plan.
    swept: bool,
    /// How many batches are open ([`Controller::begin`]): only the outermost reaches the client.
    depth: usize,
}

impl<C: Client> Controller<C> {
    /// A controller with nothing applied; `ipv6 == false` turns IPv6 operations into no-ops.
    pub(crate) fn new(client: C, ipv6: bool) -> Self {
        Controller {
            client,
            ipv6,
            append: Vec::new(),
            prepend: Vec::new(),
            ops: BTreeMap::new(),
            swept: false,
            depth: 0,
        }
    }

    /// Opens a batch of the client ([`Client::begin_batch`]); batches nest: one opened while
    /// another is open joins it, and the client commits once, when the outermost closes.
    pub(crate) fn begin(&mut self) {
        if self.depth == 0 {
            self.client.begin_batch();
        }
        self.depth += 1;
    }

    /// Closes the batch [`Controller::begin`] opened; the outermost commits the client's.
    pub(crate) fn commit(&mut self) -> Result<(), FirewallError> {
        self.depth = self.depth.saturating_sub(1);
        if self.depth == 0 { self.client.commit_batch() } else { Ok(()) }
    }

    /// The client.
    pub(crate) fn client(&self) -> &C {
        &self.client
    }

    /// Whether IPv6 operations reach the kernel.
    pub(crate) fn ipv6(&self) -> bool {
        self.ipv6
    }

    /// Operation counts so far.
    pub(crate) fn operations(&self) -> &BTreeMap<OpLabels, u64> {
        &self.ops
    }

    /// The rule set currently applied (as recorded).
    pub(crate) fn applied(&self) -> RuleSet {
        RuleSet { append: self.append.clone(), prepend: self.prepend.clone() }
    }

    fn count(&mut self, family: Family, operation: Operation, table: &str, chain: &str) {
        let labels = OpLabels {
            protocol: family,
            operation,
            table: table.to_string(),
            chain: chain.to_string(),
        };
        *self.ops.entry(labels).or_default() += 1;
    }

    fn enabled(&self, family: Family) -> bool {
        family == Family::Ipv4 || self.ipv6
    }

    /// Appends an entry: a chain is created and flushed, a rule appended unless present.
    fn append_entry(&mut self, entry: &Entry) -> Result<(), FirewallError> {
        if !self.enabled(entry.family()) {
            return Ok(());
        }
        match entry {
            Entry::Chain { family, table, name } => {
                self.count(*family, Operation::ClearChain, table, name);
                self.client.clear_chain(*family, table, name)?;
            }
            Entry::Rule { family, table, chain, spec } => {
                self.count(*family, Operation::AppendUnique, table, chain);
                self.client.append_unique(*family, table, chain, spec)?;
            }
        }
        Ok(())
    }

    /// Prepends an entry: a rule is inserted at position 1 unless present.
    fn prepend_entry(&mut self, entry: &Entry) -> Result<(), FirewallError> {
        match entry {
            Entry::Chain { .. } => self.append_entry(entry),
            Entry::Rule { family, table, chain, spec } => {
                if !self.enabled(*family) {
                    return Ok(());
                }
                self.count(*family, Operation::InsertUnique, table, chain);
                self.client.insert_unique(*family, table, chain, spec)
            }
        }
    }

    /// Deletes an entry: a chain is flushed then deleted (deletion errors ignored), a rule
    /// deleted (errors ignored: it is likely gone already).
    fn delete_entry(&mut self, entry: &Entry) -> Result<(), FirewallError> {
        if !self.enabled(entry.family()) {
            return Ok(());
        }
        match entry {
            Entry::Chain { family, table, name } => {
                self.count(*family, Operation::ClearChain, table, name);
                self.client.clear_chain(*family, table, name)?;
                self.count(*family, Operation::DeleteChain, table, name);
                let _ = self.client.delete_chain(*family, table, name);
            }
            Entry::Rule { family, table, chain, spec } => {
                self.count(*family, Operation::Delete, table, chain);
                let _ = self.client.delete(*family, table, chain, spec);
            }
        }
        Ok(())
    }

    /// Deletes the recorded entries of `list` from index `from` on, keeping the record exact
    /// when a deletion fails.
    fn delete_from(&mut self, prepend: bool, from: usize) -> Result<(), FirewallError> {
        let list = if prepend {
            std::mem::take(&mut self.prepend)
        } else {
            std::mem::take(&mut self.append)
        };
        let mut kept: Vec<Entry> = list[..from.min(list.len())].to_vec();
        let mut result = Ok(());
        for (j, entry) in list.iter().enumerate().skip(from) {
            if let Err(e) = self.delete_entry(entry) {
                kept.extend_from_slice(&list[j..]);
                result = Err(e);
                break;
            }
        }
        // Upstream lists a chain before the rules that jump to it (`KILO-IPIP` before the
        // `INPUT` jump), so its `-X` fails while they exist: once they are gone, try again.
        if result.is_ok() {
            for entry in list.iter().skip(from) {
                let Entry::Chain { family, table, name } = entry else {
                    continue;
                };
                if !self.enabled(*family) {
                    continue;
                }
                self.count(*family, Operation::ListChains, table, "*");
                if self
                    .client
                    .list_chains(*family, table)
                    .is_ok_and(|c| c.iter().any(|n| *n == **name))
                {
                    self.count(*family, Operation::DeleteChain, table, name);
                    let _ = self.client.delete_chain(*family, table, name);
                }
            }
        }
        if prepend {
            self.prepend = kept;
        } else {
            self.append = kept;
        }
        result
    }

    /// Applies `rules` as a diff against what this controller applied before (upstream `Set`):
    /// kilo-core's [`set_diff`] (the append list rewritten from its first difference, the
    /// prepend list diffed, prepend rules of chains it flushes inserted again) carried out in
    /// order, the record kept exact when a write fails.
    ///
    /// The client may batch the writes of one call ([`Client::begin_batch`]); when the batch
    /// fails the error is returned, and the record may then hold entries the kernel lacks:
    /// the next reconcile restores them.
    ///
    /// The first call of a controller first sweeps the kernel ([`Controller::sweep`]): what an
    /// earlier agent (killed, say) left and `rules` lacks goes, in the same batch.
    pub(crate) fn set(&mut self, rules: &RuleSet) -> Result<(), FirewallError> {
        self.begin();
        let mut swept = self.swept;
        let mut result = Ok(());
        if !swept {
            result = self.sweep(rules);
            swept = result.is_ok();
        }
        if result.is_ok() {
            result = self.set_entries(rules);
        }
        let committed = self.commit();
        if swept && committed.is_ok() {
            self.swept = true;
        }
        result.and(committed)
    }

    fn set_entries(&mut self, rules: &RuleSet) -> Result<(), FirewallError> {
        let diff = set_diff(&self.applied(), rules);
        // The record's entries after the kept ones are `diff.delete_append`.
        self.delete_from(false, diff.kept)?;
        for entry in &diff.append {
            self.append_entry(entry)?;
            self.append.push(entry.clone());
        }

        self.prepend.retain(|e| diff.survives_flush(e));
        for entry in &diff.insert {
            self.prepend_entry(entry)?;
            self.prepend.push(entry.clone());
        }
        let doomed: HashSet<(Family, String)> =
            diff.delete_prepend.iter().map(|e| (e.family(), identity(e))).collect();
        let old = std::mem::take(&mut self.prepend);
        let mut kept = Vec::with_capacity(old.len());
        let mut result = Ok(());
        for entry in old {
            if result.is_ok() && doomed.contains(&(entry.family(), identity(&entry))) {
                if let Err(e) = self.delete_entry(&entry) {
                    result = Err(e);
                    kept.push(entry);
                }
            } else {
                kept.push(entry);
            }
        }
        self.prepend = kept;
        result
    }

    /// Lists what [`kilo_core::firewall::restore_diff`] needs to know of the applied entries
    /// (each table's chains and each chain's rules once; nothing of a disabled family).
    fn list_applied(&mut self) -> Result<Listed, FirewallError> {
        let (tables, chains) = restore_reads(&self.applied());
        let mut listed = Listed::default();
        for (family, table) in tables {
            if !self.enabled(family) {
                continue;
            }
            self.count(family, Operation::ListChains, &table, "*");
            let names = self.client.list_chains(family, &table)?;
            listed.chains.insert((family, table), names.into_iter().collect());
        }
        for chain in chains {
            if !self.enabled(chain.family) {
                continue;
            }
            self.count(chain.family, Operation::List, &chain.table, &chain.name);
            let rules = self.client.list(chain.family, &chain.table, &chain.name)?;
            listed.rules.insert(chain, rules.unwrap_or_default().into_iter().collect());
        }
        Ok(listed)
    }

    /// Restores entries someone removed (upstream `reconcile`): lists what the kernel holds of
    /// the applied entries and carries out kilo-core's [`kilo_core::firewall::restore_diff`]
    /// (the first missing append entry and every one after it deleted and re-appended; missing
    /// prepend rules, and those of chains the reset flushes, re-inserted). Finding everything
    /// present costs only listings, no writes. Returns how many entries it re-applied. The
    /// writes of the append reset and those of the prepend rules are one batch of the client.
    pub(crate) fn reconcile(&mut self) -> Result<usize, FirewallError> {
        let listed = self.list_applied()?;
        let diff = restore_diff(&self.applied(), &listed);
        let mut restored = 0;
        self.begin();
        let result = diff.reset.iter().try_for_each(|entry| {
            self.delete_entry(entry)?;
            self.append_entry(entry)?;
            restored += 1;
            Ok(())
        });
        let result = result.and_then(|()| {
            diff.insert.iter().try_for_each(|entry| {
                self.prepend_entry(entry)?;
                restored += 1;
                Ok(())
            })
        });
        let committed = self.commit();
        result.and(committed)?;
        if restored > 0 {
            tracing::info!(entries = restored, "restored Kilo firewall rules:\n{diff}");
        }
        Ok(restored)
    }

    /// Removes every applied entry: prepend rules, then append entries in order; then sweeps
    /// the kernel of every other rule and chain of Kilo's (those an earlier agent left).
    pub(crate) fn clean_up(&mut self) -> Result<(), FirewallError> {
        self.begin();
        let result = self.delete_from(true, 0).and_then(|()| self.delete_from(false, 0));
        let committed = self.commit();
        result.and(committed)?;
        self.sweep(&RuleSet::default())
    }

    /// Removes from the kernel every rule and chain that is recognisably Kilo's but that
    /// `planned` lacks, and all but one copy of each planned rule of a built-in chain: reads
    /// the tables kilo-core's [`sweep_tables`] names, asks [`kilo_core::firewall::sweep`] what
    /// goes and carries it out. Kilo chains that `planned` keeps are left alone: setting them
    /// flushes them. The deletions are one batch of the client (or join the open one); the
    /// stand-ins of built-in chains go after them.
    pub(crate) fn sweep(&mut self, planned: &RuleSet) -> Result<(), FirewallError> {
        let mut listed = Vec::new();
        for (family, table) in sweep_tables(planned) {
            if !self.enabled(family) {
                continue;
            }
            self.count(family, Operation::ListChains, &table, "*");
            listed.push(self.client.table_listing(family, &table)?);
        }
        let diff = kilo_core::firewall::sweep(planned, &listed);
        self.begin();
        let mut stale = 0usize;
        let mut base_chains = Vec::new();
        for change in &diff.changes {
            match change {
                Change::Delete(Entry::Rule { family, table, chain, spec }) => {
                    stale += 1;
                    self.count(*family, Operation::Delete, table, chain);
                    let _ = self.client.delete(*family, table, chain, spec);
                }
                Change::Delete(Entry::Chain { family, table, name }) => {
                    stale += 1;
                    self.count(*family, Operation::ClearChain, table, name);
                    if let Err(e) = self.client.clear_chain(*family, table, name) {
                        let _ = self.commit();
                        return Err(e);
                    }
                    self.count(*family, Operation::DeleteChain, table, name);
                    let _ = self.client.delete_chain(*family, table, name);
                }
                Change::DeleteBaseChain(chain) => base_chains.push(chain),
                Change::Append(_) | Change::Insert(_) => {}
            }
        }
        self.commit()?;
        for chain in base_chains {
            let (family, table, name) = (chain.family, &chain.table, &chain.name);
            if self.client.remove_base_chain(family, table, name).unwrap_or(false) {
                stale += 1;
                self.count(family, Operation::DeleteChain, table, name);
            }
        }
        if stale > 0 {
            tracing::info!(
                entries = stale,
                "removed Kilo firewall rules and chains that no plan of this agent wants:\n{diff}"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "controller_tests.rs"]
mod tests;
