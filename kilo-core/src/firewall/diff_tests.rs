use super::*;
use crate::firewall::split_args;

fn chain(family: Family, table: &'static str, name: &'static str) -> Entry {
    Entry::chain(family, table, name)
}

fn rule(family: Family, table: &str, chain: &str, spec: &str) -> Entry {
    Entry::Rule {
        family,
        table: table.to_string().into(),
        chain: chain.to_string().into(),
        spec: split_args(spec).into(),
    }
}

fn masquerade(family: Family) -> Entry {
    rule(
        family,
        "nat",
        "KILO-NAT",
        r#"-m comment --comment "Kilo: NAT remaining packets" -j MASQUERADE"#,
    )
}

fn jump() -> Entry {
    rule(
        Family::Ipv4,
        "nat",
        "POSTROUTING",
        r#"-s 10.2.1.0/24 -m comment --comment "Kilo: jump to KILO-NAT chain" -j KILO-NAT"#,
    )
}

fn peer(ip: &str) -> Entry {
    rule(
        Family::Ipv4,
        "nat",
        "KILO-NAT",
        &format!(
            r#"-d {ip} -m comment --comment "Kilo: do not NAT packets destined for peers" -j RETURN"#
        ),
    )
}

fn ruleset(peers: &[&str]) -> RuleSet {
    let mut prepend = vec![jump()];
    prepend.extend(peers.iter().map(|p| peer(p)));
    RuleSet {
        append: vec![
            chain(Family::Ipv4, "nat", "KILO-NAT"),
            chain(Family::Ipv6, "nat", "KILO-NAT"),
            masquerade(Family::Ipv4),
            masquerade(Family::Ipv6),
        ],
        prepend,
    }
}

#[test]
fn a_rule_set_against_itself_changes_nothing() {
    let rules = ruleset(&["10.5.0.1/32"]);
    assert_eq!(set_diff(&rules, &rules), SetDiff { kept: 4, ..SetDiff::default() });
    assert_eq!(set_diff(&rules, &rules).to_string(), "");
}

#[test]
fn a_first_set_appends_then_inserts_and_reads_as_iptables_commands() {
    let d = set_diff(&RuleSet::default(), &ruleset(&["10.5.0.1/32"]));
    assert_eq!(
        d.to_string(),
        "iptables -t nat -N KILO-NAT (flushed if present)\n\
         ip6tables -t nat -N KILO-NAT (flushed if present)\n\
         iptables -t nat -A KILO-NAT -m comment --comment \"Kilo: NAT remaining packets\" -j MASQUERADE\n\
         ip6tables -t nat -A KILO-NAT -m comment --comment \"Kilo: NAT remaining packets\" -j MASQUERADE\n\
         iptables -t nat -I POSTROUTING 1 -s 10.2.1.0/24 -m comment --comment \"Kilo: jump to KILO-NAT chain\" -j KILO-NAT\n\
         iptables -t nat -I KILO-NAT 1 -d 10.5.0.1/32 -m comment --comment \"Kilo: do not NAT packets destined for peers\" -j RETURN\n"
    );
    assert_eq!(d.apply(&RuleSet::default()), ruleset(&["10.5.0.1/32"]));
}

#[test]
fn removing_a_peer_deletes_only_its_prepend_rule() {
    let d = set_diff(&ruleset(&["10.5.0.1/32", "10.5.0.2/32"]), &ruleset(&["10.5.0.1/32"]));
    assert_eq!(
        d,
        SetDiff { kept: 4, delete_prepend: vec![peer("10.5.0.2/32")], ..SetDiff::default() }
    );
    assert_eq!(
        d.to_string(),
        "iptables -t nat -D KILO-NAT -d 10.5.0.2/32 -m comment --comment \"Kilo: do not NAT packets destined for peers\" -j RETURN\n"
    );
}

#[test]
fn a_changed_append_list_is_rewritten_from_the_first_difference_and_its_flushed_chains_prepend_rules_come_back()
 {
    let old = ruleset(&["10.5.0.1/32"]);
    let mut new = ruleset(&["10.5.0.1/32"]);
    new.append[1] = chain(Family::Ipv4, "filter", "KILO-IPIP");
    let d = set_diff(&old, &new);
    assert_eq!(d.kept, 1);
    assert_eq!(d.delete_append, old.append[1..]);
    assert_eq!(d.append, new.append[1..]);
    assert_eq!(
        d.flushed,
        BTreeSet::from([
            ChainRef { family: Family::Ipv6, table: "nat".into(), name: "KILO-NAT".into() },
            ChainRef { family: Family::Ipv4, table: "filter".into(), name: "KILO-IPIP".into() },
        ])
    );
    assert!(d.insert.is_empty() && d.delete_prepend.is_empty());
    // The IPv4 KILO-NAT chain is kept: its prepend rule stays recorded.
    assert_eq!(d.apply(&old), new);

    // Rewriting the chain itself flushes it: its peer rule is inserted again.
    let mut first = ruleset(&["10.5.0.1/32"]);
    first.append.insert(0, chain(Family::Ipv4, "filter", "KILO-IPIP"));
    let d = set_diff(&first, &ruleset(&["10.5.0.1/32"]));
    assert_eq!(d.kept, 0);
    assert_eq!(d.insert, [peer("10.5.0.1/32")]);
    assert_eq!(d.delete_append.len() + d.append.len() + d.insert.len(), d.len());
}

fn listing(family: Family, table: &str, chains: &[&str], rules: &[(&str, &str)]) -> TableListing {
    TableListing {
        family,
        table: table.into(),
        chains: chains.iter().map(|c| c.to_string()).collect(),
        rules: rules.iter().map(|(c, s)| (c.to_string(), split_args(s))).collect(),
        own: false,
    }
}

#[test]
fn the_sweep_removes_kilos_leftovers_and_duplicates_and_keeps_foreign_rules() {
    let planned = ruleset(&["10.5.0.1/32"]);
    let jump_spec =
        r#"-s 10.2.1.0/24 -m comment --comment "Kilo: jump to KILO-NAT chain" -j KILO-NAT"#;
    let stale = r#"-s 10.9.0.0/24 -m comment --comment "Kilo: jump to KILO-NAT chain" -j KILO-NAT"#;
    let kernel = vec![
        listing(
            Family::Ipv4,
            "nat",
            &["POSTROUTING", "KILO-NAT", "KILO-OLD"],
            &[
                ("POSTROUTING", jump_spec),
                ("POSTROUTING", jump_spec),
                ("POSTROUTING", stale),
                ("POSTROUTING", "-s 10.9.0.0/16 -j MASQUERADE"),
                ("KILO-NAT", "-j MASQUERADE"),
                ("KILO-OLD", "-j RETURN"),
            ],
        ),
        listing(Family::Ipv4, "filter", &["INPUT", "FORWARD"], &[]),
    ];
    let d = sweep(&planned, &kernel);
    assert_eq!(
        d.changes,
        [
            Change::Delete(rule(Family::Ipv4, "nat", "POSTROUTING", jump_spec)),
            Change::Delete(rule(Family::Ipv4, "nat", "POSTROUTING", stale)),
            Change::Delete(chain(Family::Ipv4, "nat", "KILO-OLD")),
        ]
    );
    assert_eq!(
        d.to_string(),
        format!(
            "iptables -t nat -D POSTROUTING {}\niptables -t nat -D POSTROUTING {}\n\
             iptables -t nat -X KILO-OLD (flushed first)\n",
            jump().spec_text(),
            rule(Family::Ipv4, "nat", "POSTROUTING", stale).spec_text()
        )
    );
    let after = d.apply(&kernel);
    assert!(sweep(&planned, &after).is_empty());
    assert_eq!(after[0].rules.len(), 3);
}

#[test]
fn in_kilos_own_tables_everything_is_kilos_and_unused_base_chains_go() {
    let planned = RuleSet { append: vec![], prepend: vec![jump()] };
    let mut own = listing(
        Family::Ipv4,
        "nat",
        &["POSTROUTING", "PREROUTING"],
        &[("PREROUTING", "-j ACCEPT")],
    );
    own.own = true;
    let d = sweep(&planned, &[own.clone()]);
    assert_eq!(
        d.changes,
        [
            Change::Delete(rule(Family::Ipv4, "nat", "PREROUTING", "-j ACCEPT")),
            Change::DeleteBaseChain(ChainRef {
                family: Family::Ipv4,
                table: "nat".into(),
                name: "PREROUTING".into()
            }),
        ]
    );
    assert_eq!(
        d.changes[1].to_string(),
        "iptables -t nat -X PREROUTING (Kilo's stand-in of a built-in chain, if empty)"
    );
    assert_eq!(d.apply(&[own])[0].chains, ["POSTROUTING"]);
}

#[test]
fn the_sweep_reads_the_planned_tables_and_kilos_usual_ones() {
    let planned =
        RuleSet { append: vec![chain(Family::Ipv6, "mangle", "KILO-X")], prepend: vec![] };
    let tables: Vec<String> =
        sweep_tables(&planned).into_iter().map(|(f, t)| format!("{} {t}", f.as_str())).collect();
    assert_eq!(tables, ["IPv4 filter", "IPv4 nat", "IPv6 filter", "IPv6 mangle", "IPv6 nat"]);
}

/// What the kernel holds of `rules` when everything is there, but for `missing`.
fn listed(rules: &RuleSet, missing: &[&Entry]) -> Listed {
    let mut listed = Listed::default();
    let (tables, chains) = restore_reads(rules);
    for t in tables {
        listed.chains.insert(t, HashSet::new());
    }
    for c in chains {
        listed.rules.insert(c, HashSet::new());
    }
    for e in rules.append.iter().chain(&rules.prepend) {
        if missing.contains(&e) {
            continue;
        }
        match e {
            Entry::Chain { family, table, name } => {
                listed
                    .chains
                    .entry((*family, table.to_string()))
                    .or_default()
                    .insert(name.to_string());
            }
            Entry::Rule { .. } => {
                listed.rules.entry(ChainRef::of(e)).or_default().extend(RuleKey::of_entry(e));
            }
        }
    }
    listed
}

#[test]
fn a_restore_that_finds_everything_changes_nothing() {
    let rules = ruleset(&["10.5.0.1/32"]);
    assert_eq!(restore_diff(&rules, &listed(&rules, &[])), RestoreDiff::default());
}

#[test]
fn a_restore_resets_the_append_list_from_the_first_missing_entry_and_reinserts_missing_prepend_rules()
 {
    let rules = ruleset(&["10.5.0.1/32"]);
    let d = restore_diff(&rules, &listed(&rules, &[&rules.append[2], &rules.prepend[0]]));
    assert_eq!(d, RestoreDiff { reset: rules.append[2..].to_vec(), insert: vec![jump()] });
    assert_eq!(d.restored(), 3);
    assert_eq!(
        d.to_string(),
        format!(
            "iptables -t nat -D KILO-NAT {m}\niptables -t nat -A KILO-NAT {m}\n\
             ip6tables -t nat -D KILO-NAT {m}\nip6tables -t nat -A KILO-NAT {m}\n\
             iptables -t nat -I POSTROUTING 1 {}\n",
            jump().spec_text(),
            m = masquerade(Family::Ipv4).spec_text(),
        )
    );
}

#[test]
fn a_vanished_chain_is_recreated_and_its_prepend_rules_come_back_and_unlisted_entries_are_left_alone()
 {
    let rules = ruleset(&["10.5.0.1/32"]);
    let mut kernel = listed(&rules, &[&rules.append[0]]);
    // Its rules went with it.
    kernel.rules.insert(ChainRef::of(&rules.append[0]), HashSet::new());
    let d = restore_diff(&rules, &kernel);
    assert_eq!(d, RestoreDiff { reset: rules.append.clone(), insert: vec![peer("10.5.0.1/32")] });
    // IPv6 not listed (disabled): nothing of it is restored.
    let mut only_v6_missing = listed(&rules, &[&rules.append[3]]);
    only_v6_missing.rules.retain(|c, _| c.family == Family::Ipv4);
    assert!(restore_diff(&rules, &only_v6_missing).is_empty());
}
