//! The firewall on a real host, one `kg` in a network namespace of its own (file backend,
//! userspace WireGuard): `--firewall auto` (the default) picks what the host already uses, and an
//! agent killed with SIGKILL in the middle of applying a large plan, then restarted, leaves exactly
//! the planned routes, rules and firewall rules, with either firewall. Needs root.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Cluster, Netns, Process, dump, surplus, wait_for};

/// One host: its namespace, key, mesh file and logs.
struct Host {
    ns: Netns,
    dir: tempfile::TempDir,
    mesh: PathBuf,
}

impl Host {
    /// A fresh namespace and a mesh of `nodes` nodes in full granularity whose first node
    /// (`node0`) is this host; the others have random keys and endpoints in 198.18.0.0/15 (no
    /// packet is sent to them: they never answer a handshake and no traffic is routed).
    fn new(tag: &str, nodes: usize) -> Host {
        let ns = Netns::new(format!("{}{tag}", Cluster::prefix())).unwrap();
        let dir = tempfile::Builder::new().prefix("kilo-e2e-fw-").tempdir().unwrap();
        let key = dir.path().join("key");
        let public = Command::new(env!("CARGO_BIN_EXE_kg"))
            .arg("--key-file")
            .arg(&key)
            .arg("pubkey")
            .output()
            .unwrap();
        assert!(public.status.success(), "kg pubkey: {public:?}");
        let public = String::from_utf8(public.stdout).unwrap().trim().to_string();
        let mut toml = String::from("[mesh]\ngranularity = \"full\"\n");
        for i in 0..nodes {
            let key = if i == 0 { public.clone() } else { fake_key(i) };
            toml.push_str(&format!(
                "\n[[node]]\nname = \"node{i}\"\npublic-key = \"{key}\"\n\
                 endpoint = \"198.18.{}.{}:51820\"\nsubnet = \"10.{}.{}.0/24\"\n",
                i / 250,
                i % 250 + 1,
                16 + i / 256,
                i % 256
            ));
        }
        let mesh = dir.path().join("mesh.toml");
        std::fs::write(&mesh, toml).unwrap();
        Host { ns, dir, mesh }
    }

    /// Starts `kg`, with `--firewall firewall` when given (the default, auto, otherwise).
    fn start(&self, firewall: Option<&str>) -> Process {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("kg.log"))
            .unwrap();
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.ns.name, env!("CARGO_BIN_EXE_kg"), "--backend", "file"])
            .arg("--file")
            .arg(&self.mesh)
            .args(["--hostname", "node0", "--wireguard", "userspace", "--wireguard-socket-dir"])
            .arg(self.dir.path().join("wg"))
            .args(["--encapsulate", "never", "--cni=false", "--key-file"])
            .arg(self.dir.path().join("key"))
            .args(["--listen", "127.0.0.1:1107", "--log-format", "human", "--resync-period", "2s"]);
        if let Some(firewall) = firewall {
            command.args(["--firewall", firewall]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Process { child, what: format!("kg in {}", self.ns.name) }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kg.log")).unwrap_or_default()
    }

    fn wait_healthy(&self) {
        let url = "http://127.0.0.1:1107/health";
        wait_for(Duration::from_secs(120), || {
            Ok(self.ns.exec_ok(&["curl", "-sf", "-o", "/dev/null", url]).is_ok())
        })
        .unwrap_or_else(|e| panic!("kg never became healthy ({e}); log:\n{}", self.log()));
    }

    fn stop(&self, agent: &mut Process) {
        assert!(
            agent.terminate(Duration::from_secs(60)),
            "kg did not exit cleanly\n{}",
            self.log()
        );
    }
}

/// A WireGuard public key (32 bytes in base64: 43 characters and `=`), different for every `i`.
fn fake_key(i: usize) -> String {
    format!("{i:A>42}A=")
}

/// Kilo's native nftables tables in the namespace.
fn kilo_tables(ns: &Netns) -> Vec<String> {
    let tables = ns.exec_ok(&["nft", "list", "tables"]).unwrap();
    tables.lines().filter(|l| l.contains(" kilo")).map(str::to_string).collect()
}

#[test]
fn auto_uses_nftables_on_a_fresh_host_and_iptables_where_the_host_has_iptables_rules() {
    if support::skip_unless_root() {
        return;
    }
    let host = Host::new("fwauto", 3);
    let foreign = ["-A", "INPUT", "-s", "10.9.0.1/32", "-j", "ACCEPT"];

    // A fresh host: native nftables, nothing in iptables.
    let mut agent = host.start(None);
    host.wait_healthy();
    assert!(host.log().contains("firewall: native nftables"), "{}", host.log());
    assert_eq!(kilo_tables(&host.ns), ["table ip kilo", "table ip6 kilo6"]);
    let saved = host.ns.exec_ok(&["iptables-save"]).unwrap();
    assert!(!saved.contains("KILO"), "iptables untouched on a fresh host:\n{saved}");
    host.stop(&mut agent);
    assert!(kilo_tables(&host.ns).is_empty(), "SIGTERM removes the tables");

    // An agent killed with its tables in place; then the host starts using iptables.
    let mut agent = host.start(Some("nftables"));
    host.wait_healthy();
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    assert_eq!(kilo_tables(&host.ns).len(), 2, "the killed agent's tables stay");
    let mut add = vec!["iptables"];
    add.extend(foreign);
    host.ns.exec_ok(&add).unwrap();

    // Now auto picks iptables and removes the tables native nftables left.
    let mut agent = host.start(None);
    host.wait_healthy();
    assert!(host.log().contains("firewall: iptables"), "{}", host.log());
    assert!(kilo_tables(&host.ns).is_empty(), "{:?}", kilo_tables(&host.ns));
    let saved = host.ns.exec_ok(&["iptables-save"]).unwrap();
    assert!(saved.contains("-A KILO-NAT"), "{saved}");
    assert!(saved.contains("-A INPUT -s 10.9.0.1/32 -j ACCEPT"), "{saved}");
    host.stop(&mut agent);
    let saved = host.ns.exec_ok(&["iptables-save"]).unwrap();
    assert!(!saved.contains("KILO"), "{saved}");
    assert!(saved.contains("-A INPUT -s 10.9.0.1/32 -j ACCEPT"), "others' rules stay:\n{saved}");
}

/// Whether a [`dump`] line is a firewall entry (a rule or chain of Kilo's in `iptables`, or a
/// line of Kilo's nftables tables).
fn is_firewall(line: &str) -> bool {
    line.starts_with("nft ") || line.contains("KILO") || line.contains("Kilo")
}

/// Kills `kg` with SIGKILL at several points of applying a 400-peer plan (when its first route
/// is written, when its first firewall entry is, and shortly after that), restarts it each time,
/// and checks that the restarted agent leaves exactly what an agent on the fresh host left (no
/// duplicate, nothing stale, nothing missing), and that SIGTERM then leaves nothing. The
/// userspace device, and with it the routes through it, goes with the killed process; the
/// firewall entries stay, as far as the apply got.
fn killed_during_apply_then_restarted_leaves_exactly_the_plan(firewall: &str) {
    let host = Host::new(&format!("fwkill{}", &firewall[..3]), 400);
    let pristine = dump(&host.ns);

    let mut agent = host.start(Some(firewall));
    host.wait_healthy();
    // A resync, so that the reference is the steady state.
    std::thread::sleep(Duration::from_secs(3));
    let planned = dump(&host.ns);
    let planned_firewall = planned.iter().filter(|l| is_firewall(l)).count();
    host.stop(&mut agent);
    let left = surplus(&dump(&host.ns), &pristine);
    assert!(left.is_empty(), "SIGTERM left:\n{}", left.join("\n"));

    // (where, whether to wait for a firewall entry rather than a route, then how long).
    let points = [
        ("its first route", false, 0),
        ("its first firewall entry", true, 0),
        ("20 ms after its first firewall entry", true, 20),
        ("100 ms after its first firewall entry", true, 100),
    ];
    for (point, rule, after) in points {
        let mut agent = host.start(Some(firewall));
        let reached = |l: &String| if rule { is_firewall(l) } else { l.starts_with("route ") };
        wait_for(Duration::from_secs(60), || Ok(dump(&host.ns).iter().any(reached))).unwrap();
        std::thread::sleep(Duration::from_millis(after));
        agent.child.kill().unwrap();
        agent.child.wait().unwrap();
        let at_kill = dump(&host.ns).iter().filter(|l| is_firewall(l)).count();
        eprintln!(
            "--firewall {firewall}: killed at {point}: {at_kill} of {planned_firewall} firewall entries"
        );
        if firewall == "nftables" {
            // One transaction per apply: none of the rule set, or all of it.
            assert!(
                at_kill == 0 || at_kill == planned_firewall,
                "killed at {point}: {at_kill} of {planned_firewall} nftables entries"
            );
        }

        let mut agent = host.start(Some(firewall));
        host.wait_healthy();
        std::thread::sleep(Duration::from_secs(3));
        let now = dump(&host.ns);
        let (stale, missing) = (surplus(&now, &planned), surplus(&planned, &now));
        assert!(
            stale.is_empty() && missing.is_empty(),
            "--firewall {firewall}, killed at {point}: {} stale (or duplicated), {} missing:\n{}\n---\n{}",
            stale.len(),
            missing.len(),
            stale.join("\n"),
            missing.join("\n")
        );
        host.stop(&mut agent);
        let left = surplus(&dump(&host.ns), &pristine);
        assert!(left.is_empty(), "killed at {point}, then SIGTERM left:\n{}", left.join("\n"));
    }
}

#[test]
fn killed_during_an_iptables_apply_a_restarted_agent_leaves_exactly_the_plan() {
    if support::skip_unless_root() {
        return;
    }
    killed_during_apply_then_restarted_leaves_exactly_the_plan("iptables");
}

#[test]
fn killed_during_an_nftables_apply_a_restarted_agent_leaves_exactly_the_plan() {
    if support::skip_unless_root() {
        return;
    }
    killed_during_apply_then_restarted_leaves_exactly_the_plan("nftables");
}
