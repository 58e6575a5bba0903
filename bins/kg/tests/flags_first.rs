//! `kg` checks every flag before its first side effect: a bad flag is one error line and a
//! non-zero exit, and leaves no key file (nor its directory) and no interface behind.
//!
//! Runs `kg --backend file` with a valid mesh file and one bad flag at a time, in the current
//! network namespace (nothing is created when the flags are checked first; a leftover interface
//! is deleted). Needs root only to look at interfaces; without root it still checks the files.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A scratch directory and an interface name unique to one case, removed on drop.
struct Case {
    dir: PathBuf,
    interface: String,
}

impl Case {
    fn new(n: usize) -> Case {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("kg-flags-first-{pid}-{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        Case { dir, interface: format!("kff{}x{n}", pid % 100_000) }
    }

    fn key_dir(&self) -> PathBuf {
        self.dir.join("kilo")
    }

    fn key_file(&self) -> PathBuf {
        self.key_dir().join("key")
    }

    fn interface_exists(&self) -> bool {
        Command::new("ip")
            .args(["link", "show", "dev", &self.interface])
            .output()
            .is_ok_and(|out| out.status.success())
    }

    /// Runs kg with the base flags, each `(flag, value)` of `changes` replacing or adding one
    /// (`None` removes it); returns the exit code and stderr.
    fn kg(&self, changes: &[Change<'_>]) -> (Option<i32>, String) {
        let mesh = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/three-locations.toml");
        let key = self.key_file();
        let socket_dir = self.dir.join("wg");
        let mut flags: Vec<(String, Option<String>)> = [
            ("--backend", "file"),
            ("--file", mesh),
            ("--hostname", "gcp-1"),
            ("--key-file", key.to_str().unwrap()),
            ("--interface", &self.interface),
            ("--wireguard-socket-dir", socket_dir.to_str().unwrap()),
            ("--listen", "127.0.0.1:0"),
            ("--clean-up-interface", "true"),
        ]
        .into_iter()
        .map(|(f, v)| (f.to_string(), Some(v.to_string())))
        .collect();
        for (flag, value) in changes {
            let value = value.map(str::to_string);
            match flags.iter_mut().find(|(f, _)| f == flag) {
                Some(entry) => entry.1 = value,
                None => flags.push((flag.to_string(), value)),
            }
        }
        let args = flags.into_iter().filter_map(|(f, v)| v.map(|v| format!("{f}={v}")));
        let out = Command::new(env!("CARGO_BIN_EXE_kg")).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        if self.interface_exists() {
            let _ = Command::new("ip").args(["link", "del", "dev", &self.interface]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A flag and its new value (`None`: left out).
type Change<'a> = (&'a str, Option<&'a str>);

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

#[test]
fn every_bad_flag_is_one_error_line_before_any_key_file_or_interface_exists() {
    let cases: &[(&[Change<'_>], &str)] = &[
        (&[("--resync-period", Some("0s"))], "--resync-period"),
        (&[("--listen", Some("nowhere"))], "--listen"),
        (&[("--listen", Some("127.0.0.1:99999"))], "--listen"),
        (&[("--port", Some("0"))], "invalid port"),
        (&[("--port", Some("70000"))], "invalid port"),
        (&[("--subnet", Some("10.4.0.0/99"))], "\"10.4.0.0/99\""),
        (
            &[("--subnet", Some("10.4.0.0/16,10.5.0.0/16"))],
            "--subnet: 10.4.0.0/16 and 10.5.0.0/16 are both IPv4",
        ),
        (&[("--mtu", Some("large"))], "--mtu"),
        (&[("--service-cidr", Some("nope"))], "--service-cidr"),
        (&[("--internal-cidr", Some("10.0.0.0/33"))], "--internal-cidr"),
        (&[("--encapsulate", Some("sometimes"))], "sometimes"),
        (&[("--compatibility", Some("weave"))], "weave"),
        (&[("--mesh-granularity", Some("planet"))], "planet"),
        (&[("--interface", Some("a-much-too-long-name"))], "--interface"),
        (&[("--file", Some("/nonexistent/kilo/mesh.toml"))], "/nonexistent/kilo/mesh.toml"),
        (&[("--file", None)], "--file"),
    ];
    let root = is_root();
    let mut failures = Vec::new();
    for (n, (changes, names)) in cases.iter().enumerate() {
        let case = Case::new(n);
        let (code, stderr) = case.kg(changes);
        let lines: Vec<&str> = stderr.lines().collect();
        let ok = code.is_some_and(|c| c != 0)
            && lines.len() == 1
            && lines[0].starts_with("kg: ")
            && lines[0].contains(names)
            && !case.key_dir().exists()
            && !(root && case.interface_exists());
        if !ok {
            failures.push(format!(
                "{changes:?}: exit {code:?}, stderr {stderr:?}, key directory {}, interface {}",
                if case.key_dir().exists() { "created" } else { "absent" },
                if root && case.interface_exists() { "created" } else { "absent" },
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn with_valid_flags_kg_gets_as_far_as_the_key_file() {
    // The control for the test above: the same harness sees a key file when kg gets that far
    // (this host's new key is not gcp-1's key, so kg stops there, before any interface).
    let case = Case::new(1000);
    let (code, stderr) = case.kg(&[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.starts_with("kg: node \"gcp-1\" has public key "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(Path::new(&case.key_file()).exists());
    assert!(!(is_root() && case.interface_exists()));
}
