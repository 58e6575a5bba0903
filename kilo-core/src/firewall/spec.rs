//! A rule's arguments, typed: the rules Kilo plans carry their constant parts (comments,
//! targets, protocols) as `&'static str` and their addresses as [`Cidr`]s, so that building one
//! allocates nothing; they are rendered to `iptables` arguments, identity strings or nftables
//! expressions only where those are needed. Rules read back from the kernel keep their
//! arguments as strings ([`Spec::Args`]).

use std::borrow::Cow;
use std::fmt;
use std::hash::{Hash, Hasher};

use crate::Cidr;

/// The address a typed rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Address {
    /// `-s CIDR`.
    Source(Cidr),
    /// `-d CIDR`.
    Destination(Cidr),
}

impl Address {
    /// The option: `-s` or `-d`.
    pub const fn option(&self) -> &'static str {
        match self {
            Address::Source(_) => "-s",
            Address::Destination(_) => "-d",
        }
    }

    /// The CIDR, host bits as planned (`iptables` masks them itself).
    pub const fn cidr(&self) -> Cidr {
        match self {
            Address::Source(c) | Address::Destination(c) => *c,
        }
    }
}

/// Where a typed rule's comment match stands among its arguments (upstream's order, which the
/// identity strings keep).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Order {
    /// `[-p P] [-s|-d CIDR] -m comment --comment C -j TARGET`.
    AddressFirst,
    /// `[-p P] -m comment --comment C [-s|-d CIDR] -j TARGET` (upstream's `FORWARD` rules).
    CommentFirst,
}

/// A typed Kilo rule: an optional protocol, an optional address, a comment and a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Match {
    /// The `-p` value, if any.
    pub protocol: Option<&'static str>,
    /// The `-s` / `-d` match, if any.
    pub address: Option<Address>,
    /// The `--comment` text.
    pub comment: &'static str,
    /// The `-j` target.
    pub target: &'static str,
    /// Where the comment stands.
    pub order: Order,
}

/// One argument of a rule's spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg<'a> {
    /// A word.
    Str(&'a str),
    /// An address, written as [`Cidr`]'s `Display` does.
    Cidr(Cidr),
}

impl<'a> Arg<'a> {
    /// The argument as text (allocates for an address only).
    pub fn as_str(&self) -> Cow<'a, str> {
        match self {
            Arg::Str(s) => Cow::Borrowed(s),
            Arg::Cidr(c) => Cow::Owned(c.to_string()),
        }
    }
}

impl fmt::Display for Arg<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arg::Str(s) => f.write_str(s),
            Arg::Cidr(c) => fmt::Display::fmt(c, f),
        }
    }
}

/// A rule's arguments after its chain.
///
/// Equality and hashing are by the rendered arguments: a typed spec equals the
/// [`Spec::Args`] of its rendering.
#[derive(Debug, Clone)]
pub enum Spec {
    /// A rule Kilo plans, typed.
    Typed(Match),
    /// Arguments as strings (a rule read back from the kernel, or given by hand).
    Args(Vec<String>),
}

impl Match {
    /// The arguments, in order (at most 10).
    fn args<'a>(self) -> impl Iterator<Item = Arg<'a>> {
        let protocol = self.protocol.map(|p| [Arg::Str("-p"), Arg::Str(p)]);
        let address = self.address.map(|a| [Arg::Str(a.option()), Arg::Cidr(a.cidr())]);
        let comment =
            [Arg::Str("-m"), Arg::Str("comment"), Arg::Str("--comment"), Arg::Str(self.comment)];
        let (before, after) = match self.order {
            Order::AddressFirst => (address, None),
            Order::CommentFirst => (None, address),
        };
        protocol
            .into_iter()
            .flatten()
            .chain(before.into_iter().flatten())
            .chain(comment)
            .chain(after.into_iter().flatten())
            .chain([Arg::Str("-j"), Arg::Str(self.target)])
    }
}

impl Spec {
    /// The arguments, in order.
    pub fn iter(&self) -> impl Iterator<Item = Arg<'_>> {
        let (typed, args) = match self {
            Spec::Typed(m) => (Some(m.args()), None),
            Spec::Args(a) => (None, Some(a.iter().map(|s| Arg::Str(s)))),
        };
        typed.into_iter().flatten().chain(args.into_iter().flatten())
    }

    /// The arguments as strings: borrowed for [`Spec::Args`], rendered for a typed spec.
    pub fn args(&self) -> Cow<'_, [String]> {
        match self {
            Spec::Args(a) => Cow::Borrowed(a),
            Spec::Typed(_) => Cow::Owned(self.iter().map(|a| a.to_string()).collect()),
        }
    }

    /// The arguments joined by spaces, with the argument after `--comment` in double quotes.
    pub fn text(&self) -> String {
        let mut out = String::with_capacity(96);
        self.write_text(&mut out);
        out
    }

    /// [`Spec::text`], appended to `out`.
    pub fn write_text(&self, out: &mut String) {
        use fmt::Write;
        let mut quote_next = false;
        for (i, arg) in self.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            let _ = if quote_next { write!(out, "\"{arg}\"") } else { write!(out, "{arg}") };
            quote_next = arg == Arg::Str("--comment");
        }
    }
}

impl From<Match> for Spec {
    fn from(m: Match) -> Spec {
        Spec::Typed(m)
    }
}

impl From<Vec<String>> for Spec {
    fn from(args: Vec<String>) -> Spec {
        Spec::Args(args)
    }
}

impl PartialEq for Spec {
    fn eq(&self, other: &Spec) -> bool {
        match (self, other) {
            (Spec::Typed(a), Spec::Typed(b)) if a == b => true,
            (Spec::Args(a), Spec::Args(b)) => a == b,
            _ => {
                let mut a = self.iter();
                let mut b = other.iter();
                loop {
                    match (a.next(), b.next()) {
                        (None, None) => return true,
                        (Some(x), Some(y)) if x == y || x.as_str() == y.as_str() => {}
                        _ => return false,
                    }
                }
            }
        }
    }
}

impl Eq for Spec {}

impl Hash for Spec {
    /// Hashes the rendered arguments, so that a typed spec and its [`Spec::Args`] hash alike.
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut n = 0usize;
        for arg in self.iter() {
            arg.as_str().hash(state);
            n += 1;
        }
        n.hash(state);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::hash_map::DefaultHasher;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;
    use crate::firewall::{Entry, Family, RuleKey, split_args};

    /// Every comment and target Kilo's typed rules use.
    const COMMENTS: [&str; 17] = [
        "Kilo: jump to IPIP chain",
        "Kilo: reject other IPIP traffic",
        "Kilo: allow IPIP traffic",
        "Kilo: jump to KILO-NAT chain",
        "Kilo: forward packets from the pod subnet",
        "Kilo: forward packets to the pod subnet",
        "Kilo: forward packets from allowed location IPs",
        "Kilo: forward packets to allowed location IPs",
        "Kilo: forward packets from private IPs",
        "Kilo: forward packets to private IPs",
        "Kilo: forward packets from the node's pod subnet",
        "Kilo: forward packets to the node's pod subnet",
        "Kilo: do not NAT packets destined for WireGuared IPs",
        "Kilo: do not NAT packets destined for known IPs",
        "Kilo: do not NAT packets destined for peers",
        "Kilo: do not NAT packets destined for service CIDRs",
        "Kilo: NAT remaining packets",
    ];
    const TARGETS: [&str; 6] = ["ACCEPT", "DROP", "RETURN", "MASQUERADE", "KILO-NAT", "KILO-IPIP"];

    fn cidr() -> impl Strategy<Value = Cidr> {
        prop_oneof![
            (any::<u32>(), 0u8..=32)
                .prop_map(|(a, p)| Cidr::new(IpAddr::V4(Ipv4Addr::from(a)), p).unwrap()),
            (any::<u128>(), 0u8..=128).prop_map(|(a, p)| Cidr::new(
                IpAddr::V6(Ipv6Addr::from(a)),
                p
            )
            .unwrap()),
        ]
    }

    fn typed() -> impl Strategy<Value = Match> {
        let address = prop_oneof![
            Just(None),
            cidr().prop_map(|c| Some(Address::Source(c))),
            cidr().prop_map(|c| Some(Address::Destination(c))),
        ];
        (
            prop::option::of(Just(crate::firewall::IPIP_PROTOCOL)),
            address,
            prop::sample::select(&COMMENTS[..]),
            prop::sample::select(&TARGETS[..]),
            prop::bool::ANY,
        )
            .prop_map(|(protocol, address, comment, target, first)| Match {
                protocol,
                address,
                comment,
                target,
                order: if first { Order::CommentFirst } else { Order::AddressFirst },
            })
    }

    /// The rule text as the string rules were written: arguments joined by blanks, the
    /// comment in double quotes.
    fn old_text(args: &[String]) -> String {
        let mut out = Vec::new();
        for (i, a) in args.iter().enumerate() {
            if i > 0 && args[i - 1] == "--comment" {
                out.push(format!("\"{a}\""));
            } else {
                out.push(a.clone());
            }
        }
        out.join(" ")
    }

    fn hash(spec: &Spec) -> u64 {
        let mut h = DefaultHasher::new();
        spec.hash(&mut h);
        h.finish()
    }

    proptest! {
        #[test]
        fn a_typed_rule_renders_keys_and_compares_as_its_string_form(m in typed()) {
            let typed = Spec::Typed(m);
            let args = typed.args().into_owned();
            // The arguments, in upstream's order.
            let mut expected: Vec<String> = Vec::new();
            if let Some(p) = m.protocol {
                expected.extend(["-p".to_string(), p.to_string()]);
            }
            let address: Vec<String> = m
                .address
                .map(|a| vec![a.option().to_string(), a.cidr().to_string()])
                .unwrap_or_default();
            if m.order == Order::AddressFirst {
                expected.extend(address.clone());
            }
            expected.extend(["-m", "comment", "--comment", m.comment].map(String::from));
            if m.order == Order::CommentFirst {
                expected.extend(address);
            }
            expected.extend(["-j".to_string(), m.target.to_string()]);
            prop_assert_eq!(&args, &expected);
            // Text and identity as before.
            prop_assert_eq!(typed.text(), old_text(&args));
            let entry = Entry::typed(Family::Ipv4, "nat", "KILO-NAT", m);
            let identity = entry.identity();
            prop_assert_eq!(&identity, &format!("nat -A KILO-NAT {}", old_text(&args)));
            // The key built from the fields is the key of the rendered arguments, of the
            // arguments read back from the text, and of the identity.
            let key = RuleKey::of_spec("nat", "KILO-NAT", &typed);
            prop_assert_eq!(&key, &RuleKey::new("nat", "KILO-NAT", &args));
            prop_assert_eq!(&key, &RuleKey::new("nat", "KILO-NAT", &split_args(&typed.text())));
            prop_assert_eq!(Some(key.clone()), RuleKey::from_identity(&identity));
            prop_assert_eq!(Some(key), RuleKey::of_entry(&entry));
            // Equal to its string form, and hashed alike.
            let strings = Spec::Args(args);
            prop_assert_eq!(&typed, &strings);
            prop_assert_eq!(hash(&typed), hash(&strings));
        }

        #[test]
        fn typed_rules_differ_exactly_when_their_arguments_do(a in typed(), b in typed()) {
            let (x, y) = (Spec::Typed(a), Spec::Typed(b));
            prop_assert_eq!(x == y, x.args() == y.args());
            prop_assert_eq!(x == Spec::Args(y.args().into_owned()), x.args() == y.args());
        }
    }
}
