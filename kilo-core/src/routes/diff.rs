//! Desired routes and rules against the kernel's, as typed changes (the same idiom as
//! [`crate::wireguard::diff`]): the kernel's state comes in as [`InstalledRoute`]s and
//! [`InstalledRule`]s (read by `kilo-net-linux`), the plan as [`Route`]s and [`Rule`]s, and
//! [`diff`] returns a [`RouteDiff`] whose `Display` reads as `ip route` / `ip rule` commands,
//! one line per change.
//!
//! # Identity
//!
//! One identity matches a kernel route with a planned one, [`RouteKey`]: the route type, the
//! destination network (host bits masked), the gateway, the device, the preferred source
//! (IPv4-mapped addresses folded to IPv4) and the table (contract C7: routes differing only in
//! their table are different routes). What the identity leaves out:
//!
//! - `onlink` (`RTNH_F_ONLINK`) is an attribute of the route, not of its identity: the kernel
//!   keys a route on its destination, table and metric and replaces it in place when only its
//!   flags change. It is still compared: a planned route found with the other `onlink` value is
//!   rewritten ([`RouteDiff::replace_routes`], `ip route replace`), never deleted and re-added.
//! - What the kernel fills in or Kilo only uses for ownership is neither identity nor
//!   compared: the protocol (`proto static` is how Kilo's routes are recognised), the metric,
//!   the realm (Kilo's mark, [`KILO_REALM`]), the scope and the other next-hop flags
//!   (`linkdown`, `dead`, `offload`).
//!
//! A rule's identity, [`RuleKey`], is its masked selectors (`from`, `to`), its input interface
//! and its table; its priority (`pref`, chosen by the kernel) is not part of it, and only
//! `lookup` rules are compared.
//!
//! # Ownership
//!
//! Only Kilo's kernel entries are ever deleted ([`Ownership`]): every `proto static` route in
//! table 1107, on one of Kilo's devices or carrying realm 1107, every `lookup 1107` rule, and
//! what the executor recorded (added, or found in place while planned).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;

use super::{KILO_TABLE, Route, Rule};
use crate::Cidr;
use crate::cidr::canonical;

/// `RTPROT_STATIC`, the protocol of every route Kilo writes.
pub const PROTO_STATIC: u8 = 4;

/// The realm (`RTA_FLOW`, `ip route … realm 1107`) every IPv4 route Kilo writes carries: the mark
/// by which an agent recognises, from the kernel alone, the routes another (killed) agent wrote
/// on devices that are not Kilo's own. It changes nothing in forwarding (realms only feed the
/// `route` traffic classifier, the `realm` match and `/proc/net/rt_acct`); upstream Kilo neither
/// sets nor checks it, and its `ip route replace` and `del` match our routes all the same. The
/// kernel has no realms for IPv6.
pub const KILO_REALM: u16 = 1107;

/// A route's type (`RTN_*`); Kilo writes only [`RouteKind::Unicast`] routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RouteKind {
    /// A gateway or direct route.
    Unicast,
    /// `blackhole`.
    Blackhole,
    /// `unreachable`.
    Unreachable,
    /// `prohibit`.
    Prohibit,
    /// Any other type (`local`, `broadcast`, …), by number.
    Other(u8),
}

impl fmt::Display for RouteKind {
    /// The `ip route` type keyword (`unicast`, `blackhole`, …; `type N` for others).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteKind::Unicast => f.write_str("unicast"),
            RouteKind::Blackhole => f.write_str("blackhole"),
            RouteKind::Unreachable => f.write_str("unreachable"),
            RouteKind::Prohibit => f.write_str("prohibit"),
            RouteKind::Other(n) => write!(f, "type {n}"),
        }
    }
}

/// A route as the kernel holds it, read back into kilo-core's terms.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstalledRoute {
    /// The route (`dev` empty when it has no single output device, as a multipath route).
    pub route: Route,
    /// The route's type.
    pub kind: RouteKind,
    /// The protocol that installed it (`RTPROT_*`, [`PROTO_STATIC`] for Kilo's).
    pub protocol: u8,
    /// The metric (`RTA_PRIORITY`), 0 when absent.
    pub priority: u32,
    /// The destination realm (`RTA_FLOW`), 0 when absent; [`KILO_REALM`] marks Kilo's IPv4
    /// routes.
    pub realm: u16,
}

impl InstalledRoute {
    /// What the kernel holds once Kilo wrote `route` (`ip route replace … proto static`, with
    /// `realm 1107` for IPv4): a unicast `proto static` route of metric 0, normalised.
    pub fn written(route: &Route) -> InstalledRoute {
        let route = normalise_route(route);
        let realm = if route.dst.is_ipv4() { KILO_REALM } else { 0 };
        InstalledRoute {
            route,
            kind: RouteKind::Unicast,
            protocol: PROTO_STATIC,
            priority: 0,
            realm,
        }
    }
}

/// A policy rule as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstalledRule {
    /// The rule (selectors masked; `table` 0 for a rule that looks nothing up).
    pub rule: Rule,
    /// Whether the rule's action is `lookup TABLE` (`FR_ACT_TO_TBL`); only those are compared.
    pub lookup: bool,
    /// The rule's priority (`pref`).
    pub priority: u32,
}

impl InstalledRule {
    /// What the kernel holds once Kilo added `rule` (`ip rule add … lookup T`; the kernel picks
    /// the priority, 0 here).
    pub fn written(rule: &Rule) -> InstalledRule {
        InstalledRule { rule: normalise_rule(rule), lookup: true, priority: 0 }
    }
}

/// A route's identity (see the module docs): type, masked destination, gateway, device, source
/// and table. Not `onlink`, not the protocol, metric or realm.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteKey {
    /// The route's type.
    pub kind: RouteKind,
    /// The destination network.
    pub dst: Cidr,
    /// The gateway (IPv4-mapped folded).
    pub via: Option<IpAddr>,
    /// The output device.
    pub dev: String,
    /// The preferred source (IPv4-mapped folded).
    pub src: Option<IpAddr>,
    /// The table.
    pub table: u32,
}

impl RouteKey {
    /// The identity of a route Kilo wants (always unicast).
    pub fn of(route: &Route) -> RouteKey {
        RouteKey::new(route, RouteKind::Unicast)
    }

    /// The identity of a route read from the kernel.
    pub fn of_installed(route: &InstalledRoute) -> RouteKey {
        RouteKey::new(&route.route, route.kind)
    }

    fn new(route: &Route, kind: RouteKind) -> RouteKey {
        RouteKey {
            kind,
            dst: route.dst.network(),
            via: route.via.map(canonical),
            dev: route.dev.clone(),
            src: route.src.map(canonical),
            table: route.table,
        }
    }
}

impl fmt::Display for RouteKey {
    /// `TYPE DST via GW|- dev DEV src SRC|- table T`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} via {} dev {} src {} table {}",
            self.kind,
            self.dst,
            dash(self.via),
            self.dev,
            dash(self.src),
            self.table
        )
    }
}

/// A rule's identity: masked selectors, input interface and table (not its priority).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleKey {
    /// Source selector (masked).
    pub from: Option<Cidr>,
    /// Destination selector (masked).
    pub to: Option<Cidr>,
    /// Input interface selector.
    pub iif: Option<String>,
    /// The table looked up.
    pub table: u32,
}

impl RuleKey {
    /// The identity of a rule.
    pub fn of(rule: &Rule) -> RuleKey {
        RuleKey {
            from: rule.from.map(|c| c.network()),
            to: rule.to.map(|c| c.network()),
            iif: rule.iif.clone(),
            table: rule.table,
        }
    }
}

impl fmt::Display for RuleKey {
    /// `from SRC|- to DST|- iif IIF|- lookup T`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "from {} to {} iif {} lookup {}",
            dash(self.from),
            dash(self.to),
            self.iif.as_deref().unwrap_or("-"),
            self.table
        )
    }
}

fn dash<T: fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn normalise_route(route: &Route) -> Route {
    Route {
        dst: route.dst.network(),
        via: route.via.map(canonical),
        dev: route.dev.clone(),
        src: route.src.map(canonical),
        table: route.table,
        onlink: route.onlink,
    }
}

fn normalise_rule(rule: &Rule) -> Rule {
    Rule {
        from: rule.from.map(|c| c.network()),
        to: rule.to.map(|c| c.network()),
        iif: rule.iif.clone(),
        table: rule.table,
    }
}

/// What may be deleted: besides what the executor recorded (added, or found planned), every
/// `proto static` route in table 1107, on an owned device or carrying Kilo's realm
/// ([`KILO_REALM`]), and every `lookup 1107` rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ownership {
    /// Devices whose `proto static` routes all belong to Kilo (`kilo0`, `tunl0`).
    pub devices: BTreeSet<String>,
    /// Routes recorded as Kilo's.
    pub routes: HashSet<RouteKey>,
    /// Rules recorded as Kilo's.
    pub rules: HashSet<RuleKey>,
}

impl Ownership {
    /// Nothing recorded; `proto static` routes on `devices` are Kilo's.
    pub fn with_devices<I, S>(devices: I) -> Ownership
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Ownership { devices: devices.into_iter().map(Into::into).collect(), ..Ownership::default() }
    }

    /// Whether a kernel route is Kilo's to delete.
    pub fn owns_route(&self, route: &InstalledRoute) -> bool {
        self.marked(route)
            || (route.protocol == PROTO_STATIC
                && !route.route.dev.is_empty()
                && self.routes.contains(&RouteKey::of_installed(route)))
    }

    /// Whether the kernel alone tells that a route is Kilo's, whoever wrote it: `proto static`
    /// and in table 1107, on an owned device, or with Kilo's realm.
    pub fn marked(&self, route: &InstalledRoute) -> bool {
        route.protocol == PROTO_STATIC
            && !route.route.dev.is_empty()
            && (route.route.table == KILO_TABLE
                || self.devices.contains(&route.route.dev)
                || route.realm == KILO_REALM)
    }

    /// Whether a kernel rule is Kilo's to delete.
    pub fn owns_rule(&self, rule: &InstalledRule) -> bool {
        rule.lookup
            && (rule.rule.table == KILO_TABLE || self.rules.contains(&RuleKey::of(&rule.rule)))
    }

    /// Records as Kilo's the planned items the kernel already holds: planned `proto static`
    /// routes (with a device) and planned `lookup` rules. They go at clean-up.
    pub fn adopt(
        &mut self,
        current_routes: &[InstalledRoute],
        current_rules: &[InstalledRule],
        routes: &[Route],
        rules: &[Rule],
    ) {
        let wanted: HashSet<RouteKey> = routes.iter().map(RouteKey::of).collect();
        self.routes.extend(
            current_routes
                .iter()
                .filter(|r| r.protocol == PROTO_STATIC && !r.route.dev.is_empty())
                .map(RouteKey::of_installed)
                .filter(|k| wanted.contains(k)),
        );
        let wanted: HashSet<RuleKey> = rules.iter().map(RuleKey::of).collect();
        self.rules.extend(
            current_rules
                .iter()
                .filter(|r| r.lookup)
                .map(|r| RuleKey::of(&r.rule))
                .filter(|k| wanted.contains(k)),
        );
    }
}

/// The changes that bring the kernel's routes and rules to the desired ones, in the order they
/// are carried out: rules deleted, routes deleted, added, replaced, marked, rules added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteDiff {
    /// Kilo's rules to delete (`ip rule del`).
    pub delete_rules: Vec<InstalledRule>,
    /// Kilo's routes to delete (`ip route del`).
    pub delete_routes: Vec<InstalledRoute>,
    /// Desired routes the kernel lacks (`ip route replace`).
    pub add_routes: Vec<Route>,
    /// Desired routes the kernel holds with the other `onlink` value, rewritten
    /// (`ip route replace`, in place).
    pub replace_routes: Vec<Route>,
    /// Desired IPv4 routes present without Kilo's mark and not recorded (written by an older or
    /// upstream agent, or by someone else): rewritten once (`ip route replace … realm 1107`) so
    /// that any later agent knows them as Kilo's.
    pub mark_routes: Vec<Route>,
    /// Desired rules the kernel lacks (`ip rule add`).
    pub add_rules: Vec<Rule>,
}

impl RouteDiff {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of changes (each is one kernel write).
    pub fn len(&self) -> usize {
        self.delete_rules.len()
            + self.delete_routes.len()
            + self.add_routes.len()
            + self.replace_routes.len()
            + self.mark_routes.len()
            + self.add_rules.len()
    }

    /// The kernel's `routes` and `rules` with these changes made, as Kilo's writes leave them
    /// ([`InstalledRoute::written`], [`InstalledRule::written`]): a deletion removes one equal
    /// entry, an added route replaces the entry of the same identity (or is appended), a
    /// replaced or marked route is rewritten in place, an added rule is appended. For any state
    /// `k`, plan `p` and ownership `o`, `diff` of the result against `p` (under `o`) is empty.
    pub fn apply(
        &self,
        routes: &[InstalledRoute],
        rules: &[InstalledRule],
    ) -> (Vec<InstalledRoute>, Vec<InstalledRule>) {
        let mut routes = routes.to_vec();
        let mut rules = rules.to_vec();
        for rule in &self.delete_rules {
            if let Some(i) = rules.iter().position(|r| r == rule) {
                rules.remove(i);
            }
        }
        for route in &self.delete_routes {
            if let Some(i) = routes.iter().position(|r| r == route) {
                routes.remove(i);
            }
        }
        for route in self.add_routes.iter().chain(&self.replace_routes).chain(&self.mark_routes) {
            let written = InstalledRoute::written(route);
            let key = RouteKey::of(route);
            match routes.iter_mut().find(|r| RouteKey::of_installed(r) == key) {
                Some(slot) => *slot = written,
                None => routes.push(written),
            }
        }
        rules.extend(self.add_rules.iter().map(InstalledRule::written));
        (routes, rules)
    }
}

/// Compares the kernel's routes and rules (`current_*`) with the desired ones and returns the
/// minimal changes.
///
/// A kernel entry whose identity is desired is kept (the first of each identity; Kilo's
/// duplicates go); a kept route whose `onlink` differs from the plan's is replaced; a kept IPv4
/// `proto static` unicast route that nothing marks as Kilo's and that is not recorded is marked.
/// Kilo's entries that are not desired are deleted; desired ones that are absent are added
/// (the first of each identity, when the plan repeats one).
pub fn diff(
    current_routes: &[InstalledRoute],
    current_rules: &[InstalledRule],
    routes: &[Route],
    rules: &[Rule],
    ownership: &Ownership,
) -> RouteDiff {
    let mut out = RouteDiff::default();

    let mut wanted: HashMap<RouteKey, &Route> = HashMap::new();
    for r in routes {
        wanted.entry(RouteKey::of(r)).or_insert(r);
    }
    let mut present = HashSet::new();
    for kr in current_routes {
        let key = RouteKey::of_installed(kr);
        if let Some(want) = wanted.get(&key)
            && present.insert(key.clone())
        {
            if kr.route.onlink != want.onlink {
                out.replace_routes.push((*want).clone());
                continue;
            }
            let unmarked = kr.protocol == PROTO_STATIC
                && kr.kind == RouteKind::Unicast
                && kr.route.dst.is_ipv4()
                && !ownership.marked(kr);
            if unmarked && !ownership.routes.contains(&key) {
                out.mark_routes.push((*want).clone());
            }
            continue;
        }
        if ownership.owns_route(kr) {
            out.delete_routes.push(kr.clone());
        }
    }
    let mut added = HashSet::new();
    for r in routes {
        let key = RouteKey::of(r);
        if !present.contains(&key) && added.insert(key) {
            out.add_routes.push(r.clone());
        }
    }

    let wanted: HashSet<RuleKey> = rules.iter().map(RuleKey::of).collect();
    let mut present = HashSet::new();
    for kr in current_rules.iter().filter(|r| r.lookup) {
        let key = RuleKey::of(&kr.rule);
        if wanted.contains(&key) && present.insert(key) {
            continue;
        }
        if ownership.owns_rule(kr) {
            out.delete_rules.push(kr.clone());
        }
    }
    let mut added = HashSet::new();
    for r in rules {
        let key = RuleKey::of(r);
        if !present.contains(&key) && added.insert(key) {
            out.add_rules.push(r.clone());
        }
    }
    out
}

/// An installed route in `ip route` syntax: `[TYPE] ROUTE [proto P] [metric M] [realm R]`
/// (the type when not unicast, the protocol when not `static`, the rest when set).
struct ShowInstalled<'a>(&'a InstalledRoute);

impl fmt::Display for ShowInstalled<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        if r.kind != RouteKind::Unicast {
            write!(f, "{} ", r.kind)?;
        }
        write!(f, "{}", normalise_route(&r.route))?;
        if r.protocol != PROTO_STATIC {
            write!(f, " proto {}", r.protocol)?;
        }
        if r.priority != 0 {
            write!(f, " metric {}", r.priority)?;
        }
        if r.realm != 0 {
            write!(f, " realm {}", r.realm)?;
        }
        Ok(())
    }
}

impl fmt::Display for RouteDiff {
    /// One line per change, each ending in a newline, in the order they are carried out:
    /// `delete rule …`, `delete route …`, `add route …`, `replace route …`,
    /// `mark route … realm 1107`, `add rule …` (routes and rules in `ip route` / `ip rule`
    /// syntax; nothing when the diff is empty).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.delete_rules {
            write!(f, "delete rule ")?;
            if r.priority != 0 {
                write!(f, "pref {} ", r.priority)?;
            }
            writeln!(f, "{}", normalise_rule(&r.rule))?;
        }
        for r in &self.delete_routes {
            writeln!(f, "delete route {}", ShowInstalled(r))?;
        }
        for r in &self.add_routes {
            writeln!(f, "add route {}", normalise_route(r))?;
        }
        for r in &self.replace_routes {
            writeln!(f, "replace route {}", normalise_route(r))?;
        }
        for r in &self.mark_routes {
            writeln!(f, "mark route {} realm {KILO_REALM}", normalise_route(r))?;
        }
        for r in &self.add_rules {
            writeln!(f, "add rule {}", normalise_rule(r))?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "diff_tests.rs"]
mod tests;
