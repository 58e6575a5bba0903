//! Root-only tests (they create network namespaces) skip with a message when the tests do not run
//! as root: the same rule as kilo-net-linux's tests, from the same file. Shared by `support` and
//! the tests that do not use it (`#[path = "support/root.rs"] mod root;`).

#[path = "../../../../kilo-net-linux/tests/root_support/mod.rs"]
mod root_support;

pub use root_support::skip_unless_root;
