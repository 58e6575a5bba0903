//! The `Peer` custom resource's spec (`peers.kilo.squat.ai/v1alpha1`): its
//! JSON shape, upstream's `Validate()`, and translation to and from a mesh [`Peer`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::annotations::go;
use crate::{Cidr, Endpoint, Key, Peer, PresharedKey};

/// The Peer CRD spec, with upstream's JSON names (3.1).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
///
/// Its `Debug` output never shows `presharedKey`.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PeerSpec {
    /// `allowedIPs`: CIDRs routed to the peer (host bits allowed). `null` reads as empty.
    #[serde(rename = "allowedIPs", default, deserialize_with = "null_as_default")]
    pub allowed_ips: Vec<String>,
    /// `endpoint`: where to dial the peer, if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<PeerEndpoint>,
    /// `persistentKeepalive`: seconds; absent or 0 disables it.
    #[serde(default, skip_serializing_if = "is_none_or_zero")]
    pub persistent_keepalive: Option<i64>,
    /// `presharedKey`: base64 pre-shared key.
    #[serde(default, skip_serializing_if = "is_none_or_empty")]
    pub preshared_key: Option<String>,
    /// `publicKey`: base64 WireGuard public key. `null` reads as empty.
    #[serde(default, deserialize_with = "null_as_default")]
    pub public_key: String,
}

impl std::fmt::Debug for PeerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerSpec")
            .field("allowed_ips", &self.allowed_ips)
            .field("endpoint", &self.endpoint)
            .field("persistent_keepalive", &self.persistent_keepalive)
            .field("preshared_key", &self.preshared_key.as_ref().map(|_| "<redacted>"))
            .field("public_key", &self.public_key)
            .finish()
    }
}

/// `spec.endpoint`: a DNS name or IP, and a port.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct PeerEndpoint {
    /// `dnsOrIP`.
    #[serde(rename = "dnsOrIP", default)]
    pub dns_or_ip: DnsOrIp,
    /// `port`.
    #[serde(default)]
    pub port: i32,
}

/// `spec.endpoint.dnsOrIP`: a DNS name and/or an IP address (DNS wins when both are set, as
/// upstream does: contract C3).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct DnsOrIp {
    /// `dns`: an RFC 1123 subdomain.
    #[serde(default, skip_serializing_if = "is_none_or_empty")]
    pub dns: Option<String>,
    /// `ip`: an IP address.
    #[serde(default, skip_serializing_if = "is_none_or_empty")]
    pub ip: Option<String>,
}

fn is_none_or_zero(v: &Option<i64>) -> bool {
    matches!(v, None | Some(0))
}

fn is_none_or_empty(v: &Option<String>) -> bool {
    v.as_deref().is_none_or(str::is_empty)
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Why a Peer spec is invalid; the messages are upstream's `Validate()` messages, word for word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerSpecError {
    /// An `allowedIPs` entry is not a CIDR.
    #[error("failed to parse {} as a valid IP address: invalid CIDR address: {ip}", go::quote(ip))]
    AllowedIp {
        /// The entry.
        ip: String,
    },
    /// The endpoint has neither `dns` nor `ip`.
    #[error("either an endpoint DNS name IP address must be given")]
    EndpointMissing,
    /// The endpoint's `dns` is not an RFC 1123 subdomain.
    #[error("{}", problems.join("; "))]
    EndpointDns {
        /// The name.
        dns: String,
        /// Kubernetes' validation messages.
        problems: Vec<String>,
    },
    /// The endpoint's `ip` is not an IP address.
    #[error("failed to parse {} as a valid IP address", go::quote(ip))]
    EndpointIp {
        /// The text.
        ip: String,
    },
    /// The endpoint's port is not 1 to 65535.
    #[error("port must be a valid UDP port number, got {port}")]
    Port {
        /// The port.
        port: i32,
    },
    /// `persistentKeepalive` is negative. (Upstream prints the value with Go's `%q`, which turns
    /// any negative number into `'�'`; the message keeps that, the field has the value.)
    #[error("persistent keepalive must be greater than or equal to zero; got '\u{fffd}'")]
    NegativeKeepalive {
        /// The value.
        value: i64,
    },
    /// `publicKey` is not standard base64.
    #[error(
        "WireGuard public key is not base64 encoded: illegal base64 data at input byte {offset}"
    )]
    PublicKeyNotBase64 {
        /// Go's offset of the first bad byte.
        offset: usize,
    },
    /// `publicKey` does not decode to 32 bytes.
    #[error("WireGuard public key has invalid length")]
    PublicKeyLength {
        /// The decoded length.
        len: usize,
    },
}

/// Upstream's `Validate()`: checks in upstream's order, first failure wins.
/// An empty `allowedIPs` list is valid (such a peer is simply not ready).
pub fn validate(spec: &PeerSpec) -> Result<(), PeerSpecError> {
    for ip in &spec.allowed_ips {
        if ip.parse::<Cidr>().is_err() {
            return Err(PeerSpecError::AllowedIp { ip: ip.clone() });
        }
    }
    if let Some(endpoint) = &spec.endpoint {
        let dns = endpoint.dns_or_ip.dns.as_deref().unwrap_or_default();
        let ip = endpoint.dns_or_ip.ip.as_deref().unwrap_or_default();
        if dns.is_empty() && ip.is_empty() {
            return Err(PeerSpecError::EndpointMissing);
        }
        if !dns.is_empty() {
            let problems = go::dns1123_subdomain_errors(dns);
            if !problems.is_empty() {
                return Err(PeerSpecError::EndpointDns { dns: dns.to_string(), problems });
            }
        }
        if !ip.is_empty() && ip.parse::<IpAddr>().is_err() {
            return Err(PeerSpecError::EndpointIp { ip: ip.to_string() });
        }
        if !(1..=65535).contains(&endpoint.port) {
            return Err(PeerSpecError::Port { port: endpoint.port });
        }
    }
    if let Some(value) = spec.persistent_keepalive.filter(|k| *k < 0) {
        return Err(PeerSpecError::NegativeKeepalive { value });
    }
    match go::base64_decode(&spec.public_key) {
        Err(offset) => Err(PeerSpecError::PublicKeyNotBase64 { offset }),
        Ok(bytes) if bytes.len() != 32 => Err(PeerSpecError::PublicKeyLength { len: bytes.len() }),
        Ok(_) => Ok(()),
    }
}

/// A key as wgtypes' `ParseKey` reads it (Go's lenient base64, exactly 32 bytes).
fn parse_key(text: &str) -> Option<Key> {
    go::parse_key(text).ok()
}

/// Upstream's `translatePeer`. Never fails: invalid allowed IPs are
/// skipped, an unparseable public key becomes the zero key (the peer is then not ready), an
/// unparseable pre-shared key is dropped. The endpoint is read only when the port is 1 to 65535;
/// a `dns` name wins over `ip` (contract C3), and an invalid `dns` gives no endpoint.
pub fn peer_from_spec(name: &str, spec: &PeerSpec) -> Peer {
    let allowed_ips = spec.allowed_ips.iter().filter_map(|ip| ip.parse::<Cidr>().ok()).collect();
    let endpoint = spec.endpoint.as_ref().and_then(|e| {
        let port = u16::try_from(e.port).ok().filter(|p| *p > 0)?;
        match e.dns_or_ip.dns.as_deref().filter(|d| !d.is_empty()) {
            Some(dns) => format!("{dns}:{port}").parse::<Endpoint>().ok(),
            None => {
                let ip = e.dns_or_ip.ip.as_deref()?.parse::<IpAddr>().ok()?;
                Some(Endpoint::from_addr(SocketAddr::new(ip, port)))
            }
        }
    });
    let keepalive = spec.persistent_keepalive.unwrap_or(0);
    Peer {
        name: name.to_string(),
        allowed_ips,
        public_key: parse_key(&spec.public_key).unwrap_or(Key::ZERO),
        preshared_key: spec
            .preshared_key
            .as_deref()
            .and_then(parse_key)
            .map(|k| PresharedKey::from_bytes(*k.as_bytes())),
        persistent_keepalive: Duration::from_secs(u64::try_from(keepalive).unwrap_or(0)),
        endpoint,
    }
}

/// A mesh [`Peer`] (or a node exported as a peer) as a Peer spec, with contract C1/C2 fixes: a
/// DNS endpoint's name goes in `dnsOrIP.dns` without its port (an IP endpoint's address in
/// `dnsOrIP.ip`), the keepalive is in whole seconds (omitted when zero), and there is no
/// `endpoint` when the peer has no ready endpoint.
pub fn spec_from_peer(peer: &Peer) -> PeerSpec {
    let endpoint = peer.endpoint.as_ref().filter(|e| e.is_ready()).and_then(|e| {
        let port = i32::from(e.port());
        if let Some(host) = e.dns_host() {
            let dns_or_ip = DnsOrIp { dns: Some(host.to_string()), ip: None };
            return Some(PeerEndpoint { dns_or_ip, port });
        }
        let ip = e.ip()?;
        Some(PeerEndpoint { dns_or_ip: DnsOrIp { dns: None, ip: Some(ip.to_string()) }, port })
    });
    let secs = peer.persistent_keepalive.as_secs();
    PeerSpec {
        allowed_ips: peer.allowed_ips.iter().map(Cidr::to_string).collect(),
        endpoint,
        persistent_keepalive: (secs > 0).then(|| i64::try_from(secs).unwrap_or(i64::MAX)),
        preshared_key: peer.preshared_key.map(|k| k.expose_base64()),
        public_key: peer.public_key.to_base64(),
    }
}
