//! Properties of the route and rule diff (`kilo_core::routes::diff`): a state against itself is
//! empty, applying the diff reaches the plan (and a second diff is empty), only Kilo's entries
//! are ever deleted, and the diff prints one line per change.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use kilo_core::Cidr;
use kilo_core::routes::{
    InstalledRoute, InstalledRule, KILO_REALM, KILO_TABLE, MAIN_TABLE, Ownership, PROTO_STATIC,
    Route, RouteKey, RouteKind, Rule, RuleKey, diff,
};
use proptest::prelude::*;

/// Few distinct values, so that identities collide often.
fn dst() -> impl Strategy<Value = Cidr> {
    prop_oneof![
        (0u8..4, prop_oneof![Just(24u8), Just(32), Just(16)])
            .prop_map(|(n, p)| { Cidr::new(IpAddr::V4(Ipv4Addr::new(10, 2, n, 7)), p).unwrap() }),
        (0u16..3).prop_map(|n| Cidr::new(
            IpAddr::V6(Ipv6Addr::new(0xfd02, n, 0, 0, 0, 0, 0, 1)),
            64
        )
        .unwrap()),
    ]
}

fn gateway() -> impl Strategy<Value = Option<IpAddr>> {
    prop_oneof![
        Just(None),
        (1u8..3).prop_map(|n| Some(IpAddr::V4(Ipv4Addr::new(10, 4, 0, n)))),
        Just(Some("::ffff:10.4.0.1".parse().unwrap())),
    ]
}

fn route() -> impl Strategy<Value = Route> {
    (
        dst(),
        gateway(),
        prop_oneof![Just("kilo0"), Just("eth0"), Just("tunl0")],
        prop_oneof![Just(None), Just(Some(IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1))))],
        prop_oneof![Just(MAIN_TABLE), Just(KILO_TABLE)],
        any::<bool>(),
    )
        .prop_map(|(dst, via, dev, src, table, onlink)| Route {
            dst,
            via,
            dev: dev.to_string(),
            src,
            table,
            onlink,
        })
}

fn installed_route() -> impl Strategy<Value = InstalledRoute> {
    (
        route(),
        prop_oneof![
            4 => Just(RouteKind::Unicast),
            1 => Just(RouteKind::Blackhole),
            1 => Just(RouteKind::Other(2)),
        ],
        prop_oneof![Just(PROTO_STATIC), Just(3u8)],
        prop_oneof![Just(0u32), Just(100)],
        prop_oneof![Just(0u16), Just(KILO_REALM)],
        any::<bool>(),
    )
        .prop_map(|(mut route, kind, protocol, priority, realm, multipath)| {
            route.dst = route.dst.network();
            if multipath {
                route.dev.clear();
            }
            InstalledRoute { route, kind, protocol, priority, realm }
        })
}

fn rule() -> impl Strategy<Value = Rule> {
    (
        prop_oneof![Just(None), dst().prop_map(Some)],
        prop_oneof![Just(None), dst().prop_map(Some)],
        prop_oneof![Just(None), Just(Some("kilo0".to_string()))],
        prop_oneof![Just(KILO_TABLE), Just(100u32)],
    )
        .prop_map(|(from, to, iif, table)| Rule { from, to, iif, table })
}

fn installed_rule() -> impl Strategy<Value = InstalledRule> {
    (rule(), any::<bool>(), 0u32..3).prop_map(|(mut rule, lookup, priority)| {
        rule.from = rule.from.map(|c| c.network());
        rule.to = rule.to.map(|c| c.network());
        InstalledRule { rule, lookup, priority }
    })
}

fn ownership() -> impl Strategy<Value = Ownership> {
    (proptest::collection::vec(route(), 0..3), proptest::collection::vec(rule(), 0..2)).prop_map(
        |(routes, rules)| {
            let mut o = Ownership::with_devices(["kilo0", "tunl0"]);
            o.routes = routes.iter().map(RouteKey::of).collect();
            o.rules = rules.iter().map(RuleKey::of).collect();
            o
        },
    )
}

fn state() -> impl Strategy<Value = (Vec<InstalledRoute>, Vec<InstalledRule>)> {
    (
        proptest::collection::vec(installed_route(), 0..8),
        proptest::collection::vec(installed_rule(), 0..5),
    )
}

fn plan() -> impl Strategy<Value = (Vec<Route>, Vec<Rule>)> {
    (proptest::collection::vec(route(), 0..8), proptest::collection::vec(rule(), 0..5))
}

proptest! {
    #[test]
    fn a_plan_written_by_kilo_against_itself_is_empty((routes, rules) in plan(), o in ownership()) {
        // The kernel as Kilo's writes of the plan leave it (first of each identity).
        let (kr, kl) = diff(&[], &[], &routes, &rules, &o).apply(&[], &[]);
        let d = diff(&kr, &kl, &routes, &rules, &o);
        prop_assert!(d.is_empty(), "{}", d);
        prop_assert_eq!(d.to_string(), "");
    }

    #[test]
    fn applying_the_diff_reaches_the_plan_and_touches_only_kilos_entries(
        (kr, kl) in state(),
        (routes, rules) in plan(),
        o in ownership(),
    ) {
        let d = diff(&kr, &kl, &routes, &rules, &o);
        let (after_routes, after_rules) = d.apply(&kr, &kl);

        // Nothing is left to do.
        let again = diff(&after_routes, &after_rules, &routes, &rules, &o);
        prop_assert!(again.is_empty(), "{}", again);

        // Every planned route is there with the plan's onlink (the first of its identity);
        // every planned rule is there.
        for want in &routes {
            let key = RouteKey::of(want);
            let first_planned = routes.iter().find(|r| RouteKey::of(r) == key).unwrap();
            let got = after_routes.iter().find(|r| RouteKey::of_installed(r) == key);
            prop_assert!(got.is_some_and(|r| r.route.onlink == first_planned.onlink), "{want}");
        }
        for want in &rules {
            let key = RuleKey::of(want);
            prop_assert!(after_rules.iter().any(|r| r.lookup && RuleKey::of(&r.rule) == key));
        }

        // Whatever Kilo owns afterwards is planned; nothing it does not own was deleted.
        let planned: HashSet<RouteKey> = routes.iter().map(RouteKey::of).collect();
        for r in &after_routes {
            prop_assert!(!o.owns_route(r) || planned.contains(&RouteKey::of_installed(r)), "{r:?}");
        }
        for r in &d.delete_routes {
            prop_assert!(o.owns_route(r));
        }
        for r in &d.delete_rules {
            prop_assert!(o.owns_rule(r));
        }
        let planned: HashSet<RuleKey> = rules.iter().map(RuleKey::of).collect();
        for r in &after_rules {
            prop_assert!(!o.owns_rule(r) || planned.contains(&RuleKey::of(&r.rule)), "{r:?}");
        }
    }

    #[test]
    fn the_diff_prints_one_line_per_change((kr, kl) in state(), (routes, rules) in plan(), o in ownership()) {
        let d = diff(&kr, &kl, &routes, &rules, &o);
        let text = d.to_string();
        prop_assert_eq!(text.lines().count(), d.len());
        prop_assert!(text.is_empty() || text.ends_with('\n'));
        for line in text.lines() {
            let verb = line.split(' ').take(2).collect::<Vec<_>>().join(" ");
            prop_assert!(
                ["delete rule", "delete route", "add route", "replace route", "mark route", "add rule"]
                    .contains(&verb.as_str()),
                "{}", line
            );
        }
    }
}
