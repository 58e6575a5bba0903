//! Properties of the leader election on published health verdicts (`kilo_core::health`).

use proptest::prelude::*;

use kilo_core::health::{ElectionRule, LeaderHealth, all_votes, elect, in_use, preference, votes};
use kilo_core::topology::find_leader;
use kilo_core::{Endpoint, Node};

/// One node: endpoint kind (0 none, 1 public, 2 private), volunteer, and its verdict: a claim's
/// time, the node it goes through, the nodes it reports down.
type Spec = (u8, bool, Option<i64>, Option<usize>, Vec<usize>);

fn spec() -> impl Strategy<Value = Spec> {
    (
        0u8..3,
        any::<bool>(),
        prop::option::of(0i64..4),
        prop::option::of(0usize..6),
        prop::collection::vec(0usize..6, 0..3),
    )
}

fn nodes(specs: &[Spec], with_health: bool) -> Vec<Node> {
    let n = specs.len();
    let name = |i: usize| format!("n{}", i % n);
    specs
        .iter()
        .enumerate()
        .map(|(i, (endpoint, leader, lead, via, down))| Node {
            name: name(i),
            endpoint: match endpoint {
                0 => None,
                1 => Some(format!("8.8.8.{i}:51820").parse::<Endpoint>().unwrap()),
                _ => Some(format!("10.0.0.{i}:51820").parse::<Endpoint>().unwrap()),
            },
            leader: *leader,
            health: with_health.then(|| LeaderHealth {
                lead: *lead,
                via: via.map(name),
                down: down.iter().map(|&d| (name(d), 1)).collect(),
            }),
            ..Node::default()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Without verdicts, or with verdicts that claim and report nothing, the leader is
    /// upstream's, and the first of upstream's order of preference is upstream's leader.
    #[test]
    fn without_reports_the_election_is_upstreams(specs in prop::collection::vec(spec(), 1..6)) {
        let plain = nodes(&specs, false);
        let upstream = find_leader(&plain);
        prop_assert_eq!(preference(&plain)[0], upstream);
        prop_assert!(!in_use(&plain));
        let (leader, election) = elect(&plain, false);
        prop_assert_eq!(leader, upstream);
        prop_assert_eq!(election.rule, ElectionRule::Upstream);
        let mut quiet = nodes(&specs, true);
        for n in &mut quiet {
            n.health = Some(LeaderHealth::default());
        }
        prop_assert!(in_use(&quiet));
        prop_assert_eq!(elect(&quiet, true).0, upstream);
    }

    /// The elected leader is not reported down unless every candidate is; a node without an
    /// endpoint is never elected while one with an endpoint exists; an elected node passes
    /// over only nodes reported down.
    #[test]
    fn the_leader_is_healthy_whenever_a_healthy_candidate_exists(
        specs in prop::collection::vec(spec(), 1..6),
    ) {
        let group = nodes(&specs, true);
        let (leader, election) = elect(&group, true);
        prop_assert!(leader < group.len());
        let dialable = |n: &Node| n.endpoint.is_some();
        let any_dialable = group.iter().any(dialable);
        prop_assert!(!any_dialable || dialable(&group[leader]));
        prop_assert_eq!(election.votes, votes(&group, leader));
        let each: Vec<_> = (0..group.len()).map(|i| votes(&group, i)).collect();
        prop_assert_eq!(all_votes(&group), each);
        let candidates: Vec<usize> =
            (0..group.len()).filter(|&i| !any_dialable || dialable(&group[i])).collect();
        let healthy_exists = candidates.iter().any(|&i| !votes(&group, i).is_down());
        if group.len() > 1 {
            prop_assert_eq!(election.healthy(), healthy_exists, "{:?}", election);
            prop_assert_eq!(election.rule == ElectionRule::AllDown, !healthy_exists);
        }
        for name in &election.passed_over {
            let i = group.iter().position(|n| &n.name == name).unwrap();
            prop_assert!(votes(&group, i).is_down(), "{} passed over while healthy", name);
        }
    }
}
