//! Kernel-level failures name the cause and the fix: each test runs `kg` (file backend) in a
//! network namespace of its own and reads its error. Needs root; namespaces are removed even when
//! a test fails.

#[path = "support/root.rs"]
mod root;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().expect("runs");
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A network namespace with `lo` up and `v0` (10.9.0.1/24, one end of a veth pair), removed on
/// drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("kg-err-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        let ns = Netns(name);
        run("ip", &["netns", "add", &ns.0]);
        for args in [
            &["link", "set", "lo", "up"][..],
            &["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
            &["addr", "add", "10.9.0.1/24", "dev", "v0"],
            &["link", "set", "v0", "up"],
        ] {
            let mut all = vec!["-n", &ns.0];
            all.extend_from_slice(args);
            run("ip", &all);
        }
        ns
    }

    /// Holds UDP `port` on every IPv4 address inside the namespace until the socket is dropped.
    fn hold_udp_port(&self, port: u16) -> std::net::UdpSocket {
        let path = PathBuf::from("/run/netns").join(&self.0);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(path).expect("namespace file");
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            std::net::UdpSocket::bind(("0.0.0.0", port)).expect("binds the port")
        })
        .join()
        .expect("thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A directory with a key file and a mesh file holding node `a` with that key.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(internal_ip: &str) -> Files {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let key = dir.path().join("key");
        let out = Command::new(env!("CARGO_BIN_EXE_kg"))
            .args(["pubkey", "--key-file"])
            .arg(&key)
            .output()
            .expect("kg pubkey");
        let public = String::from_utf8(out.stdout).expect("UTF-8").trim().to_string();
        let mesh = format!(
            "[[node]]\nname = \"a\"\npublic-key = \"{public}\"\nendpoint = \"10.9.0.1:51820\"\n\
             internal-ip = \"{internal_ip}\"\nsubnet = \"10.2.1.0/24\"\n"
        );
        std::fs::write(dir.path().join("mesh.toml"), mesh).unwrap();
        std::fs::create_dir(dir.path().join("wg")).unwrap();
        Files { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Gives the key file and the socket directory to `uid`.
    fn chown(&self, uid: u32) {
        for name in ["key", "wg"] {
            std::os::unix::fs::chown(self.path(name), Some(uid), Some(uid)).unwrap();
        }
    }
}

/// What a run of `kg` wrote (stdout and stderr) and its exit code (`None`: stopped by the test).
struct Ran {
    code: Option<i32>,
    output: String,
}

/// Runs `prefix... kg <agent flags> extra...` in `ns` until it exits or its output satisfies
/// `until` (then SIGTERM), for at most 20 s.
fn kg(ns: &Netns, files: &Files, prefix: &[&str], extra: &[&str], until: &str) -> Ran {
    kg_then(ns, files, prefix, extra, until, || {})
}

/// As [`kg`], running `then` once the output satisfies `until`, before stopping `kg`.
fn kg_then(
    ns: &Netns,
    files: &Files,
    prefix: &[&str],
    extra: &[&str],
    until: &str,
    then: impl FnOnce(),
) -> Ran {
    let mut then = Some(then);
    let log_path = files.path("kg.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut command = Command::new("ip");
    command.args(["netns", "exec", &ns.0]).args(prefix).arg(env!("CARGO_BIN_EXE_kg"));
    command
        .args(["--backend", "file", "--hostname", "a", "--cni=false", "--encapsulate", "never"])
        .args(["--listen", "127.0.0.1:1107", "--file"])
        .arg(files.path("mesh.toml"))
        .arg("--key-file")
        .arg(files.path("key"))
        .arg("--wireguard-socket-dir")
        .arg(files.path("wg"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let mut child = command.spawn().expect("kg starts");
    let read = |path: &Path| {
        let mut text = String::new();
        let _ = std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text));
        text
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Ran { code: status.code(), output: read(&log_path) };
        }
        let output = read(&log_path);
        if output.contains(until) || Instant::now() > deadline {
            if let Some(then) = then.take().filter(|_| output.contains(until)) {
                then();
            }
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let stop = Instant::now() + Duration::from_secs(10);
            while child.try_wait().unwrap().is_none() && Instant::now() < stop {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            return Ran { code: None, output: read(&log_path) };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last line of `output` that starts with `kg: ` (the error that ended the agent).
fn final_error(ran: &Ran) -> &str {
    assert_eq!(ran.code, Some(1), "kg exits 1; output:\n{}", ran.output);
    ran.output.lines().rev().find(|l| l.starts_with("kg: ")).unwrap_or_else(|| {
        panic!("no error line in:\n{}", ran.output);
    })
}

/// An `until` no output matches: wait for `kg` to exit.
const EXITS: &str = "\u{0}";

const PRIVILEGES: &str = "configuring the network needs root or the CAP_NET_ADMIN capability: \
                          run as root (in a container: privileged, or with NET_ADMIN)";

#[test]
fn without_root_the_error_says_that_cap_net_admin_is_needed() {
    if root::skip_unless_root() {
        return;
    }
    let ns = Netns::new();
    let files = Files::new("10.9.0.1/24");
    files.chown(65534);
    let nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
    let ran = kg(&ns, &files, &nobody, &["--wireguard", "kernel"], EXITS);
    let line = final_error(&ran);
    assert!(line.contains("Operation not permitted (os error 1)"), "{line}");
    assert!(line.ends_with(PRIVILEGES), "{line}");
    let ran = kg(&ns, &files, &nobody, &["--wireguard", "userspace"], EXITS);
    let line = final_error(&ran);
    assert!(line.contains("cannot create TUN interface: Permission denied"), "{line}");
    assert!(line.ends_with(PRIVILEGES), "{line}");
}

#[test]
fn without_a_wireguard_module_the_error_suggests_userspace() {
    if root::skip_unless_root() {
        return;
    }
    let ns = Netns::new();
    let probe = Command::new("ip")
        .args(["-n", &ns.0, "link", "add", "probe0", "type", "wireguard"])
        .output()
        .unwrap();
    if probe.status.success() {
        eprintln!("this kernel has WireGuard: nothing to show");
        return;
    }
    let files = Files::new("10.9.0.1/24");
    let ran = kg(&ns, &files, &[], &["--wireguard", "kernel"], EXITS);
    let line = final_error(&ran);
    assert!(line.contains("ip link add type wireguard"), "{line}");
    assert!(
        line.ends_with(
            "this kernel has no WireGuard module: load it (`modprobe wireguard`) or use the \
             built-in userspace implementation (--wireguard userspace)"
        ),
        "{line}"
    );
}

#[test]
fn a_wireguard_port_in_use_is_named() {
    if root::skip_unless_root() {
        return;
    }
    let ns = Netns::new();
    let _held = ns.hold_udp_port(51820);
    let files = Files::new("10.9.0.1/24");
    let expected = "cannot listen on UDP port 51820: port 51820 is in use by another program; \
                    stop it or give WireGuard another port (--port, or the mesh file's [mesh] port)";
    let ran = kg(&ns, &files, &[], &["--wireguard", "userspace"], expected);
    assert!(ran.output.contains(expected), "{}", ran.output);
    assert!(!ran.output.contains("errno=22"), "{}", ran.output);
}

#[test]
fn an_internal_ip_that_is_not_on_this_host_is_named() {
    if root::skip_unless_root() {
        return;
    }
    let ns = Netns::new();
    let files = Files::new("10.9.0.99/24");
    let ran = kg(&ns, &files, &[], &["--wireguard", "userspace"], EXITS);
    let line = final_error(&ran);
    let mesh = files.path("mesh.toml");
    assert_eq!(
        line,
        format!(
            "kg: {}: the internal-ip 10.9.0.99 of node \"a\" is not an address of this host; set \
             it to one of this host's addresses (`ip -o addr`) or leave it out",
            mesh.display()
        )
    );
}

#[test]
fn graph_without_graphviz_says_that_dot_is_not_installed() {
    if root::skip_unless_root() {
        return;
    }
    let ns = Netns::new();
    let files = Files::new("10.9.0.1/24");
    // iptables is in the sbin directories, Graphviz's `dot` is not.
    let no_dot = ["env", "PATH=/usr/sbin:/sbin"];
    let get = |path: &str| {
        let url = format!("http://127.0.0.1:1107{path}");
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.0, "curl", "-s", "-w", "\n%{http_code}", &url])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.to_string(), body.to_string())
    };
    let mut answers = Vec::new();
    let ran = kg_then(&ns, &files, &no_dot, &["--wireguard", "userspace"], "applied plan", || {
        answers.push(get("/graph?format=svg"));
        answers.push(get("/graph?format=dot"));
    });
    assert_eq!(answers.len(), 2, "kg never applied its plan:\n{}", ran.output);
    assert_eq!(
        answers[0],
        (
            "500".to_string(),
            "Graphviz's `dot` is not installed on this host: install Graphviz (package \
             `graphviz`) for svg, png and the other formats, or ask for /graph?format=dot\n"
                .to_string()
        )
    );
    assert_eq!(answers[1].0, "200");
    assert!(answers[1].1.starts_with("digraph kilo {"), "{}", answers[1].1);
}
