//! Shared by the root tests: a network namespace that the test creates and always deletes.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Panics when not root: a test that creates a namespace without first skipping
/// (`root_support::skip_unless_root`) for a developer who is not root fails loudly.
pub fn require_root() {
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    let uid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(uid, "0", "this test needs root (network namespaces); CI runs it as root");
}

/// A network namespace named uniquely for this process and test, deleted on drop (even when
/// the test fails).
pub struct Namespace {
    /// `ip netns` name.
    pub name: String,
    /// `/run/netns/NAME`.
    pub path: PathBuf,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Namespace {
    /// Creates the namespace and brings its loopback up.
    pub fn new(tag: &str) -> Namespace {
        require_root();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("krs-{tag}-{}-{n}", std::process::id());
        run("ip", &["netns", "add", &name]).unwrap();
        let ns = Namespace { path: PathBuf::from(format!("/run/netns/{name}")), name };
        ns.ip("link set lo up");
        ns
    }

    /// Runs `ip -n NAME ARGS…`; panics with ip's stderr on failure.
    pub fn ip(&self, args: &str) -> String {
        self.try_ip(args).unwrap_or_else(|e| panic!("ip -n {} {args}: {e}", self.name))
    }

    /// Runs `ip -n NAME ARGS…`.
    pub fn try_ip(&self, args: &str) -> Result<String, String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend(args.split_whitespace());
        run("ip", &full)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd).args(args).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
