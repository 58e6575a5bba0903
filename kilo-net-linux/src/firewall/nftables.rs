//! Native nf_tables (netlink, through `rustables`) as a [`Client`].
//!
//! Layout: one table of ours per family, `table ip kilo` and `table ip6 kilo6`. An iptables chain
//! `CHAIN` of table `TABLE` becomes the nftables chain `TABLE-CHAIN` (`nat-KILO-NAT`,
//! `filter-FORWARD`). Built-in iptables chains become base chains at the same hook and priority
//! as iptables' (`nat-POSTROUTING`: type nat hook postrouting priority srcnat (100);
//! `filter-FORWARD` / `filter-INPUT`: type filter priority filter (0)), policy accept. Each rule
//! carries upstream's identity string as its comment (the `--comment` argument in single quotes
//! instead of double ones, so that `nft list ruleset` output reads back with `nft -f`) (the user data `nft` prints as
//! `comment "…"`), which is how the state is read back and diffed.
//!
//! Translated matches: `-s`, `-d` (payload, mask, compare), `-p` (`meta l4proto`),
//! `-m comment --comment`; targets `ACCEPT`, `DROP`, `RETURN`, `MASQUERADE` and a jump to
//! another chain of the same table. Anything else is [`FirewallError::Unsupported`].
//!
//! Note: an `accept` in our table ends only our chain; another table's base chain at the same
//! hook (e.g. iptables-nft's `FORWARD` with policy drop) still sees the packet.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use kilo_core::firewall::{Entry, Family, RuleSet, TableListing};
use rustables::expr::{
    Bitwise, Cmp, CmpOp, HighLevelPayload, IPv4HeaderField, IPv6HeaderField, Immediate, Masquerade,
    Meta, MetaType, NetworkHeaderField, RawExpression, VerdictKind,
};
use rustables::{
    Batch, Chain, ChainPolicy, ChainType, Hook, HookClass, MsgType, ProtocolFamily, Rule, Table,
    list_chains_for_table, list_rules_for_chain,
};

use super::controller::{Client, Controller};
use super::netns::in_netns;
use super::rule::{RuleKey, identity, identity_single_quoted, parse_identity, protocol_number};
use super::{FirewallError, OpLabels};

/// The name of our IPv4 nftables table (`table ip kilo`).
pub const TABLE_NAME: &str = "kilo";
/// The name of our IPv6 nftables table (`table ip6 kilo6`). Distinct from the IPv4 one because
/// rustables' dumps ask for every family and do not expose the family of what they return.
pub const TABLE_NAME_IPV6: &str = "kilo6";

fn table_name(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => TABLE_NAME,
        Family::Ipv6 => TABLE_NAME_IPV6,
    }
}

/// `NFTNL_UDATA_RULE_COMMENT`: the user data type `nft` reads as a rule's comment.
const UDATA_COMMENT: u8 = 0;

fn protocol_family(family: Family) -> ProtocolFamily {
    match family {
        Family::Ipv4 => ProtocolFamily::Ipv4,
        Family::Ipv6 => ProtocolFamily::Ipv6,
    }
}

fn family_name(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "ip",
        Family::Ipv6 => "ip6",
    }
}

/// The nftables chain name of iptables chain `chain` in table `table`.
fn chain_name(table: &str, chain: &str) -> String {
    format!("{table}-{chain}")
}

/// Type, hook and priority of the base chain standing for a built-in iptables chain.
fn base_chain(table: &str, chain: &str) -> Option<(ChainType, HookClass, i32)> {
    let hook = match chain {
        "PREROUTING" => HookClass::PreRouting,
        "INPUT" => HookClass::In,
        "FORWARD" => HookClass::Forward,
        "OUTPUT" => HookClass::Out,
        "POSTROUTING" => HookClass::PostRouting,
        _ => return None,
    };
    match (table, hook) {
        ("nat", HookClass::PreRouting | HookClass::Out) => Some((ChainType::Nat, hook, -100)),
        ("nat", HookClass::In | HookClass::PostRouting) => Some((ChainType::Nat, hook, 100)),
        ("filter", HookClass::In | HookClass::Forward | HookClass::Out) => {
            Some((ChainType::Filter, hook, 0))
        }
        ("mangle", HookClass::Out) => Some((ChainType::Route, hook, -150)),
        ("mangle", _) => Some((ChainType::Filter, hook, -150)),
        ("raw", HookClass::PreRouting | HookClass::Out) => Some((ChainType::Filter, hook, -300)),
        _ => None,
    }
}

fn netlink(operation: String, e: rustables::error::QueryError) -> FirewallError {
    let message = match &e {
        rustables::error::QueryError::NetlinkError(err) => {
            format!("{e}: {}", std::io::Error::from_raw_os_error(err.error.abs()))
        }
        other => {
            let mut message = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                message.push_str(&format!(": {s}"));
                source = s.source();
            }
            message
        }
    };
    FirewallError::Netlink { operation, message }
}

/// A comment user data TLV holding `text` (NUL-terminated, as `nft` writes it).
fn comment_udata(text: &str) -> Option<Vec<u8>> {
    // The kernel keeps at most 256 bytes of user data: type, length, text, NUL.
    if text.len() + 3 > 256 {
        return None;
    }
    let len = u8::try_from(text.len() + 1).ok()?;
    let mut out = vec![UDATA_COMMENT, len];
    out.extend_from_slice(text.as_bytes());
    out.push(0);
    Some(out)
}

/// The comment in a rule's user data, if any.
fn udata_comment(udata: &[u8]) -> Option<String> {
    let mut rest = udata;
    while let [kind, len, tail @ ..] = rest {
        let len = *len as usize;
        let value = tail.get(..len)?;
        if *kind == UDATA_COMMENT {
            let text = value.strip_suffix(&[0]).unwrap_or(value);
            return String::from_utf8(text.to_vec()).ok();
        }
        rest = &tail[len..];
    }
    None
}

fn address_match(family: Family, source: bool, value: &str) -> Result<Vec<RawExpression>, String> {
    let net: IpNet = match value.parse::<IpNet>() {
        Ok(net) => net.trunc(),
        Err(_) => IpNet::from(
            value.parse::<IpAddr>().map_err(|_| format!("`{value}` is not an address or CIDR"))?,
        ),
    };
    let field = match (family, net, source) {
        (Family::Ipv4, IpNet::V4(_), true) => NetworkHeaderField::IPv4(IPv4HeaderField::Saddr),
        (Family::Ipv4, IpNet::V4(_), false) => NetworkHeaderField::IPv4(IPv4HeaderField::Daddr),
        (Family::Ipv6, IpNet::V6(_), true) => NetworkHeaderField::IPv6(IPv6HeaderField::Saddr),
        (Family::Ipv6, IpNet::V6(_), false) => NetworkHeaderField::IPv6(IPv6HeaderField::Daddr),
        _ => return Err(format!("`{value}` is not of the rule's family")),
    };
    let (addr, mask) = match net {
        IpNet::V4(n) => (n.network().octets().to_vec(), n.netmask().octets().to_vec()),
        IpNet::V6(n) => (n.network().octets().to_vec(), n.netmask().octets().to_vec()),
    };
    let mut exprs = vec![RawExpression::from(HighLevelPayload::Network(field).build())];
    if net.prefix_len() < net.max_prefix_len() {
        let zeros = vec![0u8; mask.len()];
        exprs.push(Bitwise::new(mask, zeros).map_err(|e| e.to_string())?.into());
    }
    exprs.push(Cmp::new(CmpOp::Eq, addr).into());
    Ok(exprs)
}

/// The nftables expressions of an iptables rule spec.
fn translate(family: Family, table: &str, spec: &[String]) -> Result<Vec<RawExpression>, String> {
    let mut exprs = Vec::new();
    let mut verdict = None;
    let mut args = spec.iter();
    while let Some(option) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("`{option}` has no value"));
        match option.as_str() {
            "-s" | "--source" | "--src" => exprs.extend(address_match(family, true, value()?)?),
            "-d" | "--destination" | "--dst" => {
                exprs.extend(address_match(family, false, value()?)?)
            }
            "-p" | "--protocol" => {
                let proto = value()?;
                let number =
                    protocol_number(proto).ok_or_else(|| format!("unknown protocol `{proto}`"))?;
                exprs.push(Meta::new(MetaType::L4Proto).into());
                exprs.push(Cmp::new(CmpOp::Eq, [number]).into());
            }
            "-m" | "--match" => match value()?.as_str() {
                "comment" => {}
                other => return Err(format!("match `{other}`")),
            },
            "--comment" => {
                value()?;
            }
            "-j" | "--jump" => {
                verdict = Some(match value()?.as_str() {
                    "ACCEPT" => Immediate::new_verdict(VerdictKind::Accept).into(),
                    "DROP" => Immediate::new_verdict(VerdictKind::Drop).into(),
                    "RETURN" => Immediate::new_verdict(VerdictKind::Return).into(),
                    "MASQUERADE" => RawExpression::from(Masquerade::default()),
                    chain => Immediate::new_verdict(VerdictKind::Jump {
                        chain: chain_name(table, chain),
                    })
                    .into(),
                });
            }
            other => return Err(format!("option `{other}`")),
        }
    }
    exprs.extend(verdict);
    Ok(exprs)
}

/// A rule listed from the kernel: its handle and, when its comment is an identity, its key.
struct Listed {
    handle: u64,
    key: Option<RuleKey>,
    rule: Rule,
}

/// nf_tables over netlink as a controller client.
pub(crate) struct NftClient {
    netns: Option<PathBuf>,
}

impl NftClient {
    fn table(family: Family) -> Table {
        Table::new(protocol_family(family)).with_name(table_name(family))
    }

    fn chain(family: Family, table: &str, chain: &str) -> Chain {
        let mut c = Chain::new(&Self::table(family)).with_name(chain_name(table, chain));
        if let Some((kind, hook, priority)) = base_chain(table, chain) {
            c.set_hook(Hook::new(hook, priority));
            c.set_type(kind);
            c.set_policy(ChainPolicy::Accept);
        }
        c
    }

    fn describe(family: Family, what: &str, table: &str, chain: &str) -> String {
        format!(
            "{what} {} {} {}",
            family_name(family),
            table_name(family),
            chain_name(table, chain)
        )
    }

    fn run<T: Send>(
        &self,
        work: impl FnOnce() -> Result<T, FirewallError> + Send,
    ) -> Result<T, FirewallError> {
        in_netns(self.netns.as_deref(), work)
    }

    /// Our table's chain names for a family (empty when the table does not exist).
    fn chain_names(family: Family) -> Result<Vec<String>, FirewallError> {
        let table = Self::table(family);
        let chains = list_chains_for_table(&table).map_err(|e| {
            netlink(format!("list chains of {} {}", family_name(family), table_name(family)), e)
        })?;
        Ok(chains.iter().filter_map(|c| c.get_name().cloned()).collect())
    }

    /// The rules of a chain, `None` when it does not exist.
    fn listed(
        family: Family,
        table: &str,
        chain: &str,
    ) -> Result<Option<Vec<Listed>>, FirewallError> {
        let name = chain_name(table, chain);
        if !Self::chain_names(family)?.contains(&name) {
            return Ok(None);
        }
        let rules = list_rules_for_chain(&Self::chain(family, table, chain))
            .map_err(|e| netlink(Self::describe(family, "list rules of", table, chain), e))?;
        Ok(Some(
            rules
                .into_iter()
                .map(|rule| Listed {
                    handle: rule.get_handle().copied().unwrap_or_default(),
                    key: rule
                        .get_userdata()
                        .and_then(|u| udata_comment(u))
                        .and_then(|c| RuleKey::from_identity(&c)),
                    rule,
                })
                .collect(),
        ))
    }

    fn new_rule(
        family: Family,
        table: &str,
        chain: &str,
        spec: &[String],
    ) -> Result<Rule, FirewallError> {
        let entry = Entry::Rule {
            family,
            table: table.to_string(),
            chain: chain.to_string(),
            spec: spec.to_vec(),
        };
        let id = identity(&entry);
        let unsupported = |reason: String| FirewallError::Unsupported { rule: id.clone(), reason };
        let exprs = translate(family, table, spec).map_err(unsupported)?;
        let udata = comment_udata(&identity_single_quoted(&entry))
            .ok_or_else(|| unsupported("the identity is longer than 253 bytes".into()))?;
        let mut rule = Rule::new(&Self::chain(family, table, chain))
            .map_err(|e| unsupported(e.to_string()))?
            .with_userdata(udata);
        for e in exprs {
            rule.add_expr(e);
        }
        Ok(rule)
    }

    /// A batch that starts by making sure the table and the chain exist (idempotent).
    fn batch_with_chain(family: Family, table: &str, chain: &str) -> Batch {
        let mut batch = Batch::new();
        batch.add(&Self::table(family), MsgType::Add);
        batch.add(&Self::chain(family, table, chain), MsgType::Add);
        batch
    }

    fn send(batch: Batch, operation: String) -> Result<(), FirewallError> {
        batch.send().map_err(|e| netlink(operation, e))
    }

    /// Deletes our table of a family, if it exists (`nft delete table ip kilo`).
    fn delete_table(family: Family) -> Result<(), FirewallError> {
        let mut batch = Batch::new();
        batch.add(&Self::table(family), MsgType::Del);
        match batch.send() {
            Ok(()) => Ok(()),
            Err(rustables::error::QueryError::NetlinkError(e))
                if e.error.abs() == libc_enoent() =>
            {
                Ok(())
            }
            Err(e) => Err(netlink(
                format!("delete table {} {}", family_name(family), table_name(family)),
                e,
            )),
        }
    }
}

/// `ENOENT`, which the kernel answers when the table to delete does not exist.
fn libc_enoent() -> i32 {
    nix::errno::Errno::ENOENT as i32
}

impl Client for NftClient {
    fn clear_chain(&self, family: Family, table: &str, chain: &str) -> Result<(), FirewallError> {
        self.run(|| {
            let mut batch = Self::batch_with_chain(family, table, chain);
            let flush = Rule::new(&Self::chain(family, table, chain))
                .map_err(|e| netlink(Self::describe(family, "flush", table, chain), e.into()))?;
            batch.add(&flush, MsgType::Del);
            Self::send(batch, Self::describe(family, "create and flush", table, chain))
        })
    }

    fn delete_chain(&self, family: Family, table: &str, chain: &str) -> Result<(), FirewallError> {
        self.run(|| {
            let mut batch = Batch::new();
            batch.add(&Self::chain(family, table, chain), MsgType::Del);
            Self::send(batch, Self::describe(family, "delete chain", table, chain))
        })
    }

    fn append_unique(
        &self,
        f: Family,
        t: &str,
        c: &str,
        spec: &[String],
    ) -> Result<(), FirewallError> {
        let key = RuleKey::new(t, c, spec);
        self.run(|| {
            let rule = Self::new_rule(f, t, c, spec)?;
            let listed = Self::listed(f, t, c)?.unwrap_or_default();
            if listed.iter().any(|l| l.key.as_ref() == Some(&key)) {
                return Ok(());
            }
            let mut batch = Self::batch_with_chain(f, t, c);
            batch.add(&rule, MsgType::Add);
            Self::send(batch, Self::describe(f, "append rule to", t, c))
        })
    }

    fn insert_unique(
        &self,
        f: Family,
        t: &str,
        c: &str,
        spec: &[String],
    ) -> Result<(), FirewallError> {
        let key = RuleKey::new(t, c, spec);
        self.run(|| {
            let rule = Self::new_rule(f, t, c, spec)?;
            let listed = Self::listed(f, t, c)?.unwrap_or_default();
            if listed.iter().any(|l| l.key.as_ref() == Some(&key)) {
                return Ok(());
            }
            let mut batch = Self::batch_with_chain(f, t, c);
            match listed.first() {
                None => batch.add(&rule, MsgType::Add),
                Some(first) => {
                    // rustables always appends (NLM_F_APPEND), i.e. after a position. To insert
                    // at the top in one transaction: copy the first rule after itself, put the
                    // new rule right after the original, then delete the original.
                    let chain = Self::chain(f, t, c);
                    let mut copy = Rule::new(&chain)
                        .map_err(|e| netlink(Self::describe(f, "copy rule of", t, c), e.into()))?
                        .with_position(first.handle);
                    if let Some(exprs) = first.rule.get_expressions() {
                        copy.set_expressions(exprs.clone());
                    }
                    if let Some(udata) = first.rule.get_userdata() {
                        copy.set_userdata(udata.clone());
                    }
                    batch.add(&copy, MsgType::Add);
                    batch.add(&rule.with_position(first.handle), MsgType::Add);
                    let original = Rule::new(&chain)
                        .map_err(|e| netlink(Self::describe(f, "delete rule of", t, c), e.into()))?
                        .with_handle(first.handle);
                    batch.add(&original, MsgType::Del);
                }
            }
            Self::send(batch, Self::describe(f, "insert rule into", t, c))
        })
    }

    fn delete(&self, f: Family, t: &str, c: &str, spec: &[String]) -> Result<(), FirewallError> {
        let key = RuleKey::new(t, c, spec);
        self.run(|| {
            let listed = Self::listed(f, t, c)?.unwrap_or_default();
            let Some(found) = listed.iter().find(|l| l.key.as_ref() == Some(&key)) else {
                return Err(FirewallError::Netlink {
                    operation: Self::describe(f, "delete rule of", t, c),
                    message: "no such rule".into(),
                });
            };
            let rule = Rule::new(&Self::chain(f, t, c))
                .map_err(|e| netlink(Self::describe(f, "delete rule of", t, c), e.into()))?
                .with_handle(found.handle);
            let mut batch = Batch::new();
            batch.add(&rule, MsgType::Del);
            Self::send(batch, Self::describe(f, "delete rule of", t, c))
        })
    }

    fn list(&self, f: Family, t: &str, c: &str) -> Result<Option<Vec<RuleKey>>, FirewallError> {
        self.run(|| {
            Ok(Self::listed(f, t, c)?
                .map(|rules| rules.into_iter().filter_map(|l| l.key).collect()))
        })
    }

    fn table_listing(&self, f: Family, t: &str) -> Result<TableListing, FirewallError> {
        // Everything in our tables is ours; a rule is deleted through the identity it carries.
        let prefix = format!("{t}-");
        self.run(|| {
            let mut chains = Vec::new();
            let mut rules = Vec::new();
            for name in Self::chain_names(f)? {
                let Some(chain) = name.strip_prefix(&prefix) else { continue };
                for listed in Self::listed(f, t, chain)?.unwrap_or_default() {
                    let identity = listed.rule.get_userdata().and_then(|u| udata_comment(u));
                    rules.extend(identity.and_then(|i| parse_identity(t, &i)));
                }
                chains.push(chain.to_string());
            }
            Ok(TableListing { family: f, table: t.to_string(), chains, rules, own: true })
        })
    }

    fn remove_base_chain(&self, f: Family, t: &str, c: &str) -> Result<bool, FirewallError> {
        if base_chain(t, c).is_none() {
            return Ok(false);
        }
        self.run(|| {
            match Self::listed(f, t, c)? {
                Some(rules) if rules.is_empty() => {}
                _ => return Ok(false),
            }
            let mut batch = Batch::new();
            batch.add(&Self::chain(f, t, c), MsgType::Del);
            Self::send(batch, Self::describe(f, "delete chain", t, c)).map(|()| true)
        })
    }

    fn list_chains(&self, f: Family, t: &str) -> Result<Vec<String>, FirewallError> {
        let prefix = format!("{t}-");
        self.run(|| {
            Ok(Self::chain_names(f)?
                .into_iter()
                .filter_map(|n| n.strip_prefix(&prefix).map(str::to_string))
                .collect())
        })
    }
}

/// Kilo's rules in native nftables tables of ours, with upstream's controller semantics.
pub struct Nftables {
    controller: Controller<NftClient>,
}

impl Nftables {
    /// Works in the current network namespace; IPv6 follows the kernel
    /// ([`super::ipv6_disabled`]).
    pub fn new() -> Nftables {
        Nftables::with_options(None, !super::ipv6_disabled())
    }

    /// Works in the network namespace at `netns` (e.g. `/run/netns/NAME`) when given; with
    /// `ipv6 == false` IPv6 operations are no-ops.
    pub fn with_options(netns: Option<PathBuf>, ipv6: bool) -> Nftables {
        Nftables { controller: Controller::new(NftClient { netns }, ipv6) }
    }

    /// The network namespace worked in, if not the current one.
    pub fn netns(&self) -> Option<&Path> {
        self.controller.client().netns.as_deref()
    }

    /// Applies `rules` as a diff (upstream `Set`): see [`super::Firewall::set`].
    pub fn set(&mut self, rules: &RuleSet) -> Result<(), FirewallError> {
        self.controller.set(rules)
    }

    /// Restores missing rules; returns how many entries it re-applied.
    pub fn reconcile(&mut self) -> Result<usize, FirewallError> {
        self.controller.reconcile()
    }

    /// Removes everything applied, then our (now empty) `kilo` tables with their base chains.
    pub fn clean_up(&mut self) -> Result<(), FirewallError> {
        self.controller.clean_up()?;
        let ipv6 = self.controller.ipv6();
        let client = self.controller.client();
        client.run(|| {
            NftClient::delete_table(Family::Ipv4)?;
            if ipv6 {
                NftClient::delete_table(Family::Ipv6)?;
            }
            Ok(())
        })
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

impl Default for Nftables {
    fn default() -> Self {
        Nftables::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comment_survives_the_user_data_round_trip() {
        let udata = comment_udata("nat -A KILO-NAT -j RETURN").unwrap();
        assert_eq!(udata[0], UDATA_COMMENT);
        assert_eq!(udata_comment(&udata).as_deref(), Some("nat -A KILO-NAT -j RETURN"));
        assert_eq!(udata_comment(&[5, 1]), None);
    }

    #[test]
    fn upstream_matches_and_targets_translate() {
        let spec: Vec<String> = [
            "-s",
            "10.2.1.5/24",
            "-p",
            "ipencap",
            "-m",
            "comment",
            "--comment",
            "x",
            "-j",
            "KILO-IPIP",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // payload, bitwise, cmp, meta, cmp, jump
        assert_eq!(translate(Family::Ipv4, "filter", &spec).unwrap().len(), 6);
        let masq: Vec<String> = ["-j", "MASQUERADE"].iter().map(|s| s.to_string()).collect();
        assert_eq!(translate(Family::Ipv6, "nat", &masq).unwrap().len(), 1);
    }

    #[test]
    fn unknown_options_and_foreign_addresses_are_refused() {
        let spec: Vec<String> =
            ["-i", "eth0", "-j", "ACCEPT"].iter().map(|s| s.to_string()).collect();
        assert!(translate(Family::Ipv4, "filter", &spec).unwrap_err().contains("-i"));
        let spec: Vec<String> =
            ["-d", "fd00::1/128", "-j", "ACCEPT"].iter().map(|s| s.to_string()).collect();
        assert!(translate(Family::Ipv4, "filter", &spec).is_err());
    }

    #[test]
    fn built_in_chains_hook_where_iptables_does() {
        assert!(matches!(
            base_chain("nat", "POSTROUTING"),
            Some((ChainType::Nat, HookClass::PostRouting, 100))
        ));
        assert!(matches!(
            base_chain("filter", "FORWARD"),
            Some((ChainType::Filter, HookClass::Forward, 0))
        ));
        assert!(base_chain("nat", "KILO-NAT").is_none());
    }
}
