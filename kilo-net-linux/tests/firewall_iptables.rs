//! The iptables firewall against the real kernel, in network namespaces these tests create and
//! delete (root needed), for both the legacy and the nft variants of the binaries.

mod firewall_support;
mod root_support;

use firewall_support::*;
use kilo_core::firewall::{Entry, Family, RuleSet};
use kilo_net_linux::firewall::{
    Firewall, Iptables, Operation, Runner, Variant, detect_variant, write_count,
};

fn save(ns: &Netns, variant: Variant, family: Family) -> String {
    ns.run(&[&format!("{}-save", variant.binary(family))])
}

/// The `-A CHAIN` lines of `chain` in `table` as `iptables-save` prints them, in order.
fn chain_lines(
    ns: &Netns,
    variant: Variant,
    family: Family,
    table: &str,
    chain: &str,
) -> Vec<String> {
    let out = ns.run(&[&format!("{}-save", variant.binary(family)), "-t", table]);
    let prefix = format!("-A {chain} ");
    out.lines().filter(|l| l.starts_with(&prefix)).map(str::to_string).collect()
}

/// Every chain of the rule set holds exactly its rules, in order.
fn assert_applied(ns: &Netns, variant: Variant, rules: &RuleSet) {
    for (family, table, chain) in chains_of(rules) {
        let want: Vec<String> = expected_order(rules, family, &table, &chain)
            .iter()
            .map(|spec| iptables_line(&chain, spec))
            .collect();
        assert_eq!(
            chain_lines(ns, variant, family, &table, &chain),
            want,
            "{family:?} {table} {chain}"
        );
    }
}

fn firewall(ns: &Netns, variant: Variant) -> Firewall {
    Firewall::Iptables(Iptables::with_ipv6(Runner::netns(&ns.name), variant, true))
}

fn spec_of(entry: &Entry) -> Vec<String> {
    match entry {
        Entry::Rule { spec, .. } => spec.args().into_owned(),
        Entry::Chain { .. } => panic!("not a rule"),
    }
}

fn the_leader_scenario(variant: Variant) {
    let ns = Netns::new("ipt");
    let mut fw = firewall(&ns, variant);
    let rules = leader_rules(&PEERS);

    fw.set(&rules).unwrap();
    assert_applied(&ns, variant, &rules);

    // The same set again: nothing at all happens.
    let before = fw.operations();
    fw.set(&rules).unwrap();
    assert_eq!(fw.operations(), before, "a second set must not touch the kernel");

    // A reconcile that finds everything only lists.
    assert_eq!(fw.reconcile().unwrap(), 0);
    assert_eq!(write_count(&fw.operations()), write_count(&before));
    assert!(fw.operations().keys().any(|l| l.operation == Operation::List));

    // Someone deletes the v4 MASQUERADE (append) and a peer's RETURN (prepend) rule.
    let masquerade = spec_of(&rules.append[3]);
    let mut args = vec![variant.binary(Family::Ipv4), "-t", "nat", "-D", "KILO-NAT"];
    args.extend(masquerade.iter().map(String::as_str));
    ns.run(&args);
    let peer_return = spec_of(&rules.prepend[rules.prepend.len() - 3]);
    let mut args = vec![variant.binary(Family::Ipv4), "-t", "nat", "-D", "KILO-NAT"];
    args.extend(peer_return.iter().map(String::as_str));
    ns.run(&args);
    assert!(fw.reconcile().unwrap() > 0);
    for (family, table, chain) in chains_of(&rules) {
        let mut got = chain_lines(&ns, variant, family, &table, &chain);
        let mut want: Vec<String> = expected_order(&rules, family, &table, &chain)
            .iter()
            .map(|spec| iptables_line(&chain, spec))
            .collect();
        // The re-inserted prepend rule is back at the top; the MASQUERADE rule is last again.
        assert_eq!(got.last(), want.last());
        got.sort();
        want.sort();
        assert_eq!(got, want, "{family:?} {table} {chain}");
    }
    let writes = write_count(&fw.operations());
    assert_eq!(fw.reconcile().unwrap(), 0);
    assert_eq!(write_count(&fw.operations()), writes);

    // A peer leaves: only its two rules are deleted.
    let fewer = leader_rules(&PEERS[1..]);
    let before = fw.operations();
    fw.set(&fewer).unwrap();
    let changed: Vec<Operation> = fw
        .operations()
        .iter()
        .filter(|(l, n)| before.get(*l) != Some(*n))
        .map(|(l, _)| l.operation)
        .collect();
    assert_eq!(changed, vec![Operation::Delete, Operation::Delete]);
    let lines = chain_lines(&ns, variant, Family::Ipv4, "nat", "KILO-NAT");
    assert!(!lines.iter().any(|l| l.contains("10.5.0.1/32")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("10.5.0.2/32")), "{lines:?}");
    let post = chain_lines(&ns, variant, Family::Ipv4, "nat", "POSTROUTING");
    assert!(!post.iter().any(|l| l.contains("10.5.0.1/32")), "{post:?}");
    assert_eq!(lines.last().unwrap(), &iptables_line("KILO-NAT", &spec_of(&rules.append[3])));
    assert_eq!(fw.applied(), fewer);

    // Clean-up leaves nothing of Kilo.
    fw.clean_up().unwrap();
    for family in [Family::Ipv4, Family::Ipv6] {
        let saved = save(&ns, variant, family);
        assert!(!saved.contains("KILO") && !saved.contains("Kilo"), "{saved}");
    }
}

#[test]
fn the_leader_rule_set_applies_reconciles_shrinks_and_cleans_up_with_iptables_nft() {
    if root_support::skip_unless_root() {
        return;
    }
    the_leader_scenario(Variant::Nft);
}

#[test]
fn the_leader_rule_set_applies_reconciles_shrinks_and_cleans_up_with_iptables_legacy() {
    if root_support::skip_unless_root() {
        return;
    }
    the_leader_scenario(Variant::Legacy);
}

#[test]
fn removing_a_peer_only_deletes_that_peers_rules() {
    if root_support::skip_unless_root() {
        return;
    }
    let ns = Netns::new("iptpeer");
    let mut fw = firewall(&ns, Variant::Nft);
    fw.set(&leader_rules(&PEERS)).unwrap();
    let before = fw.operations();
    fw.set(&leader_rules(&[PEERS[0], PEERS[1]])).unwrap();
    let after = fw.operations();
    let changed: Vec<_> = after
        .iter()
        .filter(|(l, n)| before.get(*l) != Some(*n))
        .map(|(l, n)| (l.protocol, l.operation, l.chain.clone(), n - before.get(l).unwrap_or(&0)))
        .collect();
    assert_eq!(
        changed,
        vec![
            (Family::Ipv6, Operation::Delete, "KILO-NAT".to_string(), 1),
            (Family::Ipv6, Operation::Delete, "POSTROUTING".to_string(), 1),
        ]
    );
    let v6 = chain_lines(&ns, Variant::Nft, Family::Ipv6, "nat", "KILO-NAT");
    assert_eq!(v6, vec![iptables_line("KILO-NAT", &spec_of(&leader_rules(&[]).append[4]))]);
    fw.clean_up().unwrap();
}

#[test]
fn comments_with_an_apostrophe_and_ipencap_rules_are_found_again_by_reconcile() {
    if root_support::skip_unless_root() {
        return;
    }
    let ns = Netns::new("iptnl");
    let mut fw = firewall(&ns, Variant::Nft);
    let rules = non_leader_rules();
    fw.set(&rules).unwrap();
    assert_applied(&ns, Variant::Nft, &rules);
    let writes = write_count(&fw.operations());
    assert_eq!(fw.reconcile().unwrap(), 0);
    assert_eq!(write_count(&fw.operations()), writes);
    fw.clean_up().unwrap();
    let saved = save(&ns, Variant::Nft, Family::Ipv4);
    assert!(!saved.contains("KILO"), "{saved}");
}

#[test]
fn a_restarted_agent_adopts_the_rules_it_finds() {
    if root_support::skip_unless_root() {
        return;
    }
    let ns = Netns::new("iptadopt");
    let rules = leader_rules(&PEERS);
    firewall(&ns, Variant::Nft).set(&rules).unwrap();
    // A new controller (a restarted agent) applies the same set over the existing rules.
    let mut fw = firewall(&ns, Variant::Nft);
    fw.set(&rules).unwrap();
    assert_applied(&ns, Variant::Nft, &rules);
    fw.clean_up().unwrap();
    let saved = save(&ns, Variant::Nft, Family::Ipv4);
    assert!(!saved.contains("KILO"), "{saved}");
}

#[test]
fn the_variant_the_namespace_already_uses_is_detected() {
    if root_support::skip_unless_root() {
        return;
    }
    let legacy = Netns::new("iptdl");
    legacy.run(&[
        "iptables-legacy",
        "-t",
        "filter",
        "-A",
        "INPUT",
        "-s",
        "10.9.0.1/32",
        "-j",
        "ACCEPT",
    ]);
    assert_eq!(detect_variant(&Runner::netns(&legacy.name)), Variant::Legacy);
    let nft = Netns::new("iptdn");
    nft.run(&["iptables-nft", "-t", "filter", "-A", "INPUT", "-s", "10.9.0.1/32", "-j", "ACCEPT"]);
    assert_eq!(detect_variant(&Runner::netns(&nft.name)), Variant::Nft);
    // A fresh namespace: whatever the plain `iptables` is (nf_tables on Debian 12).
    let fresh = Netns::new("iptdf");
    let plain = fresh.run(&["iptables", "--version"]);
    let expected = if plain.contains("legacy") { Variant::Legacy } else { Variant::Nft };
    assert_eq!(detect_variant(&Runner::netns(&fresh.name)), expected);
}

#[test]
fn a_failing_command_is_an_error_naming_the_command() {
    if root_support::skip_unless_root() {
        return;
    }
    let ns = Netns::new("ipterr");
    let mut fw = firewall(&ns, Variant::Nft);
    let bad = RuleSet {
        append: vec![rule(Family::Ipv4, "nat", "KILO-NAT", "-j NO-SUCH-CHAIN")],
        prepend: vec![],
    };
    let err = fw.set(&bad).unwrap_err().to_string();
    assert!(err.contains("iptables-nft") && err.contains("NO-SUCH-CHAIN"), "{err}");
}

/// `n` IPv4 peers with distinct /32 allowed IPs (10.6.0.0/16).
fn many_peers(n: usize) -> Vec<Peer> {
    (0..n)
        .map(|i| Peer {
            family: Family::Ipv4,
            allowed_ip: Box::leak(format!("10.6.{}.{}/32", i / 250, i % 250 + 1).into_boxed_str()),
        })
        .collect()
}

/// A runner into `ns` that logs every process it starts, one line each, to a file.
struct CountingRunner {
    dir: std::path::PathBuf,
}

impl CountingRunner {
    fn new(ns: &Netns) -> CountingRunner {
        let dir = std::env::temp_dir().join(format!("{}-runner", ns.name));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("run");
        let log = dir.join("log");
        // Written by `install`, a child process: were this process to hold the script open for
        // writing while another test thread forks, running it could fail with "Text file busy".
        let source = dir.join("run.src");
        std::fs::write(
            &source,
            format!(
                "#!/bin/sh\necho \"$*\" >> {}\nexec ip netns exec {} \"$@\"\n",
                log.display(),
                ns.name
            ),
        )
        .unwrap();
        let mut install = std::process::Command::new("install");
        install.arg("-m").arg("755").arg(&source).arg(&script);
        assert!(install.status().unwrap().success());
        CountingRunner { dir }
    }

    fn runner(&self) -> Runner {
        Runner::with_prefix(vec![self.dir.join("run").display().to_string()])
    }

    /// The processes started so far (then forgets them).
    fn take(&self) -> Vec<String> {
        let log = self.dir.join("log");
        let lines = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        lines.lines().map(str::to_string).collect()
    }
}

impl Drop for CountingRunner {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn a_thousand_peers_scenario(variant: Variant) {
    let ns = Netns::new("ipt1k");
    let counter = CountingRunner::new(&ns);
    let mut fw = Firewall::Iptables(Iptables::with_ipv6(counter.runner(), variant, true));
    let rules = leader_rules(&many_peers(1000));

    let start = std::time::Instant::now();
    fw.set(&rules).unwrap();
    let (set_time, set_calls) = (start.elapsed(), counter.take());
    let after_set = count(&fw.operations(), Operation::InsertUnique);
    assert_applied(&ns, variant, &rules);

    // Someone flushes both nat chains: reconcile restores them, in order, in a few processes.
    for chain in ["POSTROUTING", "KILO-NAT"] {
        ns.run(&[variant.binary(Family::Ipv4), "-t", "nat", "-F", chain]);
    }
    let start = std::time::Instant::now();
    assert!(fw.reconcile().unwrap() >= 2000);
    let (reconcile_time, reconcile_calls) = (start.elapsed(), counter.take());
    assert_applied(&ns, variant, &rules);
    eprintln!("{variant:?}: reconcile: {} processes, {reconcile_time:?}", reconcile_calls.len());
    assert!(reconcile_calls.len() <= 30, "{reconcile_calls:#?}");

    let before_clean_up = count(&fw.operations(), Operation::Delete);
    let start = std::time::Instant::now();
    fw.clean_up().unwrap();
    let (clean_time, clean_calls) = (start.elapsed(), counter.take());
    eprintln!(
        "{variant:?}: set of 1,000 peers: {} processes, {set_time:?}; clean_up: {} processes, \
         {clean_time:?}",
        set_calls.len(),
        clean_calls.len()
    );
    for family in [Family::Ipv4, Family::Ipv6] {
        let saved = save(&ns, variant, family);
        assert!(!saved.contains("KILO") && !saved.contains("Kilo"), "{saved}");
    }
    assert!(set_calls.len() <= 8, "{set_calls:#?}");
    assert!(clean_calls.len() <= 12, "{clean_calls:#?}");
    // Every batched write was counted as the operation it performs.
    assert_eq!(after_set, rules.prepend.len() as u64);
    let deleted = count(&fw.operations(), Operation::Delete) - before_clean_up;
    assert_eq!(deleted, (rules.prepend.len() + 3) as u64);
}

fn count(
    ops: &std::collections::BTreeMap<kilo_net_linux::firewall::OpLabels, u64>,
    op: Operation,
) -> u64 {
    ops.iter().filter(|(l, _)| l.operation == op).map(|(_, n)| n).sum()
}

#[test]
fn a_thousand_peers_rules_apply_and_clean_up_in_a_few_processes_with_iptables_nft() {
    if root_support::skip_unless_root() {
        return;
    }
    a_thousand_peers_scenario(Variant::Nft);
}

#[test]
fn a_thousand_peers_rules_apply_and_clean_up_in_a_few_processes_with_iptables_legacy() {
    if root_support::skip_unless_root() {
        return;
    }
    a_thousand_peers_scenario(Variant::Legacy);
}

#[test]
fn a_batch_with_a_refused_rule_falls_back_to_one_process_per_rule_and_names_that_rule() {
    if root_support::skip_unless_root() {
        return;
    }
    let ns = Netns::new("iptfb");
    let mut fw = firewall(&ns, Variant::Nft);
    let mut rules = leader_rules(&PEERS);
    rules.append.push(rule(Family::Ipv4, "nat", "KILO-NAT", "-j NO-SUCH-CHAIN"));
    let err = fw.set(&rules).unwrap_err().to_string();
    assert!(err.contains("iptables-nft") && err.contains("NO-SUCH-CHAIN"), "{err}");
    assert!(!err.contains("restore"), "the per-rule path names the rule: {err}");
    // What came before the refused rule is applied, one rule at a time.
    let want: Vec<String> =
        rules.append[2..5].iter().map(|e| iptables_line("KILO-NAT", &spec_of(e))).collect();
    assert_eq!(chain_lines(&ns, Variant::Nft, Family::Ipv4, "nat", "KILO-NAT"), want[..2]);
    fw.clean_up().unwrap();
}
