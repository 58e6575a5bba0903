//! The `iptables` / `ip6tables` binaries as a [`Client`].
//!
//! We run the binaries ourselves with an argument vector instead of through the `iptables` crate:
//! that crate takes each rule as one string and splits it with a quote regex that cuts
//! upstream's comment `Kilo: forward packets from the node's pod subnet` at the apostrophe, and
//! its fixed `&'static str` command admits no prefix such as `ip netns exec NS`.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};

use kilo_core::firewall::{Family, RuleSet, Spec, TableListing};

use super::batch::{Model, Op, restore_input};
use super::controller::{Client, Controller};
use super::rule::{RuleKey, parse_listing};
use super::{FirewallError, OpLabels};

/// How binaries are started: directly, or behind a prefix such as `ip netns exec NS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Runner {
    prefix: Vec<String>,
}

impl Runner {
    /// Runs binaries directly.
    pub fn new() -> Runner {
        Runner::default()
    }

    /// Runs every binary behind `prefix` (its first element is the program).
    pub fn with_prefix(prefix: Vec<String>) -> Runner {
        Runner { prefix }
    }

    /// Runs every binary inside the named network namespace (`ip netns exec NAME …`).
    pub fn netns(name: &str) -> Runner {
        Runner::with_prefix(vec!["ip".into(), "netns".into(), "exec".into(), name.into()])
    }

    /// Runs `program args…` and returns its output whatever its exit status.
    pub fn output(&self, program: &str, args: &[String]) -> Result<Output, FirewallError> {
        let (first, rest) = match self.prefix.split_first() {
            Some((first, rest)) => (first.as_str(), rest),
            None => (program, &[][..]),
        };
        let mut command = Command::new(first);
        command.args(rest);
        if !self.prefix.is_empty() {
            command.arg(program);
        }
        command.args(args);
        command.output().map_err(|e| FirewallError::Spawn {
            command: self.command_line(program, args),
            message: e.to_string(),
        })
    }

    /// Runs `program args…` with `input` on its standard input; a non-zero exit is an error.
    pub fn run_with_input(
        &self,
        program: &str,
        args: &[String],
        input: &str,
    ) -> Result<String, FirewallError> {
        let (first, rest) = match self.prefix.split_first() {
            Some((first, rest)) => (first.as_str(), rest),
            None => (program, &[][..]),
        };
        let mut command = Command::new(first);
        command.args(rest);
        if !self.prefix.is_empty() {
            command.arg(program);
        }
        command.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let spawn_error = |e: std::io::Error| FirewallError::Spawn {
            command: self.command_line(program, args),
            message: e.to_string(),
        };
        let mut child = command.spawn().map_err(spawn_error)?;
        let mut stdin = child.stdin.take();
        let output = std::thread::scope(|scope| {
            // Written from a thread of its own so a child that fills its output pipe before
            // reading all its input cannot deadlock us.
            scope.spawn(move || {
                if let Some(stdin) = stdin.as_mut() {
                    let _ = stdin.write_all(input.as_bytes());
                }
            });
            child.wait_with_output()
        })
        .map_err(spawn_error)?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(self.failure(program, args, &output))
        }
    }

    /// Runs `program args…`; a non-zero exit is an error.
    pub fn run(&self, program: &str, args: &[String]) -> Result<String, FirewallError> {
        let output = self.output(program, args)?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(self.failure(program, args, &output))
        }
    }

    fn failure(&self, program: &str, args: &[String], output: &Output) -> FirewallError {
        FirewallError::Command {
            command: self.command_line(program, args),
            code: output.status.code(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        }
    }

    /// The command line as text, for messages.
    pub fn command_line(&self, program: &str, args: &[String]) -> String {
        let mut words: Vec<String> = self.prefix.clone();
        words.push(program.to_string());
        words.extend(args.iter().map(|a| {
            if a.contains(char::is_whitespace) || a.is_empty() {
                format!("{a:?}")
            } else {
                a.clone()
            }
        }));
        words.join(" ")
    }
}

/// Which `iptables` the host uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Variant {
    /// Whatever `iptables` / `ip6tables` on the `PATH` are.
    Default,
    /// `iptables-legacy` / `ip6tables-legacy` (x_tables).
    Legacy,
    /// `iptables-nft` / `ip6tables-nft` (nf_tables back end).
    Nft,
}

impl Variant {
    /// The binary for a family.
    pub fn binary(self, family: Family) -> &'static str {
        match (self, family) {
            (Variant::Default, Family::Ipv4) => "iptables",
            (Variant::Default, Family::Ipv6) => "ip6tables",
            (Variant::Legacy, Family::Ipv4) => "iptables-legacy",
            (Variant::Legacy, Family::Ipv6) => "ip6tables-legacy",
            (Variant::Nft, Family::Ipv4) => "iptables-nft",
            (Variant::Nft, Family::Ipv6) => "ip6tables-nft",
        }
    }

    fn save_binary(self, family: Family) -> String {
        format!("{}-save", self.binary(family))
    }

    fn restore_binary(self, family: Family) -> String {
        format!("{}-restore", self.binary(family))
    }
}

/// Whether the kernel has IPv6 disabled: `/sys/module/ipv6/parameters/disable` is `1`, or the
/// kernel has no IPv6 at all (`/proc/net/if_inet6` missing).
pub fn ipv6_disabled() -> bool {
    match std::fs::read_to_string("/sys/module/ipv6/parameters/disable") {
        Ok(v) => v.trim() == "1",
        Err(_) => !std::path::Path::new("/proc/net/if_inet6").exists(),
    }
}

/// The binaries as a controller client.
pub(crate) struct IptablesClient {
    runner: Runner,
    variant: Variant,
    /// The writes queued between `begin_batch` and `commit_batch`; `None`: write at once.
    batch: Mutex<Option<Vec<Op>>>,
}

/// Up to this many queued writes are performed one process each; more go through one
/// `iptables-restore` per family.
const BATCH_THRESHOLD: usize = 8;

fn args(head: &[&str], spec: &Spec) -> Vec<String> {
    let mut out: Vec<String> = vec!["--wait".to_string()];
    out.extend(head.iter().map(|s| s.to_string()));
    out.extend(spec.iter().map(|a| a.to_string()));
    out
}

/// No arguments after the head.
const NO_ARGS: Spec = Spec::Args(Vec::new());

impl IptablesClient {
    fn queue(&self) -> MutexGuard<'_, Option<Vec<Op>>> {
        self.batch.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `op` while a batch is open, else performs it at once.
    fn queue_or(&self, op: Op) -> Result<(), FirewallError> {
        if let Some(ops) = self.queue().as_mut() {
            ops.push(op);
            return Ok(());
        }
        self.perform(std::slice::from_ref(&op))
    }

    /// Performs `ops` one process (or two, with the `-C` check) each, as upstream does: failed
    /// deletions are ignored, any other failure stops there and is returned.
    fn perform(&self, ops: &[Op]) -> Result<(), FirewallError> {
        for op in ops {
            match op {
                Op::ClearChain { family, table, chain } => {
                    self.direct_clear_chain(*family, table, chain)?
                }
                Op::DeleteChain { family, table, chain } => {
                    let _ = self.direct_delete_chain(*family, table, chain);
                }
                Op::Append { family, table, chain, spec } => {
                    self.direct_append_unique(*family, table, chain, spec)?
                }
                Op::Insert { family, table, chain, spec } => {
                    self.direct_insert_unique(*family, table, chain, spec)?
                }
                Op::Delete { family, table, chain, spec } => {
                    let _ = self.direct_delete(*family, table, chain, spec);
                }
            }
        }
        Ok(())
    }

    /// Performs `ops` (all of `family`) in one `iptables-restore --noflush` transaction, after
    /// one `iptables-save` that tells which rules and chains exist.
    fn restore(&self, family: Family, ops: &[Op]) -> Result<(), FirewallError> {
        let saved = self.runner.run(&self.variant.save_binary(family), &[])?;
        let mut tables: Vec<&str> = ops.iter().map(Op::table).collect();
        tables.sort_unstable();
        tables.dedup();
        let (input, lines) = restore_input(&mut Model::parse(&saved, &tables), ops);
        if lines == 0 {
            return Ok(());
        }
        let args = ["--noflush".to_string(), "--wait".to_string()];
        self.runner.run_with_input(&self.variant.restore_binary(family), &args, &input).map(drop)
    }

    fn run(&self, family: Family, args: &[String]) -> Result<String, FirewallError> {
        self.runner.run(self.variant.binary(family), args)
    }

    fn check(&self, family: Family, t: &str, c: &str, spec: &Spec) -> Result<bool, FirewallError> {
        let a = args(&["-t", t, "-C", c], spec);
        let output = self.runner.output(self.variant.binary(family), &a)?;
        match output.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(self.runner.failure(self.variant.binary(family), &a, &output)),
        }
    }
}

impl IptablesClient {
    fn direct_clear_chain(
        &self,
        family: Family,
        table: &str,
        chain: &str,
    ) -> Result<(), FirewallError> {
        let create = args(&["-t", table, "-N", chain], &NO_ARGS);
        let output = self.runner.output(self.variant.binary(family), &create)?;
        if output.status.success() {
            return Ok(());
        }
        if String::from_utf8_lossy(&output.stderr).contains("exists") {
            return self.run(family, &args(&["-t", table, "-F", chain], &NO_ARGS)).map(drop);
        }
        Err(self.runner.failure(self.variant.binary(family), &create, &output))
    }

    fn direct_delete_chain(
        &self,
        family: Family,
        table: &str,
        chain: &str,
    ) -> Result<(), FirewallError> {
        self.run(family, &args(&["-t", table, "-X", chain], &NO_ARGS)).map(drop)
    }

    fn direct_append_unique(
        &self,
        f: Family,
        t: &str,
        c: &str,
        spec: &Spec,
    ) -> Result<(), FirewallError> {
        if self.check(f, t, c, spec)? {
            return Ok(());
        }
        self.run(f, &args(&["-t", t, "-A", c], spec)).map(drop)
    }

    fn direct_insert_unique(
        &self,
        f: Family,
        t: &str,
        c: &str,
        spec: &Spec,
    ) -> Result<(), FirewallError> {
        if self.check(f, t, c, spec)? {
            return Ok(());
        }
        self.run(f, &args(&["-t", t, "-I", c, "1"], spec)).map(drop)
    }

    fn direct_delete(&self, f: Family, t: &str, c: &str, spec: &Spec) -> Result<(), FirewallError> {
        self.run(f, &args(&["-t", t, "-D", c], spec)).map(drop)
    }
}

impl Client for IptablesClient {
    fn clear_chain(&self, family: Family, table: &str, chain: &str) -> Result<(), FirewallError> {
        let (table, chain) = (table.to_string(), chain.to_string());
        self.queue_or(Op::ClearChain { family, table, chain })
    }

    fn delete_chain(&self, family: Family, table: &str, chain: &str) -> Result<(), FirewallError> {
        let (table, chain) = (table.to_string(), chain.to_string());
        self.queue_or(Op::DeleteChain { family, table, chain })
    }

    fn append_unique(
        &self,
        family: Family,
        table: &str,
        chain: &str,
        spec: &Spec,
    ) -> Result<(), FirewallError> {
        let (table, chain, spec) = (table.to_string(), chain.to_string(), spec.clone());
        self.queue_or(Op::Append { family, table, chain, spec })
    }

    fn insert_unique(
        &self,
        family: Family,
        table: &str,
        chain: &str,
        spec: &Spec,
    ) -> Result<(), FirewallError> {
        let (table, chain, spec) = (table.to_string(), chain.to_string(), spec.clone());
        self.queue_or(Op::Insert { family, table, chain, spec })
    }

    fn delete(
        &self,
        family: Family,
        table: &str,
        chain: &str,
        spec: &Spec,
    ) -> Result<(), FirewallError> {
        let (table, chain, spec) = (table.to_string(), chain.to_string(), spec.clone());
        self.queue_or(Op::Delete { family, table, chain, spec })
    }

    fn begin_batch(&self) {
        *self.queue() = Some(Vec::new());
    }

    fn commit_batch(&self) -> Result<(), FirewallError> {
        let ops = self.queue().take().unwrap_or_default();
        if ops.len() <= BATCH_THRESHOLD {
            return self.perform(&ops);
        }
        let mut result = Ok(());
        for family in [Family::Ipv4, Family::Ipv6] {
            let ops: Vec<Op> = ops.iter().filter(|op| op.family() == family).cloned().collect();
            if ops.is_empty() {
                continue;
            }
            if let Err(e) = self.restore(family, &ops) {
                // One rule of the batch is refused (or the restore binary is missing): the
                // per-rule path applies what it can and names the rule that fails.
                tracing::warn!(error = %e, ?family, "iptables-restore batch failed, writing one rule at a time");
                result = result.and(self.perform(&ops));
            }
        }
        result
    }

    fn list(&self, f: Family, t: &str, c: &str) -> Result<Option<Vec<RuleKey>>, FirewallError> {
        match self.run(f, &args(&["-t", t, "-S", c], &NO_ARGS)) {
            Ok(out) => Ok(Some(out.lines().filter_map(|l| RuleKey::from_listing(t, l)).collect())),
            // The nft variant words a missing chain differently from legacy: ask the table.
            Err(e) if !self.list_chains(f, t)?.iter().any(|name| name == c) => {
                drop(e);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn table_listing(&self, f: Family, t: &str) -> Result<TableListing, FirewallError> {
        let out = self.run(f, &args(&["-t", t, "-S"], &NO_ARGS))?;
        Ok(TableListing {
            family: f,
            table: t.to_string(),
            chains: chains_of(&out),
            rules: out.lines().filter_map(parse_listing).collect(),
            own: false,
        })
    }

    fn list_chains(&self, f: Family, t: &str) -> Result<Vec<String>, FirewallError> {
        Ok(chains_of(&self.run(f, &args(&["-t", t, "-S"], &NO_ARGS))?))
    }
}

/// The chains of an `iptables -S` listing (`-N` and `-P` lines).
fn chains_of(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            match (words.next(), words.next()) {
                (Some("-N" | "-P"), Some(name)) => Some(name.to_string()),
                _ => None,
            }
        })
        .collect()
}

/// Kilo's rules through the `iptables` binaries, with upstream's controller semantics.
pub struct Iptables {
    controller: Controller<IptablesClient>,
    variant: Variant,
}

impl Iptables {
    /// Uses `variant` through `runner`; IPv6 follows the kernel ([`ipv6_disabled`]).
    pub fn new(runner: Runner, variant: Variant) -> Iptables {
        Iptables::with_ipv6(runner, variant, !ipv6_disabled())
    }

    /// Uses the variant the host already uses ([`super::detect_variant`]) through `runner`.
    pub fn detect(runner: Runner) -> Iptables {
        let variant = super::detect_variant(&runner);
        Iptables::new(runner, variant)
    }

    /// Uses `variant` through `runner`; with `ipv6 == false` IPv6 operations are no-ops.
    pub fn with_ipv6(runner: Runner, variant: Variant, ipv6: bool) -> Iptables {
        Iptables {
            controller: Controller::new(
                IptablesClient { runner, variant, batch: Mutex::new(None) },
                ipv6,
            ),
            variant,
        }
    }

    /// The variant in use.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// The runner in use.
    pub fn runner(&self) -> &Runner {
        &self.controller.client().runner
    }

    /// Applies `rules` as a diff (upstream `Set`): see [`super::Firewall::set`].
    pub fn set(&mut self, rules: &RuleSet) -> Result<(), FirewallError> {
        self.controller.set(rules)
    }

    /// Restores missing rules; returns how many entries it re-applied.
    pub fn reconcile(&mut self) -> Result<usize, FirewallError> {
        self.controller.reconcile()
    }

    /// Removes everything applied: prepend rules, then append rules and chains in order.
    pub fn clean_up(&mut self) -> Result<(), FirewallError> {
        self.controller.clean_up()
    }

    /// Operation counts by upstream's metric labels.
    pub fn operations(&self) -> BTreeMap<OpLabels, u64> {
        self.controller.operations().clone()
    }

    /// The rule set currently applied.
    pub fn applied(&self) -> RuleSet {
        self.controller.applied()
    }
}
