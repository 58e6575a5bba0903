//! Any bytes → `Config::from_ini`: never panics; a config that parses renders to text that parses
//! back to the same config, and diffs with itself to nothing.
#![no_main]

use kilo_core::wireguard::{Config, diff};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match Config::from_ini(text) {
        Ok(config) => config,
        Err(e) => {
            let _ = (e.to_string(), e.line());
            return;
        }
    };
    // Known, not fixed: an all-zero public key parses but is not rendered, so the text does not
    // parse back (kilo-core/tests/regressions.rs,
    // a_peer_with_an_all_zero_public_key_renders_to_text_that_parses_back_or_is_rejected).
    // Remove this skip once that test passes.
    if config.peers.iter().any(|p| p.public_key.is_zero()) {
        return;
    }
    let rendered = config.to_ini();
    assert_eq!(Config::from_ini(&rendered).as_ref(), Ok(&config), "rendered:\n{rendered}");
    assert!(diff(&config, &config).is_empty());
    assert_eq!(config.normalized().normalized(), config.normalized());
});
