//! Encapsulators: how traffic inside a location reaches other nodes, as
//! the routing code needs them (the tunnel device itself is set up by `kilo-net-linux`).

use std::net::IpAddr;

use crate::{Cidr, Compatibility, Encapsulation};

/// The encapsulator a node uses inside its location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Encapsulator {
    /// Kilo's own IPIP tunnel (`tunl0`); the default.
    Ipip,
    /// Flannel compatibility: traffic goes through `flannel.1`.
    Flannel,
    /// Cilium compatibility: IPIP through `cilium_tunl` (or Kilo's own `tunl0`).
    Cilium,
    /// No encapsulation possible: the node has no private IP.
    Noop,
}

impl Encapsulator {
    /// The encapsulator of a node as upstream's agent picks it: from `--compatibility` (none means
    /// IPIP), and [`Encapsulator::Noop`] when the node has no private IP.
    pub fn select(compatibility: Option<Compatibility>, has_private_ip: bool) -> Encapsulator {
        match (has_private_ip, compatibility) {
            (false, _) => Encapsulator::Noop,
            (true, None) => Encapsulator::Ipip,
            (true, Some(Compatibility::Flannel)) => Encapsulator::Flannel,
            (true, Some(Compatibility::Cilium)) => Encapsulator::Cilium,
        }
    }

    /// Upstream's `Gw(endpointIP, privateIP, cniIP, podCIDR)`: the next hop towards a node of the
    /// location. IPIP: the node's private IP; Flannel: its pod CIDR's network address; Cilium: its
    /// CNI compatibility IP, else its pod CIDR's network address; Noop: none. The endpoint IP is
    /// part of upstream's interface but no encapsulator uses it.
    pub fn gw(
        &self,
        endpoint_ip: Option<IpAddr>,
        private_ip: Option<IpAddr>,
        cni_ip: Option<IpAddr>,
        pod_cidr: Option<Cidr>,
    ) -> Option<IpAddr> {
        let _ = endpoint_ip;
        match self {
            Encapsulator::Ipip => private_ip,
            Encapsulator::Flannel => pod_cidr.map(|c| c.network().addr()),
            Encapsulator::Cilium => cni_ip.or_else(|| pod_cidr.map(|c| c.network().addr())),
            Encapsulator::Noop => None,
        }
    }

    /// Whether this encapsulator owns a tunnel whose traffic is filtered by the `KILO-IPIP`
    /// chain and which gets the tunnel address (IPIP and Cilium; Flannel and Noop do not).
    pub fn has_ipip_tunnel(&self) -> bool {
        matches!(self, Encapsulator::Ipip | Encapsulator::Cilium)
    }
}

/// An encapsulator together with the `--encapsulate` strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EncapsulatorConfig {
    /// The encapsulator.
    pub encapsulator: Encapsulator,
    /// When to encapsulate.
    pub strategy: Encapsulation,
}

impl EncapsulatorConfig {
    /// Whether traffic to `gw` is encapsulated: always, or across subnets when `gw` is outside
    /// the local private network (a missing private network or gateway counts as outside).
    pub fn encapsulates(&self, private_ip: Option<Cidr>, gw: Option<IpAddr>) -> bool {
        match self.strategy {
            Encapsulation::Always => true,
            Encapsulation::CrossSubnet => {
                private_ip.is_some_and(|p| !gw.is_some_and(|gw| p.contains(gw)))
            }
            Encapsulation::Never => false,
        }
    }
}
