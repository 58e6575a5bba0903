//! The bad-input matrix: `kgctl --backend file --file F validate` and `graph` over broken, hostile
//! and odd files (contract 5 "Errors"; ARCHITECTURE "a bad input never panics").
//!
//! Every case runs the built binary on a file of its own, under a 10 s deadline (a case that runs
//! longer is killed and fails) and a 4 GiB address-space limit. A file that cannot be used makes
//! both commands exit 1 with exactly one line on stderr that names the file; one bad object among
//! good ones is left out (or flagged) while the rest of the mesh keeps working. No case may panic.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const KGCTL: &str = env!("CARGO_BIN_EXE_kgctl");
const TIMEOUT: Duration = Duration::from_secs(10);
/// `ulimit -v` for each run, in KiB.
const ADDRESS_SPACE_KIB: u64 = 4 << 20;
/// No line kgctl prints may be longer than this, whatever the size of a value in the file.
const MAX_LINE: usize = 4096;

const KEY1: &str = "a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
const KEY2: &str = "a2V5MgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
const KEY3: &str = "a2V5MwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
const KEY4: &str = "a2V5NAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

// ---------------------------------------------------------------------------------------------
// Running kgctl.

/// A directory of its own for each case, removed afterwards.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kgctl-bad-input-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// What one run of kgctl did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn stderr_lines(&self) -> Vec<&str> {
        self.stderr.lines().collect()
    }
}

/// Runs `kgctl --backend file --file FILE ARGS…` with stdout and stderr in files, killing it
/// after [`TIMEOUT`].
fn kgctl(dir: &Path, file: &Path, args: &[&str], case: &str) -> Run {
    let out_path = dir.join("stdout");
    let err_path = dir.join("stderr");
    let stdout = fs::File::create(&out_path).expect("create stdout file");
    let stderr = fs::File::create(&err_path).expect("create stderr file");
    let script = format!("ulimit -v {ADDRESS_SPACE_KIB} && exec \"$0\" \"$@\"");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(KGCTL)
        .args(["--backend", "file", "--file"])
        .arg(file)
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("run kgctl");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for kgctl") {
            break status;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{case}: kgctl {args:?} still running after {TIMEOUT:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let read = |p: &Path| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned();
    Run { code: status.code(), stdout: read(&out_path), stderr: read(&err_path) }
}

// ---------------------------------------------------------------------------------------------
// The cases.

/// A file's content.
enum Content {
    Text(String),
    Bytes(Vec<u8>),
    /// `prefix` then zero bytes up to `len` bytes (a sparse file: cheap to make).
    Sized {
        prefix: String,
        len: u64,
    },
}

/// What kgctl must do with a file.
enum Expect {
    /// The file cannot be used: `validate` and `graph` exit 1, print nothing on stdout and exactly
    /// one line on stderr, which names the file and contains each of these words.
    Refused(&'static [&'static str]),
    /// One object is left out: `validate` exits 1 with an error line naming it; `graph` exits 0,
    /// warns about it on stderr and draws every good node (and not the bad one, unless a good
    /// node has the same name).
    LeftOut { bad: &'static str, good: &'static [&'static str] },
    /// Several objects clash: `validate` exits 1 with an error line naming each; `graph` still
    /// answers without a panic.
    Flagged { objects: &'static [&'static str] },
    /// An object is kept with a value ignored: `validate` exits 0 with a warning line naming it;
    /// `graph` exits 0 and draws every node.
    Warned { object: &'static str, good: &'static [&'static str] },
    /// Odd but acceptable: `validate` exits 0 and `graph` exits 0 drawing every node.
    Accepted { good: &'static [&'static str] },
    /// Every object is left out: `validate` exits 1 with an error line naming `bad`; `graph`
    /// exits 1 with one stderr line naming the file.
    NoNodes { bad: &'static str },
    /// Only the general promises: no panic, an answer in time, exit 0 or 1, and if 1 from
    /// `graph`, exactly one stderr line naming the file.
    Bounded,
}

struct Case {
    name: &'static str,
    content: Content,
    expect: Expect,
}

fn text(s: impl Into<String>) -> Content {
    Content::Text(s.into())
}

/// Two good nodes in two locations, then `extra` (more TOML).
fn toml(extra: &str) -> Content {
    text(format!(
        "[mesh]\ngranularity = \"location\"\n\n\
         [[node]]\nname = \"a\"\npublic-key = \"{KEY1}\"\nendpoint = \"10.1.0.1:51820\"\n\
         location = \"x\"\nsubnet = \"10.2.1.0/24\"\n\n\
         [[node]]\nname = \"b\"\npublic-key = \"{KEY2}\"\nendpoint = \"10.1.0.2:51820\"\n\
         location = \"y\"\nsubnet = \"10.2.2.0/24\"\n\n{extra}"
    ))
}

/// A third node `c` with `line` among its keys.
fn toml_node(line: &str) -> Content {
    toml(&format!(
        "[[node]]\nname = \"c\"\npublic-key = \"{KEY3}\"\nendpoint = \"10.1.0.3:51820\"\n\
         location = \"z\"\nsubnet = \"10.2.3.0/24\"\n{line}\n"
    ))
}

/// A peer `p` with `line` among its keys.
fn toml_peer(line: &str) -> Content {
    toml(&format!(
        "[[peer]]\nname = \"p\"\npublic-key = \"{KEY4}\"\nallowed-ips = [\"10.5.0.1/32\"]\n{line}\n"
    ))
}

/// A Kubernetes node object as kubectl prints it.
fn yaml_node(name: &str, key: &str, ip: u8, extra_annotations: &str) -> String {
    format!(
        "- apiVersion: v1\n  kind: Node\n  metadata:\n    annotations:\n\
         \x20     kilo.squat.ai/endpoint: \"10.1.0.{ip}:51820\"\n\
         \x20     kilo.squat.ai/key: \"{key}\"\n\
         \x20     kilo.squat.ai/location: \"l{ip}\"\n{extra_annotations}\
         \x20   name: {name}\n  spec:\n    podCIDR: 10.2.{ip}.0/24\n"
    )
}

/// A `v1` `List` with the good nodes `a` and `b`, then `extra` items.
fn yaml(extra: &str) -> Content {
    text(format!(
        "apiVersion: v1\nkind: List\nitems:\n{}{}{extra}",
        yaml_node("a", KEY1, 1, ""),
        yaml_node("b", KEY2, 2, "")
    ))
}

/// A peer object `p` with `spec` (YAML lines indented by four spaces).
fn yaml_peer(spec: &str) -> String {
    format!(
        "- apiVersion: kilo.squat.ai/v1alpha1\n  kind: Peer\n  metadata:\n    name: p\n  spec:\n{spec}"
    )
}

fn cases() -> Vec<Case> {
    use Expect::*;
    let huge = "x".repeat(1 << 20);
    let mut binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    binary.splice(0..0, *b"\x7fELF\x02\x01\x01\0");
    let mut bad_utf8 = Vec::new();
    if let Content::Text(t) = toml_node("# caf\u{e9}") {
        bad_utf8 = t.into_bytes();
        let at = bad_utf8.len() - 2;
        bad_utf8[at] = 0xff;
    }
    let deep_flow = format!("apiVersion: v1\nkind: List\nitems: {}", "[".repeat(100_000));
    let deep_block = {
        // Node c's status nests 1,500 levels deep; a and b are good.
        let mut s = yaml_node("c", KEY3, 3, "");
        s.push_str("  status:\n");
        for depth in 0..1500 {
            s.push_str(&" ".repeat(4 + 2 * depth));
            s.push_str("k:\n");
        }
        s
    };
    vec![
        // Files that are not a mesh at all.
        Case { name: "empty file", content: text(""), expect: Refused(&["empty"]) },
        Case {
            name: "only comments",
            content: text("# nothing\n\n   \n"),
            expect: Refused(&["empty"]),
        },
        Case { name: "binary file", content: Content::Bytes(binary), expect: Refused(&[]) },
        Case { name: "NUL bytes", content: text("\0\0\0\0[[node]]\n"), expect: Refused(&[]) },
        Case {
            name: "invalid UTF-8 in a comment",
            content: Content::Bytes(bad_utf8),
            expect: Refused(&["UTF-8"]),
        },
        Case {
            name: "neither TOML nor YAML",
            content: text("hello world\n"),
            expect: Refused(&[]),
        },
        Case {
            name: "truncated TOML",
            content: text(format!("[[node]]\nname = \"a\"\npublic-key = \"{}", &KEY1[..20])),
            expect: Refused(&[]),
        },
        Case {
            name: "truncated YAML",
            content: text(
                "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Node\n  metadata:\n    name: \"a",
            ),
            expect: Refused(&[]),
        },
        Case {
            name: "truncated JSON",
            content: text(
                "{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [{\"kind\": \"Node\", ",
            ),
            expect: Refused(&[]),
        },
        Case {
            name: "100 MB file",
            content: Content::Sized { prefix: "[[node]]\nname = \"a\"\n".into(), len: 100 << 20 },
            expect: Refused(&["larger"]),
        },
        Case {
            name: "deeply nested YAML flow collections",
            content: text(deep_flow),
            expect: Refused(&[]),
        },
        Case { name: "deeply nested YAML blocks", content: yaml(&deep_block), expect: Bounded },
        Case {
            name: "YAML without a usable node",
            content: text(format!(
                "apiVersion: v1\nkind: List\nitems:\n{}",
                yaml_node("c", "Zm9v", 3, "")
            )),
            expect: NoNodes { bad: "c" },
        },
        // Mesh TOML: one bad value fails the whole file, naming the key.
        Case {
            name: "unknown node key",
            content: toml_node("colour = \"red\""),
            expect: Refused(&["colour"]),
        },
        Case {
            name: "unknown table",
            content: toml("[meshh]\nport = 1\n"),
            expect: Refused(&["meshh"]),
        },
        Case {
            name: "unknown mesh key",
            content: toml("").map_prefix("[mesh]\nmtu = 1420\n"),
            expect: Refused(&["mtu"]),
        },
        Case {
            name: "port as a string",
            content: toml("").map_prefix("[mesh]\nport = \"51820\"\n"),
            expect: Refused(&["port"]),
        },
        Case {
            name: "leader as a string",
            content: toml_node("leader = \"yes\""),
            expect: Refused(&["leader"]),
        },
        Case {
            name: "name as a number",
            content: toml(&format!("[[node]]\nname = 5\npublic-key = \"{KEY3}\"\n")),
            expect: Refused(&["name"]),
        },
        Case {
            name: "allowed IPs as a string",
            content: toml(&format!(
                "[[peer]]\nname = \"p\"\npublic-key = \"{KEY4}\"\nallowed-ips = \"10.5.0.1/32\"\n"
            )),
            expect: Refused(&["allowed-ips"]),
        },
        Case {
            name: "node as a plain table",
            content: text(format!("[node]\nname = \"c\"\npublic-key = \"{KEY3}\"\n")),
            expect: Refused(&["node"]),
        },
        Case {
            name: "a table repeated",
            content: toml("[mesh]\nport = 1\n"),
            expect: Refused(&["mesh"]),
        },
        Case {
            name: "missing public key",
            content: toml("[[node]]\nname = \"c\"\n"),
            expect: Refused(&["public-key"]),
        },
        Case {
            name: "key of the wrong length",
            content: toml("[[node]]\nname = \"c\"\npublic-key = \"Zm9v\"\n"),
            expect: Refused(&["public-key"]),
        },
        Case {
            name: "key not base64",
            content: toml("[[node]]\nname = \"c\"\npublic-key = \"not a key!\"\n"),
            expect: Refused(&["public-key"]),
        },
        Case {
            name: "preshared key not base64",
            content: toml_peer("preshared-key = \"%%%\""),
            expect: Refused(&["preshared-key"]),
        },
        Case {
            name: "CIDR with a space",
            content: toml_peer("").map_text(|t| t.replace("10.5.0.1/32", "10.5.0.1 /32")),
            expect: Refused(&["allowed-ips"]),
        },
        Case {
            name: "subnet with a space",
            content: toml_node("").map_text(|t| t.replace("10.2.3.0/24", "10.2.3.0/ 24")),
            expect: Refused(&["subnet"]),
        },
        Case {
            name: "internal IP with a leading space",
            content: toml_node("internal-ip = \" 10.0.0.3/24\""),
            expect: Refused(&["internal-ip"]),
        },
        Case {
            name: "endpoint port 0",
            content: toml_node("").map_text(|t| t.replace("10.1.0.3:51820", "10.1.0.3:0")),
            expect: Refused(&["endpoint"]),
        },
        Case {
            name: "endpoint port 65536",
            content: toml_node("").map_text(|t| t.replace("10.1.0.3:51820", "10.1.0.3:65536")),
            expect: Refused(&["endpoint"]),
        },
        Case {
            name: "mesh port 0",
            content: toml("").map_prefix("[mesh]\nport = 0\n"),
            expect: Refused(&["port"]),
        },
        Case {
            name: "mesh port 65536",
            content: toml("").map_prefix("[mesh]\nport = 65536\n"),
            expect: Refused(&["port"]),
        },
        Case {
            name: "IPv6 endpoint without brackets",
            content: toml_node("").map_text(|t| t.replace("10.1.0.3:51820", "fc00::3:51820")),
            expect: Refused(&["endpoint"]),
        },
        Case {
            name: "negative keepalive",
            content: toml_node("persistent-keepalive = -1"),
            expect: Refused(&["persistent-keepalive"]),
        },
        Case {
            name: "keepalive as a float",
            content: toml_peer("persistent-keepalive = 2.5"),
            expect: Refused(&["persistent-keepalive"]),
        },
        Case {
            name: "unknown granularity",
            content: toml("").map_text(|t| t.replace("\"location\"\n\n", "\"mesh\"\n\n")),
            expect: Refused(&["granularity"]),
        },
        Case {
            name: "duplicate node names",
            content: toml(&format!("[[node]]\nname = \"a\"\npublic-key = \"{KEY3}\"\n")),
            expect: Refused(&["\"a\""]),
        },
        Case {
            name: "duplicate peer names",
            content: toml(&format!(
                "[[peer]]\nname = \"p\"\npublic-key = \"{KEY3}\"\nallowed-ips = [\"10.5.0.1/32\"]\n[[peer]]\nname = \"p\"\npublic-key = \"{KEY4}\"\nallowed-ips = [\"10.5.0.2/32\"]\n"
            )),
            expect: Refused(&["\"p\""]),
        },
        Case {
            name: "duplicate keys",
            content: toml(&format!(
                "[[peer]]\nname = \"p\"\npublic-key = \"{KEY1}\"\nallowed-ips = [\"10.5.0.1/32\"]\n"
            )),
            expect: Refused(&["public-key"]),
        },
        Case {
            name: "1 MB endpoint value",
            content: toml_node("").map_text(|t| t.replace("10.1.0.3:51820", &huge)),
            expect: Refused(&["endpoint"]),
        },
        Case {
            name: "node named ../etc",
            content: toml(&format!(
                "[[node]]\nname = \"../etc\"\npublic-key = \"{KEY3}\"\nendpoint = \"10.1.0.3:51820\"\nlocation = \"z\"\nsubnet = \"10.2.3.0/24\"\n"
            )),
            expect: Accepted { good: &["a", "b", "../etc"] },
        },
        Case {
            name: "node with only a name and a key",
            content: toml(&format!(
                "[[node]]\nname = \"c\"\npublic-key = \"{KEY3}\"\npersistent-keepalive = 25\n"
            )),
            expect: Accepted { good: &["a", "b", "c"] },
        },
        Case {
            name: "empty node name",
            content: toml(&format!("[[node]]\nname = \"\"\npublic-key = \"{KEY3}\"\n")),
            expect: Refused(&["name"]),
        },
        Case {
            name: "node name with a newline",
            content: toml(&format!("[[node]]\nname = \"c\\nd\"\npublic-key = \"{KEY3}\"\n")),
            expect: Refused(&["name"]),
        },
        // Kubernetes YAML: a bad object is left out, the rest works.
        Case {
            name: "unknown keys in Kubernetes objects",
            content: yaml("")
                .map_text(|t| t.replace("  spec:\n", "  colour: red\n  spec:\n    colour: red\n")),
            expect: Accepted { good: &["a", "b"] },
        },
        Case {
            name: "YAML node with a key of the wrong length",
            content: yaml(&yaml_node("c", "Zm9v", 3, "")),
            expect: LeftOut { bad: "c", good: &["a", "b"] },
        },
        Case {
            name: "YAML node with an IPv6 endpoint without brackets",
            content: yaml(&yaml_node("c", KEY3, 3, "").replace("10.1.0.3:51820", "fc00::3:51820")),
            expect: LeftOut { bad: "c", good: &["a", "b"] },
        },
        Case {
            name: "YAML node with port 65536",
            content: yaml(&yaml_node("c", KEY3, 3, "").replace("10.1.0.3:51820", "10.1.0.3:65536")),
            expect: LeftOut { bad: "c", good: &["a", "b"] },
        },
        Case {
            name: "YAML node with a pod CIDR with a space",
            content: yaml(&yaml_node("c", KEY3, 3, "").replace("10.2.3.0/24", "\"10.2.3.0 /24\"")),
            expect: LeftOut { bad: "c", good: &["a", "b"] },
        },
        Case {
            name: "YAML node with a key as a number",
            content: yaml(&yaml_node("c", "12345", 3, "")),
            expect: LeftOut { bad: "c", good: &["a", "b"] },
        },
        Case {
            name: "YAML duplicate node name",
            content: yaml(&yaml_node("a", KEY3, 3, "")),
            expect: LeftOut { bad: "a", good: &["a", "b"] },
        },
        Case {
            name: "YAML duplicate keys",
            content: yaml(&yaml_node("c", KEY1, 3, "")),
            expect: Flagged { objects: &["a", "c"] },
        },
        Case {
            name: "YAML node named ../etc",
            content: yaml(&yaml_node("../etc", KEY3, 3, "")),
            expect: Accepted { good: &["a", "b", "../etc"] },
        },
        Case {
            name: "YAML 1 MB annotation value",
            content: yaml(&yaml_node(
                "c",
                KEY3,
                3,
                &format!("      kilo.squat.ai/allowed-location-ips: \"{huge}\"\n"),
            )),
            expect: Warned { object: "c", good: &["a", "b", "c"] },
        },
        Case {
            name: "YAML negative keepalive annotation",
            content: yaml(&yaml_node(
                "c",
                KEY3,
                3,
                "      kilo.squat.ai/persistent-keepalive: \"-5\"\n",
            )),
            expect: Warned { object: "c", good: &["a", "b", "c"] },
        },
        Case {
            name: "YAML peer with a negative keepalive",
            content: yaml(&yaml_peer(&format!(
                "    allowedIPs: [10.5.0.1/32]\n    publicKey: {KEY4}\n    persistentKeepalive: -1\n"
            ))),
            expect: LeftOut { bad: "p", good: &["a", "b"] },
        },
        Case {
            name: "YAML peer with a key not base64",
            content: yaml(&yaml_peer(
                "    allowedIPs: [10.5.0.1/32]\n    publicKey: \"not a key!\"\n",
            )),
            expect: LeftOut { bad: "p", good: &["a", "b"] },
        },
        Case {
            name: "YAML peer with port 0",
            content: yaml(&yaml_peer(&format!(
                "    allowedIPs: [10.5.0.1/32]\n    publicKey: {KEY4}\n    endpoint:\n      dnsOrIP:\n        ip: 10.9.0.1\n      port: 0\n"
            ))),
            expect: LeftOut { bad: "p", good: &["a", "b"] },
        },
        Case {
            name: "YAML peer with allowed IPs of the wrong type",
            content: yaml(&yaml_peer(&format!(
                "    allowedIPs: 10.5.0.1/32\n    publicKey: {KEY4}\n"
            ))),
            expect: LeftOut { bad: "p", good: &["a", "b"] },
        },
        Case {
            name: "YAML peer with a CIDR with a space",
            content: yaml(&yaml_peer(&format!(
                "    allowedIPs: [\"10.5.0.1 /32\"]\n    publicKey: {KEY4}\n"
            ))),
            expect: LeftOut { bad: "p", good: &["a", "b"] },
        },
    ]
}

impl Content {
    fn map_text(self, f: impl FnOnce(String) -> String) -> Content {
        match self {
            Content::Text(t) => Content::Text(f(t)),
            other => other,
        }
    }

    /// The text with `[mesh]`'s first line replaced by `mesh` (a `[mesh]` header and keys).
    fn map_prefix(self, mesh: &str) -> Content {
        self.map_text(|t| t.replacen("[mesh]\n", mesh, 1))
    }

    fn write(&self, path: &Path) {
        match self {
            Content::Text(t) => fs::write(path, t),
            Content::Bytes(b) => fs::write(path, b),
            Content::Sized { prefix, len } => fs::File::create(path).and_then(|mut f| {
                f.write_all(prefix.as_bytes())?;
                f.set_len(*len)
            }),
        }
        .expect("write the case's file");
    }
}

// ---------------------------------------------------------------------------------------------
// Checking.

/// The general promises, for every run: no panic, exit 0 or 1, lines of bounded length.
fn general(cmd: &str, run: &Run) -> Vec<String> {
    let mut problems = Vec::new();
    if run.stderr.contains("panicked") || run.stderr.contains("RUST_BACKTRACE") {
        problems.push(format!("{cmd}: panicked: {}", run.stderr.trim()));
    }
    if !matches!(run.code, Some(0 | 1)) {
        problems.push(format!("{cmd}: exit code {:?} (want 0 or 1)", run.code));
    }
    for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        if let Some(line) = text.lines().find(|l| l.len() > MAX_LINE) {
            problems.push(format!(
                "{cmd}: a {} byte line on {stream}: {}…",
                line.len(),
                &line[..200]
            ));
        }
    }
    problems
}

/// Exit 1, nothing on stdout, one stderr line naming the file and each word.
fn refused(cmd: &str, run: &Run, file: &str, words: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    if run.code != Some(1) {
        problems.push(format!("{cmd}: exit code {:?} (want 1)", run.code));
    }
    if !run.stdout.is_empty() {
        problems.push(format!("{cmd}: printed on stdout: {}", short(&run.stdout)));
    }
    let lines = run.stderr_lines();
    if lines.len() != 1 {
        problems.push(format!(
            "{cmd}: {} lines on stderr (want 1): {}",
            lines.len(),
            short(&run.stderr)
        ));
    }
    if !run.stderr.contains(file) {
        problems.push(format!("{cmd}: stderr does not name {file}: {}", short(&run.stderr)));
    }
    for word in words {
        if !run.stderr.contains(word) {
            problems.push(format!("{cmd}: stderr does not mention {word}: {}", short(&run.stderr)));
        }
    }
    problems
}

/// A finding line of `severity` on stdout that names `object`.
fn finding(cmd: &str, run: &Run, severity: &str, object: &str) -> Vec<String> {
    let quoted = format!("{object:?}");
    let found = run.stdout.lines().any(|l| l.starts_with(severity) && l.contains(&quoted));
    if found {
        Vec::new()
    } else {
        vec![format!("{cmd}: no {severity} line naming {quoted}: {}", short(&run.stdout))]
    }
}

/// `graph` exited 0 and drew each of `names`.
fn drew(run: &Run, names: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    if run.code != Some(0) {
        problems.push(format!("graph: exit code {:?} (want 0): {}", run.code, short(&run.stderr)));
        return problems;
    }
    for name in names {
        if !run.stdout.contains(&format!("{name:?}"))
            && !run.stdout.contains(&format!("\"{name}\\n"))
        {
            problems.push(format!("graph: {name:?} is not drawn: {}", short(&run.stdout)));
        }
    }
    problems
}

fn short(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn check(case: &Case) -> Vec<String> {
    let dir = TempDir::new();
    let path = dir.0.join("mesh-input");
    case.content.write(&path);
    let file = path.display().to_string();
    let validate = kgctl(&dir.0, &path, &["validate"], case.name);
    let graph = kgctl(&dir.0, &path, &["graph"], case.name);
    let mut problems = general("validate", &validate);
    problems.extend(general("graph", &graph));
    match &case.expect {
        Expect::Refused(words) => {
            problems.extend(refused("validate", &validate, &file, words));
            problems.extend(refused("graph", &graph, &file, words));
        }
        Expect::LeftOut { bad, good } => {
            if validate.code != Some(1) {
                problems.push(format!("validate: exit code {:?} (want 1)", validate.code));
            }
            problems.extend(finding("validate", &validate, "error:", bad));
            problems.extend(drew(&graph, good));
            let drawn = [format!("{bad:?}"), format!("\"peer:{bad}\"")];
            if !good.contains(bad) && drawn.iter().any(|d| graph.stdout.contains(d.as_str())) {
                problems.push(format!("graph: the left-out {bad:?} is drawn"));
            }
            if !graph.stderr.contains(&format!("{bad:?}")) && !graph.stderr.contains(bad) {
                problems.push(format!(
                    "graph: no warning naming {bad:?} on stderr: {}",
                    short(&graph.stderr)
                ));
            }
        }
        Expect::Flagged { objects } => {
            if validate.code != Some(1) {
                problems.push(format!("validate: exit code {:?} (want 1)", validate.code));
            }
            let quoted: Vec<String> = objects.iter().map(|o| format!("{o:?}")).collect();
            let named = validate
                .stdout
                .lines()
                .any(|l| l.starts_with("error:") && quoted.iter().all(|q| l.contains(q.as_str())));
            if !named {
                problems.push(format!(
                    "validate: no error line naming {quoted:?}: {}",
                    short(&validate.stdout)
                ));
            }
        }
        Expect::Warned { object, good } => {
            if validate.code != Some(0) {
                problems.push(format!(
                    "validate: exit code {:?} (want 0): {}",
                    validate.code,
                    short(&validate.stdout)
                ));
            }
            problems.extend(finding("validate", &validate, "warning:", object));
            problems.extend(drew(&graph, good));
        }
        Expect::Accepted { good } => {
            if validate.code != Some(0) {
                problems.push(format!(
                    "validate: exit code {:?} (want 0): {}",
                    validate.code,
                    short(&validate.stdout)
                ));
            }
            problems.extend(drew(&graph, good));
        }
        Expect::NoNodes { bad } => {
            if validate.code != Some(1) {
                problems.push(format!("validate: exit code {:?} (want 1)", validate.code));
            }
            problems.extend(finding("validate", &validate, "error:", bad));
            problems.extend(refused("graph", &graph, &file, &[]));
        }
        Expect::Bounded => {
            if graph.code == Some(1) {
                let lines = graph.stderr_lines();
                if lines.len() != 1 || !graph.stderr.contains(&file) {
                    problems.push(format!(
                        "graph: want one stderr line naming the file: {}",
                        short(&graph.stderr)
                    ));
                }
            }
        }
    }
    problems.into_iter().map(|p| format!("{}: {p}", case.name)).collect()
}

/// Runs every case whose expectation `select` picks; fails listing every problem found.
fn run_cases(select: impl Fn(&Expect) -> bool) {
    let cases: Vec<Case> = cases().into_iter().filter(|c| select(&c.expect)).collect();
    assert!(!cases.is_empty());
    let problems: Vec<String> = cases.iter().flat_map(check).collect();
    assert!(
        problems.is_empty(),
        "{} problems in {} cases:\n{}",
        problems.len(),
        cases.len(),
        problems.join("\n")
    );
}

#[test]
fn the_good_base_files_validate_and_draw() {
    for (name, content) in [("toml", toml("")), ("yaml", yaml(""))] {
        let case = Case { name, content, expect: Expect::Accepted { good: &["a", "b"] } };
        let problems = check(&case);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}

#[test]
fn an_unusable_file_gets_exit_1_and_one_line_naming_it() {
    run_cases(|e| matches!(e, Expect::Refused(_) | Expect::NoNodes { .. }));
}

#[test]
fn one_bad_object_is_left_out_with_a_warning_and_the_rest_works() {
    run_cases(|e| matches!(e, Expect::LeftOut { .. } | Expect::Flagged { .. }));
}

#[test]
fn an_ignored_value_is_a_validation_warning_and_the_object_stays() {
    run_cases(|e| matches!(e, Expect::Warned { .. }));
}

#[test]
fn odd_but_valid_input_is_accepted() {
    run_cases(|e| matches!(e, Expect::Accepted { .. }));
}

#[test]
fn hostile_input_is_answered_in_bounded_time_without_a_panic() {
    run_cases(|e| matches!(e, Expect::Bounded));
}
