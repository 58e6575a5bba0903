//! The `Peer` custom resource (`peers.kilo.squat.ai`, `v1alpha1`, cluster scoped), with upstream's
//! spec field names and a schema that makes the API server reject malformed
//! Peers on its own: keys must be 44-character base64 of 32 bytes, every allowed IP a CIDR (CEL
//! `isCIDR`, Kubernetes ≥ 1.31), at least one allowed IP, a port of 1 to 65535, a non-negative
//! keepalive and an endpoint with a DNS name or an IP.

use std::borrow::Cow;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResource;
use kube::core::CustomResourceExt;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use kilo_core::peer_spec;

/// The `pattern` of a WireGuard key: standard base64 of 32 bytes (43 characters and one `=`).
pub const KEY_PATTERN: &str = "^[A-Za-z0-9+/]{43}=$";

/// The `pattern` of an endpoint's DNS name: an RFC 1123 subdomain (or empty: use `ip`).
pub const DNS_PATTERN: &str =
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)?$";

/// The most allowed IPs one Peer may list (bounds the cost of the CEL rules).
pub const MAX_ALLOWED_IPS: u32 = 1024;

/// The spec of a `Peer` (the CRD's `spec`). The JSON shape is upstream's; see
/// [`kilo_core::peer_spec::PeerSpec`] for the meaning of each field and conversions both ways.
/// Its `Debug` output (and so a `Peer`'s) never shows `presharedKey`.
#[derive(CustomResource, Serialize, Deserialize, Clone, PartialEq, Eq, Default)]
#[kube(
    group = "kilo.squat.ai",
    version = "v1alpha1",
    kind = "Peer",
    plural = "peers",
    singular = "peer",
    derive = "PartialEq",
    doc = "A WireGuard peer of the Kilo mesh: a laptop, a phone, another cluster."
)]
#[serde(rename_all = "camelCase")]
pub struct PeerSpec {
    /// `allowedIPs`: CIDRs routed to the peer (host bits allowed).
    #[serde(rename = "allowedIPs", default)]
    pub allowed_ips: Vec<String>,
    /// `endpoint`: where to dial the peer, if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<PeerEndpoint>,
    /// `persistentKeepalive`: seconds; absent or 0 disables it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_keepalive: Option<i64>,
    /// `presharedKey`: base64 pre-shared key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preshared_key: Option<String>,
    /// `publicKey`: base64 WireGuard public key.
    #[serde(default)]
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

/// `spec.endpoint`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct PeerEndpoint {
    /// `dnsOrIP`.
    #[serde(rename = "dnsOrIP", default)]
    pub dns_or_ip: DnsOrIp,
    /// `port`.
    #[serde(default)]
    pub port: i32,
}

/// `spec.endpoint.dnsOrIP`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct DnsOrIp {
    /// `dns`: an RFC 1123 subdomain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
    /// `ip`: an IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

impl JsonSchema for PeerSpec {
    fn schema_name() -> Cow<'static, str> {
        "PeerSpec".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "The peer's WireGuard settings.",
            "type": "object",
            "required": ["allowedIPs", "publicKey"],
            "properties": {
                "allowedIPs": {
                    "description": "CIDRs routed to the peer, such as 10.5.0.1/32.",
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_ALLOWED_IPS,
                    "items": {
                        "type": "string",
                        "maxLength": 64,
                        "x-kubernetes-validations": [{
                            "rule": "isCIDR(self)",
                            "message": "each allowed IP must be a CIDR such as 10.5.0.1/32"
                        }]
                    }
                },
                "endpoint": {
                    "description": "Where to dial the peer; a DNS name wins over an IP.",
                    "type": "object",
                    "required": ["dnsOrIP", "port"],
                    "properties": {
                        "dnsOrIP": {
                            "type": "object",
                            "properties": {
                                "dns": {
                                    "description": "An RFC 1123 DNS name.",
                                    "type": "string",
                                    "maxLength": 253,
                                    "pattern": DNS_PATTERN
                                },
                                "ip": {
                                    "description": "An IPv4 or IPv6 address.",
                                    "type": "string",
                                    "maxLength": 64,
                                    "x-kubernetes-validations": [{
                                        "rule": "self == '' || isIP(self)",
                                        "message": "the endpoint IP must be an IP address"
                                    }]
                                }
                            },
                            "x-kubernetes-validations": [{
                                "rule": "(has(self.dns) && self.dns != '') || (has(self.ip) && self.ip != '')",
                                "message": "either an endpoint DNS name or IP address must be given"
                            }]
                        },
                        "port": {
                            "description": "The UDP port.",
                            "type": "integer",
                            "format": "int32",
                            "minimum": 1,
                            "maximum": 65535
                        }
                    }
                },
                "persistentKeepalive": {
                    "description": "Seconds between keepalive packets; 0 disables them.",
                    "type": "integer",
                    "minimum": 0
                },
                "presharedKey": {
                    "description": "An optional base64 pre-shared key.",
                    "type": "string",
                    "pattern": "^$|^[A-Za-z0-9+/]{43}=$"
                },
                "publicKey": {
                    "description": "The peer's base64 WireGuard public key.",
                    "type": "string",
                    "pattern": KEY_PATTERN
                }
            }
        })
    }
}

impl From<PeerSpec> for peer_spec::PeerSpec {
    fn from(spec: PeerSpec) -> Self {
        peer_spec::PeerSpec {
            allowed_ips: spec.allowed_ips,
            endpoint: spec.endpoint.map(|e| peer_spec::PeerEndpoint {
                dns_or_ip: peer_spec::DnsOrIp { dns: e.dns_or_ip.dns, ip: e.dns_or_ip.ip },
                port: e.port,
            }),
            persistent_keepalive: spec.persistent_keepalive,
            preshared_key: spec.preshared_key,
            public_key: spec.public_key,
        }
    }
}

impl From<&PeerSpec> for peer_spec::PeerSpec {
    fn from(spec: &PeerSpec) -> Self {
        spec.clone().into()
    }
}

impl From<peer_spec::PeerSpec> for PeerSpec {
    fn from(spec: peer_spec::PeerSpec) -> Self {
        PeerSpec {
            allowed_ips: spec.allowed_ips,
            endpoint: spec.endpoint.map(|e| PeerEndpoint {
                dns_or_ip: DnsOrIp { dns: e.dns_or_ip.dns, ip: e.dns_or_ip.ip },
                port: e.port,
            }),
            persistent_keepalive: spec.persistent_keepalive,
            preshared_key: spec.preshared_key,
            public_key: spec.public_key,
        }
    }
}

/// The CustomResourceDefinition of `peers.kilo.squat.ai`, as a Kubernetes object (with
/// upstream's explicit `listKind: PeerList`).
pub fn peer_crd() -> CustomResourceDefinition {
    let mut crd = Peer::crd();
    crd.spec.names.list_kind = Some("PeerList".to_string());
    crd
}

/// The CRD manifest as YAML (`manifests/crds.yaml`; `kg crds` prints it).
pub fn crd_yaml() -> String {
    // A CRD built from static data always serialises.
    let body = crate::yaml::to_yaml(&peer_crd()).unwrap_or_default();
    format!("---\n{body}")
}
