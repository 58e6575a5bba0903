//! The native nftables firewall against the real kernel, in network namespaces these tests
//! create and delete (root needed); state checked with the `nft` binary.

mod firewall_support;
mod root_support;

use firewall_support::*;
use kilo_core::firewall::{Entry, Family, RuleSet};
use kilo_net_linux::firewall::{Firewall, Nftables, Operation, write_count};

fn firewall(ns: &Netns) -> Firewall {
    Firewall::Nftables(Nftables::with_options(Some(ns.path()), true))
}

fn table_word(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "kilo",
        Family::Ipv6 => "kilo6",
    }
}

fn family_word(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "ip",
        Family::Ipv6 => "ip6",
    }
}

/// `(handle, comment)` of each rule of a chain of ours, in order.
fn chain_rules(ns: &Netns, family: Family, table: &str, chain: &str) -> Vec<(String, String)> {
    let out = ns.run(&[
        "nft",
        "-a",
        "list",
        "chain",
        family_word(family),
        table_word(family),
        &format!("{table}-{chain}"),
    ]);
    out.lines()
        .filter_map(|line| {
            let line = line.trim();
            let start = line.find("comment \"")? + "comment \"".len();
            let end = line.rfind("\" # handle ")?;
            let handle = line[end + "\" # handle ".len()..].trim().to_string();
            Some((handle, line[start..end].to_string()))
        })
        .collect()
}

fn identity(chain: &str, table: &str, spec: &[String]) -> String {
    let mut out = format!("{table} -A {chain}");
    for (i, a) in spec.iter().enumerate() {
        if i > 0 && spec[i - 1] == "--comment" {
            out.push_str(&format!(" '{}'", a.replace('\'', "\\'")));
        } else {
            out.push_str(&format!(" {a}"));
        }
    }
    out
}

fn expected(rules: &RuleSet, family: Family, table: &str, chain: &str) -> Vec<String> {
    expected_order(rules, family, table, chain)
        .iter()
        .map(|spec| identity(chain, table, spec))
        .collect()
}

fn assert_applied(ns: &Netns, rules: &RuleSet) {
    for (family, table, chain) in chains_of(rules) {
        let got: Vec<String> =
            chain_rules(ns, family, &table, &chain).into_iter().map(|(_, c)| c).collect();
        assert_eq!(got, expected(rules, family, &table, &chain), "{family:?} {table} {chain}");
    }
}

fn delete_by_hand(ns: &Netns, family: Family, table: &str, chain: &str, entry: &Entry) {
    let Entry::Rule { spec, .. } = entry else { panic!("not a rule") };
    let id = identity(chain, table, &spec.args());
    let (handle, _) = chain_rules(ns, family, table, chain)
        .into_iter()
        .find(|(_, c)| *c == id)
        .expect("rule present");
    ns.run(&[
        "nft",
        "delete",
        "rule",
        family_word(family),
        table_word(family),
        &format!("{table}-{chain}"),
        "handle",
        &handle,
    ]);
}

#[test]
fn the_leader_rule_set_applies_reconciles_shrinks_and_cleans_up_with_nftables() {
    if root_support::skip_unless_root() {
        return;
    }
    let ns = Netns::new("nft");
    let mut fw = firewall(&ns);
    let rules = leader_rules(&PEERS);

    fw.set(&rules).unwrap();
    assert_applied(&ns, &rules);
    let ruleset = ns.run(&["nft", "list", "ruleset"]);
    if std::env::var_os("KFW_SHOW").is_some() {
        eprintln!("{ruleset}");
    }
    assert!(ruleset.contains("type nat hook postrouting priority srcnat"), "{ruleset}");
    assert!(ruleset.contains("masquerade"), "{ruleset}");
    assert!(ruleset.contains("jump nat-KILO-NAT"), "{ruleset}");

    let before = fw.operations();
    fw.set(&rules).unwrap();
    assert_eq!(fw.operations(), before, "a second set must not touch the kernel");

    assert_eq!(fw.reconcile().unwrap(), 0);
    assert_eq!(write_count(&fw.operations()), write_count(&before));

    // Someone deletes the v4 MASQUERADE (append) and a peer's RETURN (prepend) rule.
    delete_by_hand(&ns, Family::Ipv4, "nat", "KILO-NAT", &rules.append[3]);
    delete_by_hand(&ns, Family::Ipv4, "nat", "KILO-NAT", &rules.prepend[rules.prepend.len() - 3]);
    assert!(fw.reconcile().unwrap() > 0);
    for (family, table, chain) in chains_of(&rules) {
        let mut got: Vec<String> =
            chain_rules(&ns, family, &table, &chain).into_iter().map(|(_, c)| c).collect();
        let mut want = expected(&rules, family, &table, &chain);
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
    let nat = ns.run(&["nft", "list", "table", "ip", "kilo"]);
    assert!(!nat.contains("10.5.0.1 "), "{nat}");
    assert!(nat.contains("10.5.0.2"), "{nat}");

    fw.clean_up().unwrap();
    let ruleset = ns.run(&["nft", "list", "ruleset"]);
    assert!(!ruleset.contains("kilo") && !ruleset.contains("KILO"), "{ruleset}");
}

#[test]
fn ipencap_rules_and_apostrophes_apply_and_reconcile_without_writes_in_nftables() {
    if root_support::skip_unless_root() {
        return;
    }
    let ns = Netns::new("nftnl");
    let mut fw = firewall(&ns);
    let rules = non_leader_rules();
    fw.set(&rules).unwrap();
    assert_applied(&ns, &rules);
    let ruleset = ns.run(&["nft", "list", "ruleset"]);
    assert!(ruleset.contains("meta l4proto ipencap"), "{ruleset}");
    assert!(ruleset.contains("ip saddr 10.2.3.0/24"), "{ruleset}");
    let writes = write_count(&fw.operations());
    assert_eq!(fw.reconcile().unwrap(), 0);
    assert_eq!(write_count(&fw.operations()), writes);

    // `nft list ruleset` output loads back with `nft -f`, and the reloaded rules are ours.
    let saved = std::env::temp_dir().join(format!("{}.nft", ns.name));
    std::fs::write(&saved, &ruleset).unwrap();
    ns.run(&["nft", "flush", "ruleset"]);
    let loaded = ns.run(&["nft", "-f", saved.to_str().unwrap()]);
    let _ = std::fs::remove_file(&saved);
    assert_eq!(loaded, "");
    assert_eq!(fw.reconcile().unwrap(), 0);
    assert_eq!(write_count(&fw.operations()), writes);

    fw.clean_up().unwrap();
    let ruleset = ns.run(&["nft", "list", "ruleset"]);
    assert!(!ruleset.contains("kilo"), "{ruleset}");
}

#[test]
fn a_rule_nftables_cannot_express_is_an_error_naming_it() {
    if root_support::skip_unless_root() {
        return;
    }
    let ns = Netns::new("nfterr");
    let mut fw = firewall(&ns);
    let bad = RuleSet {
        append: vec![rule(Family::Ipv4, "filter", "INPUT", "-i eth0 -j ACCEPT")],
        prepend: vec![],
    };
    let err = fw.set(&bad).unwrap_err().to_string();
    assert!(err.contains("filter -A INPUT -i eth0 -j ACCEPT"), "{err}");
}

#[test]
fn a_missing_namespace_is_an_error_naming_it() {
    let mut fw = Firewall::Nftables(Nftables::with_options(
        Some("/run/netns/kfw-does-not-exist".into()),
        true,
    ));
    let err = fw.set(&leader_rules(&[])).unwrap_err().to_string();
    assert!(err.contains("kfw-does-not-exist"), "{err}");
}

#[test]
fn a_restarted_agent_adopts_the_nftables_rules_it_finds() {
    if root_support::skip_unless_root() {
        return;
    }
    let ns = Netns::new("nftadopt");
    let rules = leader_rules(&PEERS);
    firewall(&ns).set(&rules).unwrap();
    let mut fw = firewall(&ns);
    fw.set(&rules).unwrap();
    assert_applied(&ns, &rules);
    fw.clean_up().unwrap();
    let ruleset = ns.run(&["nft", "list", "ruleset"]);
    assert!(!ruleset.contains("kilo"), "{ruleset}");
}

#[test]
fn leftover_tables_are_removed_only_when_there_are_some() {
    if root_support::skip_unless_root() {
        return;
    }
    let ns = Netns::new("nftleft");
    let nftables = |ipv6| Nftables::with_options(Some(ns.path()), ipv6);
    let ruleset = || ns.run(&["nft", "list", "ruleset"]);

    // None of ours (another table is not): nothing removed, nothing sent.
    ns.run(&["nft", "add", "table", "ip", "filter"]);
    let mut fw = nftables(true);
    assert!(!fw.clean_up_leftovers().unwrap());
    assert_eq!(fw.transactions(), 0);
    assert!(ruleset().contains("table ip filter"));

    // An earlier run's rules: all removed, with the tables.
    firewall(&ns).set(&leader_rules(&PEERS)).unwrap();
    assert!(nftables(true).clean_up_leftovers().unwrap());
    let left = ruleset();
    assert!(!left.contains("kilo") && !left.contains("KILO"), "{left}");
    assert!(left.contains("table ip filter"), "{left}");

    // An empty table of ours counts too.
    ns.run(&["nft", "add", "table", "ip6", "kilo6"]);
    assert!(nftables(true).clean_up_leftovers().unwrap());
    assert!(!ruleset().contains("kilo6"));

    // Without IPv6 the IPv6 table is not ours to manage, as for clean_up.
    ns.run(&["nft", "add", "table", "ip6", "kilo6"]);
    assert!(!nftables(false).clean_up_leftovers().unwrap());
    nftables(false).clean_up().unwrap();
    assert!(ruleset().contains("table ip6 kilo6"));
}

/// A leader's rule set with `n` IPv4 peers (two rules each, `10.128.0.0/16` onwards).
fn many_peer_rules(n: usize) -> RuleSet {
    let mut rules = leader_rules(&PEERS);
    for i in 0..n {
        let aip = format!("10.{}.{}.{}/32", 128 + i / 65536, (i / 256) % 256, i % 256);
        rules.prepend.push(rule(
            Family::Ipv4,
            "nat",
            "POSTROUTING",
            &format!(r#"-s {aip} -m comment --comment "Kilo: jump to NAT chain" -j KILO-NAT"#),
        ));
        rules.prepend.push(rule(Family::Ipv4, "nat", "KILO-NAT", &format!(r#"-d {aip} -m comment --comment "Kilo: do not NAT packets destined for peers" -j RETURN"#)));
    }
    rules
}

#[test]
fn a_transaction_the_kernel_refuses_changes_nothing() {
    if root_support::skip_unless_root() {
        return;
    }
    let ns = Netns::new("nftatomic");
    let mut fw = Nftables::with_options(Some(ns.path()), true);
    fw.set(&many_peer_rules(10)).unwrap();
    let before = ns.run(&["nft", "list", "ruleset"]);
    let sent = fw.transactions();

    // A new plan: a peer gone, 200 new ones, and last a jump to a chain that does not exist,
    // which the kernel refuses only when it reaches that message.
    let mut refused = many_peer_rules(200);
    refused.prepend.remove(rules_of_first_extra_peer());
    refused.prepend.push(rule(
        Family::Ipv4,
        "filter",
        "FORWARD",
        r#"-m comment --comment "Kilo: jump to a chain nobody made" -j KILO-MISSING"#,
    ));
    let err = fw.set(&refused).unwrap_err().to_string();
    assert!(err.contains("refused by the kernel") && err.contains("KILO-MISSING"), "{err}");
    assert_eq!(fw.transactions(), sent + 1, "one transaction, refused whole");
    assert_eq!(ns.run(&["nft", "list", "ruleset"]), before);
}

/// The index, in `many_peer_rules(n).prepend`, of the first extra peer's jump rule.
fn rules_of_first_extra_peer() -> usize {
    many_peer_rules(0).prepend.len()
}

#[test]
fn a_thousand_peer_plan_is_one_transaction_and_so_is_each_change() {
    if root_support::skip_unless_root() {
        return;
    }
    let ns = Netns::new("nftbig");
    let mut fw = Nftables::with_options(Some(ns.path()), true);
    let rules = many_peer_rules(1000);
    fw.set(&rules).unwrap();
    assert_eq!(fw.transactions(), 1);
    assert_applied(&ns, &rules);

    // A peer leaves and another joins: one more transaction.
    let mut changed = many_peer_rules(1001);
    changed.prepend.drain(rules_of_first_extra_peer()..rules_of_first_extra_peer() + 2);
    fw.set(&changed).unwrap();
    assert_eq!(fw.transactions(), 2);
    assert_applied(&ns, &changed);

    // Nothing missing: reconcile sends nothing; a rule deleted by hand: one transaction.
    assert_eq!(fw.reconcile().unwrap(), 0);
    assert_eq!(fw.transactions(), 2);
    delete_by_hand(&ns, Family::Ipv4, "nat", "KILO-NAT", &changed.append[3]);
    assert!(fw.reconcile().unwrap() > 0);
    assert_eq!(fw.transactions(), 3);
    assert_applied(&ns, &changed);

    // Clean-up, tables included: one transaction.
    fw.clean_up().unwrap();
    assert_eq!(fw.transactions(), 4);
    assert_eq!(ns.run(&["nft", "list", "ruleset"]), "");
}
