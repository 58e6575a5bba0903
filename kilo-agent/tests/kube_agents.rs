//! Three agents on the real driver, each through its own `KubeBackend` against the fake API
//! server and with a recording host: they publish their nodes, converge on one topology, and pick
//! up a Peer created through the API.

use std::collections::BTreeMap;
use std::time::Duration;

use kilo_agent::{Recorder, RecordingHost, RunOptions, Shared, SystemClock};
use kilo_backend_k8s::testing::{Collection, FakeApiServer};
use kilo_backend_k8s::{KubeBackend, KubeBackendConfig};
use kilo_core::agent::{Agent, AgentConfig, HostFacts, ReadinessPolicy, Timers};
use kilo_core::plan::{Plan, PlanOptions};
use kilo_core::routes::Interfaces;
use kilo_core::{Cidr, Encapsulation, Granularity, Key, PrivateKey};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// (name, location, pod CIDR, private IP, public IP)
const NODES: [(&str, &str, &str, &str, &str); 3] = [
    ("a", "x", "10.2.1.0/24", "192.168.1.1/24", "203.0.113.1"),
    ("b", "x", "10.2.2.0/24", "192.168.1.2/24", "203.0.113.2"),
    ("c", "y", "10.2.3.0/24", "192.168.2.1/24", "203.0.113.3"),
];
const PEER_KEY: [u8; 32] = [9; 32];

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn node_object(index: usize) -> Value {
    let (name, location, pod, _, _) = NODES[index];
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"topology.kubernetes.io/region": location},
            "annotations": {"unrelated.example/keep": "yes"},
        },
        "spec": {"podCIDR": pod},
    })
}

fn private_key(index: usize) -> PrivateKey {
    PrivateKey::from_random_bytes([index as u8 + 1; 32])
}

fn config(index: usize) -> AgentConfig {
    let interfaces =
        Interfaces { kilo: "kilo0".into(), private: "eth0".into(), tunnel: "tunl0".into() };
    let mut plan = PlanOptions::new(String::new(), interfaces);
    plan.local = true;
    plan.cni = false;
    plan.iptables_forward_rules = false;
    plan.encapsulation = Encapsulation::Never;
    plan.compatibility = None;
    let mut config = AgentConfig::new(plan, private_key(index));
    config.hostname = NODES[index].0.to_string();
    config.granularity = Granularity::Location;
    config.port = 51820;
    config.subnet = cidr("10.4.0.0/16");
    config.service_cidrs = vec![];
    config.readiness = ReadinessPolicy::Live;
    config.publishes = true;
    config.prioritise_private_addresses = false;
    config.timers = Timers::default();
    config.connect = None;
    config
}

/// Each agent's latest plan, by node name.
#[derive(Default)]
struct Observed {
    plans: BTreeMap<String, Plan>,
}

/// Starts agent `index` on the driver (check-ins every 30 s: nothing in this test may depend on
/// one; a node demoted from leader publishes its empty `wireguard-ip` in the step that demotes it).
fn spawn_agent(server: &FakeApiServer, index: usize) -> (JoinHandle<()>, Recorder) {
    let (_, _, _, private, public) = NODES[index];
    let facts = HostFacts {
        private_ip: Some(cidr(private)),
        private_ip6: None,
        public_ip: Some(public.parse().unwrap()),
        cni_compatibility_ip: None,
    };
    spawn_with(server, config(index), facts)
}

/// Starts an agent with `config` on a recording host that detects `facts`.
fn spawn_with(
    server: &FakeApiServer,
    config: AgentConfig,
    facts: HostFacts,
) -> (JoinHandle<()>, Recorder) {
    let backend = KubeBackend::new(server.client(), KubeBackendConfig::default());
    let (host, recorder) = RecordingHost::new(Some(facts));
    let task = tokio::spawn(async move {
        let shutdown = std::future::pending::<()>();
        let run = kilo_agent::run(
            Agent::new(config),
            backend,
            host,
            SystemClock,
            RunOptions::default(),
            Shared::new(),
            shutdown,
        );
        run.await.unwrap();
    });
    (task, recorder)
}

fn observe(recorders: &[Recorder]) -> Observed {
    let mut observed = Observed::default();
    for (index, recorder) in recorders.iter().enumerate() {
        if let Some(plan) = recorder.last_plan() {
            observed.plans.insert(NODES[index].0.to_string(), plan);
        }
    }
    observed
}

/// Waits (up to `secs`) until `done` holds for the agents' latest plans.
async fn wait_until(
    recorders: &[Recorder],
    secs: u64,
    what: &str,
    done: impl Fn(&Observed) -> bool,
) {
    let waited = tokio::time::timeout(Duration::from_secs(secs), async {
        while !done(&observe(recorders)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if waited.is_err() {
        panic!("{what} within {secs} s; plans: {:#?}", observe(recorders).plans);
    }
}

fn wireguard_peer_keys(plan: &Plan) -> Vec<Key> {
    plan.wireguard.iter().flat_map(|wg| wg.peers.iter().map(|p| p.public_key)).collect()
}

/// Every agent applied a plan in which the other location's leader is a WireGuard peer (for the
/// leaders) or the local leader is the gateway (for b).
fn converged(observed: &Observed) -> bool {
    let key = |i: usize| private_key(i).public_key();
    let (Some(a), Some(b), Some(c)) =
        (observed.plans.get("a"), observed.plans.get("b"), observed.plans.get("c"))
    else {
        return false;
    };
    wireguard_peer_keys(a) == [key(2)]
        && wireguard_peer_keys(c) == [key(0)]
        && c.wireguard
            .as_ref()
            .is_some_and(|wg| wg.peers[0].allowed_ips.contains(&cidr(NODES[1].2)))
        && b.routes
            .iter()
            .any(|r| r.dst == cidr(NODES[2].2) && r.via == Some("192.168.1.1".parse().unwrap()))
}

fn has_peer(plan: &Plan, key: Key, allowed: Cidr) -> bool {
    let in_wireguard = plan.wireguard.as_ref().is_some_and(|wg| {
        wg.peers.iter().any(|p| p.public_key == key && p.allowed_ips.contains(&allowed))
    });
    in_wireguard && plan.routes.iter().any(|r| r.dst == allowed)
}

#[tokio::test]
async fn three_agents_converge_through_the_api_server_and_the_leaders_pick_up_a_new_peer() {
    let server = FakeApiServer::start().await;
    for index in 0..3 {
        server.put(Collection::Nodes, node_object(index));
    }
    let (agents, recorders): (Vec<JoinHandle<()>>, Vec<Recorder>) =
        (0..3).map(|index| spawn_agent(&server, index)).unzip();

    wait_until(&recorders, 10, "the three agents converge on one topology", converged).await;
    {
        let observed = observe(&recorders);
        let leaders: Vec<_> = observed
            .plans
            .values()
            .map(|p| (p.node.as_str(), p.leader, p.segment.as_str()))
            .collect();
        assert_eq!(
            leaders,
            [("a", true, "location:x"), ("b", false, "location:x"), ("c", true, "location:y")]
        );
        assert_eq!(observed.plans["a"].interface.address, Some(cidr("10.4.0.1/16")));
        assert_eq!(observed.plans["b"].interface.address, None);
        assert_eq!(observed.plans["c"].interface.address, Some(cidr("10.4.0.2/16")));
        assert!(observed.plans["b"].wireguard.is_none(), "a non-leader has no WireGuard config");
    }

    // Every node on the server carries what its agent published.
    let expected_wireguard_ips = ["10.4.0.1/16", "", "10.4.0.2/16"];
    for (index, wireguard_ip) in expected_wireguard_ips.into_iter().enumerate() {
        let (name, _, _, _, public) = NODES[index];
        let want_key = private_key(index).public_key().to_base64();
        let want_endpoint = format!("{public}:51820");
        let published = || {
            let stored = server.get(Collection::Nodes, name).unwrap();
            stored["metadata"]["annotations"].clone()
        };
        // The wireguard-ip is published after the first plan, so allow it a moment to land.
        let landed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let annotations = published();
                if annotations["kilo.squat.ai/key"] == want_key.as_str()
                    && annotations["kilo.squat.ai/endpoint"] == want_endpoint.as_str()
                    && annotations["kilo.squat.ai/wireguard-ip"] == wireguard_ip
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(landed.is_ok(), "node {name}'s annotations within 5 s: {:#}", published());
        assert_eq!(published()["unrelated.example/keep"], "yes", "node {name}");
    }

    // A Peer created through the API reaches both leaders' plans.
    let peers: kube::Api<kilo_backend_k8s::Peer> = kube::Api::all(server.client());
    let peer: kilo_backend_k8s::Peer = serde_json::from_value(json!({
        "apiVersion": "kilo.squat.ai/v1alpha1", "kind": "Peer",
        "metadata": {"name": "laptop"},
        "spec": {
            "allowedIPs": ["10.5.0.1/32"],
            "publicKey": Key::from_bytes(PEER_KEY).to_base64(),
            "persistentKeepalive": 10,
        },
    }))
    .unwrap();
    peers.create(&Default::default(), &peer).await.unwrap();
    let key = Key::from_bytes(PEER_KEY);
    let allowed = cidr("10.5.0.1/32");
    wait_until(&recorders, 5, "both leaders add the peer", |observed| {
        ["a", "c"].iter().all(|n| observed.plans.get(*n).is_some_and(|p| has_peer(p, key, allowed)))
    })
    .await;
    {
        let observed = observe(&recorders);
        for name in ["a", "c"] {
            let route = observed.plans[name].routes.iter().find(|r| r.dst == allowed).unwrap();
            assert_eq!(route.dev, "kilo0", "{name} routes the peer through WireGuard");
        }
    }

    for agent in &agents {
        agent.abort();
    }
    for agent in agents {
        let _ = agent.await;
    }
    peers.delete("laptop", &Default::default()).await.unwrap();
    for (name, ..) in NODES {
        assert!(server.delete(Collection::Nodes, name).is_some(), "node {name} was stored");
    }
    assert!(server.get(Collection::Peers, "laptop").is_none(), "the peer is gone");
}

/// `kgctl connect`'s loop: the same driver, with the agent in the Peer role.
#[tokio::test]
async fn a_connecting_peer_gets_every_segment_and_routes_through_the_same_driver() {
    let server = FakeApiServer::start().await;
    for index in 0..3 {
        server.put(Collection::Nodes, node_object(index));
    }
    let (agents, recorders): (Vec<JoinHandle<()>>, Vec<Recorder>) =
        (0..3).map(|index| spawn_agent(&server, index)).unzip();
    wait_until(&recorders, 10, "the three agents converge on one topology", converged).await;

    let key = PrivateKey::from_random_bytes(PEER_KEY);
    let peers: kube::Api<kilo_backend_k8s::Peer> = kube::Api::all(server.client());
    let object =
        kilo_backend_k8s::connect::new_peer_object("laptop", cidr("10.5.0.1/32"), 10, &key);
    peers.create(&Default::default(), &object).await.unwrap();
    let mut args =
        kilo_agent::connect::ConnectArgs::new("laptop", cidr("10.5.0.1/32"), key.clone());
    args.allowed_ips = vec![];
    args.clean_up = false;
    args.mtu = 1420;
    args.resync = Duration::from_secs(30);
    args.interface = "kilo0".into();
    args.keepalive = 10;
    args.wireguard = kilo_net_linux::wireguard::WireGuardChoice::Auto;
    args.socket_dir = "/nonexistent".into();
    args.flags = kilo_core::settings::Explicit::default();
    args.kubeconfig = None;
    args.topology_label = "topology.kubernetes.io/region".into();
    let (host, recorder) = RecordingHost::new(None);
    let backend = KubeBackend::new(server.client(), KubeBackendConfig::default());
    let peer = tokio::spawn(async move {
        let run = kilo_agent::run(
            Agent::new(kilo_agent::connect::agent_config(&args)),
            backend,
            host,
            SystemClock,
            RunOptions::default(),
            Shared::new(),
            std::future::pending::<()>(),
        );
        run.await.unwrap();
    });
    let planned = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(plan) =
                recorder.last_plan().filter(|p| p.interface.wireguard.peers.len() == 2)
            {
                return plan;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the peer's plan within 10 s");
    // One WireGuard peer per segment (x through a, y through c), with their pod subnets; the
    // interface is up with the peer's own address; routes to every pod subnet through it.
    let wg = &planned.interface.wireguard;
    assert_eq!(
        wg.peers.iter().map(|p| p.public_key).collect::<Vec<_>>(),
        [private_key(0).public_key(), private_key(2).public_key()]
    );
    assert!(wg.peers[0].allowed_ips.contains(&cidr("10.2.2.0/24")));
    assert!(wg.peers[1].allowed_ips.contains(&cidr("10.2.3.0/24")));
    assert_eq!(wg.interface.as_ref().unwrap().private_key, Some(key));
    assert_eq!(planned.interface.address, Some(cidr("10.5.0.1/32")));
    assert!(planned.interface.up);
    for pod in ["10.2.1.0/24", "10.2.2.0/24", "10.2.3.0/24"] {
        let route = planned.routes.iter().find(|r| r.dst == cidr(pod));
        assert_eq!(route.map(|r| r.dev.as_str()), Some("kilo0"), "{pod}: {:?}", planned.routes);
    }
    assert!(planned.rules.is_empty() && planned.firewall == Default::default());
    peer.abort();
    for agent in agents {
        agent.abort();
    }
}

/// The driver runs the core's probes on the host and feeds the results back: when b's probes
/// through its leader a start failing, b reports a down on its Node and every agent moves
/// location x to b, through the API server.
#[tokio::test]
async fn a_leader_whose_data_path_fails_is_replaced_through_the_api_server() {
    let server = FakeApiServer::start().await;
    for index in 0..3 {
        server.put(Collection::Nodes, node_object(index));
    }
    let (agents, recorders): (Vec<JoinHandle<()>>, Vec<Recorder>) =
        (0..3).map(|index| spawn_agent(&server, index)).unzip();
    recorders[1].lock().probe_answer = Some(true);
    wait_until(&recorders, 10, "the three agents converge on one topology", converged).await;
    let health = |name: &str| {
        let stored = server.get(Collection::Nodes, name).unwrap();
        stored["metadata"]["annotations"]["kilo.squat.ai/leader-health"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    // b goes through a and probes c's WireGuard address (10.4.0.2) every 2 s.
    tokio::time::timeout(Duration::from_secs(10), async {
        while !(health("b") == "v1 via=a" && recorders[1].lock().probes.len() >= 2) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("b never probed through a: {:?}", health("b")));
    assert!(
        recorders[1]
            .lock()
            .probes
            .iter()
            .all(|t| t == &["10.4.0.2".parse::<std::net::IpAddr>().unwrap()])
    );
    // a leads by upstream's order: it has nothing to claim.
    assert_eq!(health("a"), "v1");
    assert!(recorders[0].lock().probes.is_empty(), "a leader does not probe");

    recorders[1].lock().probe_answer = Some(false);
    let b_key = private_key(1).public_key();
    wait_until(&recorders, 30, "b takes over location x", |o| {
        o.plans.get("b").is_some_and(|p| p.leader)
            && o.plans.get("a").is_some_and(|p| !p.leader)
            && o.plans.get("c").is_some_and(|p| wireguard_peer_keys(p) == [b_key])
    })
    .await;
    let b = health("b");
    assert!(b.starts_with("v1 lead=") && b.contains(" down=a@"), "{b}");
    // a cannot probe (its host answers no probe): it names no leader, which would vouch for b.
    assert_eq!(health("a"), "v1");
    // Once a's probes through b are answered, a names b.
    recorders[0].lock().probe_answer = Some(true);
    tokio::time::timeout(Duration::from_secs(10), async {
        while health("a") != "v1 via=b" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("a never named b: {:?}", health("a")));
    for agent in agents {
        agent.abort();
    }
}

/// The IPv6 twin of an IPv4 address of [`NODES`] (`10.2.1.0/24` → `fd02:1::/64`,
/// `192.168.1.2/24` → `fd00:1::2/64`).
fn v6(v4: &str) -> String {
    let (addr, _) = v4.split_once('/').unwrap_or((v4, ""));
    let o: Vec<&str> = addr.split('.').collect();
    match o[0] {
        "10" => format!("fd{:0>2}:{}::/64", o[1], o[2]),
        _ => format!("fd00:{}::{}/64", o[2], o[3]),
    }
}

/// A dual-stack cluster: every agent has `--subnet` per family, every node two pod CIDRs and a
/// private IP of each family. Through the API server they converge on routes of both families,
/// and what they publish keeps upstream's annotations IPv4 (an upstream agent in the same
/// cluster reads them as before), the IPv6 side in `internal-ip6` and `wireguard-ip6`.
#[tokio::test]
async fn dual_stack_agents_publish_ipv4_where_upstream_reads_and_route_both_families() {
    let server = FakeApiServer::start().await;
    for (name, location, pod, _, _) in NODES {
        server.put(
            Collection::Nodes,
            json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"topology.kubernetes.io/region": location}},
                "spec": {"podCIDR": pod, "podCIDRs": [pod, v6(pod)]},
            }),
        );
    }
    let mut agents = Vec::new();
    let mut recorders = Vec::new();
    for (index, (_, _, _, private, public)) in NODES.into_iter().enumerate() {
        let facts = HostFacts {
            private_ip: Some(cidr(private)),
            private_ip6: Some(cidr(&v6(private))),
            public_ip: Some(public.parse().unwrap()),
            cni_compatibility_ip: None,
        };
        let mut config = config(index);
        config.subnet6 = Some(cidr("fd04::/64"));
        let (agent, recorder) = spawn_with(&server, config, facts);
        agents.push(agent);
        recorders.push(recorder);
    }

    let via = |plan: &Plan, dst: &str, gw: &str| {
        plan.routes.iter().any(|r| r.dst == cidr(dst) && r.via == Some(gw.parse().unwrap()))
    };
    wait_until(&recorders, 10, "both families routed everywhere", |observed| {
        let (Some(a), Some(b)) = (observed.plans.get("a"), observed.plans.get("b")) else {
            return false;
        };
        via(b, "10.2.3.0/24", "192.168.1.1")
            && via(b, "fd02:3::/64", "fd00:1::1")
            && via(a, "fd02:3::/64", "fd04::2")
    })
    .await;
    let observed = observe(&recorders);
    let a = &observed.plans["a"];
    assert_eq!(
        (a.interface.address, a.interface.address6),
        (Some(cidr("10.4.0.1/16")), Some(cidr("fd04::1/64")))
    );
    let to_c = a.routes.iter().find(|r| r.dst == cidr("fd02:3::/64")).unwrap();
    assert_eq!((to_c.dev.as_str(), to_c.src), ("kilo0", Some("fd00:1::1".parse().unwrap())));
    let c_peer = &a.wireguard.as_ref().unwrap().peers[0];
    for allowed in ["10.2.3.0/24", "fd02:3::/64", "10.4.0.2/32", "fd04::2/128"] {
        assert!(c_peer.allowed_ips.contains(&cidr(allowed)), "{allowed}: {c_peer:?}");
    }

    // What the leaders published: upstream's annotations IPv4, the IPv6 side beside them.
    let published = [
        ("a", "192.168.1.1/24", "fd00:1::1/64", "10.4.0.1/16", "fd04::1/64"),
        ("c", "192.168.2.1/24", "fd00:2::1/64", "10.4.0.2/16", "fd04::2/64"),
    ];
    for (name, internal, internal6, wireguard, wireguard6) in published {
        let annotations =
            || server.get(Collection::Nodes, name).unwrap()["metadata"]["annotations"].clone();
        let landed = tokio::time::timeout(Duration::from_secs(5), async {
            while annotations()["kilo.squat.ai/wireguard-ip6"] != wireguard6 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(landed.is_ok(), "node {name}: {:#}", annotations());
        let got = annotations();
        let value = |k: &str| got[k].as_str().unwrap_or_default().to_string();
        assert_eq!(
            [
                value("kilo.squat.ai/internal-ip"),
                value("kilo.squat.ai/internal-ip6"),
                value("kilo.squat.ai/wireguard-ip"),
                value("kilo.squat.ai/wireguard-ip6"),
            ],
            [internal, internal6, wireguard, wireguard6],
            "node {name}"
        );
    }
    for agent in agents {
        agent.abort();
        let _ = agent.await;
    }
}
