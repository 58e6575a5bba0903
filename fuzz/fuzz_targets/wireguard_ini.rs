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
    let rendered = config.to_ini();
    assert_eq!(Config::from_ini(&rendered).as_ref(), Ok(&config), "rendered:\n{rendered}");
    assert!(diff(&config, &config).is_empty());
    assert_eq!(config.normalized().normalized(), config.normalized());
});
