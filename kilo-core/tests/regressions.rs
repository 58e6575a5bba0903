//! Regression tests for inputs the fuzz targets in `fuzz/` found. Each test names its target and
//! the input; each input stays here for good so that the bug cannot come back.

use kilo_core::Endpoint;
use kilo_core::peer_spec::{peer_from_spec, spec_from_peer, validate};

/// `endpoint_parse`, input `[fc001]:51820`. Like Go's `net.SplitHostPort`, the parser accepts a
/// bracketed DNS name and keeps the original text; `dns_host` returned `[fc001]`, which is not a
/// DNS name, so an exported Peer spec failed its own validation.
#[test]
fn a_bracketed_dns_endpoint_has_its_host_without_brackets() {
    let endpoint: Endpoint = "[fc001]:51820".parse().unwrap();
    assert_eq!(endpoint.dns(), Some("[fc001]:51820"));
    assert_eq!(endpoint.dns_host(), Some("fc001"));
    assert_eq!(endpoint.port(), 51820);
    let peer = kilo_core::Peer { endpoint: Some(endpoint), ..kilo_core::Peer::default() };
    let spec = spec_from_peer(&peer);
    assert_eq!(validate(&spec), Ok(()));
    let back = peer_from_spec("", &spec);
    assert_eq!(back.endpoint.and_then(|e| e.dns_host().map(str::to_string)), Some("fc001".into()));
}
