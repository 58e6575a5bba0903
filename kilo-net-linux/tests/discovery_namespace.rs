//! Host discovery against the real kernel, inside a namespace the test owns.

mod netlink_support;
mod root_support;

use kilo_core::Cidr;
use kilo_net_linux::Netlink;
use kilo_net_linux::discovery::{self, DiscoveryError};
use netlink_support::Namespace;

fn c(s: &str) -> Cidr {
    s.parse().unwrap()
}

#[tokio::test]
async fn discovery_reads_the_default_route_interface_and_its_mtu() {
    if root_support::skip_unless_root() {
        return;
    }
    let ns = Namespace::new("disc");
    for (dev, peer) in [("eth0", "eth0p"), ("eth1", "eth1p"), ("kilo0", "kilo0p")] {
        ns.ip(&format!("link add {dev} type veth peer name {peer}"));
        ns.ip(&format!("link set {dev} up"));
        ns.ip(&format!("link set {peer} up"));
    }
    ns.ip("link set eth0 mtu 9000");
    ns.ip("addr add 192.168.0.10/24 dev eth0");
    ns.ip("addr add 203.0.113.5/24 dev eth0");
    ns.ip("addr add 10.0.0.5/16 dev eth1");
    ns.ip("addr add 10.4.0.1/16 dev kilo0");
    let nl = Netlink::connect_in_namespace(&ns.path).unwrap();

    // Hostnames are IP literals here: no DNS query leaves the test. 192.0.2.77 is on no
    // interface, so it is skipped. Without a default route: upstream's error, MTU 1420.
    let ignored = vec!["kilo0".to_string()];
    let err = discovery::discover_ips(&nl, "192.0.2.77", &ignored, &[]).await;
    assert_eq!(err, Err(DiscoveryError::NoDefaultRoute));
    assert_eq!(discovery::detect_mtu(&nl).await, 1420);

    ns.ip("route add default via 192.168.0.1 dev eth0");
    assert_eq!(discovery::default_route_interface(&nl).await.unwrap().name, "eth0");
    assert_eq!(discovery::detect_mtu(&nl).await, 8920);

    let found = discovery::discover_ips(&nl, "192.0.2.77", &ignored, &[]).await.unwrap();
    assert_eq!(
        (found.private, found.public),
        (Some(c("192.168.0.10/24")), Some(c("203.0.113.5/24")))
    );

    // The hostname's address comes first; --internal-cidr narrows the private choice.
    let found = discovery::discover_ips(&nl, "10.0.0.5", &ignored, &[]).await.unwrap();
    assert_eq!(found.private, Some(c("10.0.0.5/16")));
    let found =
        discovery::discover_ips(&nl, "192.0.2.77", &ignored, &[c("10.4.0.0/16")]).await.unwrap();
    assert_eq!(found.private, None, "kilo0's address is ignored even when it matches");
    assert_eq!(found.public, Some(c("203.0.113.5/24")));
}
