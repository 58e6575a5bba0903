use std::cell::RefCell;
use std::collections::BTreeMap;

use super::*;

/// A chain's address in the fake: family, table, name.
type ChainId = (Family, String, String);

/// An in-memory table: chains in order of creation with their rule keys in order.
#[derive(Default)]
struct Fake {
    chains: RefCell<BTreeMap<ChainId, Vec<RuleKey>>>,
    /// `begin` / `commit` as the controller opens and closes batches.
    batches: RefCell<Vec<&'static str>>,
    /// What the next commit fails with.
    commit_error: RefCell<Option<FirewallError>>,
}

const BUILTIN: &[&str] = &["POSTROUTING", "PREROUTING", "INPUT", "FORWARD", "OUTPUT"];

impl Fake {
    fn rules(&self, family: Family, table: &str, chain: &str) -> Vec<RuleKey> {
        self.chains.borrow().get(&(family, table.into(), chain.into())).cloned().unwrap_or_default()
    }

    fn with_chain<R>(
        &self,
        family: Family,
        table: &str,
        chain: &str,
        f: impl FnOnce(&mut Vec<RuleKey>) -> R,
    ) -> Result<R, FirewallError> {
        let mut chains = self.chains.borrow_mut();
        let id = (family, table.to_string(), chain.to_string());
        if BUILTIN.contains(&chain) {
            chains.entry(id.clone()).or_default();
        }
        match chains.get_mut(&id) {
            Some(rules) => Ok(f(rules)),
            None => Err(missing(chain)),
        }
    }
}

fn missing(what: &str) -> FirewallError {
    FirewallError::Command {
        command: what.to_string(),
        code: Some(1),
        stderr: "No chain/target/match by that name.".into(),
    }
}

impl Client for Fake {
    fn begin_batch(&self) {
        self.batches.borrow_mut().push("begin");
    }
    fn commit_batch(&self) -> Result<(), FirewallError> {
        self.batches.borrow_mut().push("commit");
        self.commit_error.borrow_mut().take().map_or(Ok(()), Err)
    }
    fn clear_chain(&self, family: Family, table: &str, chain: &str) -> Result<(), FirewallError> {
        let id = (family, table.to_string(), chain.to_string());
        self.chains.borrow_mut().insert(id, Vec::new());
        Ok(())
    }
    fn delete_chain(&self, family: Family, table: &str, chain: &str) -> Result<(), FirewallError> {
        let id = (family, table.to_string(), chain.to_string());
        let referenced = self
            .chains
            .borrow()
            .values()
            .flatten()
            .any(|k| format!("{k:?}").contains(&format!("\"-j\", \"{chain}\"")));
        if referenced {
            return Err(missing(chain));
        }
        self.chains.borrow_mut().remove(&id).map(|_| ()).ok_or_else(|| missing(chain))
    }
    fn append_unique(&self, f: Family, t: &str, c: &str, spec: &Spec) -> Result<(), FirewallError> {
        let key = RuleKey::of_spec(t, c, spec);
        self.with_chain(f, t, c, |rules| {
            if !rules.contains(&key) {
                rules.push(key)
            }
        })
    }
    fn insert_unique(&self, f: Family, t: &str, c: &str, spec: &Spec) -> Result<(), FirewallError> {
        let key = RuleKey::of_spec(t, c, spec);
        self.with_chain(f, t, c, |rules| {
            if !rules.contains(&key) {
                rules.insert(0, key)
            }
        })
    }
    fn delete(&self, f: Family, t: &str, c: &str, spec: &Spec) -> Result<(), FirewallError> {
        let key = RuleKey::of_spec(t, c, spec);
        self.with_chain(f, t, c, |rules| {
            rules.iter().position(|k| *k == key).map(|i| rules.remove(i))
        })?
        .map(|_| ())
        .ok_or_else(|| missing(c))
    }
    fn list(&self, f: Family, t: &str, c: &str) -> Result<Option<Vec<RuleKey>>, FirewallError> {
        Ok(self.with_chain(f, t, c, |rules| rules.clone()).ok())
    }
    fn table_listing(&self, f: Family, t: &str) -> Result<TableListing, FirewallError> {
        let rules = self
            .chains
            .borrow()
            .iter()
            .filter(|((fam, table, _), _)| *fam == f && table == t)
            .flat_map(|((_, _, chain), rules)| {
                rules.iter().map(move |k| (chain.clone(), k.spec())).collect::<Vec<_>>()
            })
            .collect();
        Ok(TableListing {
            family: f,
            table: t.to_string(),
            chains: self.list_chains(f, t)?,
            rules,
            own: false,
        })
    }
    fn list_chains(&self, f: Family, t: &str) -> Result<Vec<String>, FirewallError> {
        Ok(self
            .chains
            .borrow()
            .keys()
            .filter(|(fam, table, _)| *fam == f && table == t)
            .map(|(_, _, c)| c.clone())
            .collect())
    }
}

fn chain(family: Family, table: &str, name: &str) -> Entry {
    Entry::chain(family, table.to_string(), name.to_string())
}

fn rule(family: Family, table: &str, chain: &str, spec: &str) -> Entry {
    Entry::Rule {
        family,
        table: table.to_string().into(),
        chain: chain.to_string().into(),
        spec: super::super::rule::split_args(spec).into(),
    }
}

fn ruleset(peers: &[&str]) -> RuleSet {
    let mut prepend = vec![rule(
        Family::Ipv4,
        "nat",
        "POSTROUTING",
        r#"-s 10.2.1.0/24 -m comment --comment "Kilo: jump to KILO-NAT chain" -j KILO-NAT"#,
    )];
    for p in peers {
        prepend.push(rule(
            Family::Ipv4,
            "nat",
            "KILO-NAT",
            &format!(r#"-d {p} -m comment --comment "Kilo: do not NAT packets destined for peers" -j RETURN"#),
        ));
    }
    RuleSet {
        append: vec![
            chain(Family::Ipv4, "nat", "KILO-NAT"),
            chain(Family::Ipv6, "nat", "KILO-NAT"),
            rule(
                Family::Ipv4,
                "nat",
                "KILO-NAT",
                r#"-m comment --comment "Kilo: NAT remaining packets" -j MASQUERADE"#,
            ),
            rule(
                Family::Ipv6,
                "nat",
                "KILO-NAT",
                r#"-m comment --comment "Kilo: NAT remaining packets" -j MASQUERADE"#,
            ),
        ],
        prepend,
    }
}

fn writes(c: &Controller<Fake>) -> u64 {
    c.operations().iter().filter(|(l, _)| l.operation.is_write()).map(|(_, n)| n).sum()
}

#[test]
fn setting_the_same_rule_set_twice_writes_nothing_the_second_time() {
    let mut c = Controller::new(Fake::default(), true);
    c.set(&ruleset(&["10.5.0.1/32"])).unwrap();
    let before = c.operations().clone();
    c.set(&ruleset(&["10.5.0.1/32"])).unwrap();
    assert_eq!(c.operations(), &before);
}

#[test]
fn the_masquerade_rule_stays_after_the_return_rules() {
    let mut c = Controller::new(Fake::default(), true);
    c.set(&ruleset(&["10.5.0.1/32", "10.6.0.0/24"])).unwrap();
    let rules = c.client().rules(Family::Ipv4, "nat", "KILO-NAT");
    assert_eq!(rules.len(), 3);
    assert_eq!(rules.last(), RuleKey::of_entry(&ruleset(&[]).append[2]).as_ref());
}

#[test]
fn a_reconcile_that_finds_everything_writes_nothing_and_lists_each_chain_once() {
    let mut c = Controller::new(Fake::default(), true);
    c.set(&ruleset(&["10.5.0.1/32"])).unwrap();
    let before = writes(&c);
    assert_eq!(c.reconcile().unwrap(), 0);
    assert_eq!(writes(&c), before);
    let lists: Vec<_> = c
        .operations()
        .iter()
        .filter(|(l, _)| l.operation == Operation::List)
        .map(|(_, n)| *n)
        .collect();
    assert!(lists.iter().all(|n| *n == 1), "{lists:?}");
}

#[test]
fn a_reconcile_restores_a_deleted_append_rule_and_a_deleted_prepend_rule() {
    let mut c = Controller::new(Fake::default(), true);
    let set = ruleset(&["10.5.0.1/32"]);
    c.set(&set).unwrap();
    let Entry::Rule { spec, .. } = &set.append[2] else { unreachable!() };
    c.client().delete(Family::Ipv4, "nat", "KILO-NAT", spec).unwrap();
    let Entry::Rule { spec, .. } = &set.prepend[0] else { unreachable!() };
    c.client().delete(Family::Ipv4, "nat", "POSTROUTING", spec).unwrap();
    assert_eq!(c.reconcile().unwrap(), 3);
    assert_eq!(c.client().rules(Family::Ipv4, "nat", "KILO-NAT").len(), 2);
    assert_eq!(c.client().rules(Family::Ipv4, "nat", "POSTROUTING").len(), 1);
    assert_eq!(c.reconcile().unwrap(), 0);
}

#[test]
fn a_reconcile_after_the_chain_vanished_restores_its_prepend_rules_too() {
    let mut c = Controller::new(Fake::default(), true);
    c.set(&ruleset(&["10.5.0.1/32"])).unwrap();
    c.client().chains.borrow_mut().remove(&(Family::Ipv4, "nat".into(), "KILO-NAT".into()));
    c.reconcile().unwrap();
    assert_eq!(c.client().rules(Family::Ipv4, "nat", "KILO-NAT").len(), 2);
}

#[test]
fn removing_a_peer_deletes_only_its_prepend_rule() {
    let mut c = Controller::new(Fake::default(), true);
    c.set(&ruleset(&["10.5.0.1/32", "10.6.0.0/24"])).unwrap();
    let before = c.operations().clone();
    c.set(&ruleset(&["10.5.0.1/32"])).unwrap();
    let changed: Vec<_> = c
        .operations()
        .iter()
        .filter(|(l, n)| before.get(*l) != Some(*n))
        .map(|(l, _)| l.operation)
        .collect();
    assert_eq!(changed, vec![Operation::Delete]);
    assert_eq!(c.client().rules(Family::Ipv4, "nat", "KILO-NAT").len(), 2);
}

#[test]
fn a_changed_append_list_is_rewritten_from_the_first_difference() {
    let mut c = Controller::new(Fake::default(), true);
    let mut set = ruleset(&[]);
    c.set(&set).unwrap();
    set.append.insert(
        2,
        rule(Family::Ipv4, "nat", "KILO-NAT", r#"-d 10.43.0.0/16 -m comment --comment "Kilo: do not NAT packets destined for service CIDRs" -j RETURN"#),
    );
    c.set(&set).unwrap();
    let rules = c.client().rules(Family::Ipv4, "nat", "KILO-NAT");
    assert_eq!(rules.len(), 2);
    assert_eq!(Some(&rules[0]), RuleKey::of_entry(&set.append[2]).as_ref());
    assert_eq!(c.applied(), set);
}

#[test]
fn clean_up_removes_every_rule_and_chain() {
    let mut c = Controller::new(Fake::default(), true);
    c.set(&ruleset(&["10.5.0.1/32"])).unwrap();
    c.clean_up().unwrap();
    let chains = c.client().chains.borrow();
    assert!(chains.keys().all(|(_, _, name)| BUILTIN.contains(&name.as_str())), "{chains:?}");
    assert!(chains.values().all(Vec::is_empty));
    assert_eq!(c.applied(), RuleSet::default());
}

#[test]
fn ipv6_operations_are_no_ops_when_ipv6_is_disabled() {
    let mut c = Controller::new(Fake::default(), false);
    c.set(&ruleset(&[])).unwrap();
    assert!(c.operations().keys().all(|l| l.protocol == Family::Ipv4));
    assert!(c.client().rules(Family::Ipv6, "nat", "KILO-NAT").is_empty());
    assert_eq!(c.reconcile().unwrap(), 0);
}

#[test]
fn list_chains_is_counted_with_chain_star() {
    let mut c = Controller::new(Fake::default(), true);
    c.set(&ruleset(&[])).unwrap();
    c.reconcile().unwrap();
    assert!(c.operations().keys().any(|l| l.operation == Operation::ListChains && l.chain == "*"));
}

#[test]
fn clean_up_removes_a_chain_listed_before_the_rules_that_jump_to_it() {
    // Upstream 8.3: chain KILO-IPIP comes before the INPUT rule jumping to it.
    let set = RuleSet {
        append: vec![
            chain(Family::Ipv4, "filter", "KILO-IPIP"),
            rule(
                Family::Ipv4,
                "filter",
                "INPUT",
                r#"-p ipencap -m comment --comment "Kilo: jump to IPIP chain" -j KILO-IPIP"#,
            ),
        ],
        prepend: vec![],
    };
    let mut c = Controller::new(Fake::default(), true);
    c.set(&set).unwrap();
    c.clean_up().unwrap();
    let chains = c.client().chains.borrow();
    assert!(
        !chains.contains_key(&(Family::Ipv4, "filter".into(), "KILO-IPIP".into())),
        "{chains:?}"
    );
}

#[test]
fn firewalls_can_move_between_threads() {
    fn send<T: Send>() {}
    send::<crate::firewall::Firewall>();
}

#[test]
fn set_reconcile_and_clean_up_each_close_every_batch_they_open() {
    let mut c = Controller::new(Fake::default(), true);
    c.set(&ruleset(&["10.5.0.1/32"])).unwrap();
    // The first set sweeps first, in the same batch.
    assert_eq!(*c.client().batches.borrow(), ["begin", "commit"]);
    c.client().batches.borrow_mut().clear();
    c.set(&ruleset(&["10.5.0.2/32"])).unwrap();
    assert_eq!(*c.client().batches.borrow(), ["begin", "commit"]);
    c.client().batches.borrow_mut().clear();
    c.client().chains.borrow_mut().clear();
    assert!(c.reconcile().unwrap() > 0);
    // The append reset and the prepend rules restored are one batch.
    assert_eq!(*c.client().batches.borrow(), ["begin", "commit"]);
    c.client().batches.borrow_mut().clear();
    c.clean_up().unwrap();
    // Recorded entries, then the sweep.
    assert_eq!(*c.client().batches.borrow(), ["begin", "commit", "begin", "commit"]);
}

#[test]
fn a_failed_commit_makes_set_and_clean_up_fail_with_its_error() {
    let mut c = Controller::new(Fake::default(), true);
    *c.client().commit_error.borrow_mut() = Some(missing("iptables-restore"));
    assert_eq!(c.set(&ruleset(&["10.5.0.1/32"])), Err(missing("iptables-restore")));
    *c.client().commit_error.borrow_mut() = Some(missing("iptables-restore"));
    assert_eq!(c.clean_up(), Err(missing("iptables-restore")));
}

/// What a killed agent left: its chain with a rule, a jump in a built-in chain to it, a peer's
/// jump the new plan lacks, a planned rule twice; and a rule of someone else.
fn leftovers(c: &Controller<Fake>) {
    let client = c.client();
    for entry in [
        chain(Family::Ipv4, "nat", "KILO-NAT"),
        chain(Family::Ipv4, "filter", "KILO-IPIP"),
        chain(Family::Ipv4, "nat", "KUBE-SERVICES"),
    ] {
        let Entry::Chain { family, table, name } = entry else { unreachable!() };
        client.clear_chain(family, &table, &name).unwrap();
    }
    let add = |table: &str, chain: &str, spec: &str| {
        let spec = Spec::Args(super::super::rule::split_args(spec));
        client.append_unique(Family::Ipv4, table, chain, &spec).unwrap();
    };
    add("nat", "KILO-NAT", r#"-d 10.5.0.9/32 -m comment --comment "Kilo: do not NAT" -j RETURN"#);
    add(
        "filter",
        "INPUT",
        r#"-p ipencap -m comment --comment "Kilo: jump to IPIP chain" -j KILO-IPIP"#,
    );
    add(
        "nat",
        "POSTROUTING",
        r#"-s 10.5.0.9/32 -m comment --comment "Kilo: jump to NAT chain" -j KILO-NAT"#,
    );
    add("nat", "POSTROUTING", "-s 10.9.0.0/16 -j MASQUERADE");
    add("nat", "POSTROUTING", "-j KUBE-SERVICES");
    let planned =
        r#"-s 10.2.1.0/24 -m comment --comment "Kilo: jump to KILO-NAT chain" -j KILO-NAT"#;
    let planned = super::super::rule::split_args(planned);
    let mut rules = client.chains.borrow_mut();
    let postrouting = rules.get_mut(&(Family::Ipv4, "nat".into(), "POSTROUTING".into())).unwrap();
    postrouting.push(RuleKey::new("nat", "POSTROUTING", &planned));
    postrouting.push(RuleKey::new("nat", "POSTROUTING", &planned));
}

fn foreign() -> Vec<RuleKey> {
    vec![
        RuleKey::new(
            "nat",
            "POSTROUTING",
            &super::super::rule::split_args("-s 10.9.0.0/16 -j MASQUERADE"),
        ),
        RuleKey::new("nat", "POSTROUTING", &super::super::rule::split_args("-j KUBE-SERVICES")),
    ]
}

#[test]
fn the_first_set_removes_what_another_agent_left_and_keeps_one_copy_of_each_planned_rule() {
    let mut c = Controller::new(Fake::default(), true);
    leftovers(&c);
    let set = ruleset(&["10.5.0.1/32"]);
    c.set(&set).unwrap();
    let postrouting = c.client().rules(Family::Ipv4, "nat", "POSTROUTING");
    let mut expected = foreign();
    expected.extend(RuleKey::of_entry(&set.prepend[0]));
    let mut sorted = postrouting.clone();
    sorted.sort();
    expected.sort();
    assert_eq!(sorted, expected, "{postrouting:?}");
    assert!(c.client().rules(Family::Ipv4, "filter", "INPUT").is_empty());
    let chains: Vec<ChainId> = c.client().chains.borrow().keys().cloned().collect();
    assert!(!chains.iter().any(|(_, _, n)| n == "KILO-IPIP"), "{chains:?}");
    // The planned chain holds exactly the plan.
    let kilo_nat: Vec<RuleKey> = c.client().rules(Family::Ipv4, "nat", "KILO-NAT");
    let mut planned: Vec<RuleKey> = set
        .append
        .iter()
        .chain(&set.prepend)
        .filter(
            |e| matches!(e, Entry::Rule { family: Family::Ipv4, chain, .. } if chain == "KILO-NAT"),
        )
        .filter_map(RuleKey::of_entry)
        .collect();
    let mut got = kilo_nat.clone();
    planned.sort();
    got.sort();
    assert_eq!(got, planned);
    // Later sets do not sweep again: only listings the first time.
    let before = c.operations().clone();
    c.set(&set).unwrap();
    assert_eq!(c.operations(), &before);
}

#[test]
fn clean_up_also_removes_what_it_never_recorded_and_leaves_foreign_rules() {
    let mut c = Controller::new(Fake::default(), true);
    leftovers(&c);
    c.clean_up().unwrap();
    let chains = c.client().chains.borrow();
    let kilo: Vec<&ChainId> = chains.keys().filter(|(_, _, n)| n.starts_with("KILO-")).collect();
    assert!(kilo.is_empty(), "{kilo:?}");
    let mut postrouting =
        chains.get(&(Family::Ipv4, "nat".into(), "POSTROUTING".into())).cloned().unwrap();
    postrouting.sort();
    let mut expected = foreign();
    expected.sort();
    assert_eq!(postrouting, expected);
    assert!(chains.contains_key(&(Family::Ipv4, "nat".into(), "KUBE-SERVICES".into())));
    assert!(chains.get(&(Family::Ipv4, "filter".into(), "INPUT".into())).unwrap().is_empty());
}
