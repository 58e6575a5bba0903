//! Arbitrary current and desired WireGuard configs → `diff` → `apply`: never panics. As documented
//! on `ConfigDiff::apply`: applying `diff(a, b)` to `a` gives `b` normalised, except for the
//! endpoints the diff does not compare (desired none or an unresolved DNS name), which keep `a`'s;
//! and the diff of the result and `b` is empty.
#![no_main]

use kilo_core::wireguard::{Config, diff};
use libfuzzer_sys::fuzz_target;

fn expected_after_apply(a: &Config, b: &Config) -> Config {
    let a = a.normalized();
    let mut want = b.normalized();
    for peer in &mut want.peers {
        let uncompared = peer.endpoint.as_ref().is_none_or(|e| e.addr().is_none());
        if uncompared && let Some(have) = a.peers.iter().find(|p| p.public_key == peer.public_key) {
            peer.endpoint.clone_from(&have.endpoint);
        }
    }
    want
}

fuzz_target!(|configs: (Config, Config)| {
    let (a, b) = configs;
    let d = diff(&a, &b);
    let _ = (d.to_string(), format!("{d:?}"));
    let applied = d.apply(&a);
    assert_eq!(applied, expected_after_apply(&a, &b), "diff:\n{d}");
    let rest = diff(&applied, &b);
    assert!(rest.is_empty(), "left over:\n{rest}");
    assert!(diff(&a, &a).is_empty());
    let _ = (a.to_ini(), b.to_ini());
});
