//! WireGuard configurations from a topology and small accessors
//! that later stages (routes, firewall, graph) need.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use super::{Member, Segment, Topology};
use crate::wireguard::{Config, InterfaceConfig, PeerConfig};
use crate::{Cidr, Endpoint, Key};

/// A keepalive as whole seconds (truncating, saturating at `u16::MAX`), as the INI prints it.
pub fn keepalive_secs(d: Duration) -> u16 {
    u16::try_from(d.as_secs()).unwrap_or(u16::MAX)
}

impl Segment {
    /// The segment's leader.
    ///
    /// # Panics
    /// If the segment has no members, which never happens for segments built by
    /// [`Topology::new`].
    pub fn leader_member(&self) -> &Member {
        self.members.get(self.leader).unwrap_or(&self.members[0])
    }

    /// The members' private IPs (upstream `privateIPs`), in member order; members without an
    /// internal IP are skipped.
    pub fn private_ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.members.iter().filter_map(|m| m.internal_ip.map(|c| c.addr()))
    }

    /// The segment's allowed IPs followed by its allowed-location IPs, as WireGuard peers of
    /// other segments see it.
    pub fn peer_allowed_ips(&self) -> Vec<Cidr> {
        self.allowed_ips.iter().chain(&self.allowed_location_ips).copied().collect()
    }
}

impl Topology {
    /// The local node's segment.
    pub fn local_segment(&self) -> Option<&Segment> {
        self.segments.iter().find(|s| s.location == self.location)
    }

    /// Upstream's `updateEndpoint` (6.1): when `keepalive` is non-zero and an endpoint was
    /// discovered for `key`, that endpoint; otherwise `endpoint` unchanged.
    pub fn update_endpoint(
        &self,
        endpoint: Option<&Endpoint>,
        key: &Key,
        keepalive: Duration,
    ) -> Option<Endpoint> {
        if !keepalive.is_zero()
            && let Some(addr) = self.discovered_endpoints.get(key)
        {
            return Some(Endpoint::from_addr(*addr));
        }
        endpoint.cloned()
    }

    /// Upstream's `Conf()` (6.2): the local WireGuard interface with one peer per other segment
    /// (in `cross` granularity, segments of the local node's location are skipped too) and one
    /// per Kilo peer. Allowed IPs are printed as upstream stores them (host bits kept); see
    /// [`Topology::conf_for_device`] for what the kernel gets.
    pub fn conf(&self) -> Config {
        let keepalive = keepalive_secs(self.persistent_keepalive);
        let segments = self
            .segments
            .iter()
            .filter(|s| s.location != self.location)
            .filter(|s| s.node_location.is_none() || s.node_location != self.node_location)
            .map(|s| PeerConfig {
                public_key: s.key,
                preshared_key: None,
                endpoint: self.update_endpoint(s.endpoint.as_ref(), &s.key, s.persistent_keepalive),
                allowed_ips: s.peer_allowed_ips(),
                persistent_keepalive: keepalive,
            });
        let peers = self.peers.iter().map(|p| PeerConfig {
            public_key: p.public_key,
            preshared_key: p.preshared_key,
            endpoint: self.update_endpoint(
                p.endpoint.as_ref(),
                &p.public_key,
                p.persistent_keepalive,
            ),
            allowed_ips: p.allowed_ips.clone(),
            persistent_keepalive: keepalive,
        });
        Config {
            interface: Some(InterfaceConfig {
                private_key: Some(self.key.clone()),
                listen_port: Some(self.port),
            }),
            peers: segments.chain(peers).collect(),
        }
    }

    /// [`Topology::conf`] as the kernel holds it (contract C17): every allowed IP masked to its
    /// network; a network repeated inside one peer kept once; a network claimed by several peers
    /// kept only in the last of them, as WireGuard's allowed-IP table ends up when the whole
    /// configuration is applied in order.
    pub fn conf_for_device(&self) -> Config {
        let mut conf = self.conf();
        let mut owner: HashMap<Cidr, usize> = HashMap::new();
        for (i, peer) in conf.peers.iter().enumerate() {
            for ip in &peer.allowed_ips {
                owner.insert(ip.network(), i);
            }
        }
        for (i, peer) in conf.peers.iter_mut().enumerate() {
            let mut seen = HashSet::new();
            peer.allowed_ips = peer
                .allowed_ips
                .iter()
                .map(Cidr::network)
                .filter(|n| owner.get(n) == Some(&i) && seen.insert(*n))
                .collect();
        }
        conf
    }

    /// Upstream's `PeerConf(name)` (6.3): the configuration of Kilo peer `name` (no interface
    /// section): every segment, then every other Kilo peer. The named peer's keepalive applies
    /// to all sections and its pre-shared key to the segment sections. An unknown or absent
    /// name gives no keepalive, no pre-shared key and skips no peer.
    pub fn peer_conf(&self, name: Option<&str>) -> Config {
        let me = name.and_then(|n| self.peers.iter().find(|p| p.name == n));
        let keepalive = me.map_or(0, |p| keepalive_secs(p.persistent_keepalive));
        let psk = me.and_then(|p| p.preshared_key);
        let segments = self.segments.iter().map(|s| PeerConfig {
            public_key: s.key,
            preshared_key: psk,
            endpoint: self.update_endpoint(s.endpoint.as_ref(), &s.key, s.persistent_keepalive),
            allowed_ips: s.peer_allowed_ips(),
            persistent_keepalive: keepalive,
        });
        let peers =
            self.peers.iter().filter(|p| Some(p.name.as_str()) != name).map(|p| PeerConfig {
                public_key: p.public_key,
                preshared_key: None,
                endpoint: self.update_endpoint(
                    p.endpoint.as_ref(),
                    &p.public_key,
                    p.persistent_keepalive,
                ),
                allowed_ips: p.allowed_ips.clone(),
                persistent_keepalive: keepalive,
            });
        Config { interface: None, peers: segments.chain(peers).collect() }
    }

    /// Upstream's `AsPeer()` (6.4): the local segment as a peer of a foreign interface: its
    /// allowed IPs (without allowed-location IPs), key and endpoint (no NAT substitution).
    pub fn as_peer(&self) -> Option<PeerConfig> {
        self.local_segment().map(|s| PeerConfig {
            public_key: s.key,
            preshared_key: None,
            endpoint: s.endpoint.clone(),
            allowed_ips: s.allowed_ips.clone(),
            persistent_keepalive: 0,
        })
    }
}
