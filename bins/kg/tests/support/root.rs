//! Root-only tests (they create network namespaces) skip with a message when the tests do not run
//! as root; CI runs them as root, where they run. Shared by `support` and the tests that do not use
//! it (`#[path = "support/root.rs"] mod root;`).

use std::io::Write;
use std::process::Command;

/// Whether the calling test must be skipped because this process is not root; prints that it is
/// skipped, and why, when so. First thing in a root-only test:
/// `if support::skip_unless_root() { return; }`.
pub fn skip_unless_root() -> bool {
    if is_root() {
        return false;
    }
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("this test");
    // Straight to stderr: libtest captures `eprintln!` of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "skipped {test}: it needs root (it creates network namespaces); run the tests as root \
         (CI does) to include it"
    );
    true
}

/// Whether `id -u` says 0.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "0")
}
