//! The kernel's routes and rules in kilo-core's terms: what [`kilo_core::routes::diff`]
//! compares with the plan. The identities, the ownership and the diff itself are kilo-core's.

use kilo_core::routes::{InstalledRoute, InstalledRule};

use crate::netlink::{KernelRoute, KernelRule};

/// A route read from the kernel, as kilo-core's [`InstalledRoute`].
pub fn installed_route(route: &KernelRoute) -> InstalledRoute {
    InstalledRoute {
        route: route.route.clone(),
        kind: route.kind,
        protocol: route.protocol,
        priority: route.priority,
        realm: route.realm,
    }
}

/// A rule read from the kernel, as kilo-core's [`InstalledRule`].
pub fn installed_rule(rule: &KernelRule) -> InstalledRule {
    InstalledRule { rule: rule.rule.clone(), lookup: rule.lookup, priority: rule.priority }
}

/// The kernel entries behind a diff's deletions: each installed entry of the diff is matched
/// with one kernel entry it was read from (equal entries are used once each).
pub(super) struct Kernel<'a, K> {
    entries: Vec<(bool, &'a K)>,
}

impl<'a, K> Kernel<'a, K> {
    pub(super) fn new(entries: &'a [K]) -> Self {
        Kernel { entries: entries.iter().map(|e| (false, e)).collect() }
    }

    /// The first unused kernel entry that reads as `wanted`.
    pub(super) fn take<I: PartialEq>(
        &mut self,
        wanted: &I,
        read: impl Fn(&K) -> I,
    ) -> Option<&'a K> {
        let slot = self.entries.iter_mut().find(|(used, e)| !*used && read(e) == *wanted)?;
        slot.0 = true;
        Some(slot.1)
    }
}

#[cfg(test)]
mod tests {
    use kilo_core::routes::{
        KILO_REALM, KILO_TABLE, MAIN_TABLE, PROTO_STATIC, Route, RouteKind, Rule,
    };

    use super::*;

    fn route(dst: &str) -> Route {
        Route {
            dst: dst.parse().unwrap(),
            via: Some("10.4.0.2".parse().unwrap()),
            dev: "kilo0".into(),
            src: None,
            table: MAIN_TABLE,
            onlink: true,
        }
    }

    #[test]
    fn kernel_entries_read_as_kilo_cores_installed_entries() {
        let kernel = KernelRoute {
            realm: KILO_REALM,
            ..KernelRoute::synthetic(route("10.2.1.0/24"), RouteKind::Blackhole, PROTO_STATIC)
        };
        assert_eq!(
            installed_route(&kernel),
            InstalledRoute {
                route: route("10.2.1.0/24"),
                kind: RouteKind::Blackhole,
                protocol: PROTO_STATIC,
                priority: 0,
                realm: KILO_REALM,
            }
        );
        let rule = Rule {
            from: None,
            to: Some("10.3.0.0/16".parse().unwrap()),
            iif: None,
            table: KILO_TABLE,
        };
        assert_eq!(
            installed_rule(&KernelRule::synthetic(rule.clone())),
            InstalledRule { rule, lookup: true, priority: 100 }
        );
    }

    #[test]
    fn equal_kernel_entries_are_taken_once_each() {
        let a = KernelRoute::synthetic(route("10.2.1.0/24"), RouteKind::Unicast, PROTO_STATIC);
        let b = KernelRoute::synthetic(route("10.2.2.0/24"), RouteKind::Unicast, PROTO_STATIC);
        let entries = [a.clone(), b.clone(), a.clone()];
        let mut kernel = Kernel::new(&entries);
        let wanted = installed_route(&a);
        assert!(
            kernel.take(&wanted, installed_route).is_some_and(|k| std::ptr::eq(k, &entries[0]))
        );
        assert!(
            kernel.take(&wanted, installed_route).is_some_and(|k| std::ptr::eq(k, &entries[2]))
        );
        assert!(kernel.take(&wanted, installed_route).is_none());
    }
}
