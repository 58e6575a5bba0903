//! DNS endpoints: which address each peer of a WireGuard configuration gets, decided once for
//! every caller (the agent, `kgctl connect`, embedders). The lookups happen outside the core;
//! their answers come in as data.
//!
//! WireGuard needs addresses, so a configuration's DNS endpoints (`vpn.example.com:51820`) are
//! resolved before it is applied. Upstream Kilo aborts the whole apply when one name does not
//! resolve, so one bad DNS record stops every other change to the mesh. Here a name that does
//! not resolve affects only its own peer:
//!
//! 1. a name that resolves gets the answer (the endpoint keeps its DNS text, so it still prints
//!    as the name);
//! 2. else the peer keeps its last address: the one its endpoint already carries, if it was
//!    resolved before, else the one the device has for that peer now (its last resolved
//!    address, or where the peer roamed to);
//! 3. else the peer is configured without an endpoint, as a peer that dials in: it works as
//!    soon as the peer sends a handshake, and the next resolution that succeeds sets the
//!    endpoint.
//!
//! Every name that did not resolve is reported ([`Unresolved`]), for the caller to log. Every
//! other part of the configuration is left as it is.
//!
//! ```
//! use std::collections::BTreeMap;
//! use kilo_core::dns::{names, resolve_endpoints};
//! use kilo_core::wireguard::{Config, PeerConfig};
//!
//! let config = Config {
//!     interface: None,
//!     peers: vec![PeerConfig { endpoint: Some("vpn.example.com:51820".parse()?), ..Default::default() }],
//! };
//! assert_eq!(names(&config), ["vpn.example.com"]);
//! let answers = BTreeMap::from([("vpn.example.com".to_string(), Some("192.0.2.7".parse()?))]);
//! let resolved = resolve_endpoints(&config, &answers, &Config::default());
//! let endpoint = resolved.config.peers[0].endpoint.as_ref().unwrap();
//! assert_eq!(endpoint.addr(), Some("192.0.2.7:51820".parse()?));
//! assert!(resolved.unresolved.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::Key;
use crate::wireguard::Config;

/// The host names of the configuration's DNS endpoints, each once, in peer order: what to look
/// up before [`resolve_endpoints`].
pub fn names(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for host in config.peers.iter().filter_map(|p| p.endpoint.as_ref()?.dns_host()) {
        if !names.iter().any(|n| n == host) {
            names.push(host.to_string());
        }
    }
    names
}

/// A peer whose endpoint's name did not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// The peer's public key.
    pub peer: Key,
    /// The endpoint as written (`host:port`).
    pub endpoint: String,
    /// The address the peer keeps, if any; `None`: it is configured without an endpoint.
    pub kept: Option<SocketAddr>,
}

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "endpoint {} of peer {} does not resolve; ", self.endpoint, self.peer)?;
        match self.kept {
            Some(addr) => write!(f, "keeping its last address {addr}"),
            None => f.write_str("configuring the peer without an endpoint for now"),
        }
    }
}

/// A configuration with its DNS endpoints resolved ([`resolve_endpoints`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The configuration to apply.
    pub config: Config,
    /// The peers whose endpoint's name did not resolve, in peer order.
    pub unresolved: Vec<Unresolved>,
}

/// Resolves the DNS endpoints of `config` with `answers` (host name, as [`names`] lists them,
/// to the address it resolved to; a name missing from the map did not resolve), following the
/// rule of the module documentation. `current` is what the device holds now (its peers'
/// endpoints are the last addresses; an empty configuration when unknown).
pub fn resolve_endpoints(
    config: &Config,
    answers: &BTreeMap<String, Option<IpAddr>>,
    current: &Config,
) -> Resolved {
    let mut config = config.clone();
    let mut unresolved = Vec::new();
    for peer in &mut config.peers {
        let Some(endpoint) = peer.endpoint.as_ref() else { continue };
        let (Some(text), Some(host)) = (endpoint.dns(), endpoint.dns_host()) else { continue };
        if let Some(ip) = answers.get(host).copied().flatten() {
            peer.endpoint = Some(endpoint.with_resolved(SocketAddr::new(ip, endpoint.port())));
            continue;
        }
        let kept = endpoint.addr().or_else(|| {
            current
                .peers
                .iter()
                .find(|p| p.public_key == peer.public_key)
                .and_then(|p| p.endpoint.as_ref()?.addr())
        });
        unresolved.push(Unresolved { peer: peer.public_key, endpoint: text.to_string(), kept });
        peer.endpoint = kept.map(|addr| endpoint.with_resolved(addr));
    }
    Resolved { config, unresolved }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wireguard::{InterfaceConfig, PeerConfig};
    use crate::{Cidr, Endpoint};

    fn peer(n: u8, endpoint: Option<Endpoint>) -> PeerConfig {
        PeerConfig {
            public_key: Key::from_bytes([n; 32]),
            endpoint,
            allowed_ips: vec![Cidr::host(IpAddr::from([10, 5, 0, n]))],
            ..Default::default()
        }
    }

    fn endpoint(s: &str) -> Option<Endpoint> {
        Some(s.parse().unwrap())
    }

    fn resolved(dns: &str, addr: &str) -> Option<Endpoint> {
        endpoint(dns).map(|e| e.with_resolved(addr.parse().unwrap()))
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn config(peers: Vec<PeerConfig>) -> Config {
        Config {
            interface: Some(InterfaceConfig { private_key: None, listen_port: Some(51820) }),
            peers,
        }
    }

    #[test]
    fn names_lists_each_dns_host_once_in_peer_order() {
        let c = config(vec![
            peer(1, endpoint("b.example:1")),
            peer(2, endpoint("192.0.2.1:1")),
            peer(3, endpoint("a.example:2")),
            peer(4, endpoint("b.example:3")),
            peer(5, None),
        ]);
        assert_eq!(names(&c), ["b.example", "a.example"]);
    }

    #[test]
    fn a_name_that_resolves_gets_the_answer_with_the_endpoints_port_and_keeps_its_text() {
        let c =
            config(vec![peer(1, endpoint("a.example:51821")), peer(2, endpoint("a.example:7"))]);
        let answers = BTreeMap::from([("a.example".to_string(), ip("192.0.2.7"))]);
        let r = resolve_endpoints(&c, &answers, &Config::default());
        assert_eq!(
            r,
            Resolved {
                config: config(vec![
                    peer(1, resolved("a.example:51821", "192.0.2.7:51821")),
                    peer(2, resolved("a.example:7", "192.0.2.7:7")),
                ]),
                unresolved: Vec::new(),
            }
        );
        assert_eq!(r.config.peers[0].endpoint.as_ref().unwrap().to_string(), "a.example:51821");
    }

    #[test]
    fn a_fresh_answer_replaces_an_address_resolved_before() {
        let c = config(vec![peer(1, resolved("a.example:1", "192.0.2.1:1"))]);
        let answers = BTreeMap::from([("a.example".to_string(), ip("2001:db8::2"))]);
        let r = resolve_endpoints(&c, &answers, &Config::default());
        assert_eq!(r.config, config(vec![peer(1, resolved("a.example:1", "[2001:db8::2]:1"))]));
    }

    #[test]
    fn ip_endpoints_and_peers_without_endpoint_are_left_as_they_are() {
        let c = config(vec![peer(1, endpoint("192.0.2.1:1")), peer(2, None)]);
        let r = resolve_endpoints(&c, &BTreeMap::new(), &Config::default());
        assert_eq!(r, Resolved { config: c, unresolved: Vec::new() });
    }

    #[test]
    fn an_unresolved_name_keeps_the_address_its_endpoint_already_carries() {
        let c = config(vec![peer(1, resolved("a.example:1", "192.0.2.1:1"))]);
        let current = config(vec![peer(1, endpoint("198.51.100.1:9"))]);
        let answers = BTreeMap::from([("a.example".to_string(), None)]);
        let r = resolve_endpoints(&c, &answers, &current);
        assert_eq!(
            r,
            Resolved {
                config: c,
                unresolved: vec![Unresolved {
                    peer: Key::from_bytes([1; 32]),
                    endpoint: "a.example:1".into(),
                    kept: Some("192.0.2.1:1".parse().unwrap()),
                }],
            }
        );
    }

    #[test]
    fn an_unresolved_name_keeps_the_address_the_device_has_for_the_peer() {
        let c = config(vec![peer(1, endpoint("a.example:1")), peer(2, endpoint("b.example:2"))]);
        let current = config(vec![peer(2, endpoint("198.51.100.2:2"))]);
        let answers = BTreeMap::from([("a.example".to_string(), ip("192.0.2.1"))]);
        let r = resolve_endpoints(&c, &answers, &current);
        assert_eq!(
            r,
            Resolved {
                config: config(vec![
                    peer(1, resolved("a.example:1", "192.0.2.1:1")),
                    peer(2, resolved("b.example:2", "198.51.100.2:2")),
                ]),
                unresolved: vec![Unresolved {
                    peer: Key::from_bytes([2; 32]),
                    endpoint: "b.example:2".into(),
                    kept: Some("198.51.100.2:2".parse().unwrap()),
                }],
            }
        );
        assert_eq!(
            r.unresolved[0].to_string(),
            format!(
                "endpoint b.example:2 of peer {} does not resolve; keeping its last address \
                 198.51.100.2:2",
                Key::from_bytes([2; 32])
            )
        );
    }

    #[test]
    fn an_unresolved_name_without_a_last_address_leaves_the_peer_without_endpoint() {
        let c = config(vec![peer(1, endpoint("a.example:1")), peer(2, endpoint("192.0.2.2:2"))]);
        // The device knows another peer only, and this one without an endpoint.
        let current = config(vec![peer(1, None), peer(3, endpoint("198.51.100.3:3"))]);
        let r = resolve_endpoints(&c, &BTreeMap::new(), &current);
        assert_eq!(
            r,
            Resolved {
                config: config(vec![peer(1, None), peer(2, endpoint("192.0.2.2:2"))]),
                unresolved: vec![Unresolved {
                    peer: Key::from_bytes([1; 32]),
                    endpoint: "a.example:1".into(),
                    kept: None,
                }],
            }
        );
        assert_eq!(
            r.unresolved[0].to_string(),
            format!(
                "endpoint a.example:1 of peer {} does not resolve; configuring the peer without \
                 an endpoint for now",
                Key::from_bytes([1; 32])
            )
        );
    }
}
