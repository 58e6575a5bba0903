//! The kernel's rule formats: the nftables comment that carries a rule's identity, and the
//! `iptables -S` and identity lines read back. The identities, the canonical rule keys and the
//! recognition of Kilo's rules are kilo-core's ([`kilo_core::firewall::RuleKey`],
//! [`kilo_core::firewall::is_kilo_rule`]).

use kilo_core::firewall::{Arg, Entry};
pub(crate) use kilo_core::firewall::{RuleKey, split_args};

/// Upstream's string identity of an entry ([`Entry::identity`]).
pub(crate) fn identity(entry: &Entry) -> String {
    entry.identity()
}

/// The identity with the comment in single quotes (`'` and `\\` escaped with a backslash):
/// what the nftables backend stores as a rule's comment, so that `nft list ruleset` prints a
/// double-quoted comment `nft -f` reads back. [`split_args`] parses both forms to the same key.
pub(crate) fn identity_single_quoted(entry: &Entry) -> String {
    match entry {
        Entry::Chain { .. } => identity(entry),
        Entry::Rule { table, chain, spec, .. } => {
            let mut out = format!("{table} -A {chain}");
            let mut quote_next = false;
            for arg in spec.iter() {
                out.push(' ');
                let text = arg.as_str();
                if quote_next {
                    out.push('\'');
                    out.push_str(&text.replace('\\', "\\\\").replace('\'', "\\'"));
                    out.push('\'');
                } else {
                    out.push_str(&text);
                }
                quote_next = arg == Arg::Str("--comment");
            }
            out
        }
    }
}

/// The chain and spec of an `iptables -S` line (`-A CHAIN spec…`); `None` for other lines.
pub(crate) fn parse_listing(line: &str) -> Option<(String, Vec<String>)> {
    let mut args = split_args(line);
    if args.len() < 2 || args[0] != "-A" {
        return None;
    }
    let spec = args.split_off(2);
    Some((args.swap_remove(1), spec))
}

/// The chain and spec of an identity string (`<table> -A <chain> <spec…>`) of `table`.
pub(crate) fn parse_identity(table: &str, identity: &str) -> Option<(String, Vec<String>)> {
    let mut args = split_args(identity);
    if args.len() < 3 || args[0] != table || args[1] != "-A" {
        return None;
    }
    let spec = args.split_off(3);
    Some((args.swap_remove(2), spec))
}

/// The IP protocol number of a `-p` value (`ipencap` and `4` are 4), for nftables.
pub(crate) fn protocol_number(value: &str) -> Option<u8> {
    match kilo_core::firewall::canonical_protocol(value).as_str() {
        "icmp" => Some(1),
        "ipencap" => Some(4),
        "tcp" => Some(6),
        "udp" => Some(17),
        "ipv6" => Some(41),
        "gre" => Some(47),
        "ipv6-icmp" => Some(58),
        other => other.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kilo_core::firewall::Family;
    use kilo_core::firewall::is_kilo_rule;

    fn rule(table: &str, chain: &str, spec: &[&str]) -> Entry {
        Entry::rule(Family::Ipv4, table, chain, spec)
    }

    #[test]
    fn identity_quotes_the_comment_argument_like_upstream() {
        let r = rule(
            "nat",
            "KILO-NAT",
            &["-d", "10.4.0.1/32", "-m", "comment", "--comment", "Kilo: x y", "-j", "RETURN"],
        );
        assert_eq!(
            identity(&r),
            r#"nat -A KILO-NAT -d 10.4.0.1/32 -m comment --comment "Kilo: x y" -j RETURN"#
        );
        let c = Entry::chain(Family::Ipv6, "nat", "KILO-NAT");
        assert_eq!(identity(&c), "nat -N KILO-NAT");
    }

    #[test]
    fn an_identity_string_parses_back_to_the_rule_key() {
        let r = rule(
            "nat",
            "POSTROUTING",
            &[
                "-s",
                "10.2.1.0/24",
                "-m",
                "comment",
                "--comment",
                "Kilo: jump to KILO-NAT chain",
                "-j",
                "KILO-NAT",
            ],
        );
        assert_eq!(RuleKey::from_identity(&identity(&r)), RuleKey::of_entry(&r));
        assert_eq!(RuleKey::from_identity("nat -N KILO-NAT"), None);
        let apostrophe = rule(
            "filter",
            "FORWARD",
            &["-m", "comment", "--comment", "the node's \\ \"pod\"", "-j", "ACCEPT"],
        );
        let single = identity_single_quoted(&apostrophe);
        assert_eq!(
            single,
            r#"filter -A FORWARD -m comment --comment 'the node\'s \\ "pod"' -j ACCEPT"#
        );
        assert_eq!(RuleKey::from_identity(&single), RuleKey::of_entry(&apostrophe));
    }

    #[test]
    fn kilo_rules_are_recognised_by_comment_jump_or_chain_and_foreign_ones_are_not() {
        let spec = |s: &str| split_args(s);
        assert!(is_kilo_rule(
            "POSTROUTING",
            &spec(r#"-s 10.5.0.1/32 -m comment --comment "Kilo: jump to NAT chain" -j KILO-NAT"#)
        ));
        assert!(is_kilo_rule("INPUT", &spec("-p 4 -j KILO-IPIP")));
        assert!(is_kilo_rule("KILO-NAT", &spec("-j MASQUERADE")));
        assert!(!is_kilo_rule(
            "POSTROUTING",
            &spec(r#"-m comment --comment "kube: Kilo: x" -j MASQUERADE"#)
        ));
        assert!(!is_kilo_rule("FORWARD", &spec("-s 10.0.0.0/8 -j ACCEPT")));
        let line = r#"-A POSTROUTING -s 10.5.0.1/32 -m comment --comment "Kilo: the node\'s pods" -j KILO-NAT"#;
        let (chain, parsed) = parse_listing(line).unwrap();
        assert_eq!(chain, "POSTROUTING");
        assert_eq!(parsed[5], "Kilo: the node's pods");
        assert_eq!(parse_listing("-N KILO-NAT"), None);
        let (chain, parsed) = parse_identity(
            "nat",
            "nat -A KILO-NAT -d 10.4.0.1/32 -m comment --comment 'Kilo: x' -j RETURN",
        )
        .unwrap();
        assert_eq!((chain.as_str(), parsed.len()), ("KILO-NAT", 8));
        assert_eq!(parse_identity("filter", "nat -A KILO-NAT -j RETURN"), None);
    }
}

/// A rule that may carry a [`RuleKey`].
pub(crate) trait Keyed {
    /// The rule's key, if it has one.
    fn key(&self) -> Option<&RuleKey>;
}

/// A chain's rules in order, with how many carry each key: whether a rule is present is a
/// lookup, not a scan of the chain (a plan of 5,000 nodes puts some 10,000 rules in one chain,
/// each checked before it is added).
#[derive(Debug, Clone)]
pub(crate) struct KeyedRules<T> {
    rules: std::collections::VecDeque<T>,
    keys: std::collections::HashMap<RuleKey, usize>,
}

impl<T> Default for KeyedRules<T> {
    fn default() -> Self {
        KeyedRules { rules: Default::default(), keys: Default::default() }
    }
}

impl<T: Keyed> KeyedRules<T> {
    /// Whether a rule with `key` is present.
    pub(crate) fn contains(&self, key: &RuleKey) -> bool {
        self.keys.contains_key(key)
    }

    /// Adds `rule` first (`head`) or last.
    pub(crate) fn push(&mut self, rule: T, head: bool) {
        if let Some(key) = rule.key() {
            *self.keys.entry(key.clone()).or_default() += 1;
        }
        if head {
            self.rules.push_front(rule);
        } else {
            self.rules.push_back(rule);
        }
    }

    /// Removes the first rule with `key`.
    pub(crate) fn remove(&mut self, key: &RuleKey) -> Option<T> {
        let count = self.keys.get_mut(key)?;
        *count -= 1;
        if *count == 0 {
            self.keys.remove(key);
        }
        let at = self.rules.iter().position(|r| r.key() == Some(key))?;
        self.rules.remove(at)
    }

    /// Removes every rule, returning them in order.
    pub(crate) fn take(&mut self) -> std::collections::VecDeque<T> {
        self.keys.clear();
        std::mem::take(&mut self.rules)
    }

    /// Whether the chain has no rule.
    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.rules.iter()
    }
}

impl<T: Keyed> FromIterator<T> for KeyedRules<T> {
    fn from_iter<I: IntoIterator<Item = T>>(rules: I) -> Self {
        let mut keyed = KeyedRules::default();
        for rule in rules {
            keyed.push(rule, false);
        }
        keyed
    }
}

impl<'a, T> IntoIterator for &'a KeyedRules<T> {
    type Item = &'a T;
    type IntoIter = std::collections::vec_deque::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.rules.iter()
    }
}

#[cfg(test)]
mod keyed_tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct R(&'static str, Option<RuleKey>);

    impl Keyed for R {
        fn key(&self) -> Option<&RuleKey> {
            self.1.as_ref()
        }
    }

    fn key(spec: &str) -> RuleKey {
        RuleKey::new("nat", "KILO-NAT", &split_args(spec))
    }

    fn r(name: &'static str, spec: &str) -> R {
        R(name, Some(key(spec)))
    }

    #[test]
    fn keyed_rules_keep_order_count_duplicates_and_remove_the_first_of_a_key() {
        let mut rules: KeyedRules<R> =
            [r("a", "-d 10.0.0.0/8 -j RETURN"), r("b", "-j MASQUERADE")].into_iter().collect();
        rules.push(r("c", "-d 10.0.0.0/8 -j RETURN"), true);
        rules.push(R("keyless", None), false);
        let names = |rules: &KeyedRules<R>| rules.iter().map(|r| r.0).collect::<Vec<_>>();
        assert_eq!(names(&rules), ["c", "a", "b", "keyless"]);
        assert!(rules.contains(&key("-d 10.0.0.0/8 -j RETURN")));

        // Two rules share a key: removing one leaves the other, found.
        assert_eq!(rules.remove(&key("-d 10.0.0.0/8 -j RETURN")).map(|r| r.0), Some("c"));
        assert!(rules.contains(&key("-d 10.0.0.0/8 -j RETURN")));
        assert_eq!(rules.remove(&key("-d 10.0.0.0/8 -j RETURN")).map(|r| r.0), Some("a"));
        assert!(!rules.contains(&key("-d 10.0.0.0/8 -j RETURN")));
        assert_eq!(rules.remove(&key("-d 10.0.0.0/8 -j RETURN")), None);
        assert_eq!(names(&rules), ["b", "keyless"]);

        assert_eq!(rules.take().len(), 2);
        assert!(rules.is_empty() && !rules.contains(&key("-j MASQUERADE")));
    }
}
