//! `probe::ping_any` against the real kernel, inside network namespaces the tests create and
//! delete (even when they fail): every packet stays in those namespaces. Needs root (CI runs as
//! root); without it the tests skip, saying so.
//!
//! Each probe runs on a thread that entered the prober's namespace before building its tokio
//! runtime, so its raw sockets belong to that namespace.

#[path = "../../kilo-net-linux/tests/root_support/mod.rs"]
mod root_support;

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kilo_agent::probe::ping_any;
use kilo_net_linux::wireguard::netns;

/// The timeout of the probes that expect no answer.
const TIMEOUT: Duration = Duration::from_millis(800);

/// The timeout of the probes that expect an answer: long, since they return at the first reply.
const PATIENT: Duration = Duration::from_secs(10);

/// A network namespace of the test's own; `Drop` deletes it (and the veth ends inside it).
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name =
            format!("kprobe-{tag}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n NAME args…`, which must succeed.
    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// `sysctl -w setting` inside the namespace, which must succeed.
    fn sysctl(&self, setting: &str) {
        run("ip", &["netns", "exec", &self.name, "sysctl", "-q", "-w", setting]);
    }

    /// Gives the namespace `addresses` (CIDRs; IPv6 ones without duplicate address detection)
    /// on its link `link`, and brings the link up.
    fn address(&self, link: &str, addresses: &[&str]) {
        for address in addresses {
            if address.contains(':') {
                self.ip(&["addr", "add", address, "dev", link, "nodad"]);
            } else {
                self.ip(&["addr", "add", address, "dev", link]);
            }
        }
        self.ip(&["link", "set", link, "up"]);
    }

    /// Runs `ping_any(targets, timeout)` from inside this namespace; its answer and how long it
    /// took.
    fn ping_any(&self, targets: &[&str], timeout: Duration) -> (io::Result<bool>, Duration) {
        let targets: Vec<IpAddr> = targets.iter().map(|t| t.parse().unwrap()).collect();
        let path = self.path();
        std::thread::spawn(move || {
            netns::enter(&path).expect("enter the namespace");
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let start = Instant::now();
            let answer = runtime.block_on(ping_any(&targets, timeout));
            (answer, start.elapsed())
        })
        .join()
        .expect("the probe's thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

fn ip(args: &[&str]) {
    run("ip", args);
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().expect("run a command");
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Links `a`'s link `a_link` and `b`'s link `b_link` with a veth pair.
fn veth(a: &Netns, a_link: &str, b: &Netns, b_link: &str) {
    a.ip(&["link", "add", a_link, "type", "veth", "peer", "name", b_link, "netns", &b.name]);
}

/// Two namespaces on one veth pair: `a` is 10.0.0.1 and fd00::1, `b` is 10.0.0.2 and fd00::2.
/// Nobody is 10.0.0.3 or fd00::3.
fn pair() -> (Netns, Netns) {
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    veth(&a, "veth-a", &b, "veth-b");
    a.address("veth-a", &["10.0.0.1/24", "fd00::1/64"]);
    b.address("veth-b", &["10.0.0.2/24", "fd00::2/64"]);
    (a, b)
}

/// Asserts that `answer` is `Ok(expected)`.
fn expect(answer: (io::Result<bool>, Duration), expected: bool, what: &str) -> Duration {
    let (answer, elapsed) = answer;
    match answer {
        Ok(answered) => assert_eq!(answered, expected, "{what} (after {elapsed:?})"),
        Err(e) => panic!("{what}: the probe failed: {e}"),
    }
    elapsed
}

/// Asserts that a probe expected to time out gave up about when it was told to, not later.
fn gave_up_in_time(elapsed: Duration, what: &str) {
    assert!(elapsed >= TIMEOUT, "{what}: gave up before the timeout ({elapsed:?})");
    assert!(elapsed < TIMEOUT + Duration::from_secs(3), "{what}: gave up late ({elapsed:?})");
}

#[test]
fn a_reachable_address_answers() {
    if root_support::skip_unless_root() {
        return;
    }
    let (a, _b) = pair();
    expect(a.ping_any(&["10.0.0.2"], PATIENT), true, "IPv4 over the veth");
    expect(a.ping_any(&["fd00::2"], PATIENT), true, "IPv6 over the veth");
    expect(a.ping_any(&["10.0.0.2", "fd00::2"], PATIENT), true, "both families");
    expect(a.ping_any(&["::ffff:10.0.0.2"], PATIENT), true, "an IPv4-mapped IPv6 address");
    // Loopback: the raw socket sees its own request before the reply, and must skip it.
    expect(a.ping_any(&["127.0.0.1"], PATIENT), true, "IPv4 loopback");
    expect(a.ping_any(&["::1"], PATIENT), true, "IPv6 loopback");
}

#[test]
fn an_address_without_a_host_does_not_answer() {
    if root_support::skip_unless_root() {
        return;
    }
    let (a, _b) = pair();
    for targets in [&["10.0.0.3"][..], &["fd00::3"], &["10.0.0.3", "fd00::3"]] {
        let what = format!("{targets:?}");
        let elapsed = expect(a.ping_any(targets, TIMEOUT), false, &what);
        gave_up_in_time(elapsed, &what);
    }
}

#[test]
fn a_host_that_ignores_pings_does_not_answer() {
    if root_support::skip_unless_root() {
        return;
    }
    let (a, b) = pair();
    b.sysctl("net.ipv4.icmp_echo_ignore_all=1");
    b.sysctl("net.ipv6.icmp.echo_ignore_all=1");
    for targets in [&["10.0.0.2"][..], &["fd00::2"]] {
        let what = format!("{targets:?}, ignoring pings");
        let elapsed = expect(a.ping_any(targets, TIMEOUT), false, &what);
        gave_up_in_time(elapsed, &what);
    }
}

#[test]
fn one_live_target_among_dead_ones_is_enough() {
    if root_support::skip_unless_root() {
        return;
    }
    let (a, _b) = pair();
    for targets in [
        &["10.0.0.3", "10.0.0.2"][..],
        &["fd00::3", "fd00::2"],
        &["10.0.0.3", "fd00::2"],
        &["fd00::3", "10.0.0.2"],
        &["10.0.0.3", "fd00::3", "192.0.2.1", "10.0.0.2"],
    ] {
        expect(a.ping_any(targets, PATIENT), true, &format!("{targets:?}"));
    }
}

#[test]
fn no_targets_or_no_route_answers_false_at_once() {
    if root_support::skip_unless_root() {
        return;
    }
    let (a, _b) = pair();
    // The namespace has no default route: nothing leaves for these.
    for targets in [&[][..], &["192.0.2.1"], &["2001:db8::1"], &["192.0.2.1", "2001:db8::1"]] {
        let what = format!("{targets:?}");
        let elapsed = expect(a.ping_any(targets, PATIENT), false, &what);
        assert!(elapsed < PATIENT, "{what}: waited for the timeout ({elapsed:?})");
    }
}

/// What the leader failover relies on: a non-leader reaches a remote segment through a router
/// (its leader), and the probe fails when that router stops forwarding.
#[test]
fn a_router_that_stops_forwarding_is_detected() {
    if root_support::skip_unless_root() {
        return;
    }
    let (node, leader, remote) = (Netns::new("n"), Netns::new("l"), Netns::new("r"));
    veth(&node, "veth-n", &leader, "veth-ln");
    veth(&leader, "veth-lr", &remote, "veth-r");
    node.address("veth-n", &["10.1.0.1/24", "fd01::1/64"]);
    leader.address("veth-ln", &["10.1.0.2/24", "fd01::2/64"]);
    leader.address("veth-lr", &["10.2.0.2/24", "fd02::2/64"]);
    remote.address("veth-r", &["10.2.0.1/24", "fd02::1/64"]);
    node.ip(&["route", "add", "10.2.0.0/24", "via", "10.1.0.2"]);
    node.ip(&["route", "add", "fd02::/64", "via", "fd01::2"]);
    remote.ip(&["route", "add", "10.1.0.0/24", "via", "10.2.0.2"]);
    remote.ip(&["route", "add", "fd01::/64", "via", "fd02::2"]);
    leader.sysctl("net.ipv4.ip_forward=1");
    leader.sysctl("net.ipv6.conf.all.forwarding=1");
    let targets = ["10.2.0.1", "fd02::1"];
    expect(node.ping_any(&targets, PATIENT), true, "through a forwarding router");
    expect(node.ping_any(&targets[..1], PATIENT), true, "IPv4 through a forwarding router");
    expect(node.ping_any(&targets[1..], PATIENT), true, "IPv6 through a forwarding router");

    leader.sysctl("net.ipv4.ip_forward=0");
    leader.sysctl("net.ipv6.conf.all.forwarding=0");
    let what = "through a router that stopped forwarding";
    let elapsed = expect(node.ping_any(&targets, TIMEOUT), false, what);
    gave_up_in_time(elapsed, what);
    // The router itself still answers: only forwarding stopped.
    expect(node.ping_any(&["10.1.0.2", "fd01::2"], PATIENT), true, "the router itself");
}

#[test]
fn concurrent_probes_do_not_take_each_others_replies() {
    if root_support::skip_unless_root() {
        return;
    }
    let (a, _b) = pair();
    let path = a.path();
    let (alive, dead) = std::thread::spawn(move || {
        netns::enter(&path).expect("enter the namespace");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let alive: Vec<IpAddr> = vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()];
            let dead: Vec<IpAddr> = vec!["10.0.0.3".parse().unwrap(), "fd00::3".parse().unwrap()];
            // Several rounds of live probes run while the dead one waits: it sees all their
            // replies on its own raw sockets, and must take none of them.
            let lives = async {
                let mut answers = Vec::new();
                for _ in 0..4 {
                    answers.push(ping_any(&alive, PATIENT).await);
                }
                answers
            };
            tokio::join!(lives, ping_any(&dead, TIMEOUT))
        })
    })
    .join()
    .expect("the probes' thread");
    for answer in alive {
        assert!(answer.expect("the live probe"), "a live probe got no answer");
    }
    assert!(!dead.expect("the dead probe"), "the dead probe took a live probe's reply");
}

/// Set in the child process of [`without_cap_net_raw_the_probe_cannot_probe`].
const CHILD: &str = "KILO_PROBE_TEST_WITHOUT_CAP_NET_RAW";

/// Runs itself again, as root without `CAP_NET_RAW` (`setpriv` takes it out of the bounding
/// set) in a namespace of its own; the child checks that the probe fails rather than answers.
#[test]
fn without_cap_net_raw_the_probe_cannot_probe() {
    let test = "without_cap_net_raw_the_probe_cannot_probe";
    if std::env::var_os(CHILD).is_some() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        for target in ["127.0.0.1", "::1"] {
            let answer = runtime.block_on(ping_any(&[target.parse().unwrap()], TIMEOUT));
            let error = answer.expect_err("a probe without CAP_NET_RAW");
            assert_eq!(error.kind(), io::ErrorKind::PermissionDenied, "{error}");
            assert!(error.to_string().contains("CAP_NET_RAW"), "{error}");
        }
        return;
    }
    if root_support::skip_unless_root() {
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped {test}: it needs setpriv (util-linux)");
        return;
    }
    let ns = Netns::new("c");
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "setpriv", "--bounding-set", "-net_raw"])
        .args(["--inh-caps", "-net_raw", "--ambient-caps", "-net_raw"])
        .arg(exe)
        .args(["--exact", test, "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the child failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
