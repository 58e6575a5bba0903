//! Properties of `Topology::routes` over the 13.2 fixture with random peer allowed IPs and
//! allowed-location IPs (host bits included), every node, granularity, strategy and
//! encapsulator.
//!
//! Not stated: "no two routes share (dst, table) with different next hops". Upstream does not
//! have it: from d (13.6), `192.168.0.1/32` goes via both 10.4.0.1 and 10.4.0.2 because nodes a
//! and b share that private IP.

mod routes_common;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

use kilo_core::routes::{Encapsulator, EncapsulatorConfig, KILO_TABLE};
use kilo_core::{Cidr, Encapsulation};
use proptest::prelude::*;
use routes_common::{full_from, ifaces, logical_from};

fn cidr() -> impl Strategy<Value = Cidr> {
    (any::<u32>(), 8u8..=32)
        .prop_map(|(ip, p)| Cidr::new(IpAddr::V4(Ipv4Addr::from(ip)), p).unwrap())
}

fn encapsulator() -> impl Strategy<Value = Encapsulator> {
    prop_oneof![
        Just(Encapsulator::Ipip),
        Just(Encapsulator::Flannel),
        Just(Encapsulator::Cilium),
        Just(Encapsulator::Noop)
    ]
}

fn strategy() -> impl Strategy<Value = Encapsulation> {
    prop_oneof![
        Just(Encapsulation::Never),
        Just(Encapsulation::CrossSubnet),
        Just(Encapsulation::Always)
    ]
}

proptest! {
    #[test]
    fn routes_are_kernel_acceptable_unique_and_cover_every_peer(
        node in prop_oneof![Just("a"), Just("b"), Just("c"), Just("d")],
        full in any::<bool>(),
        local in any::<bool>(),
        encapsulator in encapsulator(),
        strategy in strategy(),
        peer_ips in proptest::collection::vec(cidr(), 1..4),
        alips in proptest::collection::vec(cidr(), 0..3),
    ) {
        let mut t = if full { full_from(node) } else { logical_from(node) };
        t.peers[1].allowed_ips = peer_ips;
        t.segments[1].allowed_location_ips = alips;
        let enc = EncapsulatorConfig { encapsulator, strategy };
        let ifaces = ifaces();
        let (routes, rules) = t.routes(&ifaces, local, &enc);

        let mut seen = HashSet::new();
        for r in &routes {
            prop_assert!(r.dst.is_network(), "{r} has host bits");
            prop_assert!(seen.insert(r.clone()), "{r} listed twice");
            prop_assert!([&ifaces.kilo, &ifaces.private, &ifaces.tunnel].contains(&&r.dev), "{r}");
            if r.table == KILO_TABLE {
                prop_assert!(rules.iter().any(|rule| rule.to == Some(r.dst)), "{r} has no rule");
            }
            if !t.leader {
                prop_assert!(r.dev != ifaces.kilo, "non-leader {r} uses WireGuard");
            }
        }
        let unique_rules: HashSet<_> = rules.iter().collect();
        prop_assert_eq!(unique_rules.len(), rules.len());
        prop_assert!(rules.iter().all(|r| r.table == KILO_TABLE));
        for peer in &t.peers {
            for aip in &peer.allowed_ips {
                prop_assert!(routes.iter().any(|r| r.dst == aip.network()), "no route to {aip}");
            }
        }
        if t.leader {
            let local = t.segments.iter().find(|s| s.location == t.location).unwrap();
            let own = local.members.iter().flat_map(|m| m.subnets.iter());
            for subnet in own {
                prop_assert!(
                    !routes.iter().any(|r| r.dst == *subnet && r.dev == ifaces.kilo),
                    "leader routes its own location's {subnet} through WireGuard"
                );
            }
        }
    }
}
