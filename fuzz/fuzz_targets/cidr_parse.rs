//! Any text → `Cidr` parser: never panics; what parses prints back to text that parses to the same
//! CIDR, and its network is stable.
#![no_main]

use kilo_core::Cidr;
use kilo_core::cidr::{Allocator, parse_network};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok(cidr) = text.parse::<Cidr>() else {
        assert!(parse_network(text).is_err());
        return;
    };
    let printed = cidr.to_string();
    assert_eq!(printed.parse::<Cidr>(), Ok(cidr), "{text:?} printed as {printed:?}");
    let network = cidr.network();
    assert_eq!(parse_network(text), Ok(network));
    assert!(network.is_network());
    assert_eq!(network.network(), network);
    assert!(cidr.covers(&network) && network.covers(&cidr));
    assert!(cidr.contains(cidr.addr()));
    assert_eq!(cidr.host_bits() + cidr.prefix(), if cidr.is_ipv4() { 32 } else { 128 });
    let _ = kilo_core::cidr::is_public(cidr.addr());
    let _ = kilo_core::cidr::is_local(cidr.addr());
    let _ = kilo_core::cidr::describe_ip_class(cidr.addr());
    let mut allocator = Allocator::new(cidr);
    for _ in 0..3 {
        if let Some(ip) = allocator.next_ip() {
            assert!(network.contains(ip.addr()), "{ip} outside {network}");
        }
    }
});
