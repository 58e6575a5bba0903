//! Leader failover on data-path health, on real kernels: four `kg` agents with the Kubernetes
//! backend run in network namespaces against the loopback fake API server (`support::kube`),
//! nodes `a1`, `a2` and `a3` in location `a` (one LAN), `b1` in location `b`. `a1` leads `a` and
//! then stops forwarding (an nftables table of the test's own drops everything on its forward
//! hook) while its agent keeps running and checking in. The non-leaders `a2` and `a3` find out by
//! probing through it, publish their verdicts (`kilo.squat.ai/leader-health`), every agent elects
//! `a2` instead, and the pods reach each other again. Once `a1` forwards again nothing moves back:
//! `a2` keeps leading, with no further leader change, for 90 s (`KILO_E2E_FAILOVER_WATCH_SECS`
//! sets another duration, e.g. 600 for the ten-minute figure of BENCHMARKS.md).
//!
//! Upstream re-elects only when the leader stops checking in, so there location `a` would stay
//! cut off from `b` for as long as `a1` does not forward.

mod support;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use kilo_backend_k8s::testing::Collection;
use support::kube::KubeMesh;
use support::{Cluster, Host, wait_for};

/// The third node of location a.
const A3: Host = ("a3", "a", "203.0.113.13", "192.168.1.13/24", 4);

/// Pod to pod across the locations, through the non-leaders a2 and a3 and the leaders a1 and b1.
const PINGS: [(&str, &str); 5] = [
    ("a2", "10.2.3.1"),
    ("a3", "10.2.3.1"),
    ("b1", "10.2.2.1"),
    ("b1", "10.2.4.1"),
    ("b1", "10.2.1.1"),
];

/// The nodes of location a.
const LOCATION_A: [&str; 3] = ["a1", "a2", "a3"];

/// Every node.
const ALL: [&str; 4] = ["a1", "a2", "a3", "b1"];

/// The annotation every node publishes its verdict on.
const HEALTH: &str = "kilo.squat.ai/leader-health";

/// Whether one ping (one second timeout) succeeds for every pair.
fn all_ping(cluster: &Cluster, pairs: &[(&str, &str)]) -> bool {
    pairs.iter().all(|(from, dst)| cluster.ping(from, dst, Duration::ZERO))
}

/// Pings across the locations every two seconds for `duration`, calling `each` after every
/// round; the seconds during which some ping failed.
fn outage_seconds(
    cluster: &Cluster,
    duration: Duration,
    mut each: impl FnMut() -> Result<()>,
) -> Result<u64> {
    let start = Instant::now();
    let mut failed = 0;
    while start.elapsed() < duration {
        let round = Instant::now();
        let ok = all_ping(cluster, &PINGS);
        each()?;
        std::thread::sleep(Duration::from_secs(2).saturating_sub(round.elapsed()));
        if !ok {
            failed += round.elapsed().as_secs().max(1);
        }
    }
    Ok(failed)
}

/// Location a's leader as the agent on `name` sees it, if exactly one node is reported.
fn leader_of_a(cluster: &Cluster, name: &str) -> Result<Option<&'static str>> {
    let metrics = cluster.metrics(name)?;
    let leaders: Vec<&str> = LOCATION_A
        .into_iter()
        .filter(|node| {
            metrics.sum("kilo_location_leader", &["location=\"a\"", &format!("node=\"{node}\"")])
                == 1.0
        })
        .collect();
    Ok(match leaders[..] {
        [one] => Some(one),
        _ => None,
    })
}

/// Location a's leader changes counted by the agent on `name`.
fn changes_of_a(cluster: &Cluster, name: &str) -> Result<f64> {
    Ok(cluster.metrics(name)?.sum("kilo_location_leader_changes_total", &["location=\"a\""]))
}

/// Node `name`'s published verdict (empty without one).
fn verdict(mesh: &KubeMesh, name: &str) -> String {
    mesh.server
        .get(Collection::Nodes, name)
        .and_then(|node| node["metadata"]["annotations"][HEALTH].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Everything that helps when the test fails: verdicts, leaders, routes, logs.
fn diagnostics(mesh: &KubeMesh) -> String {
    let cluster = &mesh.cluster;
    let mut out = String::new();
    for name in ALL {
        let leader = leader_of_a(cluster, name).ok().flatten();
        let changes = changes_of_a(cluster, name).unwrap_or(-1.0);
        let routes = cluster.ns(name).ip(&["route"]).unwrap_or_default();
        out += &format!(
            "--- {name}: verdict {:?}, leader of a {leader:?}, changes {changes}\n\
             --- {name} routes:\n{routes}--- {name} log:\n{}",
            verdict(mesh, name),
            cluster.log(name)
        );
    }
    out
}

#[test]
fn a_leader_that_stops_forwarding_is_replaced_and_stays_replaced() -> Result<()> {
    if support::skip_unless_root() {
        return Ok(());
    }
    let mut mesh = KubeMesh::build_with(&[A3])?;
    mesh.start_agents()?;
    let cluster = &mesh.cluster;

    // 1. The mesh works, and every agent agrees that a1 leads location a (upstream's order: every
    // endpoint is public, a1 sorts first), whatever order the agents started in.
    for (from, dst) in PINGS {
        ensure!(
            cluster.ping(from, dst, Duration::from_secs(30)),
            "{from} -> {dst}\n{}",
            diagnostics(&mesh)
        );
    }
    wait_for(Duration::from_secs(60), || {
        Ok(ALL.iter().all(|name| leader_of_a(cluster, name).ok().flatten() == Some("a1"))
            && verdict(&mesh, "a1") == "v1"
            && verdict(&mesh, "a2").contains("via=a1")
            && verdict(&mesh, "a3").contains("via=a1"))
    })
    .with_context(|| format!("the agents never agreed that a1 leads a\n{}", diagnostics(&mesh)))?;
    // Settled: six seconds without a lost ping.
    wait_for(Duration::from_secs(60), || {
        Ok(outage_seconds(cluster, Duration::from_secs(6), || Ok(()))? == 0)
    })
    .with_context(|| format!("the mesh never settled\n{}", diagnostics(&mesh)))?;
    let mut before = Vec::new();
    for name in ALL {
        before.push(changes_of_a(cluster, name)?);
    }
    eprintln!("location a's leader changes before the fault {ALL:?}: {before:?}");

    // 2. a1 stops forwarding; its agent keeps running and checking in. The pings that go
    // through it: from a2 and a3 to b1's pod, from b1 to theirs.
    let through: [(&str, &str); 4] =
        [("a2", "10.2.3.1"), ("a3", "10.2.3.1"), ("b1", "10.2.2.1"), ("b1", "10.2.4.1")];
    let broken_ns = cluster.ns("a1");
    broken_ns.exec_ok(&["nft", "add", "table", "inet", "breaker"])?;
    let broken = Instant::now();
    broken_ns.exec_ok(&[
        "nft",
        "add",
        "chain",
        "inet",
        "breaker",
        "stop",
        "{ type filter hook forward priority -300; policy drop; }",
    ])?;
    let mut lost = false;
    let recovered = loop {
        let round = Instant::now();
        let ok = all_ping(cluster, &through);
        lost |= !ok;
        if ok && lost {
            break broken.elapsed();
        }
        ensure!(
            broken.elapsed() < Duration::from_secs(60),
            "no failover within 60 s of a1's forwarding stopping (lost: {lost})\n{}",
            diagnostics(&mesh)
        );
        std::thread::sleep(Duration::from_millis(500).saturating_sub(round.elapsed()));
    };
    eprintln!(
        "failover: pods reach each other again {:.1} s after a1 stopped forwarding",
        recovered.as_secs_f64()
    );
    // Every agent agrees on a2 (next in upstream's order), and saw one more change.
    wait_for(Duration::from_secs(20), || {
        Ok(ALL.iter().all(|name| leader_of_a(cluster, name).ok().flatten() == Some("a2")))
    })
    .with_context(|| format!("not every agent sees a2 lead a\n{}", diagnostics(&mesh)))?;
    for (name, before) in ALL.iter().zip(&before) {
        ensure!(
            changes_of_a(cluster, name)? == before + 1.0,
            "{name} did not count exactly one more leader change\n{}",
            diagnostics(&mesh)
        );
    }
    // a2 claims the leadership it took over; a3 names a2 once a probe through it succeeded.
    wait_for(Duration::from_secs(10), || {
        let (a2, a3) = (verdict(&mesh, "a2"), verdict(&mesh, "a3"));
        Ok(a2.contains("lead=")
            && a2.contains("down=a1@")
            && a3.contains("via=a2")
            && a3.contains("down=a1@"))
    })
    .with_context(|| format!("verdicts after the failover\n{}", diagnostics(&mesh)))?;
    let log = cluster.log("b1");
    let changed = log.lines().find(|l| l.contains("location leader changed"));
    ensure!(changed.is_some(), "b1 did not log the leader change:\n{log}");
    eprintln!("b1 logged: {}", changed.unwrap_or_default());
    for name in ALL {
        eprintln!("{name} publishes {:?}", verdict(&mesh, name));
    }

    // 3. a1 forwards again: nothing moves back, the pods keep reaching each other.
    broken_ns.exec_ok(&["nft", "delete", "table", "inet", "breaker"])?;
    let watch = std::env::var("KILO_E2E_FAILOVER_WATCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90);
    let lost = outage_seconds(cluster, Duration::from_secs(watch), || {
        for (name, before) in ALL.iter().zip(&before) {
            ensure!(
                leader_of_a(cluster, name)? == Some("a2")
                    && changes_of_a(cluster, name)? == before + 1.0,
                "{name}: location a's leader moved after a1 recovered\n{}",
                diagnostics(&mesh)
            );
        }
        Ok(())
    })?;
    eprintln!("after a1 recovered: {lost} s of failed pings in {watch} s, no leader change");
    // One lost ping round (a few seconds) is tolerated so that a scheduling hiccup of a loaded
    // machine is not taken for a flap.
    ensure!(lost <= 4, "after a1 recovered, pods lost each other for {lost} s\n{}", {
        diagnostics(&mesh)
    });

    // 4. Clean exits.
    for (name, agent) in &mut mesh.agents {
        assert!(agent.terminate(Duration::from_secs(20)), "kg on {name} exits cleanly");
    }
    Ok(())
}
