//! Any text → `Endpoint` parser: never panics; what parses prints back (DNS first) to text that
//! parses to the same endpoint, and a parsed endpoint always has a port.
#![no_main]

use kilo_core::Endpoint;
use kilo_core::endpoint::{is_dns1123_subdomain, parse_port};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = is_dns1123_subdomain(text);
    if let Ok(port) = parse_port(text) {
        assert!(port > 0);
    }
    let Ok(endpoint) = text.parse::<Endpoint>() else {
        return;
    };
    assert!(endpoint.is_ready(), "{text:?} parsed to an endpoint that is not ready");
    assert!(endpoint.port() > 0);
    let printed = endpoint.to_string();
    assert_eq!(
        printed.parse::<Endpoint>().as_ref(),
        Ok(&endpoint),
        "{text:?} printed as {printed:?}"
    );
    if let Some(host) = endpoint.dns_host() {
        assert!(is_dns1123_subdomain(host), "{host:?}");
    }
    let _ = endpoint.to_string_opt(false);
    let _ = format!("{endpoint:?}");
});
