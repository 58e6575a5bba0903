//! Properties of the firewall decisions (`kilo_core::firewall::{set_diff, sweep}`), against a
//! small model of the kernel's tables: a rule set against itself changes nothing, carrying out
//! `set_diff(a, b)` on the kernel `a` left gives the kernel `b` would leave, the sweep of a
//! planned kernel is empty and the sweep removes exactly Kilo's leftovers, and every diff prints
//! one line per change.

use std::collections::{BTreeMap, HashSet};

use kilo_core::firewall::{
    Change, Entry, Family, Listed, RestoreDiff, RuleKey, RuleSet, SetDiff, TableListing,
    is_kilo_chain, is_kilo_rule, restore_diff, restore_reads, set_diff, split_args, sweep,
};
use proptest::prelude::*;

const BUILTIN: [&str; 3] = ["POSTROUTING", "INPUT", "FORWARD"];

fn rule(family: Family, table: &str, chain: &str, spec: &str) -> Entry {
    Entry::Rule {
        family,
        table: table.to_string().into(),
        chain: chain.to_string().into(),
        spec: split_args(spec).into(),
    }
}

fn family() -> impl Strategy<Value = Family> {
    prop_oneof![Just(Family::Ipv4), Just(Family::Ipv6)]
}

/// Entries of an append list: Kilo's chains and the rules appended to them or to built-in chains.
fn append_entry() -> impl Strategy<Value = Entry> {
    (family(), 0usize..8, 0u8..3).prop_map(|(f, which, n)| match which {
        0 => Entry::chain(f, "nat", "KILO-NAT"),
        1 => Entry::chain(f, "filter", "KILO-IPIP"),
        2 => Entry::chain(f, "nat", "KILO-OLD"),
        3 => rule(f, "nat", "KILO-NAT", r#"-m comment --comment "Kilo: NAT remaining packets" -j MASQUERADE"#),
        4 => rule(f, "filter", "INPUT", r#"-p ipencap -m comment --comment "Kilo: jump to IPIP chain" -j KILO-IPIP"#),
        5 => rule(f, "filter", "INPUT", r#"-p ipencap -m comment --comment "Kilo: reject other IPIP traffic" -j DROP"#),
        6 => rule(f, "nat", "KILO-OLD", "-j RETURN"),
        _ => rule(
            f,
            "filter",
            "FORWARD",
            &format!(r#"-s 10.2.{n}.0/24 -m comment --comment "Kilo: forward packets from the pod subnet" -j ACCEPT"#),
        ),
    })
}

/// Rules of a prepend list (never also in an append list, as in Kilo's rule sets).
fn prepend_entry() -> impl Strategy<Value = Entry> {
    (family(), 0usize..3, 0u8..3).prop_map(|(f, which, n)| match which {
        0 => rule(
            f,
            "nat",
            "POSTROUTING",
            &format!(r#"-s 10.2.{n}.0/24 -m comment --comment "Kilo: jump to KILO-NAT chain" -j KILO-NAT"#),
        ),
        1 => rule(
            f,
            "nat",
            "KILO-NAT",
            &format!(r#"-d 10.5.0.{n}/32 -m comment --comment "Kilo: do not NAT packets destined for peers" -j RETURN"#),
        ),
        _ => rule(
            f,
            "filter",
            "KILO-IPIP",
            &format!(r#"-s 192.168.0.{n}/32 -m comment --comment "Kilo: allow IPIP traffic" -j ACCEPT"#),
        ),
    })
}

/// A rule set: an append list without repeated identities (a repeated append entry is deleted
/// from the kernel with its twin: upstream's semantics, not modelled), any prepend list.
fn ruleset() -> impl Strategy<Value = RuleSet> {
    (
        proptest::collection::vec(append_entry(), 0..8),
        proptest::collection::vec(prepend_entry(), 0..5),
    )
        .prop_map(|(append, prepend)| {
            let mut seen = HashSet::new();
            let append =
                append.into_iter().filter(|e| seen.insert((e.family(), e.identity()))).collect();
            RuleSet { append, prepend }
        })
}

/// The kernel's tables: each chain with its rules' keys, in order. Built-in chains always exist.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Kernel(BTreeMap<(Family, String, String), Vec<RuleKey>>);

impl Kernel {
    fn new() -> Kernel {
        let mut chains = BTreeMap::new();
        for f in [Family::Ipv4, Family::Ipv6] {
            for t in ["nat", "filter"] {
                for c in BUILTIN {
                    chains.insert((f, t.to_string(), c.to_string()), Vec::new());
                }
            }
        }
        Kernel(chains)
    }

    /// Makes the changes as `iptables` would (a write to a missing chain fails: nothing).
    fn execute(&mut self, changes: &[Change]) {
        for change in changes {
            let (e, at_top) = match change {
                Change::Append(e) => (e, false),
                Change::Insert(e) => (e, true),
                Change::Delete(Entry::Rule { family, table, chain, spec }) => {
                    let key = RuleKey::of_spec(table, chain, spec);
                    if let Some(rules) =
                        self.0.get_mut(&(*family, table.to_string(), chain.to_string()))
                        && let Some(i) = rules.iter().position(|k| *k == key)
                    {
                        rules.remove(i);
                    }
                    continue;
                }
                Change::Delete(Entry::Chain { family, table, name }) => {
                    self.0.remove(&(*family, table.to_string(), name.to_string()));
                    continue;
                }
                Change::DeleteBaseChain(_) => continue,
            };
            match e {
                Entry::Chain { family, table, name } => {
                    self.0.insert((*family, table.to_string(), name.to_string()), Vec::new());
                }
                Entry::Rule { family, table, chain, spec } => {
                    let key = RuleKey::of_spec(table, chain, spec);
                    if let Some(rules) =
                        self.0.get_mut(&(*family, table.to_string(), chain.to_string()))
                        && !rules.contains(&key)
                    {
                        if at_top { rules.insert(0, key) } else { rules.push(key) }
                    }
                }
            }
        }
    }

    /// What `rules` leaves in an empty kernel.
    fn of(rules: &RuleSet) -> Kernel {
        let mut kernel = Kernel::new();
        kernel.execute(&set_diff(&RuleSet::default(), rules).changes());
        kernel
    }

    /// Each chain's rules as a sorted list (prepend rules are inserted in another order).
    fn sorted(&self) -> BTreeMap<(Family, String, String), Vec<RuleKey>> {
        self.0
            .iter()
            .map(|(c, r)| {
                (c.clone(), {
                    let mut r = r.clone();
                    r.sort();
                    r
                })
            })
            .collect()
    }

    /// The tables as the sweep reads them through `iptables -S`, with `foreign` rules (of
    /// someone else) in built-in chains.
    fn listing(&self, foreign: &[(Family, &str, &str, &str)]) -> Vec<TableListing> {
        let mut out = Vec::new();
        for f in [Family::Ipv4, Family::Ipv6] {
            for t in ["filter", "nat"] {
                let mine = self.0.iter().filter(|((cf, ct, _), _)| *cf == f && ct == t);
                let mut listing = TableListing {
                    family: f,
                    table: t.to_string(),
                    chains: mine.clone().map(|((_, _, c), _)| c.clone()).collect(),
                    rules: mine
                        .flat_map(|((_, _, c), rules)| rules.iter().map(|k| (c.clone(), k.spec())))
                        .collect(),
                    own: false,
                };
                for (ff, ft, chain, spec) in foreign {
                    if *ff == f && *ft == t {
                        listing.rules.push((chain.to_string(), split_args(spec)));
                    }
                }
                out.push(listing);
            }
        }
        out
    }
}

/// A rule set as Kilo builds them: chains before the rules that use them, prepend rules only
/// in built-in chains or chains the set creates.
fn well_formed() -> impl Strategy<Value = RuleSet> {
    ruleset().prop_map(|mut rules| {
        rules.append.sort_by_key(|e| matches!(e, Entry::Rule { .. }));
        let made: HashSet<(Family, String, String)> = rules
            .append
            .iter()
            .filter(|e| matches!(e, Entry::Chain { .. }))
            .map(|e| (e.family(), e.table().to_string(), e.chain_name().to_string()))
            .collect();
        let exists = |e: &Entry| {
            BUILTIN.contains(&e.chain_name())
                || made.contains(&(e.family(), e.table().to_string(), e.chain_name().to_string()))
        };
        rules.append.retain(|e| exists(e));
        rules.prepend.retain(|e| exists(e));
        rules
    })
}

impl Kernel {
    /// What a controller that applied `applied` lists of the kernel for a restore.
    fn listed(&self, applied: &RuleSet) -> Listed {
        let (tables, chains) = restore_reads(applied);
        let mut listed = Listed::default();
        for (f, t) in tables {
            let names = self
                .0
                .keys()
                .filter(|(cf, ct, _)| *cf == f && *ct == t)
                .map(|(_, _, n)| n.clone())
                .collect();
            listed.chains.insert((f, t), names);
        }
        for c in chains {
            let rules = self.0.get(&(c.family, c.table.to_string(), c.name.to_string()));
            listed.rules.insert(c, rules.into_iter().flatten().cloned().collect());
        }
        listed
    }
}

fn foreign() -> Vec<(Family, &'static str, &'static str, &'static str)> {
    vec![
        (Family::Ipv4, "nat", "POSTROUTING", "-s 10.9.0.0/16 -j MASQUERADE"),
        (Family::Ipv4, "filter", "FORWARD", r#"-m comment --comment "kube: Kilo: x" -j ACCEPT"#),
    ]
}

fn identities(entries: &[Entry]) -> HashSet<(Family, String)> {
    entries.iter().map(|e| (e.family(), e.identity())).collect()
}

fn one_line_per_change(text: &str, len: usize) -> Result<(), TestCaseError> {
    prop_assert_eq!(text.lines().count(), len);
    prop_assert!(text.is_empty() || text.ends_with('\n'));
    for line in text.lines() {
        prop_assert!(
            line.starts_with("iptables -t ") || line.starts_with("ip6tables -t "),
            "{}",
            line
        );
    }
    Ok(())
}

proptest! {
    #[test]
    fn a_rule_set_against_itself_changes_nothing(rules in ruleset()) {
        let d = set_diff(&rules, &rules);
        prop_assert_eq!(&d, &SetDiff { kept: rules.append.len(), ..SetDiff::default() });
        prop_assert_eq!(d.to_string(), "");
        let planned = Kernel::of(&rules);
        let s = sweep(&rules, &planned.listing(&foreign()));
        prop_assert!(s.is_empty(), "{}", s);
    }

    #[test]
    fn carrying_out_the_set_diff_of_a_and_b_on_a_gives_b(a in ruleset(), b in ruleset()) {
        let d = set_diff(&a, &b);
        // The record.
        let record = d.apply(&a);
        prop_assert_eq!(&record.append, &b.append);
        prop_assert_eq!(identities(&record.prepend), identities(&b.prepend));
        prop_assert!(set_diff(&record, &b).is_empty());
        // The kernel.
        let mut kernel = Kernel::of(&a);
        kernel.execute(&d.changes());
        prop_assert_eq!(kernel.sorted(), Kernel::of(&b).sorted());
        one_line_per_change(&d.to_string(), d.len())?;
    }

    #[test]
    fn the_sweep_leaves_only_the_plan_of_kilos_entries_and_every_foreign_one(
        left in ruleset(),
        planned in ruleset(),
    ) {
        // What another agent left (its plan `left`), swept for `planned`.
        let kernel = Kernel::of(&left).listing(&foreign());
        let d = sweep(&planned, &kernel);
        let after = d.apply(&kernel);
        let again = sweep(&planned, &after);
        prop_assert!(again.is_empty(), "{}", again);
        let wanted: HashSet<(Family, RuleKey)> = planned
            .append
            .iter()
            .chain(&planned.prepend)
            .filter_map(|e| RuleKey::of_entry(e).map(|k| (e.family(), k)))
            .collect();
        let mut seen = HashSet::new();
        for t in &after {
            for (chain, spec) in &t.rules {
                if is_kilo_chain(chain) {
                    continue;
                }
                let key = (t.family, RuleKey::new(&t.table, chain, spec));
                if is_kilo_rule(chain, spec) {
                    // Kilo's rules in built-in chains: planned, once each.
                    prop_assert!(wanted.contains(&key) && seen.insert(key), "{chain} {spec:?}");
                }
            }
            for name in t.chains.iter().filter(|n| is_kilo_chain(n)) {
                let planned_chain = Entry::chain(t.family, t.table.clone(), name.clone());
                let id = (t.family, planned_chain.identity());
                prop_assert!(
                    identities(&planned.append).contains(&id) || planned.prepend.contains(&planned_chain)
                );
            }
        }
        let foreign_after = after
            .iter()
            .flat_map(|t| t.rules.iter())
            .filter(|(c, s)| !is_kilo_chain(c) && !is_kilo_rule(c, s))
            .count();
        prop_assert_eq!(foreign_after, foreign().len());
        one_line_per_change(&d.to_string(), d.len())?;
    }

    #[test]
    fn a_restore_brings_back_what_someone_deleted_and_finds_nothing_to_do_otherwise(
        rules in well_formed(),
        lost in proptest::collection::vec((any::<bool>(), 0usize..16), 0..4),
    ) {
        let planned = Kernel::of(&rules);
        prop_assert_eq!(restore_diff(&rules, &planned.listed(&rules)), RestoreDiff::default());
        let mut kernel = planned.clone();
        for (whole_chain, n) in lost {
            let chains: Vec<_> = kernel.0.keys().cloned().collect();
            let chain = &chains[n % chains.len()];
            if whole_chain && !BUILTIN.contains(&chain.2.as_str()) {
                kernel.0.remove(chain);
            } else if let Some(rules) = kernel.0.get_mut(chain) && !rules.is_empty() {
                rules.remove(n % rules.len());
            }
        }
        let d = restore_diff(&rules, &kernel.listed(&rules));
        kernel.execute(&d.changes());
        prop_assert_eq!(kernel.sorted(), planned.sorted());
        prop_assert!(restore_diff(&rules, &kernel.listed(&rules)).is_empty());
        one_line_per_change(&d.to_string(), d.len())?;
    }
}
