//! The pure part of the reconciler: identities, ownership and the typed diff.

use std::collections::{BTreeSet, HashSet};
use std::fmt;

use kilo_core::cidr::canonical;
use kilo_core::routes::{KILO_TABLE, Route, Rule};

use crate::netlink::{KernelRoute, KernelRule, PROTO_STATIC, RouteKind, describe_route, describe_rule};

/// A route's identity (contract C7): destination network, gateway, device, source, table,
/// on-link flag and type. Two routes that differ only in their table are different routes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteKey {
    /// The route, normalised (masked destination, IPv4-mapped addresses folded).
    pub route: Route,
    /// The route's type.
    pub kind: RouteKind,
}

impl RouteKey {
    /// The identity of a route Kilo wants (always unicast).
    pub fn of(route: &Route) -> RouteKey {
        RouteKey { route: normalise_route(route), kind: RouteKind::Unicast }
    }

    /// The identity of a route read from the kernel.
    pub fn of_kernel(route: &KernelRoute) -> RouteKey {
        RouteKey { route: normalise_route(&route.route), kind: route.kind }
    }
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

/// A rule's identity: masked selectors, input interface and table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleKey(pub Rule);

impl RuleKey {
    /// The identity of a rule.
    pub fn of(rule: &Rule) -> RuleKey {
        RuleKey(Rule {
            from: rule.from.map(|c| c.network()),
            to: rule.to.map(|c| c.network()),
            iif: rule.iif.clone(),
            table: rule.table,
        })
    }
}

/// What the reconciler may delete: besides what it recorded adding, every `proto static` route
/// in table 1107 or on an owned device, and every `lookup 1107` rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ownership {
    /// Devices whose `proto static` routes all belong to Kilo (`kilo0`, `tunl0`).
    pub devices: BTreeSet<String>,
    /// Routes this reconciler added.
    pub routes: HashSet<RouteKey>,
    /// Rules this reconciler added.
    pub rules: HashSet<RuleKey>,
}

impl Ownership {
    /// Whether a kernel route is Kilo's to delete.
    pub fn owns_route(&self, route: &KernelRoute) -> bool {
        route.protocol == PROTO_STATIC
            && !route.route.dev.is_empty()
            && (route.route.table == KILO_TABLE
                || self.devices.contains(&route.route.dev)
                || self.routes.contains(&RouteKey::of_kernel(route)))
    }

    /// Whether a kernel rule is Kilo's to delete.
    pub fn owns_rule(&self, rule: &KernelRule) -> bool {
        rule.lookup
            && (rule.rule.table == KILO_TABLE || self.rules.contains(&RuleKey::of(&rule.rule)))
    }
}

/// The changes that bring the kernel to the desired routes and rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Managed rules to delete (applied first).
    pub delete_rules: Vec<KernelRule>,
    /// Managed routes to delete.
    pub delete_routes: Vec<KernelRoute>,
    /// Routes to add (`ip route replace`).
    pub add_routes: Vec<Route>,
    /// Rules to add (applied last).
    pub add_rules: Vec<Rule>,
}

impl Diff {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of kernel writes this diff needs.
    pub fn len(&self) -> usize {
        self.delete_rules.len() + self.delete_routes.len() + self.add_routes.len() + self.add_rules.len()
    }
}

impl fmt::Display for Diff {
    /// One change per line: `- route …`, `+ route …`, `- rule …`, `+ rule …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.delete_rules {
            writeln!(f, "- rule {}", describe_rule(&r.rule))?;
        }
        for r in &self.delete_routes {
            writeln!(f, "- route {}", describe_route(&r.route))?;
        }
        for r in &self.add_routes {
            writeln!(f, "+ route {}", describe_route(r))?;
        }
        for r in &self.add_rules {
            writeln!(f, "+ rule {}", describe_rule(r))?;
        }
        Ok(())
    }
}

/// Compares the desired routes and rules with the kernel's and returns the minimal changes.
/// A kernel item whose identity is desired is kept (one of each; managed duplicates go); a
/// managed item that is not desired is deleted; a desired item that is absent is added.
pub fn diff(
    routes: &[Route],
    rules: &[Rule],
    kernel_routes: &[KernelRoute],
    kernel_rules: &[KernelRule],
    ownership: &Ownership,
) -> Diff {
    let mut out = Diff::default();

    let wanted: HashSet<RouteKey> = routes.iter().map(RouteKey::of).collect();
    let mut present = HashSet::new();
    for kr in kernel_routes {
        let key = RouteKey::of_kernel(kr);
        if wanted.contains(&key) && present.insert(key) {
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
    for kr in kernel_rules.iter().filter(|r| r.lookup) {
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
