//! Issue: SIGTERM with a slow API server must still clean the host up and exit within
//! Kubernetes' 30 s grace period. Three `kg` agents with the Kubernetes backend run in network
//! namespaces (see `support`) against the loopback fake API server, which each reaches through a
//! forwarder on 127.0.0.1:6443 inside its namespace. Once the mesh is up, the API server answers
//! every request only after two minutes, and `a1` gets SIGTERM.
//!
//! Before the fix, the agent removed its node's annotations first, with no timeout, and only then
//! the firewall rules and routes: it was still running long after the grace period (when the
//! kubelet would kill it), with everything left on the host.

mod support;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kilo_backend_k8s::testing::FakeApiServer;
use support::Cluster;
use support::kube::KubeMesh;

/// How long the slow API server takes to answer.
const SLOW: Duration = Duration::from_secs(120);

/// Kubernetes' default termination grace period.
const GRACE: Duration = Duration::from_secs(30);

/// What Kilo may own on a host ([`support::dump`]: routes, policy rules, iptables rules and
/// chains, Kilo's nftables tables; the agents run with the default `--firewall auto`, which picks
/// native nftables in these fresh namespaces).
fn owned(cluster: &Cluster, name: &str) -> Result<Vec<String>> {
    Ok(support::dump(cluster.ns(name)))
}

#[test]
fn sigterm_with_a_slow_api_cleans_the_host_first_and_exits_within_the_grace_period() -> Result<()> {
    if support::skip_unless_root() {
        return Ok(());
    }
    sigterm_with_a_slow_api(false)
}

#[test]
fn sigterm_while_a_check_in_waits_on_a_slow_api_still_cleans_up_in_time() -> Result<()> {
    if support::skip_unless_root() {
        return Ok(());
    }
    sigterm_with_a_slow_api(true)
}

/// Brings the mesh up, makes the API slow and sends `a1` SIGTERM: at once, or (`mid_check_in`)
/// once `a1`'s next check-in is waiting for the API.
fn sigterm_with_a_slow_api(mid_check_in: bool) -> Result<()> {
    let mut mesh = KubeMesh::build()?;
    let pristine = owned(&mesh.cluster, "a1")?;
    mesh.start_agents()?;
    let (cluster, server) = (&mesh.cluster, &mesh.server);
    // a1 leads location a: it has a route to location b's pods and its firewall rules.
    support::wait_for(Duration::from_secs(30), || {
        Ok(cluster.ns("a1").ip(&["route"])?.contains("10.2.3.0/24 "))
    })
    .with_context(|| format!("a1 never routed to b1's pods; log:\n{}", cluster.log("a1")))?;
    let configured = owned(cluster, "a1")?;
    assert!(
        configured.iter().any(|l| l.starts_with("iptables-save") || l.starts_with("nft "))
            && configured.len() > pristine.len(),
        "a1 configured its host: {configured:#?}"
    );

    server.set_delay(SLOW);
    if mid_check_in {
        // The agent checks in every 30 s; the request is recorded before the delay.
        let patches = |s: &FakeApiServer| {
            s.requests().iter().filter(|r| r.starts_with("PATCH /api/v1/nodes/a1")).count()
        };
        let before = patches(server);
        support::wait_for(Duration::from_secs(40), || Ok(patches(server) > before))
            .context("a1 did not check in")?;
    }
    let a1 = &mut mesh.agents[0].1;
    let started = Instant::now();
    support::sh("kill", &["-TERM", &a1.pid().to_string()])?;
    let mut exited = None;
    while started.elapsed() < GRACE * 2 {
        if let Some(status) = a1.child.try_wait()? {
            exited = Some((started.elapsed(), status));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<String> =
        owned(cluster, "a1")?.into_iter().filter(|l| !pristine.contains(l)).collect();
    server.set_delay(Duration::ZERO);
    let log = cluster.log("a1");
    eprintln!(
        "SIGTERM with an API answering after {SLOW:?}: exited {}; {} entries left on the host",
        exited.map_or(format!("not within {:?}", GRACE * 2), |(t, s)| format!("after {t:?} ({s})")),
        left.len()
    );
    let (took, status) = exited.with_context(|| format!("kg did not exit; log:\n{log}"))?;
    assert!(took < GRACE, "kg took {took:?}, past the grace period; log:\n{log}");
    assert!(status.success(), "kg exited with {status}; log:\n{log}");
    assert_eq!(left, Vec::<String>::new(), "left on the host; log:\n{log}");
    // Every step's outcome is logged; the annotations are given up on, not waited for.
    assert!(log.contains("clean-up: host done"), "{log}");
    assert!(log.contains("clean-up: node annotations: no answer in time"), "{log}");
    for (name, agent) in &mut mesh.agents[1..] {
        assert!(agent.terminate(Duration::from_secs(20)), "kg on {name} exits cleanly");
    }
    Ok(())
}
