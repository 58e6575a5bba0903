//! Batched `iptables` writes: the controller's calls of one `set` or `clean_up` are queued as
//! [`Op`]s, then simulated against one `iptables-save` listing per family ([`Model`]) to decide,
//! as the per-rule path's `-C` checks and ignored errors would have, which commands to write, and
//! written as one `iptables-restore --noflush` input per family ([`restore_input`]).

use std::collections::HashMap;

use kilo_core::firewall::{Arg, Family, Spec};

use super::rule::{Keyed, KeyedRules, RuleKey, split_args};

/// One queued client call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Create the chain if missing, then flush it.
    ClearChain { family: Family, table: String, chain: String },
    /// Delete the chain (ignored when it would fail).
    DeleteChain { family: Family, table: String, chain: String },
    /// Append the rule unless present.
    Append { family: Family, table: String, chain: String, spec: Spec },
    /// Insert the rule at position 1 unless present.
    Insert { family: Family, table: String, chain: String, spec: Spec },
    /// Delete the rule (ignored when absent).
    Delete { family: Family, table: String, chain: String, spec: Spec },
}

impl Op {
    /// The op's family.
    pub(crate) fn family(&self) -> Family {
        match self {
            Op::ClearChain { family, .. }
            | Op::DeleteChain { family, .. }
            | Op::Append { family, .. }
            | Op::Insert { family, .. }
            | Op::Delete { family, .. } => *family,
        }
    }

    /// The op's table.
    pub(crate) fn table(&self) -> &str {
        match self {
            Op::ClearChain { table, .. }
            | Op::DeleteChain { table, .. }
            | Op::Append { table, .. }
            | Op::Insert { table, .. }
            | Op::Delete { table, .. } => table,
        }
    }
}

/// A rule as the model knows it: its canonical key and the chain it jumps or goes to.
#[derive(Debug, Clone)]
struct Listed {
    key: RuleKey,
    target: Option<String>,
}

impl Keyed for Listed {
    fn key(&self) -> Option<&RuleKey> {
        Some(&self.key)
    }
}

impl Listed {
    fn new(table: &str, chain: &str, spec: &[String]) -> Listed {
        let target = spec
            .windows(2)
            .find(|w| matches!(w[0].as_str(), "-j" | "--jump" | "-g" | "--goto"))
            .map(|w| w[1].clone());
        Listed { key: RuleKey::new(table, chain, spec), target }
    }

    /// A rule about to be written (typed rules are keyed from their fields).
    fn of_spec(table: &str, chain: &str, spec: &Spec) -> Listed {
        let mut args = spec.iter();
        let mut target = None;
        while let Some(arg) = args.next() {
            if matches!(arg, Arg::Str("-j" | "--jump" | "-g" | "--goto")) {
                target = args.next().map(|a| a.to_string());
                break;
            }
        }
        Listed { key: RuleKey::of_spec(table, chain, spec), target }
    }
}

/// One table: its chains with their rules, and which chains are built in.
#[derive(Debug, Default)]
struct Table {
    chains: HashMap<String, KeyedRules<Listed>>,
    builtin: Vec<String>,
}

/// One family's tables, from an `iptables-save` listing, updated by [`Model::apply`].
#[derive(Debug, Default)]
pub(crate) struct Model {
    tables: HashMap<String, Table>,
}

impl Model {
    /// The model of the `tables` of an `iptables-save` output (`*table`, `:CHAIN POLICY [..]`,
    /// `-A CHAIN …`); other tables are skipped.
    pub(crate) fn parse(save: &str, tables: &[&str]) -> Model {
        let mut model = Model::default();
        let mut current: Option<String> = None;
        for line in save.lines() {
            if let Some(name) = line.strip_prefix('*') {
                let name = name.trim();
                current = tables.contains(&name).then(|| name.to_string());
                if let Some(name) = &current {
                    model.tables.entry(name.clone()).or_default();
                }
                continue;
            }
            let Some(name) = current.as_deref() else {
                continue;
            };
            let table = model.tables.entry(name.to_string()).or_default();
            if let Some(decl) = line.strip_prefix(':') {
                let mut words = decl.split_whitespace();
                if let Some(chain) = words.next() {
                    table.chains.entry(chain.to_string()).or_default();
                    if words.next().is_some_and(|policy| policy != "-") {
                        table.builtin.push(chain.to_string());
                    }
                }
            } else if line.starts_with("-A ") {
                let args = split_args(line);
                if let [_, chain, spec @ ..] = args.as_slice() {
                    let listed = Listed::new(name, chain, spec);
                    table.chains.entry(chain.clone()).or_default().push(listed, false);
                }
            } else if line.starts_with("COMMIT") {
                current = None;
            }
        }
        model
    }

    /// Simulates `op` as the per-rule path would perform it and returns the `iptables-restore`
    /// command line it writes, `None` when it writes nothing (a present rule, an absent one to
    /// delete, a chain that cannot be deleted yet).
    pub(crate) fn apply(&mut self, op: &Op) -> Option<String> {
        let table = self.tables.entry(op.table().to_string()).or_default();
        match op {
            Op::ClearChain { chain, .. } => match table.chains.get_mut(chain) {
                Some(rules) => {
                    rules.take();
                    Some(format!("-F {chain}"))
                }
                None => {
                    table.chains.insert(chain.clone(), KeyedRules::default());
                    Some(format!("-N {chain}"))
                }
            },
            Op::DeleteChain { chain, .. } => {
                let empty = table.chains.get(chain).is_some_and(KeyedRules::is_empty);
                let referenced = table
                    .chains
                    .values()
                    .flatten()
                    .any(|r| r.target.as_deref() == Some(chain.as_str()));
                if !empty || referenced || table.builtin.contains(chain) {
                    return None;
                }
                table.chains.remove(chain);
                Some(format!("-X {chain}"))
            }
            Op::Append { table: t, chain, spec, .. } | Op::Insert { table: t, chain, spec, .. } => {
                let listed = Listed::of_spec(t, chain, spec);
                let rules = table.chains.entry(chain.clone()).or_default();
                if rules.contains(&listed.key) {
                    return None;
                }
                if matches!(op, Op::Append { .. }) {
                    rules.push(listed, false);
                    Some(command(&["-A", chain], spec))
                } else {
                    rules.push(listed, true);
                    Some(command(&["-I", chain, "1"], spec))
                }
            }
            Op::Delete { table: t, chain, spec, .. } => {
                let key = RuleKey::of_spec(t, chain, spec);
                table.chains.get_mut(chain)?.remove(&key)?;
                Some(command(&["-D", chain], spec))
            }
        }
    }
}

/// A restore command line: `head` then `spec`, each argument quoted when it needs it.
fn command(head: &[&str], spec: &Spec) -> String {
    let mut words: Vec<String> = head.iter().map(|s| s.to_string()).collect();
    words.extend(spec.iter().map(|a| quote(&a.as_str())));
    words.join(" ")
}

/// An argument as `iptables-restore` reads it back: bare when it is one plain word, else in
/// double quotes with `\` and `"` escaped by a backslash.
fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && !arg.chars().any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | '#'));
    if plain {
        return arg.to_string();
    }
    let mut out = String::from("\"");
    for c in arg.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The `iptables-restore --noflush` input that performs `ops` (all of one family) on the state
/// `model` describes, and how many command lines it holds; the model ends up in the state after
/// them. Lines are grouped by table (tables are independent), in order within each.
pub(crate) fn restore_input(model: &mut Model, ops: &[Op]) -> (String, usize) {
    let mut tables: Vec<(String, Vec<String>)> = Vec::new();
    let mut count = 0;
    for op in ops {
        let Some(line) = model.apply(op) else {
            continue;
        };
        count += 1;
        match tables.iter_mut().find(|(t, _)| t == op.table()) {
            Some((_, lines)) => lines.push(line),
            None => tables.push((op.table().to_string(), vec![line])),
        }
    }
    let mut out = String::new();
    for (table, lines) in tables {
        out.push('*');
        out.push_str(&table);
        out.push('\n');
        for line in lines {
            out.push_str(&line);
            out.push('\n');
        }
        out.push_str("COMMIT\n");
    }
    (out, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(words: &[&str]) -> Spec {
        Spec::Args(words.iter().map(|w| w.to_string()).collect())
    }

    const SAVE: &str = "# Generated by iptables-save\n*nat\n:PREROUTING ACCEPT [0:0]\n\
        :POSTROUTING ACCEPT [0:0]\n:KILO-NAT - [0:0]\n\
        -A POSTROUTING -s 10.2.1.0/24 -m comment --comment \"Kilo: jump to KILO-NAT chain\" -j KILO-NAT\n\
        -A KILO-NAT -m comment --comment \"Kilo: NAT remaining packets\" -j MASQUERADE\nCOMMIT\n";

    fn jump() -> Op {
        Op::Delete {
            family: Family::Ipv4,
            table: "nat".into(),
            chain: "POSTROUTING".into(),
            spec: s(&[
                "-m",
                "comment",
                "--comment",
                "Kilo: jump to KILO-NAT chain",
                "-s",
                "10.2.1.5/24",
                "-j",
                "KILO-NAT",
            ]),
        }
    }

    #[test]
    fn present_rules_are_not_written_again_and_absent_ones_are_not_deleted() {
        let mut model = Model::parse(SAVE, &["nat", "filter"]);
        let masquerade =
            s(&["-m", "comment", "--comment", "Kilo: NAT remaining packets", "-j", "MASQUERADE"]);
        let append = |spec: Spec| Op::Append {
            family: Family::Ipv4,
            table: "nat".into(),
            chain: "KILO-NAT".into(),
            spec,
        };
        assert_eq!(model.apply(&append(masquerade.clone())), None);
        let absent = Op::Delete {
            family: Family::Ipv4,
            table: "nat".into(),
            chain: "KILO-NAT".into(),
            spec: s(&["-d", "10.9.0.1/32", "-j", "RETURN"]),
        };
        assert_eq!(model.apply(&absent), None);
        let clear =
            Op::ClearChain { family: Family::Ipv4, table: "nat".into(), chain: "KILO-NAT".into() };
        assert_eq!(model.apply(&clear).as_deref(), Some("-F KILO-NAT"));
        assert_eq!(
            model.apply(&append(masquerade)).as_deref(),
            Some("-A KILO-NAT -m comment --comment \"Kilo: NAT remaining packets\" -j MASQUERADE")
        );
    }

    #[test]
    fn a_chain_is_deleted_only_once_it_is_empty_and_unreferenced() {
        let mut model = Model::parse(SAVE, &["nat", "filter"]);
        let chain = |op: fn(Family, String, String) -> Op| {
            op(Family::Ipv4, "nat".into(), "KILO-NAT".into())
        };
        let clear = chain(|family, table, chain| Op::ClearChain { family, table, chain });
        let delete = chain(|family, table, chain| Op::DeleteChain { family, table, chain });
        assert_eq!(model.apply(&delete), None, "not empty");
        assert_eq!(model.apply(&clear).as_deref(), Some("-F KILO-NAT"));
        assert_eq!(model.apply(&delete), None, "still the target of the POSTROUTING jump");
        assert!(model.apply(&jump()).is_some_and(|l| l.starts_with("-D POSTROUTING ")));
        assert_eq!(model.apply(&delete).as_deref(), Some("-X KILO-NAT"));
        assert_eq!(model.apply(&delete), None, "gone already");
        let builtin = Op::DeleteChain {
            family: Family::Ipv4,
            table: "nat".into(),
            chain: "PREROUTING".into(),
        };
        assert_eq!(model.apply(&builtin), None);
    }

    #[test]
    fn tables_not_asked_for_are_not_modelled() {
        let mut model = Model::parse(SAVE, &["filter"]);
        let masquerade = Op::Delete {
            family: Family::Ipv4,
            table: "nat".into(),
            chain: "KILO-NAT".into(),
            spec: s(&[
                "-m",
                "comment",
                "--comment",
                "Kilo: NAT remaining packets",
                "-j",
                "MASQUERADE",
            ]),
        };
        assert_eq!(model.apply(&masquerade), None);
    }

    #[test]
    fn restore_input_groups_lines_by_table_in_order_and_quotes_comments() {
        let mut model = Model::parse(SAVE, &["nat", "filter"]);
        let insert = |table: &str, chain: &str, comment: &str| Op::Insert {
            family: Family::Ipv4,
            table: table.into(),
            chain: chain.into(),
            spec: s(&["-m", "comment", "--comment", comment, "-j", "ACCEPT"]),
        };
        let ops = vec![
            insert("filter", "FORWARD", "Kilo: the node's \"pod\" \\ subnet"),
            jump(),
            insert("filter", "FORWARD", "b"),
            insert("filter", "FORWARD", "b"),
        ];
        let (input, count) = restore_input(&mut model, &ops);
        assert_eq!(count, 3);
        assert_eq!(
            input,
            "*filter\n\
             -I FORWARD 1 -m comment --comment \"Kilo: the node's \\\"pod\\\" \\\\ subnet\" -j ACCEPT\n\
             -I FORWARD 1 -m comment --comment b -j ACCEPT\nCOMMIT\n\
             *nat\n-D POSTROUTING -m comment --comment \"Kilo: jump to KILO-NAT chain\" -s 10.2.1.5/24 -j KILO-NAT\nCOMMIT\n"
        );
    }
}
