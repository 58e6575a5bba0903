//! The route and rule reconciler against the real kernel, inside a namespace the test owns.

mod netlink_support;
mod root_support;

use std::collections::HashSet;
use std::time::Duration;

use kilo_core::Cidr;
use kilo_core::routes::{KILO_TABLE, MAIN_TABLE, Route, Rule};
use kilo_net_linux::Netlink;
use kilo_net_linux::reconcile::{RouteKey, RouteReconciler, RuleKey, installed_route};
use netlink_support::Namespace;

fn c(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn route(
    dst: &str,
    via: Option<&str>,
    dev: &str,
    src: Option<&str>,
    table: u32,
    onlink: bool,
) -> Route {
    Route {
        dst: c(dst),
        via: via.map(|v| v.parse().unwrap()),
        dev: dev.to_string(),
        src: src.map(|s| s.parse().unwrap()),
        table,
        onlink,
    }
}

fn rule(from: Option<&str>, to: Option<&str>, iif: Option<&str>) -> Rule {
    Rule { from: from.map(c), to: to.map(c), iif: iif.map(str::to_string), table: KILO_TABLE }
}

/// A namespace with `kilo0` (10.4.0.1/16, fd00:4::1/64) and `eth0` (192.168.0.1/24), both up.
fn host(tag: &str) -> Namespace {
    let ns = Namespace::new(tag);
    for (dev, peer) in [("kilo0", "kilo0p"), ("eth0", "eth0p")] {
        ns.ip(&format!("link add {dev} type veth peer name {peer}"));
        ns.ip(&format!("link set {dev} up"));
        ns.ip(&format!("link set {peer} up"));
    }
    ns.ip("addr add 10.4.0.1/16 dev kilo0");
    ns.ip("addr add fd00:4::1/64 dev kilo0 nodad");
    ns.ip("addr add 192.168.0.1/24 dev eth0");
    ns
}

fn desired() -> (Vec<Route>, Vec<Rule>) {
    let routes = vec![
        route("10.2.1.0/24", Some("10.4.0.2"), "kilo0", Some("192.168.0.1"), MAIN_TABLE, true),
        route("10.5.0.1/24", None, "kilo0", Some("192.168.0.1"), MAIN_TABLE, false),
        route("10.2.3.0/24", Some("192.168.0.3"), "eth0", None, MAIN_TABLE, true),
        route("192.168.1.2/32", Some("192.168.0.2"), "eth0", Some("192.168.0.1"), KILO_TABLE, true),
        route("fd00:5::/64", Some("fd00:4::2"), "kilo0", None, MAIN_TABLE, true),
    ];
    let rules = vec![
        rule(Some("10.2.0.0/24"), Some("192.168.1.2/32"), None),
        rule(None, Some("192.168.1.2/32"), Some("kilo0")),
    ];
    (routes, rules)
}

async fn kernel_keys(nl: &Netlink) -> (HashSet<RouteKey>, HashSet<RuleKey>) {
    let routes = nl
        .routes()
        .await
        .unwrap()
        .iter()
        .map(|r| RouteKey::of_installed(&installed_route(r)))
        .collect();
    let rules = nl
        .rules()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.lookup)
        .map(|r| RuleKey::of(&r.rule))
        .collect();
    (routes, rules)
}

#[tokio::test]
async fn reconcile_applies_routes_and_rules_then_a_resync_writes_nothing() {
    if root_support::skip_unless_root() {
        return;
    }
    let ns = host("apply");
    let nl = Netlink::connect_in_namespace(&ns.path).unwrap();
    let rec = RouteReconciler::new(nl.clone(), ["kilo0"]);
    let (routes, rules) = desired();

    let diff = rec.reconcile(&routes, &rules).await.unwrap();
    assert_eq!((diff.add_routes.len(), diff.add_rules.len()), (5, 2), "{diff}");
    assert!(diff.delete_routes.is_empty() && diff.delete_rules.is_empty(), "{diff}");
    assert_eq!(rec.writes(), 7);

    let (kroutes, krules) = kernel_keys(&nl).await;
    for r in &routes {
        assert!(kroutes.contains(&RouteKey::of(r)), "missing {r:?} in {kroutes:#?}");
    }
    for r in &rules {
        assert!(krules.contains(&RuleKey::of(r)), "missing {r:?}");
    }
    // Independent read-back with iproute2.
    let main = ns.ip("route show table main");
    assert!(
        main.contains("10.2.1.0/24 via 10.4.0.2 dev kilo0 proto static src 192.168.0.1 onlink"),
        "{main}"
    );
    assert!(
        main.contains("10.5.0.0/24 dev kilo0 proto static scope link src 192.168.0.1"),
        "{main}"
    );
    let kilo = ns.ip("route show table 1107");
    assert!(
        kilo.contains("192.168.1.2 via 192.168.0.2 dev eth0 proto static src 192.168.0.1 onlink"),
        "{kilo}"
    );
    let ip_rules = ns.ip("rule show");
    assert!(ip_rules.contains("from 10.2.0.0/24 to 192.168.1.2 lookup 1107"), "{ip_rules}");
    assert!(ip_rules.contains("from all to 192.168.1.2 iif kilo0 lookup 1107"), "{ip_rules}");

    let again = rec.reconcile(&routes, &rules).await.unwrap();
    assert!(again.is_empty(), "{again}");
    assert_eq!(rec.writes(), 7, "a resync with nothing to change must not write");
}

#[tokio::test]
async fn a_deleted_route_comes_back_on_the_next_reconcile() {
    if root_support::skip_unless_root() {
        return;
    }
    let ns = host("restore");
    let nl = Netlink::connect_in_namespace(&ns.path).unwrap();
    let rec = RouteReconciler::new(nl.clone(), ["kilo0"]);
    let (routes, rules) = desired();
    rec.reconcile(&routes, &rules).await.unwrap();
    let before = rec.writes();

    ns.ip("route del 192.168.1.2/32 table 1107");
    ns.ip("rule del from 10.2.0.0/24 to 192.168.1.2/32 lookup 1107");
    let diff = rec.reconcile(&routes, &rules).await.unwrap();
    assert_eq!(diff.add_routes, [routes[3].clone()]);
    assert_eq!(diff.add_rules, [rules[0].clone()]);
    assert_eq!(diff.len(), 2);
    assert_eq!(rec.writes(), before + 2);
    assert!(ns.ip("route show table 1107").contains("192.168.1.2 via 192.168.0.2"));
}

#[tokio::test]
async fn the_monitor_restores_a_deleted_route_at_once() {
    if root_support::skip_unless_root() {
        return;
    }
    let ns = host("monitor");
    let nl = Netlink::connect_in_namespace(&ns.path).unwrap();
    let rec = RouteReconciler::new(nl.clone(), ["kilo0"]);
    let (routes, rules) = desired();
    rec.reconcile(&routes, &rules).await.unwrap();
    let mut monitor = rec.monitor().unwrap();
    let before = rec.writes();

    // An unrelated deletion is ignored; the managed one is restored.
    ns.ip("route add 10.77.0.0/24 dev eth0");
    ns.ip("route del 10.77.0.0/24 dev eth0");
    ns.ip("route del 10.2.1.0/24");
    let restored = tokio::time::timeout(Duration::from_secs(10), monitor.next_restored())
        .await
        .expect("the monitor restores within 10 s")
        .expect("the subscription is open")
        .expect("the route is re-added");
    assert_eq!(RouteKey::of(&restored), RouteKey::of(&routes[0]));
    assert_eq!(rec.writes(), before + 1, "the monitor wrote exactly the restore");
    let main = ns.ip("route show table main");
    assert!(main.contains("10.2.1.0/24 via 10.4.0.2 dev kilo0"), "{main}");
    // And a resync afterwards has nothing to do.
    assert!(rec.reconcile(&routes, &rules).await.unwrap().is_empty());
}

#[tokio::test]
async fn changing_one_route_is_exactly_one_delete_and_one_add() {
    if root_support::skip_unless_root() {
        return;
    }
    let ns = host("change");
    let nl = Netlink::connect_in_namespace(&ns.path).unwrap();
    let rec = RouteReconciler::new(nl.clone(), ["kilo0"]);
    let (mut routes, rules) = desired();
    rec.reconcile(&routes, &rules).await.unwrap();
    let before = rec.writes();

    let old = routes[0].clone();
    routes[0].via = Some("10.4.0.3".parse().unwrap());
    let diff = rec.reconcile(&routes, &rules).await.unwrap();
    assert_eq!(diff.delete_routes.len(), 1, "{diff}");
    assert_eq!(RouteKey::of_installed(&diff.delete_routes[0]), RouteKey::of(&old));
    assert_eq!(diff.add_routes, [routes[0].clone()]);
    assert!(diff.delete_rules.is_empty() && diff.add_rules.is_empty());
    assert_eq!(rec.writes(), before + 2);
    let main = ns.ip("route show table main");
    assert!(
        main.contains("10.2.1.0/24 via 10.4.0.3 dev kilo0") && !main.contains("via 10.4.0.2"),
        "{main}"
    );
}

#[tokio::test]
async fn routes_differing_only_in_table_are_distinct() {
    if root_support::skip_unless_root() {
        return;
    }
    let ns = host("table");
    let nl = Netlink::connect_in_namespace(&ns.path).unwrap();
    let rec = RouteReconciler::new(nl.clone(), ["kilo0"]);
    let main = route("10.6.0.0/24", Some("10.4.0.9"), "kilo0", None, MAIN_TABLE, true);
    let kilo = Route { table: KILO_TABLE, ..main.clone() };
    let diff = rec.reconcile(&[main.clone(), kilo.clone()], &[]).await.unwrap();
    assert_eq!(diff.add_routes.len(), 2);
    assert!(rec.reconcile(&[main, kilo], &[]).await.unwrap().is_empty());
    assert!(ns.ip("route show table 1107").contains("10.6.0.0/24 via 10.4.0.9"));
    assert!(ns.ip("route show table main").contains("10.6.0.0/24 via 10.4.0.9"));
}

#[tokio::test]
async fn only_managed_routes_and_rules_are_deleted_and_clean_up_removes_them_all() {
    if root_support::skip_unless_root() {
        return;
    }
    let ns = host("cleanup");
    let nl = Netlink::connect_in_namespace(&ns.path).unwrap();
    let rec = RouteReconciler::new(nl.clone(), ["kilo0"]);
    let (routes, rules) = desired();
    rec.reconcile(&routes, &rules).await.unwrap();

    // Not Kilo's: a static route on a device Kilo does not own, a non-static one on kilo0,
    // a rule for another table. Kilo's: static routes on kilo0, anything in table 1107.
    ns.ip("route add 10.9.0.0/24 dev eth0 proto static");
    ns.ip("route add 10.9.1.0/24 dev kilo0 proto boot");
    ns.ip("rule add to 10.9.2.0/24 lookup 100");
    ns.ip("route add 10.8.0.0/24 dev kilo0 proto static");
    ns.ip("route add 10.8.1.0/24 dev eth0 table 1107 proto static");
    ns.ip("rule add to 10.8.2.0/24 lookup 1107");

    let diff = rec.reconcile(&routes, &rules).await.unwrap();
    let deleted: HashSet<String> =
        diff.delete_routes.iter().map(|r| r.route.dst.to_string()).collect();
    assert_eq!(
        deleted,
        HashSet::from(["10.8.0.0/24".to_string(), "10.8.1.0/24".to_string()]),
        "{diff}"
    );
    assert_eq!(diff.delete_rules.len(), 1, "{diff}");
    assert_eq!(diff.delete_rules[0].rule.to, Some(c("10.8.2.0/24")));
    assert!(diff.add_routes.is_empty() && diff.add_rules.is_empty(), "{diff}");

    let (managed_routes, managed_rules) = rec.managed().await.unwrap();
    assert_eq!((managed_routes.len(), managed_rules.len()), (5, 2));

    let clean = rec.clean_up().await.unwrap();
    assert_eq!((clean.delete_routes.len(), clean.delete_rules.len()), (5, 2), "{clean}");
    assert_eq!(ns.ip("route show table 1107").trim(), "");
    let ip_rules = ns.ip("rule show");
    assert!(!ip_rules.contains("lookup 1107"), "{ip_rules}");
    assert!(ip_rules.contains("to 10.9.2.0/24 lookup 100"), "{ip_rules}");
    let main = ns.ip("route show table main");
    assert!(main.contains("10.9.0.0/24 dev eth0 proto static"), "{main}");
    assert!(main.contains("10.9.1.0/24 dev kilo0"), "{main}");
    assert!(!main.contains("10.2.") && !main.contains("10.5.0.0"), "{main}");
    assert!(!ns.ip("-6 route show").contains("fd00:5::"));
    assert!(rec.clean_up().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_monitor_as_a_stream_ignores_routes_no_longer_desired() {
    if root_support::skip_unless_root() {
        return;
    }
    use futures::StreamExt;

    let ns = host("stream");
    let nl = Netlink::connect_in_namespace(&ns.path).unwrap();
    let rec = RouteReconciler::new(nl.clone(), ["kilo0"]);
    let (routes, rules) = desired();
    rec.reconcile(&routes, &rules).await.unwrap();
    let mut stream = Box::pin(rec.monitor().unwrap().into_stream());

    // Dropped from the plan: the reconciler deletes it, and the monitor must not bring it back.
    rec.reconcile(&routes[1..], &rules).await.unwrap();
    ns.ip("route del 10.5.0.0/24 dev kilo0");
    let restored = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(restored.dst, c("10.5.0.1/24").network());
    assert!(!ns.ip("route show table main").contains("10.2.1.0/24"));
}

#[tokio::test]
async fn a_new_reconciler_removes_the_lan_routes_a_killed_one_wrote_and_keeps_the_users() {
    if root_support::skip_unless_root() {
        return;
    }
    let ns = host("killed");
    let nl = Netlink::connect_in_namespace(&ns.path).unwrap();
    // The user's routes on eth0: a static one, onlink like Kilo's, and a `proto boot` one.
    ns.ip("route add 10.9.0.0/24 via 192.168.0.9 dev eth0 onlink proto static");
    ns.ip("route add 10.9.1.0/24 via 192.168.0.9 dev eth0 proto boot");
    let (routes, rules) = desired();
    let killed = RouteReconciler::new(nl.clone(), ["kilo0"]);
    killed.reconcile(&routes, &rules).await.unwrap();
    let main = ns.ip("route show table main");
    assert!(
        main.contains("10.2.3.0/24 via 192.168.0.3 dev eth0 proto static onlink realm 1107"),
        "{main}"
    );
    drop(killed); // Killed: its record is gone.

    // The next agent plans without the LAN route: it deletes it, from the kernel's word alone.
    let next = RouteReconciler::new(nl.clone(), ["kilo0"]);
    let planned: Vec<Route> =
        routes.iter().filter(|r| r.dst != c("10.2.3.0/24")).cloned().collect();
    let diff = next.reconcile(&planned, &rules).await.unwrap();
    let deleted: Vec<String> = diff.delete_routes.iter().map(|r| r.route.dst.to_string()).collect();
    assert_eq!(deleted, ["10.2.3.0/24"], "{diff}");
    assert!(diff.add_routes.is_empty() && diff.mark_routes.is_empty(), "{diff}");
    drop(next);

    // A route upstream Kilo wrote (no realm) that the plan wants is marked, then cleaned up.
    ns.ip("route add 10.2.3.0/24 via 192.168.0.3 dev eth0 onlink proto static");
    let adopting = RouteReconciler::new(nl.clone(), ["kilo0"]);
    let diff = adopting.reconcile(&routes, &rules).await.unwrap();
    assert_eq!(diff.mark_routes.len(), 1, "{diff}");
    assert_eq!(diff.len(), 1, "{diff}");
    assert!(ns.ip("route show 10.2.3.0/24").contains("realm 1107"));
    drop(adopting);

    // Clean-up by an agent that never planned anything removes everything of Kilo's.
    let cleaning = RouteReconciler::new(nl.clone(), ["kilo0"]);
    let clean = cleaning.clean_up().await.unwrap();
    assert_eq!((clean.delete_routes.len(), clean.delete_rules.len()), (5, 2), "{clean}");
    let main = ns.ip("route show table main");
    assert!(main.contains("10.9.0.0/24 via 192.168.0.9 dev eth0 proto static onlink"), "{main}");
    assert!(main.contains("10.9.1.0/24 via 192.168.0.9 dev eth0"), "{main}");
    assert!(!main.contains("10.2.") && !main.contains("10.5.0.0"), "{main}");
    assert!(!ns.ip("rule show").contains("lookup 1107"));
}
