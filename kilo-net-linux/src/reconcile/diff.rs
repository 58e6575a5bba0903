//! The pure part of the reconciler: identities, ownership and the typed diff.

use std::collections::{BTreeSet, HashSet};
use std::fmt;

use kilo_core::cidr::canonical;
use kilo_core::routes::{KILO_TABLE, Route, Rule};

use crate::netlink::{
    KILO_REALM, KernelRoute, KernelRule, PROTO_STATIC, RouteKind, describe_route, describe_rule,
};

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

/// What the reconciler may delete: besides what it recorded (added, or found planned), every
/// `proto static` route in table 1107, on an owned device or carrying Kilo's realm
/// ([`KILO_REALM`]), and every `lookup 1107` rule. See [`crate::reconcile`] for why.
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
        self.marked(route)
            || (route.protocol == PROTO_STATIC
                && !route.route.dev.is_empty()
                && self.routes.contains(&RouteKey::of_kernel(route)))
    }

    /// Whether the kernel alone tells that a route is Kilo's, whoever wrote it: `proto static`
    /// and in table 1107, on an owned device, or with Kilo's realm.
    pub fn marked(&self, route: &KernelRoute) -> bool {
        route.protocol == PROTO_STATIC
            && !route.route.dev.is_empty()
            && (route.route.table == KILO_TABLE
                || self.devices.contains(&route.route.dev)
                || route.realm == KILO_REALM)
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
    /// Desired IPv4 routes present without Kilo's mark and not recorded (written by an older or
    /// upstream agent, or by someone else): rewritten once (`ip route replace … realm 1107`) so
    /// that any later agent knows them as Kilo's.
    pub mark_routes: Vec<Route>,
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
        self.delete_rules.len()
            + self.delete_routes.len()
            + self.add_routes.len()
            + self.mark_routes.len()
            + self.add_rules.len()
    }
}

impl fmt::Display for Diff {
    /// One change per line: `- route …`, `+ route …`, `~ route …` (marked), `- rule …`,
    /// `+ rule …`.
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
        for r in &self.mark_routes {
            writeln!(f, "~ route {} realm {KILO_REALM}", describe_route(r))?;
        }
        for r in &self.add_rules {
            writeln!(f, "+ rule {}", describe_rule(r))?;
        }
        Ok(())
    }
}

/// Compares the desired routes and rules with the kernel's and returns the minimal changes.
/// A kernel item whose identity is desired is kept (one of each; managed duplicates go), and
/// marked when it is an IPv4 route that nothing marks as Kilo's yet and that is not recorded; a
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
        if wanted.contains(&key) && present.insert(key.clone()) {
            let unmarked = kr.protocol == PROTO_STATIC
                && kr.kind == RouteKind::Unicast
                && kr.route.dst.is_ipv4()
                && !ownership.marked(kr);
            if unmarked && !ownership.routes.contains(&key) {
                out.mark_routes.push(key.route);
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

#[cfg(test)]
mod tests {
    use kilo_core::routes::MAIN_TABLE;

    use super::*;

    fn route(dst: &str, via: Option<&str>, dev: &str, table: u32) -> Route {
        Route {
            dst: dst.parse().unwrap(),
            via: via.map(|v| v.parse().unwrap()),
            dev: dev.into(),
            src: None,
            table,
            onlink: via.is_some(),
        }
    }

    fn kernel(r: &Route) -> KernelRoute {
        KernelRoute::synthetic(
            Route { dst: r.dst.network(), ..r.clone() },
            RouteKind::Unicast,
            PROTO_STATIC,
        )
    }

    fn rule(to: &str) -> Rule {
        Rule { from: None, to: Some(to.parse().unwrap()), iif: None, table: KILO_TABLE }
    }

    fn owned() -> Ownership {
        Ownership { devices: ["kilo0".to_string()].into(), ..Ownership::default() }
    }

    #[test]
    fn the_diff_of_a_plan_against_itself_is_empty() {
        let routes = vec![
            route("10.2.1.7/24", Some("10.4.0.2"), "kilo0", MAIN_TABLE),
            route("10.2.1.0/24", Some("10.4.0.2"), "kilo0", KILO_TABLE),
            route("192.168.0.2/32", Some("192.168.0.2"), "eth0", MAIN_TABLE),
        ];
        let rules = vec![rule("192.168.0.2/32")];
        // As Kilo writes them: IPv4 routes carry its realm.
        let kr: Vec<KernelRoute> = routes.iter().map(marked).collect();
        let kl: Vec<KernelRule> = rules.iter().cloned().map(KernelRule::synthetic).collect();
        let d = diff(&routes, &rules, &kr, &kl, &owned());
        assert!(d.is_empty(), "{d}");
        assert_eq!(d.to_string(), "");
    }

    #[test]
    fn routes_differing_in_table_type_or_device_are_different_routes() {
        let main = route("10.2.1.0/24", Some("10.4.0.2"), "kilo0", MAIN_TABLE);
        let in_kilo_table = Route { table: KILO_TABLE, ..main.clone() };
        let on_eth0 = Route { dev: "eth0".into(), ..main.clone() };
        assert_ne!(RouteKey::of(&main), RouteKey::of(&in_kilo_table));
        assert_ne!(RouteKey::of(&main), RouteKey::of(&on_eth0));
        let blackhole = KernelRoute::synthetic(main.clone(), RouteKind::Blackhole, PROTO_STATIC);
        assert_ne!(RouteKey::of_kernel(&blackhole), RouteKey::of(&main));

        let d = diff(
            &[main.clone(), in_kilo_table.clone()],
            &[],
            &[kernel(&main), blackhole],
            &[],
            &owned(),
        );
        assert_eq!(d.add_routes, [in_kilo_table]);
        assert_eq!(d.delete_routes.len(), 1);
        assert_eq!(d.delete_routes[0].kind, RouteKind::Blackhole);
    }

    #[test]
    fn only_managed_kernel_items_are_deleted() {
        let ours_on_kilo0 = route("10.8.0.0/24", None, "kilo0", MAIN_TABLE);
        let ours_in_1107 = route("10.8.1.0/24", Some("192.168.0.9"), "eth0", KILO_TABLE);
        let recorded_on_eth0 = route("10.8.2.0/24", Some("192.168.0.9"), "eth0", MAIN_TABLE);
        let foreign_on_eth0 = route("10.9.0.0/24", Some("192.168.0.9"), "eth0", MAIN_TABLE);
        let boot_on_kilo0 = KernelRoute::synthetic(
            route("10.9.1.0/24", None, "kilo0", MAIN_TABLE),
            RouteKind::Unicast,
            3,
        );
        let kernel_routes = vec![
            kernel(&ours_on_kilo0),
            kernel(&ours_in_1107),
            kernel(&recorded_on_eth0),
            kernel(&foreign_on_eth0),
            boot_on_kilo0,
        ];
        let mut ownership = owned();
        ownership.routes.insert(RouteKey::of(&recorded_on_eth0));
        let foreign_rule = KernelRule::synthetic(Rule { table: 100, ..rule("10.9.2.0/24") });
        let kernel_rules = vec![KernelRule::synthetic(rule("10.8.3.0/24")), foreign_rule];

        let d = diff(&[], &[], &kernel_routes, &kernel_rules, &ownership);
        let deleted: Vec<String> =
            d.delete_routes.iter().map(|r| r.route.dst.to_string()).collect();
        assert_eq!(deleted, ["10.8.0.0/24", "10.8.1.0/24", "10.8.2.0/24"]);
        assert_eq!(d.delete_rules.len(), 1);
        assert_eq!(d.delete_rules[0].rule.to.unwrap().to_string(), "10.8.3.0/24");
    }

    #[test]
    fn desired_duplicates_are_added_once_and_managed_kernel_duplicates_removed() {
        let r = route("10.2.1.0/24", Some("10.4.0.2"), "kilo0", MAIN_TABLE);
        let d = diff(
            &[r.clone(), r.clone()],
            &[rule("10.3.0.0/16"), rule("10.3.0.0/16")],
            &[],
            &[],
            &owned(),
        );
        assert_eq!((d.add_routes.len(), d.add_rules.len()), (1, 1));
        let twice = [
            KernelRule::synthetic(rule("10.3.0.0/16")),
            KernelRule::synthetic(rule("10.3.0.0/16")),
        ];
        let d = diff(&[], &[rule("10.3.0.0/16")], &[], &twice, &owned());
        assert_eq!((d.delete_rules.len(), d.add_rules.len()), (1, 0));
    }

    #[test]
    fn the_diff_reads_as_ip_commands() {
        let old = route("10.2.1.0/24", Some("10.4.0.2"), "kilo0", MAIN_TABLE);
        let new = Route { via: Some("10.4.0.3".parse().unwrap()), ..old.clone() };
        let d = diff(&[new], &[rule("10.3.0.0/16")], &[kernel(&old)], &[], &owned());
        assert_eq!(
            d.to_string(),
            "- route 10.2.1.0/24 via 10.4.0.2 dev kilo0 onlink proto static\n\
             + route 10.2.1.0/24 via 10.4.0.3 dev kilo0 onlink proto static\n\
             + rule to 10.3.0.0/16 lookup 1107\n"
        );
        assert_eq!(d.len(), 3);
    }

    fn marked(r: &Route) -> KernelRoute {
        KernelRoute { realm: KILO_REALM, ..kernel(r) }
    }

    #[test]
    fn a_route_with_kilos_realm_on_the_lan_device_is_owned_and_a_users_static_route_is_not() {
        let killed_agents = route("10.2.3.0/24", Some("192.168.1.11"), "eth0", MAIN_TABLE);
        let users = route("10.9.0.0/24", Some("192.168.1.1"), "eth0", MAIN_TABLE);
        let users_onlink = route("10.9.1.0/24", Some("192.168.1.11"), "eth0", MAIN_TABLE);
        let boot_with_realm = KernelRoute {
            protocol: 3,
            ..marked(&route("10.9.2.0/24", Some("192.168.1.1"), "eth0", MAIN_TABLE))
        };
        let kernel_routes =
            vec![marked(&killed_agents), kernel(&users), kernel(&users_onlink), boot_with_realm];
        let fresh = owned();
        assert!(fresh.owns_route(&kernel_routes[0]));
        assert!(!kernel_routes[1..].iter().any(|r| fresh.owns_route(r)));
        let d = diff(&[], &[], &kernel_routes, &[], &fresh);
        assert_eq!(d.delete_routes, [marked(&killed_agents)]);
        assert!(d.add_routes.is_empty() && d.mark_routes.is_empty());
    }

    #[test]
    fn a_planned_ipv4_route_found_unmarked_is_marked_once_and_nothing_else_is() {
        let lan = route("10.2.1.0/24", Some("192.168.1.11"), "eth0", MAIN_TABLE);
        let lan6 = route("fd02::/64", Some("fd00::11"), "eth0", MAIN_TABLE);
        let on_kilo0 = route("10.2.3.0/24", Some("10.4.0.2"), "kilo0", MAIN_TABLE);
        let already = route("10.2.4.0/24", Some("192.168.1.11"), "eth0", MAIN_TABLE);
        let boot = route("10.2.5.0/24", Some("192.168.1.11"), "eth0", MAIN_TABLE);
        let planned = [lan.clone(), lan6.clone(), on_kilo0.clone(), already.clone(), boot.clone()];
        let kernel_routes = vec![
            kernel(&lan),
            kernel(&lan6),
            kernel(&on_kilo0),
            marked(&already),
            KernelRoute::synthetic(boot.clone(), RouteKind::Unicast, 3),
        ];
        let d = diff(&planned, &[], &kernel_routes, &[], &owned());
        assert_eq!(d.mark_routes, std::slice::from_ref(&lan));
        assert_eq!(d.len(), 1);
        assert_eq!(
            d.to_string(),
            "~ route 10.2.1.0/24 via 192.168.1.11 dev eth0 onlink proto static realm 1107\n"
        );
        // Recorded (marked once already, on a kernel that dropped the realm): left alone.
        let mut recorded = owned();
        recorded.routes.insert(RouteKey::of(&lan));
        assert!(diff(&planned, &[], &kernel_routes, &[], &recorded).is_empty());
    }
}
