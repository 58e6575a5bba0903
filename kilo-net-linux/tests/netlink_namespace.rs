//! The netlink operations against the real kernel, inside a namespace the test owns.

mod netlink_support;
mod root_support;

use kilo_core::Cidr;
use kilo_net_linux::{Netlink, NetlinkError};
use netlink_support::Namespace;

fn c(s: &str) -> Cidr {
    s.parse().unwrap()
}

#[tokio::test]
async fn links_are_looked_up_by_name_and_changed_in_place() {
    if root_support::skip_unless_root() {
        return;
    }
    let ns = Namespace::new("link");
    ns.ip("link add d0 mtu 1400 type veth peer name d0p");
    let nl = Netlink::connect_in_namespace(&ns.path).unwrap();

    let link = nl.link("d0").await.unwrap();
    assert_eq!((link.name.as_str(), link.mtu, link.up), ("d0", 1400, false));
    assert!(link.index > 1);

    nl.set_link_up(&link).await.unwrap();
    nl.set_link_mtu(&link, 1320).await.unwrap();
    let link = nl.link("d0").await.unwrap();
    assert_eq!((link.mtu, link.up), (1320, true));
    assert!(ns.ip("link show dev d0").contains("mtu 1320"));

    // The idempotent forms write only when something differs.
    assert!(!nl.ensure_link_state("d0", true).await.unwrap());
    assert!(!nl.ensure_link_mtu("d0", 1320).await.unwrap());
    assert!(nl.ensure_link_mtu("d0", 1280).await.unwrap());
    assert_eq!(nl.link("d0").await.unwrap().mtu, 1280);

    nl.set_link_down(&link).await.unwrap();
    assert!(!nl.link("d0").await.unwrap().up);
    assert!(nl.ensure_link_state("d0", true).await.unwrap());
    assert!(nl.link("d0").await.unwrap().up);
    assert!(nl.links().await.unwrap().iter().any(|l| l.name == "lo"));

    nl.delete_link(&link).await.unwrap();
    assert_eq!(nl.find_link("d0").await.unwrap(), None);
    assert_eq!(nl.link("d0").await, Err(NetlinkError::LinkNotFound { name: "d0".into() }));
}

#[tokio::test]
async fn a_connection_in_a_namespace_sees_only_that_namespace() {
    if root_support::skip_unless_root() {
        return;
    }
    let ns = Namespace::new("iso");
    let nl = Netlink::connect_in_namespace(&ns.path).unwrap();
    let names: Vec<String> = nl.links().await.unwrap().into_iter().map(|l| l.name).collect();
    assert_eq!(names, ["lo"]);
    assert_eq!(nl.namespace(), Some(ns.path.as_path()));
    let err = Netlink::connect_in_namespace("/run/netns/does-not-exist-krs").unwrap_err();
    assert!(err.to_string().contains("/run/netns/does-not-exist-krs"), "{err}");
}

#[tokio::test]
async fn addresses_are_listed_replaced_deleted_and_made_the_only_one() {
    if root_support::skip_unless_root() {
        return;
    }
    let ns = Namespace::new("addr");
    ns.ip("link add kilo0 type veth peer name kilo0p");
    ns.ip("addr add 10.9.0.1/24 dev kilo0");
    ns.ip("addr add 10.9.1.1/24 dev kilo0");
    let nl = Netlink::connect_in_namespace(&ns.path).unwrap();
    let link = nl.link("kilo0").await.unwrap();

    let mut got: Vec<Cidr> =
        nl.link_addresses(&link).await.unwrap().into_iter().map(|a| a.cidr).collect();
    got.sort_by_key(|c| c.to_string());
    assert_eq!(got, [c("10.9.0.1/24"), c("10.9.1.1/24")]);

    nl.replace_address(&link, c("10.9.2.1/24")).await.unwrap();
    nl.delete_address(&link, c("10.9.0.1/24")).await.unwrap();
    let text = ns.ip("addr show dev kilo0");
    assert!(text.contains("10.9.2.1/24") && !text.contains("10.9.0.1/24"), "{text}");
    assert!(
        nl.addresses()
            .await
            .unwrap()
            .iter()
            .any(|a| a.cidr == c("10.9.1.1/24") && a.index == link.index)
    );

    // The leader's kilo0 address: host bits kept, every other address removed.
    let writes = nl.set_only_address(&link, c("10.4.0.1/16")).await.unwrap();
    assert_eq!(writes, 3);
    let got: Vec<Cidr> =
        nl.link_addresses(&link).await.unwrap().into_iter().map(|a| a.cidr).collect();
    assert_eq!(got, [c("10.4.0.1/16")]);
    assert_eq!(nl.set_only_address(&link, c("10.4.0.1/16")).await.unwrap(), 0);
}

#[tokio::test]
async fn ipip_tunnel_is_created_or_the_error_says_the_kernel_lacks_ipip() {
    if root_support::skip_unless_root() {
        return;
    }
    let ns = Namespace::new("ipip");
    let nl = Netlink::connect_in_namespace(&ns.path).unwrap();
    let kernel_has_ipip = ns.try_ip("link add krstest type ipip").is_ok();
    match nl.ensure_ipip_tunnel("tunl0").await {
        Ok(link) => {
            assert!(kernel_has_ipip, "created an IPIP tunnel where `ip` could not");
            assert_eq!(link.name, "tunl0");
            assert_eq!(nl.ensure_ipip_tunnel("tunl0").await.unwrap().index, link.index);
        }
        Err(err) => {
            assert!(!kernel_has_ipip, "ip can create IPIP links but we failed: {err}");
            assert!(
                matches!(err, NetlinkError::IpipUnsupported { ref name, .. } if name == "tunl0"),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(text.contains("no IPIP support") && text.contains("modprobe ipip"), "{text}");
            assert!(text.contains("--encapsulate=never"), "{text}");
        }
    }
}
