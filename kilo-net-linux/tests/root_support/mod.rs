//! Root-only tests (network namespaces, TUN devices, WireGuard links, firewalls) skip with a
//! message when the tests do not run as root; CI runs them as root, where they run, and sets
//! `KILO_TESTS_REQUIRE_ROOT=1` so that a CI that lost root fails instead of skipping them. Also
//! used by `kg`'s tests (`bins/kg/tests/support/root.rs`).

use std::io::Write;
use std::process::Command;

/// Whether the calling test must be skipped because this process is not root; prints that it is
/// skipped, and why, when so. First thing in a root-only test:
/// `if root_support::skip_unless_root() { return; }`.
pub fn skip_unless_root() -> bool {
    if is_root() {
        return false;
    }
    assert!(
        std::env::var_os("KILO_TESTS_REQUIRE_ROOT").is_none(),
        "KILO_TESTS_REQUIRE_ROOT is set, but the tests do not run as root"
    );
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
