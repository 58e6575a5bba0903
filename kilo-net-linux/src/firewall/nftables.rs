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
//! Writes: the writes of one controller batch (a `set` with its sweep, a reconcile, a clean-up
//! with the deletion of our tables) are one netlink transaction (one [`Batch`], table and chain creation included), which the kernel
//! applies whole or not at all. What to send is decided on a model of our tables, read once per
//! transaction and family, as the per-rule path would have (present rules not added again, absent
//! ones not deleted, chains deleted only when empty and unreferenced).
//!
//! Note: an `accept` in our table ends only our chain; another table's base chain at the same
//! hook (e.g. iptables-nft's `FORWARD` with policy drop) still sees the packet.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use ipnet::IpNet;
use kilo_core::firewall::{Address, Entry, Family, RuleSet, Spec, TableListing};
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
use super::rule::{
    Keyed, KeyedRules, RuleKey, identity, identity_single_quoted, parse_identity, protocol_number,
    split_args,
};
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
    net_match(family, source, net).ok_or_else(|| format!("`{value}` is not of the rule's family"))
}

/// The expressions matching the source or destination network `net` (host bits cleared);
/// `None` when it is not of `family`.
fn net_match(family: Family, source: bool, net: IpNet) -> Option<Vec<RawExpression>> {
    let field = match (family, net, source) {
        (Family::Ipv4, IpNet::V4(_), true) => NetworkHeaderField::IPv4(IPv4HeaderField::Saddr),
        (Family::Ipv4, IpNet::V4(_), false) => NetworkHeaderField::IPv4(IPv4HeaderField::Daddr),
        (Family::Ipv6, IpNet::V6(_), true) => NetworkHeaderField::IPv6(IPv6HeaderField::Saddr),
        (Family::Ipv6, IpNet::V6(_), false) => NetworkHeaderField::IPv6(IPv6HeaderField::Daddr),
        _ => return None,
    };
    let (addr, mask) = match net {
        IpNet::V4(n) => (n.network().octets().to_vec(), n.netmask().octets().to_vec()),
        IpNet::V6(n) => (n.network().octets().to_vec(), n.netmask().octets().to_vec()),
    };
    let mut exprs = vec![RawExpression::from(HighLevelPayload::Network(field).build())];
    if net.prefix_len() < net.max_prefix_len() {
        let zeros = vec![0u8; mask.len()];
        // The mask and the zeros have the same length: `Bitwise::new` cannot fail.
        exprs.push(Bitwise::new(mask, zeros).ok()?.into());
    }
    exprs.push(Cmp::new(CmpOp::Eq, addr).into());
    Some(exprs)
}

/// The expressions matching IP protocol `proto` (a `-p` value).
fn protocol_match(proto: &str) -> Result<[RawExpression; 2], String> {
    let number = protocol_number(proto).ok_or_else(|| format!("unknown protocol `{proto}`"))?;
    Ok([Meta::new(MetaType::L4Proto).into(), Cmp::new(CmpOp::Eq, [number]).into()])
}

/// The verdict of a `-j` target of iptables table `table`.
fn verdict(table: &str, target: &str) -> RawExpression {
    match target {
        "ACCEPT" => Immediate::new_verdict(VerdictKind::Accept).into(),
        "DROP" => Immediate::new_verdict(VerdictKind::Drop).into(),
        "RETURN" => Immediate::new_verdict(VerdictKind::Return).into(),
        "MASQUERADE" => RawExpression::from(Masquerade::default()),
        chain => {
            Immediate::new_verdict(VerdictKind::Jump { chain: chain_name(table, chain) }).into()
        }
    }
}

/// The nftables expressions of a rule spec: a typed rule's are built from its fields, an
/// argument list is translated ([`translate`]).
fn expressions(family: Family, table: &str, spec: &Spec) -> Result<Vec<RawExpression>, String> {
    let m = match spec {
        Spec::Args(args) => return translate(family, table, args),
        Spec::Typed(m) => m,
    };
    let mut exprs = Vec::with_capacity(6);
    if let Some(proto) = m.protocol {
        exprs.extend(protocol_match(proto)?);
    }
    if let Some(a) = m.address {
        let c = a.cidr();
        let net = IpNet::new(c.addr(), c.prefix()).map_err(|e| e.to_string())?.trunc();
        let source = matches!(a, Address::Source(_));
        exprs.extend(
            net_match(family, source, net)
                .ok_or_else(|| format!("`{c}` is not of the rule's family"))?,
        );
    }
    exprs.push(verdict(table, m.target));
    Ok(exprs)
}

/// The nftables expressions of an iptables rule spec given as arguments.
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
            "-p" | "--protocol" => exprs.extend(protocol_match(value()?)?),
            "-m" | "--match" => match value()?.as_str() {
                "comment" => {}
                other => return Err(format!("match `{other}`")),
            },
            "--comment" => {
                value()?;
            }
            "-j" | "--jump" => verdict = Some(self::verdict(table, value()?)),
            other => return Err(format!("option `{other}`")),
        }
    }
    exprs.extend(verdict);
    Ok(exprs)
}

/// A rule as the model knows it: its handle once the kernel holds it, the identity its comment
/// carries (with the key and the jump target, an nftables chain name, read from it), and the
/// pending message that adds it when the open transaction does.
#[derive(Debug, Clone)]
struct ModelRule {
    handle: Option<u64>,
    identity: Option<String>,
    key: Option<RuleKey>,
    target: Option<String>,
    pending: Option<usize>,
}

impl ModelRule {
    fn new(identity: Option<String>, handle: Option<u64>, pending: Option<usize>) -> ModelRule {
        let key = identity.as_deref().and_then(RuleKey::from_identity);
        let target = identity.as_deref().and_then(identity_target);
        ModelRule { handle, identity, key, target, pending }
    }
}

/// The nftables chain a rule of iptables table `table` jumps to, if any.
fn target_chain(table: &str, target: &str) -> Option<String> {
    (!matches!(target, "ACCEPT" | "DROP" | "RETURN" | "MASQUERADE"))
        .then(|| chain_name(table, target))
}

/// A chain of the model (by its nftables name) with its rules in order.
#[derive(Debug, Clone)]
struct ModelChain {
    name: String,
    rules: KeyedRules<ModelRule>,
}

impl Keyed for ModelRule {
    fn key(&self) -> Option<&RuleKey> {
        self.key.as_ref()
    }
}

/// One family's table of ours as the kernel holds it once the pending messages are applied.
#[derive(Debug, Clone, Default)]
struct Model {
    table: bool,
    chains: Vec<ModelChain>,
}

impl Model {
    fn chain(&self, name: &str) -> Option<&ModelChain> {
        self.chains.iter().find(|c| c.name == name)
    }

    fn chain_mut(&mut self, name: &str) -> Option<&mut ModelChain> {
        self.chains.iter_mut().find(|c| c.name == name)
    }

    /// Whether a rule jumps to the chain (the kernel refuses to delete it then).
    fn referenced(&self, name: &str) -> bool {
        self.chains.iter().flat_map(|c| &c.rules).any(|r| r.target.as_deref() == Some(name))
    }

    /// The iptables names of the chains of iptables table `table`.
    fn chain_names(&self, table: &str) -> Vec<String> {
        let prefix = format!("{table}-");
        self.chains
            .iter()
            .filter_map(|c| c.name.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }
}

/// The nftables chain a rule spec of iptables table `table` jumps to, if any.
fn spec_target(table: &str, spec: &[String]) -> Option<String> {
    let at = spec.iter().position(|a| a == "-j" || a == "--jump")?;
    target_chain(table, spec.get(at + 1)?)
}

/// The nftables chain the rule of an identity (`<table> -A <chain> <spec…>`) jumps to.
fn identity_target(identity: &str) -> Option<String> {
    let args = split_args(identity);
    spec_target(args.first()?, args.get(3..)?)
}

/// One netlink message of a pending transaction.
enum Msg {
    AddTable(Family),
    DelTable(Family),
    AddChain {
        family: Family,
        table: String,
        chain: String,
    },
    DelChain {
        family: Family,
        name: String,
    },
    Flush {
        family: Family,
        name: String,
    },
    AddRule {
        rule: Box<Rule>,
        head: bool,
        identity: String,
    },
    DelRule {
        family: Family,
        name: String,
        handle: u64,
    },
    /// A rule added, then deleted by the same transaction: nothing to send.
    Cancelled,
}

impl Msg {
    /// What the message does, for error messages.
    fn describe(&self) -> String {
        let table = |f: Family| format!("{} {}", family_name(f), table_name(f));
        match self {
            Msg::AddTable(f) => format!("add table {}", table(*f)),
            Msg::DelTable(f) => format!("delete table {}", table(*f)),
            Msg::AddChain { family, table: t, chain } => {
                format!("add chain {} {}", table(*family), chain_name(t, chain))
            }
            Msg::DelChain { family, name } => format!("delete chain {} {name}", table(*family)),
            Msg::Flush { family, name } => format!("flush chain {} {name}", table(*family)),
            Msg::AddRule { head: true, identity, .. } => format!("insert rule `{identity}`"),
            Msg::AddRule { head: false, identity, .. } => format!("append rule `{identity}`"),
            Msg::DelRule { family, name, handle } => {
                format!("delete rule {} {name} handle {handle}", table(*family))
            }
            Msg::Cancelled => "nothing".into(),
        }
    }

    /// Adds the message to `batch`; `false` when there is nothing to send.
    fn add_to(&self, batch: &mut Batch) -> Result<bool, FirewallError> {
        let chain = |f: Family, name: &str| Chain::new(&NftClient::table(f)).with_name(name);
        let rule = |f: Family, name: &str| {
            Rule::new(&chain(f, name)).map_err(|e| netlink(self.describe(), e.into()))
        };
        match self {
            Msg::AddTable(f) => batch.add(&NftClient::table(*f), MsgType::Add),
            Msg::DelTable(f) => batch.add(&NftClient::table(*f), MsgType::Del),
            Msg::AddChain { family, table, chain } => {
                batch.add(&NftClient::chain(*family, table, chain), MsgType::Add)
            }
            Msg::DelChain { family, name } => batch.add(&chain(*family, name), MsgType::Del),
            // A rule deletion without a handle flushes the chain.
            Msg::Flush { family, name } => batch.add(&rule(*family, name)?, MsgType::Del),
            Msg::AddRule { rule, .. } => batch.add(rule.as_ref(), MsgType::Add),
            Msg::DelRule { family, name, handle } => {
                batch.add(&rule(*family, name)?.with_handle(*handle), MsgType::Del)
            }
            Msg::Cancelled => return Ok(false),
        }
        Ok(true)
    }
}

/// The writes of one transaction: what they are, and the model of each family's table they
/// lead to (read from the kernel when the transaction first touches the family).
#[derive(Default)]
struct Tx {
    models: [Option<Model>; 2],
    msgs: Vec<Msg>,
}

fn slot(family: Family) -> usize {
    match family {
        Family::Ipv4 => 0,
        Family::Ipv6 => 1,
    }
}

/// `struct nlmsghdr`: length, type, flags, sequence number, port id.
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_APPEND: u16 = 0x800;

/// `(offset, length)` of each netlink message in `bytes`.
fn messages(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + NLMSG_HDRLEN) {
        let len = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len < NLMSG_HDRLEN || at + len > bytes.len() {
            break;
        }
        out.push((at, len));
        at += (len + 3) & !3;
    }
    out
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Adjusts the flags of a finalized batch: the rule additions of sequence numbers `head` lose
/// `NLM_F_APPEND` (rustables always sets it; without it and without a position the kernel adds
/// the rule at the head of its chain, as `nft insert rule` does), and only message `last` asks
/// for an acknowledgement (errors are reported whatever the flags), as `nft` does.
fn patch_flags(bytes: &mut [u8], head: &[u32], last: u32) {
    for (at, _) in messages(bytes) {
        let seq = u32_at(bytes, at + 8);
        let mut flags = u16_at(bytes, at + 6);
        if head.contains(&seq) {
            flags &= !NLM_F_APPEND;
        }
        if seq != last {
            flags &= !NLM_F_ACK;
        }
        bytes[at + 6..at + 8].copy_from_slice(&flags.to_ne_bytes());
    }
}

/// Sends a batch of `what.len()` messages (sequence numbers 1 to `what.len()`) as one
/// transaction and waits for the kernel's verdict: all of it applied, or none of it.
fn transact(batch: Batch, head: &[u32], what: &[String]) -> Result<(), FirewallError> {
    use nix::sys::socket::{
        AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
        setsockopt, socket, sockopt,
    };
    use std::os::fd::AsRawFd;

    let last = u32::try_from(what.len()).unwrap_or(u32::MAX);
    let operation = |step: &str| format!("transaction of {} messages ({step})", what.len());
    let failed = |step: &str, e: nix::Error| FirewallError::Netlink {
        operation: operation(step),
        message: e.desc().to_string(),
    };
    let mut bytes = batch.finalize();
    patch_flags(&mut bytes, head, last);
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )
    .map_err(|e| failed("open a netlink socket", e))?;
    bind(sock.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(|e| failed("bind", e))?;
    // The whole batch is one datagram: the send buffer must hold it (`nft` does the same).
    let size = bytes.len() + 64 * 1024;
    if setsockopt(&sock, sockopt::SndBufForce, &size).is_err() {
        let _ = setsockopt(&sock, sockopt::SndBuf, &size);
    }
    let sent = send(sock.as_raw_fd(), &bytes, MsgFlags::empty()).map_err(|e| failed("send", e))?;
    if sent != bytes.len() {
        return Err(FirewallError::Netlink {
            operation: operation("send"),
            message: format!("sent {sent} of {} bytes", bytes.len()),
        });
    }
    // The kernel processes the batch within `send`: its answers are queued already.
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT)
            .map_err(|e| failed("wait for the acknowledgement", e))?;
        let answers = &buf[..n];
        for (at, len) in messages(answers) {
            if u16_at(answers, at + 4) != NLMSG_ERROR || len < NLMSG_HDRLEN + 4 {
                continue;
            }
            let seq = u32_at(answers, at + 8);
            let code = u32_at(answers, at + NLMSG_HDRLEN) as i32;
            if code != 0 {
                let step = match what.get((seq as usize).wrapping_sub(1)) {
                    Some(message) => format!("message {seq}: {message}"),
                    None => format!("message {seq}"),
                };
                return Err(FirewallError::Netlink {
                    operation: format!(
                        "{} refused by the kernel, nothing applied",
                        operation(&step)
                    ),
                    message: std::io::Error::from_raw_os_error(code.saturating_abs()).to_string(),
                });
            }
            if seq == last {
                return Ok(());
            }
        }
        if n == 0 {
            return Err(FirewallError::Netlink {
                operation: operation("wait for the acknowledgement"),
                message: "the socket closed".into(),
            });
        }
    }
}

/// The kernel's nftables tables (one netlink dump), in the current namespace.
fn list_tables() -> Result<Vec<Table>, FirewallError> {
    rustables::list_tables().map_err(|e| netlink("list tables".into(), e))
}

/// Whether `tables` include our table of `family` (by its name).
fn holds_table(tables: &[Table], family: Family) -> bool {
    let name = table_name(family);
    tables.iter().any(|t| t.get_name().map(String::as_str) == Some(name))
}

/// nf_tables over netlink as a controller client. Writes go through a model of our tables:
/// each controller batch ([`Client::begin_batch`] to [`Client::commit_batch`]) is one netlink
/// transaction, which the kernel applies whole or not at all; a write outside a batch is a
/// transaction of its own. While a batch is open, reads answer from the model, i.e. see the
/// batch's writes.
pub(crate) struct NftClient {
    netns: Option<PathBuf>,
    tx: Mutex<Option<Tx>>,
    transactions: AtomicU64,
}

impl NftClient {
    fn new(netns: Option<PathBuf>) -> NftClient {
        NftClient { netns, tx: Mutex::new(None), transactions: AtomicU64::new(0) }
    }

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

    fn lock(&self) -> MutexGuard<'_, Option<Tx>> {
        self.tx.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Our table of a family as the kernel holds it (empty when it does not exist).
    fn load(family: Family) -> Result<Model, FirewallError> {
        Self::load_rules_of(family, |_| true)
    }

    /// Our table of a family with the rules of the chains `wanted` accepts (the other chains
    /// listed without their rules).
    fn load_rules_of(
        family: Family,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Model, FirewallError> {
        let name = table_name(family);
        if !holds_table(&list_tables()?, family) {
            return Ok(Model::default());
        }
        let table = Self::table(family);
        let listed = list_chains_for_table(&table)
            .map_err(|e| netlink(format!("list chains of {} {name}", family_name(family)), e))?;
        let mut chains = Vec::new();
        for chain in listed.iter().filter_map(|c| c.get_name()) {
            if !wanted(chain) {
                chains.push(ModelChain { name: chain.clone(), rules: KeyedRules::default() });
                continue;
            }
            let rules = list_rules_for_chain(&Chain::new(&table).with_name(chain.as_str()))
                .map_err(|e| {
                    netlink(format!("list rules of {} {name} {chain}", family_name(family)), e)
                })?;
            let rules = rules.iter().map(|rule| {
                let identity = rule.get_userdata().and_then(|u| udata_comment(u));
                ModelRule::new(identity, rule.get_handle().copied(), None)
            });
            chains.push(ModelChain { name: chain.clone(), rules: rules.collect() });
        }
        Ok(Model { table: true, chains })
    }

    /// Runs `work` on the model of `family` and the messages of the open transaction, or of a
    /// transaction of its own, sent right after.
    fn write<T: Send>(
        &self,
        family: Family,
        work: impl FnOnce(&mut Model, &mut Vec<Msg>) -> Result<T, FirewallError> + Send,
    ) -> Result<T, FirewallError> {
        self.run(|| {
            let mut guard = self.lock();
            let open = guard.is_some();
            let tx = guard.get_or_insert_with(Tx::default);
            let model = match &mut tx.models[slot(family)] {
                Some(model) => model,
                empty => empty.insert(Self::load(family)?),
            };
            let result = work(model, &mut tx.msgs);
            if open {
                return result;
            }
            let tx = guard.take().unwrap_or_default();
            drop(guard);
            let value = result?;
            self.send(tx.msgs)?;
            Ok(value)
        })
    }

    /// Answers `read` from the open transaction's model of `family`, or from the kernel (then
    /// listing the rules of the chains `wanted` accepts only).
    fn read<T: Send>(
        &self,
        family: Family,
        wanted: impl Fn(&str) -> bool + Send,
        read: impl FnOnce(&Model) -> T + Send,
    ) -> Result<T, FirewallError> {
        self.run(|| {
            let mut guard = self.lock();
            match guard.as_mut() {
                Some(tx) => {
                    let model = match &mut tx.models[slot(family)] {
                        Some(model) => model,
                        empty => empty.insert(Self::load(family)?),
                    };
                    Ok(read(model))
                }
                None => {
                    drop(guard);
                    Ok(read(&Self::load_rules_of(family, wanted)?))
                }
            }
        })
    }

    /// Sends `msgs` as one transaction (nothing when none is left); in the namespace.
    fn send(&self, msgs: Vec<Msg>) -> Result<(), FirewallError> {
        let mut batch = Batch::new();
        let mut what = Vec::new();
        let mut head = Vec::new();
        for msg in &msgs {
            if msg.add_to(&mut batch)? {
                what.push(msg.describe());
                if matches!(msg, Msg::AddRule { head: true, .. }) {
                    head.push(u32::try_from(what.len()).unwrap_or(u32::MAX));
                }
            }
        }
        if what.is_empty() {
            return Ok(());
        }
        self.transactions.fetch_add(1, Ordering::Relaxed);
        transact(batch, &head, &what)
    }

    /// Adds the table and the chain to the transaction unless the model has them.
    fn ensure_chain(model: &mut Model, msgs: &mut Vec<Msg>, f: Family, t: &str, c: &str) {
        if !model.table {
            msgs.push(Msg::AddTable(f));
            model.table = true;
        }
        let name = chain_name(t, c);
        if model.chain(&name).is_none() {
            msgs.push(Msg::AddChain { family: f, table: t.to_string(), chain: c.to_string() });
            model.chains.push(ModelChain { name, rules: KeyedRules::default() });
        }
    }

    fn new_rule(
        family: Family,
        table: &str,
        chain: &str,
        spec: &Spec,
    ) -> Result<(Rule, String), FirewallError> {
        let entry = Entry::Rule {
            family,
            table: table.to_string().into(),
            chain: chain.to_string().into(),
            spec: spec.clone(),
        };
        let unsupported =
            |reason: String| FirewallError::Unsupported { rule: identity(&entry), reason };
        let exprs = expressions(family, table, spec).map_err(unsupported)?;
        let comment = identity_single_quoted(&entry);
        let udata = comment_udata(&comment)
            .ok_or_else(|| unsupported("the identity is longer than 253 bytes".into()))?;
        let mut rule = Rule::new(&Self::chain(family, table, chain))
            .map_err(|e| unsupported(e.to_string()))?
            .with_userdata(udata);
        for e in exprs {
            rule.add_expr(e);
        }
        Ok((rule, comment))
    }

    /// Adds the rule unless the chain holds it: at the head of the chain or at its end.
    fn add_unique(
        &self,
        f: Family,
        t: &str,
        c: &str,
        spec: &Spec,
        head: bool,
    ) -> Result<(), FirewallError> {
        let (rule, comment) = Self::new_rule(f, t, c, spec)?;
        let key = RuleKey::of_spec(t, c, spec);
        self.write(f, |model, msgs| {
            let name = chain_name(t, c);
            if model.chain(&name).is_some_and(|ch| ch.rules.contains(&key)) {
                return Ok(());
            }
            Self::ensure_chain(model, msgs, f, t, c);
            let listed = ModelRule::new(Some(comment.clone()), None, Some(msgs.len()));
            msgs.push(Msg::AddRule { rule: Box::new(rule), head, identity: comment });
            if let Some(chain) = model.chain_mut(&name) {
                chain.rules.push(listed, head);
            }
            Ok(())
        })
    }

    /// Whether the kernel holds our table of any of `families`: one listing of the tables.
    fn has_tables(&self, families: &[Family]) -> Result<bool, FirewallError> {
        self.run(|| {
            let tables = list_tables()?;
            Ok(families.iter().any(|&f| holds_table(&tables, f)))
        })
    }

    /// Deletes our tables (`nft delete table ip kilo`, `… ip6 kilo6`), in the open batch.
    fn delete_tables(&self, families: &[Family]) -> Result<(), FirewallError> {
        families.iter().try_for_each(|&f| {
            self.write(f, |model, msgs| {
                if model.table {
                    msgs.push(Msg::DelTable(f));
                    *model = Model::default();
                }
                Ok(())
            })
        })
    }
}

impl Client for NftClient {
    fn clear_chain(&self, family: Family, table: &str, chain: &str) -> Result<(), FirewallError> {
        self.write(family, |model, msgs| {
            Self::ensure_chain(model, msgs, family, table, chain);
            let name = chain_name(table, chain);
            let Some(listed) = model.chain_mut(&name) else { return Ok(()) };
            let mut held = false;
            for rule in listed.rules.take() {
                match rule.pending {
                    Some(i) => msgs[i] = Msg::Cancelled,
                    None => held = true,
                }
            }
            if held {
                msgs.push(Msg::Flush { family, name });
            }
            Ok(())
        })
    }

    fn delete_chain(&self, family: Family, table: &str, chain: &str) -> Result<(), FirewallError> {
        self.write(family, |model, msgs| {
            let name = chain_name(table, chain);
            let refused = |message: &str| FirewallError::Netlink {
                operation: Self::describe(family, "delete chain", table, chain),
                message: message.into(),
            };
            match model.chain(&name) {
                None => return Err(refused("no such chain")),
                Some(c) if !c.rules.is_empty() => return Err(refused("the chain is not empty")),
                Some(_) if model.referenced(&name) => return Err(refused("a rule jumps to it")),
                Some(_) => {}
            }
            model.chains.retain(|c| c.name != name);
            msgs.push(Msg::DelChain { family, name });
            Ok(())
        })
    }

    fn append_unique(&self, f: Family, t: &str, c: &str, spec: &Spec) -> Result<(), FirewallError> {
        self.add_unique(f, t, c, spec, false)
    }

    fn insert_unique(&self, f: Family, t: &str, c: &str, spec: &Spec) -> Result<(), FirewallError> {
        self.add_unique(f, t, c, spec, true)
    }

    fn delete(&self, f: Family, t: &str, c: &str, spec: &Spec) -> Result<(), FirewallError> {
        let key = RuleKey::of_spec(t, c, spec);
        self.write(f, |model, msgs| {
            let name = chain_name(t, c);
            let found = model.chain_mut(&name).and_then(|chain| chain.rules.remove(&key));
            match found {
                None => Err(FirewallError::Netlink {
                    operation: Self::describe(f, "delete rule of", t, c),
                    message: "no such rule".into(),
                }),
                Some(ModelRule { pending: Some(i), .. }) => {
                    msgs[i] = Msg::Cancelled;
                    Ok(())
                }
                Some(ModelRule { handle: Some(handle), .. }) => {
                    msgs.push(Msg::DelRule { family: f, name, handle });
                    Ok(())
                }
                Some(_) => Err(FirewallError::Netlink {
                    operation: Self::describe(f, "delete rule of", t, c),
                    message: "the kernel listed the rule without a handle".into(),
                }),
            }
        })
    }

    fn list(&self, f: Family, t: &str, c: &str) -> Result<Option<Vec<RuleKey>>, FirewallError> {
        let name = chain_name(t, c);
        self.read(
            f,
            |chain| chain == name,
            |model| {
                model
                    .chain(&name)
                    .map(|chain| chain.rules.iter().filter_map(|r| r.key.clone()).collect())
            },
        )
    }

    fn table_listing(&self, f: Family, t: &str) -> Result<TableListing, FirewallError> {
        // Everything in our tables is ours; a rule is deleted through the identity it carries.
        self.read(
            f,
            |_| true,
            |model| {
                let chains = model.chain_names(t);
                let rules = model
                    .chains
                    .iter()
                    .flat_map(|c| &c.rules)
                    .filter_map(|r| r.identity.as_deref().and_then(|i| parse_identity(t, i)))
                    .collect();
                TableListing { family: f, table: t.to_string(), chains, rules, own: true }
            },
        )
    }

    fn remove_base_chain(&self, f: Family, t: &str, c: &str) -> Result<bool, FirewallError> {
        if base_chain(t, c).is_none() {
            return Ok(false);
        }
        self.write(f, |model, msgs| {
            let name = chain_name(t, c);
            if !model.chain(&name).is_some_and(|chain| chain.rules.is_empty()) {
                return Ok(false);
            }
            model.chains.retain(|chain| chain.name != name);
            msgs.push(Msg::DelChain { family: f, name });
            Ok(true)
        })
    }

    fn list_chains(&self, f: Family, t: &str) -> Result<Vec<String>, FirewallError> {
        self.read(f, |_| false, |model| model.chain_names(t))
    }

    fn begin_batch(&self) {
        let mut guard = self.lock();
        if guard.is_none() {
            *guard = Some(Tx::default());
        }
    }

    fn commit_batch(&self) -> Result<(), FirewallError> {
        let Some(tx) = self.lock().take() else { return Ok(()) };
        if tx.msgs.iter().all(|m| matches!(m, Msg::Cancelled)) {
            return Ok(());
        }
        self.run(|| self.send(tx.msgs))
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
        Nftables { controller: Controller::new(NftClient::new(netns), ipv6) }
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

    /// Removes everything applied, then our (now empty) `kilo` tables with their base chains;
    /// all of it one transaction.
    pub fn clean_up(&mut self) -> Result<(), FirewallError> {
        let families = self.families();
        self.controller.begin();
        let result = self
            .controller
            .clean_up()
            .and_then(|()| self.controller.client().delete_tables(families));
        let committed = self.controller.commit();
        result.and(committed)
    }

    /// [`Nftables::clean_up`] only when our tables exist (tables an earlier run left on a host
    /// whose firewall is now `iptables`): without them, it costs one listing of the kernel's
    /// tables. Returns whether there were any.
    pub fn clean_up_leftovers(&mut self) -> Result<bool, FirewallError> {
        if !self.controller.client().has_tables(self.families())? {
            return Ok(false);
        }
        self.clean_up().map(|()| true)
    }

    /// The families whose tables are ours to manage.
    fn families(&self) -> &'static [Family] {
        if self.controller.ipv6() { &[Family::Ipv4, Family::Ipv6] } else { &[Family::Ipv4] }
    }

    /// How many nf_tables netlink transactions (batches) this firewall has sent: one per
    /// controller batch that changes something, each applied by the kernel whole or not at all.
    pub fn transactions(&self) -> u64 {
        self.controller.client().transactions.load(Ordering::Relaxed)
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
    fn typed_rules_build_the_expressions_of_their_arguments() {
        use kilo_core::Cidr;
        use kilo_core::firewall::{Match, Order};
        let v4: Cidr = "10.2.1.5/24".parse().unwrap();
        let v6: Cidr = "fd00::1/128".parse().unwrap();
        let v6_net: Cidr = "fd00:1::5/64".parse().unwrap();
        let mut specs = Vec::new();
        for (family, cidr) in [(Family::Ipv4, v4), (Family::Ipv6, v6), (Family::Ipv6, v6_net)] {
            for address in [None, Some(Address::Source(cidr)), Some(Address::Destination(cidr))] {
                for protocol in [None, Some("ipencap")] {
                    for target in ["ACCEPT", "DROP", "RETURN", "MASQUERADE", "KILO-NAT"] {
                        for order in [Order::AddressFirst, Order::CommentFirst] {
                            let m = Match { protocol, address, comment: "Kilo: x", target, order };
                            specs.push((family, m));
                        }
                    }
                }
            }
        }
        for (family, m) in specs {
            for table in ["nat", "filter"] {
                let typed = Spec::Typed(m);
                let built = expressions(family, table, &typed).unwrap();
                let translated = translate(family, table, &typed.args()).unwrap();
                assert_eq!(built, translated, "{m:?}");
            }
        }
        let wrong = Match {
            protocol: None,
            address: Some(Address::Source(v6)),
            comment: "Kilo: x",
            target: "ACCEPT",
            order: Order::AddressFirst,
        };
        assert!(expressions(Family::Ipv4, "filter", &Spec::Typed(wrong)).is_err());
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
    fn head_inserts_lose_append_and_only_the_last_message_asks_for_an_ack() {
        let chain = NftClient::chain(Family::Ipv4, "nat", "KILO-NAT");
        let mut batch = Batch::new();
        for _ in 0..3 {
            batch.add(&Rule::new(&chain).unwrap(), MsgType::Add);
        }
        let mut bytes = batch.finalize();
        patch_flags(&mut bytes, &[2], 3);
        let flags: Vec<(u32, u16)> = messages(&bytes)
            .into_iter()
            .map(|(at, _)| (u32_at(&bytes, at + 8), u16_at(&bytes, at + 6)))
            .collect();
        let (create, request) = (0x400, 0x1);
        assert_eq!(
            flags,
            vec![
                (0, request),
                (1, request | create | NLM_F_APPEND),
                (2, request | create),
                (3, request | create | NLM_F_APPEND | NLM_F_ACK),
                (4, request),
            ]
        );
    }

    #[test]
    fn jump_targets_are_read_from_specs_and_identities() {
        let spec: Vec<String> =
            ["-s", "10.2.1.0/24", "-j", "KILO-NAT"].iter().map(|s| s.to_string()).collect();
        assert_eq!(spec_target("nat", &spec).as_deref(), Some("nat-KILO-NAT"));
        assert_eq!(
            identity_target("nat -A POSTROUTING -m comment --comment 'Kilo: x' -j KILO-NAT")
                .as_deref(),
            Some("nat-KILO-NAT")
        );
        assert_eq!(identity_target("nat -A KILO-NAT -j MASQUERADE"), None);
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
