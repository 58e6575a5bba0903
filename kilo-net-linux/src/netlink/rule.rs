//! Policy routing rules.

use futures::TryStreamExt;
use kilo_core::Cidr;
use kilo_core::routes::Rule;
use rtnetlink::IpVersion;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};

use super::Netlink;
use crate::error::NetlinkError;

/// A rule read back from the kernel, normalised to kilo-core's [`Rule`] (selectors masked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRule {
    /// The rule. `table` is 0 for rules that do not look up a table.
    pub rule: Rule,
    /// Whether the rule is IPv4.
    pub ipv4: bool,
    /// Whether the rule's action is `lookup TABLE` (`FR_ACT_TO_TBL`).
    pub lookup: bool,
    /// The rule's priority (`pref`).
    pub priority: u32,
    pub(crate) message: RuleMessage,
}

/// A rule in `ip rule` syntax: `[from SRC] [to DST] [iif IIF] lookup TABLE`.
pub fn describe_rule(rule: &Rule) -> String {
    let mut parts = Vec::new();
    if let Some(from) = rule.from {
        parts.push(format!("from {}", from.network()));
    }
    if let Some(to) = rule.to {
        parts.push(format!("to {}", to.network()));
    }
    if let Some(iif) = &rule.iif {
        parts.push(format!("iif {iif}"));
    }
    parts.push(format!("lookup {}", rule.table));
    parts.join(" ")
}

/// Whether a rule is IPv4, from its selectors; `None` when it has none (upstream ignores such
/// rules) or they mix families.
pub(crate) fn rule_family(rule: &Rule) -> Option<bool> {
    match (rule.from, rule.to) {
        (Some(f), Some(t)) if f.is_ipv4() != t.is_ipv4() => None,
        (Some(c), _) | (None, Some(c)) => Some(c.is_ipv4()),
        (None, None) => None,
    }
}

fn from_message(msg: &RuleMessage) -> Option<KernelRule> {
    let ipv4 = match msg.header.family {
        AddressFamily::Inet => true,
        AddressFamily::Inet6 => false,
        _ => return None,
    };
    let (mut from, mut to, mut iif, mut table, mut priority) = (None, None, None, None, 0);
    for attr in &msg.attributes {
        match attr {
            RuleAttribute::Source(ip) => from = Cidr::new(*ip, msg.header.src_len),
            RuleAttribute::Destination(ip) => to = Cidr::new(*ip, msg.header.dst_len),
            RuleAttribute::Iifname(name) => iif = Some(name.clone()),
            RuleAttribute::Table(t) => table = Some(*t),
            RuleAttribute::Priority(p) => priority = *p,
            _ => {}
        }
    }
    let rule = Rule {
        from: from.map(|c| c.network()),
        to: to.map(|c| c.network()),
        iif,
        table: table.unwrap_or(u32::from(msg.header.table)),
    };
    Some(KernelRule {
        rule,
        ipv4,
        lookup: msg.header.action == RuleAction::ToTable,
        priority,
        message: msg.clone(),
    })
}

fn to_message(rule: &Rule) -> Result<RuleMessage, NetlinkError> {
    let ipv4 = rule_family(rule).ok_or_else(|| NetlinkError::Invalid {
        what: format!("rule {}", describe_rule(rule)),
        reason: "a rule needs a `from` or `to` selector, of one address family".to_string(),
    })?;
    let mut msg = RuleMessage::default();
    msg.header.family = if ipv4 { AddressFamily::Inet } else { AddressFamily::Inet6 };
    // The trap: without FR_ACT_TO_TBL the kernel creates a rule that looks nothing up.
    msg.header.action = RuleAction::ToTable;
    if let Some(from) = rule.from {
        let from = from.network();
        msg.header.src_len = from.prefix();
        msg.attributes.push(RuleAttribute::Source(from.addr()));
    }
    if let Some(to) = rule.to {
        let to = to.network();
        msg.header.dst_len = to.prefix();
        msg.attributes.push(RuleAttribute::Destination(to.addr()));
    }
    if let Some(iif) = &rule.iif {
        msg.attributes.push(RuleAttribute::Iifname(iif.clone()));
    }
    match u8::try_from(rule.table) {
        Ok(t) => msg.header.table = t,
        Err(_) => msg.attributes.push(RuleAttribute::Table(rule.table)),
    }
    Ok(msg)
}

impl Netlink {
    /// Every IPv4 and IPv6 policy rule (`ip rule show; ip -6 rule show`).
    pub async fn rules(&self) -> Result<Vec<KernelRule>, NetlinkError> {
        super::dump(|| self.rules_once()).await
    }

    async fn rules_once(&self) -> Result<Vec<KernelRule>, NetlinkError> {
        let mut out = Vec::new();
        for version in [IpVersion::V4, IpVersion::V6] {
            let mut stream = self.handle().rule().get(version).execute();
            while let Some(msg) =
                stream.try_next().await.map_err(|e| NetlinkError::request("ip rule show", e))?
            {
                out.extend(from_message(&msg));
            }
        }
        Ok(out)
    }

    /// Adds a rule (`ip rule add [from SRC] [to DST] [iif IIF] lookup TABLE`); the kernel picks
    /// the priority, as upstream's rules do.
    pub async fn add_rule(&self, rule: &Rule) -> Result<(), NetlinkError> {
        let msg = to_message(rule)?;
        let mut request = self.handle().rule().add();
        *request.message_mut() = msg;
        request
            .execute()
            .await
            .map_err(|e| NetlinkError::request(format!("ip rule add {}", describe_rule(rule)), e))
    }

    /// Deletes a rule read back from the kernel (`ip rule del pref PRIO [from …] lookup TABLE`).
    pub async fn delete_rule(&self, rule: &KernelRule) -> Result<(), NetlinkError> {
        self.handle().rule().del(rule.message.clone()).execute().await.map_err(|e| {
            NetlinkError::request(
                format!("ip rule del pref {} {}", rule.priority, describe_rule(&rule.rule)),
                e,
            )
        })
    }
}

#[cfg(test)]
impl KernelRule {
    /// A kernel `lookup` rule without a wire message, for pure tests.
    pub(crate) fn synthetic(rule: Rule) -> KernelRule {
        let ipv4 = rule_family(&rule).unwrap_or(true);
        KernelRule { rule, ipv4, lookup: true, priority: 100, message: RuleMessage::default() }
    }
}
