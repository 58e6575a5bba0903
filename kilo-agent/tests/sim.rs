//! Multi-node simulations on the real driver: several agents share an in-memory mesh source,
//! each applies to a recording host, and tokio's paused clock stands in for the time, so the
//! agents' own timers (check-in, resync, device poll) run as in `kg`.

mod support;

use std::time::Duration;

use kilo_agent::RunOptions;
use kilo_core::agent::HostFacts;
use support::{Cluster, START, cidr, spawn, three_nodes, wireguard_peers};

#[tokio::test(start_paused = true)]
async fn agents_publish_their_nodes_and_converge_on_one_topology() {
    let cluster = Cluster::default();
    let agents = three_nodes(&cluster).await;
    let leaders: Vec<_> = agents
        .iter()
        .map(|a| {
            let p = a.plan();
            (p.node.clone(), p.leader, p.segment.clone())
        })
        .collect();
    assert_eq!(
        leaders,
        [
            ("a".to_string(), true, "location:x".to_string()),
            ("b".to_string(), false, "location:x".to_string()),
            ("c".to_string(), true, "location:y".to_string())
        ]
    );
    let a = cluster.node("a");
    assert_eq!(a.endpoint.as_ref().unwrap().to_string(), "203.0.113.1:51820");
    assert_eq!(a.internal_ip, Some(cidr("192.168.1.1/24")));
    assert_eq!(a.wireguard_ip, Some(cidr("10.4.0.1/16")));
    assert_eq!(cluster.node("b").wireguard_ip, None);
    assert_eq!(wireguard_peers(&agents[0].plan()), 1);
    // The CNI configuration follows each node's pod subnet from the start.
    assert_eq!(agents[1].recorder.lock().cni, [vec![cidr("10.2.2.0/24")]]);
}

#[tokio::test(start_paused = true)]
async fn the_timers_check_in_resync_and_poll_on_their_own() {
    let cluster = Cluster::default();
    let agents = three_nodes(&cluster).await;
    let applied = agents[0].recorder.lock().plans.len();
    tokio::time::sleep(Duration::from_secs(61)).await;
    let r = agents[0].recorder.lock();
    // Two resyncs (every 30 s): host detected, CNI updated, plan applied, firewall repaired.
    assert_eq!(r.detections, 1 + 2, "one detection at start, one per resync");
    assert_eq!(r.firewall_reconciles, 2);
    assert_eq!(r.cni.len(), 1 + 2);
    assert!(r.plans.len() >= applied + 2, "{} plans", r.plans.len());
    // Nothing to discover (no node behind NAT, no peer): the device is never read.
    assert_eq!(r.observes, 0);
    drop(r);
    // Every agent checked in twice: last-seen is the simulated time of the last check-in.
    assert_eq!(cluster.node("c").last_seen, START + 60);
}

#[tokio::test(start_paused = true)]
async fn a_node_whose_agent_dies_drops_out_of_the_others_plans() {
    let cluster = Cluster::default();
    let agents = three_nodes(&cluster).await;
    assert_eq!(wireguard_peers(&agents[0].plan()), 1);
    agents[2].kill();
    // c's last check-in ages past upstream's limit; a's next resync drops it.
    tokio::time::sleep(Duration::from_secs(100)).await;
    assert_eq!(wireguard_peers(&agents[0].plan()), 0, "c is no longer ready");
    assert_eq!(agents[0].shared.metrics.nodes.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_api_outage_keeps_every_node_for_as_long_as_it_lasts() {
    let cluster = Cluster::default();
    let agents = three_nodes(&cluster).await;
    let before: Vec<_> = agents.iter().map(|a| a.plan()).collect();
    cluster.set_down(true);
    tokio::time::sleep(Duration::from_secs(600)).await;
    let during: Vec<_> = agents.iter().map(|a| a.plan()).collect();
    assert_eq!(during, before, "no node turned stale for lack of news");
    cluster.set_down(false);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after: Vec<_> = agents.iter().map(|a| a.plan()).collect();
    assert_eq!(after, before);
    assert_eq!(agents[0].shared.metrics.nodes.get(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_deleted_interface_gets_the_plan_again_at_once() {
    let cluster = Cluster::default();
    let agents = three_nodes(&cluster).await;
    let applied = agents[0].recorder.lock().plans.len();
    agents[0].recorder.delete_interface();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let r = agents[0].recorder.lock();
    assert_eq!(r.plans.len(), applied + 1);
    assert_eq!(r.plans.last(), r.plans.get(applied - 1));
}

#[tokio::test(start_paused = true)]
async fn sigterm_cleans_the_host_up_when_asked() {
    let cluster = Cluster::default();
    let facts = HostFacts {
        private_ip: Some(cidr("192.168.1.1/24")),
        private_ip6: None,
        public_ip: Some("203.0.113.1".parse().unwrap()),
        cni_compatibility_ip: None,
    };
    cluster.put_node(kilo_core::Node {
        name: "a".into(),
        location: "x".into(),
        subnets: vec![cidr("10.2.1.0/24")],
        ..kilo_core::Node::default()
    });
    let mut options = RunOptions::default();
    options.clean_up = true;
    options.clean_up_interface = true;
    let agent = spawn(&cluster, support::config("a", 1), facts, options);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let recorder = agent.recorder.clone();
    agent.stop().await;
    assert_eq!(recorder.lock().cleaned_up, Some(true));
}

#[tokio::test(start_paused = true)]
async fn a_peer_starts_the_device_poll_and_a_scrape_reads_the_device_at_once() {
    let cluster = Cluster::default();
    let agents = three_nodes(&cluster).await;
    cluster.put_peer(kilo_core::Peer {
        name: "laptop".into(),
        allowed_ips: vec![cidr("10.5.0.1/32")],
        public_key: kilo_core::Key::from_bytes([9; 32]),
        ..kilo_core::Peer::default()
    });
    tokio::time::sleep(Duration::from_secs(10)).await;
    // A leader with a peer reads its device every 5 s (NAT discovery); b leads nothing.
    assert_eq!(agents[0].recorder.lock().observes, 2);
    assert_eq!(agents[1].recorder.lock().observes, 0);
    // A scrape of /metrics asks the driver for fresh per-peer figures; scrapes within a second
    // share one read.
    agents[1].shared.refresh_device().await;
    agents[1].shared.refresh_device().await;
    assert_eq!(agents[1].recorder.lock().observes, 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    agents[1].shared.refresh_device().await;
    assert_eq!(agents[1].recorder.lock().observes, 2);
}
