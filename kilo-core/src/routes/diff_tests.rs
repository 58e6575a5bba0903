use super::*;
use crate::routes::MAIN_TABLE;

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

fn installed(r: &Route, kind: RouteKind, protocol: u8) -> InstalledRoute {
    InstalledRoute {
        route: Route { dst: r.dst.network(), ..r.clone() },
        kind,
        protocol,
        priority: 0,
        realm: 0,
    }
}

/// A `proto static` unicast route without Kilo's realm.
fn kernel(r: &Route) -> InstalledRoute {
    installed(r, RouteKind::Unicast, PROTO_STATIC)
}

/// As Kilo writes it: IPv4 routes carry its realm.
fn marked(r: &Route) -> InstalledRoute {
    InstalledRoute { realm: KILO_REALM, ..kernel(r) }
}

fn rule(to: &str) -> Rule {
    Rule { from: None, to: Some(to.parse().unwrap()), iif: None, table: KILO_TABLE }
}

fn krule(r: Rule) -> InstalledRule {
    InstalledRule { rule: r, lookup: true, priority: 100 }
}

fn owned() -> Ownership {
    Ownership::with_devices(["kilo0"])
}

#[test]
fn the_diff_of_a_plan_against_itself_is_empty() {
    let routes = vec![
        route("10.2.1.7/24", Some("10.4.0.2"), "kilo0", MAIN_TABLE),
        route("10.2.1.0/24", Some("10.4.0.2"), "kilo0", KILO_TABLE),
        route("192.168.0.2/32", Some("192.168.0.2"), "eth0", MAIN_TABLE),
    ];
    let rules = vec![rule("192.168.0.2/32")];
    let kr: Vec<InstalledRoute> = routes.iter().map(marked).collect();
    let kl: Vec<InstalledRule> = rules.iter().cloned().map(krule).collect();
    let d = diff(&kr, &kl, &routes, &rules, &owned());
    assert_eq!(d, RouteDiff::default());
    assert_eq!(d.to_string(), "");
}

#[test]
fn routes_differing_in_table_type_or_device_are_different_routes() {
    let main = route("10.2.1.0/24", Some("10.4.0.2"), "kilo0", MAIN_TABLE);
    let in_kilo_table = Route { table: KILO_TABLE, ..main.clone() };
    let on_eth0 = Route { dev: "eth0".into(), ..main.clone() };
    assert_ne!(RouteKey::of(&main), RouteKey::of(&in_kilo_table));
    assert_ne!(RouteKey::of(&main), RouteKey::of(&on_eth0));
    let blackhole = installed(&main, RouteKind::Blackhole, PROTO_STATIC);
    assert_ne!(RouteKey::of_installed(&blackhole), RouteKey::of(&main));

    let d = diff(
        &[kernel(&main), blackhole.clone()],
        &[],
        &[main.clone(), in_kilo_table.clone()],
        &[],
        &owned(),
    );
    assert_eq!(
        d,
        RouteDiff {
            delete_routes: vec![blackhole],
            add_routes: vec![in_kilo_table],
            ..RouteDiff::default()
        }
    );
    assert_eq!(
        d.to_string(),
        "delete route blackhole 10.2.1.0/24 via 10.4.0.2 dev kilo0 onlink\n\
         add route 10.2.1.0/24 via 10.4.0.2 dev kilo0 table 1107 onlink\n"
    );
}

#[test]
fn onlink_is_compared_but_is_not_identity_a_changed_flag_replaces_the_route_in_place() {
    let planned = route("10.2.1.0/24", Some("10.4.0.2"), "kilo0", MAIN_TABLE);
    let without = Route { onlink: false, ..planned.clone() };
    assert_eq!(RouteKey::of(&planned), RouteKey::of(&without));
    let d = diff(&[marked(&without)], &[], std::slice::from_ref(&planned), &[], &owned());
    assert_eq!(d, RouteDiff { replace_routes: vec![planned.clone()], ..RouteDiff::default() });
    assert_eq!(d.to_string(), "replace route 10.2.1.0/24 via 10.4.0.2 dev kilo0 onlink\n");
    // Kernel-filled attributes are neither identity nor compared.
    let filled = InstalledRoute { protocol: 3, priority: 100, realm: 7, ..marked(&planned) };
    assert!(diff(&[filled], &[], &[planned], &[], &owned()).is_empty());
}

#[test]
fn only_managed_kernel_items_are_deleted() {
    let ours_on_kilo0 = route("10.8.0.0/24", None, "kilo0", MAIN_TABLE);
    let ours_in_1107 = route("10.8.1.0/24", Some("192.168.0.9"), "eth0", KILO_TABLE);
    let recorded_on_eth0 = route("10.8.2.0/24", Some("192.168.0.9"), "eth0", MAIN_TABLE);
    let foreign_on_eth0 = route("10.9.0.0/24", Some("192.168.0.9"), "eth0", MAIN_TABLE);
    let boot_on_kilo0 =
        installed(&route("10.9.1.0/24", None, "kilo0", MAIN_TABLE), RouteKind::Unicast, 3);
    let kernel_routes = vec![
        kernel(&ours_on_kilo0),
        kernel(&ours_in_1107),
        kernel(&recorded_on_eth0),
        kernel(&foreign_on_eth0),
        boot_on_kilo0,
    ];
    let mut ownership = owned();
    ownership.routes.insert(RouteKey::of(&recorded_on_eth0));
    let foreign_rule = krule(Rule { table: 100, ..rule("10.9.2.0/24") });
    let kernel_rules = vec![krule(rule("10.8.3.0/24")), foreign_rule];

    let d = diff(&kernel_routes, &kernel_rules, &[], &[], &ownership);
    assert_eq!(
        d,
        RouteDiff {
            delete_rules: vec![kernel_rules[0].clone()],
            delete_routes: kernel_routes[..3].to_vec(),
            ..RouteDiff::default()
        }
    );
    assert_eq!(
        d.to_string(),
        "delete rule pref 100 to 10.8.3.0/24 lookup 1107\n\
         delete route 10.8.0.0/24 dev kilo0\n\
         delete route 10.8.1.0/24 via 192.168.0.9 dev eth0 table 1107 onlink\n\
         delete route 10.8.2.0/24 via 192.168.0.9 dev eth0 onlink\n"
    );
}

#[test]
fn desired_duplicates_are_added_once_and_managed_kernel_duplicates_removed() {
    let r = route("10.2.1.0/24", Some("10.4.0.2"), "kilo0", MAIN_TABLE);
    let d = diff(
        &[],
        &[],
        &[r.clone(), r.clone()],
        &[rule("10.3.0.0/16"), rule("10.3.0.0/16")],
        &owned(),
    );
    assert_eq!(
        d,
        RouteDiff {
            add_routes: vec![r],
            add_rules: vec![rule("10.3.0.0/16")],
            ..RouteDiff::default()
        }
    );
    let twice = [krule(rule("10.3.0.0/16")), krule(rule("10.3.0.0/16"))];
    let d = diff(&[], &twice, &[], &[rule("10.3.0.0/16")], &owned());
    assert_eq!(d, RouteDiff { delete_rules: vec![twice[1].clone()], ..RouteDiff::default() });
}

#[test]
fn the_diff_reads_as_ip_commands_one_line_per_change() {
    let old = route("10.2.1.0/24", Some("10.4.0.2"), "kilo0", MAIN_TABLE);
    let new = Route { via: Some("10.4.0.1".parse().unwrap()), ..old.clone() };
    let d = diff(&[marked(&old)], &[], &[new], &[rule("10.3.0.0/16")], &owned());
    assert_eq!(
        d.to_string(),
        "delete route 10.2.1.0/24 via 10.4.0.2 dev kilo0 onlink realm 1107\n\
         add route 10.2.1.0/24 via 10.4.0.1 dev kilo0 onlink\n\
         add rule to 10.3.0.0/16 lookup 1107\n"
    );
    assert_eq!(d.len(), 3);
}

#[test]
fn a_route_with_kilos_realm_on_the_lan_device_is_owned_and_a_users_static_route_is_not() {
    let killed_agents = route("10.2.3.0/24", Some("192.168.1.11"), "eth0", MAIN_TABLE);
    let users = route("10.9.0.0/24", Some("192.168.1.1"), "eth0", MAIN_TABLE);
    let users_onlink = route("10.9.1.0/24", Some("192.168.1.11"), "eth0", MAIN_TABLE);
    let boot_with_realm = InstalledRoute {
        protocol: 3,
        ..marked(&route("10.9.2.0/24", Some("192.168.1.1"), "eth0", MAIN_TABLE))
    };
    let kernel_routes =
        vec![marked(&killed_agents), kernel(&users), kernel(&users_onlink), boot_with_realm];
    let fresh = owned();
    assert!(fresh.owns_route(&kernel_routes[0]));
    assert!(!kernel_routes[1..].iter().any(|r| fresh.owns_route(r)));
    let d = diff(&kernel_routes, &[], &[], &[], &fresh);
    assert_eq!(
        d,
        RouteDiff { delete_routes: vec![marked(&killed_agents)], ..RouteDiff::default() }
    );
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
        installed(&boot, RouteKind::Unicast, 3),
    ];
    let d = diff(&kernel_routes, &[], &planned, &[], &owned());
    assert_eq!(d, RouteDiff { mark_routes: vec![lan.clone()], ..RouteDiff::default() });
    assert_eq!(
        d.to_string(),
        "mark route 10.2.1.0/24 via 192.168.1.11 dev eth0 onlink realm 1107\n"
    );
    // Recorded (marked once already, on a kernel that dropped the realm): left alone.
    let mut recorded = owned();
    recorded.routes.insert(RouteKey::of(&lan));
    assert!(diff(&kernel_routes, &[], &planned, &[], &recorded).is_empty());
}

#[test]
fn planned_items_found_in_place_are_adopted() {
    let lan = route("10.2.1.0/24", Some("192.168.1.11"), "eth0", MAIN_TABLE);
    let boot = route("10.2.5.0/24", Some("192.168.1.11"), "eth0", MAIN_TABLE);
    let other = route("10.2.6.0/24", Some("192.168.1.11"), "eth0", MAIN_TABLE);
    let mut ownership = owned();
    ownership.adopt(
        &[kernel(&lan), installed(&boot, RouteKind::Unicast, 3), kernel(&other)],
        &[
            krule(rule("10.3.0.0/16")),
            InstalledRule { lookup: false, ..krule(rule("10.4.0.0/16")) },
        ],
        &[lan.clone(), boot],
        &[rule("10.3.0.0/16"), rule("10.4.0.0/16")],
    );
    assert_eq!(ownership.routes, HashSet::from([RouteKey::of(&lan)]));
    assert_eq!(ownership.rules, HashSet::from([RuleKey::of(&rule("10.3.0.0/16"))]));
}

#[test]
fn identities_print_with_every_field() {
    let r = Route {
        dst: "10.2.1.7/24".parse().unwrap(),
        via: Some("::ffff:10.4.0.1".parse().unwrap()),
        dev: "kilo0".into(),
        src: None,
        table: MAIN_TABLE,
        onlink: true,
    };
    assert_eq!(
        RouteKey::of(&r).to_string(),
        "unicast 10.2.1.0/24 via 10.4.0.1 dev kilo0 src - table 254"
    );
    let rule = Rule {
        from: None,
        to: Some("10.3.1.1/16".parse().unwrap()),
        iif: Some("kilo0".into()),
        table: KILO_TABLE,
    };
    assert_eq!(RuleKey::of(&rule).to_string(), "from - to 10.3.0.0/16 iif kilo0 lookup 1107");
}
