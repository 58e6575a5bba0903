//! End-to-end: a real encrypted mesh between network namespaces. Two locations (`a` with nodes
//! `a1` and `a2`, `b` with `b1`) and an external peer; one `kg` per node with userspace
//! WireGuard and the file backend. Needs root; every test tears its hosts down, even on failure
//! (see `support`).

mod support;

use std::time::{Duration, Instant};

use support::{Cluster, MeshSpec, NODES, namespaces_with, route_line, wait_for};

const ALL: [&str; 3] = ["a1", "a2", "b1"];

#[test]
fn location_granularity_connects_every_pod_from_every_node_and_from_the_peer() {
    if support::skip_unless_root() {
        return;
    }
    let cluster = Cluster::start(&MeshSpec::new("location")).unwrap();
    cluster.ping_all(&ALL, Duration::from_secs(10)).unwrap();

    // a2 is not its location's leader: its link is down and location b is reached through a1.
    let routes = cluster.ns("a2").ip(&["route"]).unwrap();
    let via = route_line(&routes, "10.2.3.0/24").expect("a2 has a route to location b");
    assert!(via.contains("via 192.168.1.11") && via.contains("dev lan0"), "{routes}");
    let link = cluster.ns("a2").ip(&["link", "show", "kilo0"]).unwrap();
    assert!(!link.contains(",UP"), "a non-leader's kilo0 is down: {link}");
    // The leader reaches location b over WireGuard.
    let routes = cluster.ns("a1").ip(&["route"]).unwrap();
    let via = route_line(&routes, "10.2.3.0/24").expect("a1 has a route to location b");
    assert!(via.contains("dev kilo0"), "{routes}");
    let metrics = cluster.metrics("a1").unwrap();
    assert_eq!(metrics.sum("kilo_leader", &[]), 1.0);
    assert_eq!(cluster.metrics("a2").unwrap().sum("kilo_leader", &[]), 0.0);

    // No log line, metric, graph or kgctl output ever contains a private key.
    let mut outputs = Vec::new();
    for node in ["a1", "a2", "b1"] {
        outputs.push((format!("{node} log"), cluster.log(node)));
        outputs.push((format!("{node} /metrics"), cluster.http(node, "/metrics").unwrap().1));
        outputs
            .push((format!("{node} /graph"), cluster.http(node, "/graph?format=dot").unwrap().1));
    }
    let mesh = cluster.mesh.to_str().unwrap().to_string();
    for args in [
        vec!["graph"],
        vec!["validate"],
        vec!["showconf", "node", "a1"],
        vec!["showconf", "peer", "laptop"],
        vec!["plan", "node", "a1", "-o", "json"],
    ] {
        let out = std::process::Command::new(support::kgctl())
            .args(["--backend", "file", "--file", &mesh])
            .args(&args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        outputs.push((format!("kgctl {}", args.join(" ")), text));
    }
    for (name, key) in cluster.private_keys() {
        for (what, text) in &outputs {
            assert!(!text.contains(&key), "{what} contains the private key of {name}");
        }
    }
}

#[test]
fn full_granularity_connects_every_pod_from_every_node_and_from_the_peer() {
    if support::skip_unless_root() {
        return;
    }
    let cluster = Cluster::start(&MeshSpec::new("full")).unwrap();
    cluster.ping_all(&ALL, Duration::from_secs(10)).unwrap();
    // Every node leads its own segment: a2 reaches b1 over its own WireGuard interface.
    let routes = cluster.ns("a2").ip(&["route"]).unwrap();
    let via = route_line(&routes, "10.2.3.0/24").expect("a2 has a route to b1");
    assert!(via.contains("dev kilo0"), "{routes}");
    for (name, ..) in NODES {
        assert_eq!(cluster.metrics(name).unwrap().sum("kilo_leader", &[]), 1.0, "{name}");
    }
}

#[test]
fn editing_the_mesh_file_converges_within_five_seconds_without_restarting_agents() {
    if support::skip_unless_root() {
        return;
    }
    let mut spec = MeshSpec::new("location");
    let mut cluster = Cluster::start(&spec).unwrap();
    cluster.ping_all(&ALL, Duration::from_secs(10)).unwrap();
    let pids: Vec<u32> = cluster.agents.iter().map(|(_, p)| p.pid()).collect();
    let converge = Duration::from_secs(5);

    // Remove b1: location a forgets its routes.
    spec.removed = vec!["b1"];
    cluster.write_mesh(&spec).unwrap();
    let started = Instant::now();
    wait_for(converge, || {
        let a1 = cluster.ns("a1").ip(&["route"])?;
        let a2 = cluster.ns("a2").ip(&["route"])?;
        Ok(route_line(&a1, "10.2.3.0/24").is_none() && route_line(&a2, "10.2.3.0/24").is_none())
    })
    .unwrap_or_else(|e| panic!("removing b1: {e}\n{}", cluster.log("a1")));
    eprintln!("b1 removed: converged in {:?}", started.elapsed());
    assert!(!cluster.ping("a1", "10.2.3.1", Duration::ZERO), "b1's pod is gone from the mesh");

    // Add it back: everything reachable again.
    spec.removed.clear();
    cluster.write_mesh(&spec).unwrap();
    let started = Instant::now();
    cluster.ping_all(&ALL, converge).unwrap();
    eprintln!("b1 added back: converged in {:?}", started.elapsed());
    assert!(started.elapsed() < converge * 2);

    // Move the leader of location a to a2.
    spec.leader = "a2";
    cluster.write_mesh(&spec).unwrap();
    let started = Instant::now();
    wait_for(converge, || {
        let a1 = cluster.ns("a1").ip(&["route"])?;
        let link = cluster.ns("a2").ip(&["link", "show", "kilo0"])?;
        Ok(route_line(&a1, "10.2.3.0/24").is_some_and(|r| r.contains("via 192.168.1.12"))
            && link.contains(",UP"))
    })
    .unwrap_or_else(|e| panic!("moving the leader: {e}\n{}", cluster.log("a2")));
    // The external peer follows the mesh by re-reading `kgctl showconf peer laptop`.
    cluster.peer_daemon.take();
    std::fs::remove_file(cluster.dir.path().join("laptop.conf")).unwrap();
    cluster.start_peer().unwrap();
    cluster.ping_all(&ALL, converge).unwrap();
    eprintln!("leader moved to a2: converged in {:?}", started.elapsed());
    assert_eq!(cluster.metrics("a2").unwrap().sum("kilo_leader", &[]), 1.0);
    assert_eq!(cluster.metrics("a1").unwrap().sum("kilo_leader", &[]), 0.0);

    // The same agents did all of it.
    for (name, process) in &mut cluster.agents {
        assert!(process.child.try_wait().unwrap().is_none(), "kg on {name} exited");
    }
    assert_eq!(pids, cluster.agents.iter().map(|(_, p)| p.pid()).collect::<Vec<_>>());
}

/// 60 s, as the issue asks: 30 resyncs at `--resync-period 2s`, while the other tests run.
const QUIET: Duration = Duration::from_secs(60);

#[test]
fn a_converged_mesh_writes_nothing_during_a_quiet_minute_of_resyncs() {
    if support::skip_unless_root() {
        return;
    }
    let cluster = Cluster::start(&MeshSpec::new("location")).unwrap();
    cluster.ping_all(&ALL, Duration::from_secs(10)).unwrap();
    // Let the device polls see the handshakes the pings caused.
    std::thread::sleep(Duration::from_secs(6));
    let before: Vec<_> = ALL.iter().map(|n| cluster.metrics(n).unwrap()).collect();
    std::thread::sleep(QUIET);
    let after: Vec<_> = ALL.iter().map(|n| cluster.metrics(n).unwrap()).collect();
    for ((name, before), after) in ALL.iter().zip(&before).zip(&after) {
        for metric in ["kilo_wireguard_operations_total", "kilo_netlink_writes_total"] {
            assert_eq!(
                before.sum(metric, &[]),
                after.sum(metric, &[]),
                "{metric} changed on {name} while nothing changed\n{}",
                cluster.log(name)
            );
        }
        assert_eq!(
            before.iptables_writes(),
            after.iptables_writes(),
            "iptables writes on {name} while nothing changed\n{}",
            cluster.log(name)
        );
        assert_eq!(
            before.sum("kilo_errors_total", &[]),
            after.sum("kilo_errors_total", &[]),
            "errors on {name} during the quiet period\n{}",
            cluster.log(name)
        );
        let resyncs =
            after.sum("kilo_reconciles_total", &[]) - before.sum("kilo_reconciles_total", &[]);
        assert!(resyncs >= 10.0, "only {resyncs} reconciles on {name} in {QUIET:?}");
        assert!(before.sum("kilo_wireguard_operations_total", &[]) > 0.0 || *name == "a2");
    }
    cluster.ping_all(&ALL, Duration::from_secs(5)).unwrap();
}

#[test]
fn sigterm_removes_everything_the_agent_created() {
    if support::skip_unless_root() {
        return;
    }
    let mut cluster = Cluster::start(&MeshSpec::new("location")).unwrap();
    cluster.ping_all(&["a1", "a2", "b1"], Duration::from_secs(10)).unwrap();
    for name in ALL {
        let ns = cluster.ns(name);
        assert!(ns.exec_ok(&["iptables-save"]).unwrap().contains("KILO"), "{name} has KILO chains");
        assert!(ns.ip(&["link", "show", "kilo0"]).is_ok(), "{name} has kilo0");
        let stat = ns.ip(&["route", "show", "proto", "static"]).unwrap();
        assert!(!stat.trim().is_empty(), "{name} has Kilo's routes");
    }
    for name in ALL {
        let exited = cluster.agent(name).terminate(Duration::from_secs(10));
        assert!(exited, "kg on {name} did not exit cleanly on SIGTERM\n{}", cluster.log(name));
        let ns = cluster.ns(name);
        let links = ns.ip(&["link"]).unwrap();
        assert!(!links.contains("kilo0"), "{name} still has kilo0: {links}");
        // An empty table does not exist at all: `ip` then fails with "FIB table does not exist".
        let table = ns.ip(&["route", "show", "table", "1107"]).unwrap_or_else(|e| {
            assert!(e.to_string().contains("does not exist"), "{e}");
            String::new()
        });
        assert!(table.trim().is_empty(), "{name} still has routes in table 1107: {table}");
        let stat = ns.ip(&["route", "show", "proto", "static"]).unwrap();
        assert!(stat.trim().is_empty(), "{name} still has static routes: {stat}");
        let rules = ns.ip(&["rule"]).unwrap();
        assert!(!rules.contains("1107"), "{name} still has table-1107 rules: {rules}");
        let saved = ns.exec_ok(&["iptables-save"]).unwrap();
        assert!(!saved.contains("KILO"), "{name} still has KILO chains:\n{saved}");
    }
}

#[test]
fn namespaces_and_processes_are_cleaned_up_when_an_assertion_fails() {
    if support::skip_unless_root() {
        return;
    }
    let seen = std::sync::Mutex::new((Vec::<String>::new(), Vec::<u32>::new()));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let cluster = Cluster::start(&MeshSpec::new("location")).unwrap();
        let mut seen = seen.lock().unwrap();
        seen.0 = cluster.namespaces.iter().map(|(_, ns)| ns.name.clone()).collect();
        seen.1 = cluster.agents.iter().map(|(_, p)| p.pid()).collect();
        seen.1.extend(cluster.peer_daemon.as_ref().map(|p| p.pid()));
        drop(seen);
        panic!("an assertion failed");
    }));
    assert!(result.is_err());
    let (namespaces, pids) = seen.into_inner().unwrap();
    assert_eq!(namespaces.len(), 7);
    assert_eq!(pids.len(), 4);
    let left = namespaces_with(&Cluster::prefix());
    for ns in &namespaces {
        assert!(!left.contains(ns), "namespace {ns} is left over");
    }
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} is still running"
        );
    }
}

#[test]
fn garbage_written_into_the_live_mesh_file_is_refused_and_the_mesh_keeps_working() {
    if support::skip_unless_root() {
        return;
    }
    let cluster = Cluster::start(&MeshSpec::new("location")).unwrap();
    cluster.ping_all(&ALL, Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let before: Vec<_> = ALL.iter().map(|n| cluster.metrics(n).unwrap()).collect();
    // A peer whose key is not base64 appears in the file every agent watches.
    let mut text = std::fs::read_to_string(&cluster.mesh).unwrap();
    text.push_str(
        "\n[[peer]]\nname = \"evil\"\npublic-key = \"not-base64!\"\nallowed-ips = [\"10.5.9.0/24\"]\n",
    );
    std::fs::write(&cluster.mesh, text).unwrap();
    // Every agent reports it, naming the key, and keeps the last good mesh.
    wait_for(Duration::from_secs(5), || {
        Ok(ALL.iter().all(|n| {
            let log = cluster.log(n);
            log.contains("keeping the last good state") && log.contains("public-key")
        }))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log("a1")));
    // A few resyncs later: an error counted, and not one write.
    std::thread::sleep(Duration::from_secs(5));
    for (name, before) in ALL.iter().zip(&before) {
        let after = cluster.metrics(name).unwrap();
        assert!(
            after.sum("kilo_errors_total", &[]) > before.sum("kilo_errors_total", &[]),
            "no error counted on {name}"
        );
        for metric in ["kilo_wireguard_operations_total", "kilo_netlink_writes_total"] {
            assert_eq!(before.sum(metric, &[]), after.sum(metric, &[]), "{metric} on {name}");
        }
        assert_eq!(before.iptables_writes(), after.iptables_writes(), "iptables on {name}");
    }
    cluster.ping_all(&ALL, Duration::from_secs(5)).unwrap();
}
