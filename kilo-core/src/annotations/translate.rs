//! Upstream's `translateNode`: a Kubernetes Node to a [`Node`].

use std::time::Duration;

use super::{AnnotationIssue, NodeObject, discovered, go, key};
use crate::cidr::parse_network;
use crate::health::LeaderHealth;
use crate::{Cidr, Endpoint, Granularity, Key, Node};

/// How many bad entries of a list annotation an issue names before summarising.
const MAX_NAMED: usize = 5;

struct Reader<'a> {
    annotations: &'a std::collections::BTreeMap<String, String>,
    issues: Vec<AnnotationIssue>,
}

impl<'a> Reader<'a> {
    fn get(&self, key: &str) -> Option<&'a str> {
        self.annotations.get(key).map(String::as_str)
    }

    fn issue(&mut self, key: &str, value: &str, message: impl Into<String>) {
        self.issues.push(AnnotationIssue {
            key: key.to_string(),
            value: value.to_string(),
            message: message.into(),
        });
    }

    /// An endpoint annotation; `""` is "none" without an issue.
    fn endpoint(&mut self, key: &str, fallback: &str) -> Option<Endpoint> {
        let value = self.get(key)?;
        match value.parse::<Endpoint>() {
            Ok(e) => Some(e),
            Err(_) if value.is_empty() && key == key::ENDPOINT => None,
            Err(e) => {
                self.issue(key, value, format!("{}; {fallback}", e.reason));
                None
            }
        }
    }

    /// A CIDR annotation parsed as upstream's `normalizeIP`; `""` is "none" without an issue.
    fn cidr(&mut self, key: &str, empty_is_none: bool) -> Option<Cidr> {
        let value = self.get(key)?;
        match value.parse::<Cidr>() {
            Ok(c) => Some(c),
            Err(_) if value.is_empty() && empty_is_none => None,
            Err(_) => {
                self.issue(key, value, "not a CIDR such as 10.1.0.1/24; ignored");
                None
            }
        }
    }

    /// A decimal i64 annotation (Go's `strconv.ParseInt(s, 10, 64)`), `0` when it does not parse.
    /// An IPv6 CIDR annotation that completes `first` (of the same kind, from the singular
    /// annotation) on a dual-stack node: ignored, with an issue, when it is not IPv6 or when
    /// `first` is not IPv4.
    fn cidr6(&mut self, key: &str, first: Option<Cidr>) -> Option<Cidr> {
        let cidr = self.cidr(key, true)?;
        if cidr.is_ipv4() {
            let value = self.get(key).unwrap_or_default();
            self.issue(key, value, "not an IPv6 CIDR; ignored");
            return None;
        }
        if first.is_some_and(|f| !f.is_ipv4()) {
            let value = self.get(key).unwrap_or_default();
            self.issue(key, value, "the IPv4 annotation it completes holds IPv6; ignored");
            return None;
        }
        Some(cidr)
    }

    fn int(&mut self, key: &str, what: &str) -> i64 {
        let Some(value) = self.get(key) else { return 0 };
        match value.parse::<i64>() {
            Ok(n) => n,
            Err(_) => {
                self.issue(key, value, format!("not a decimal {what}; using 0"));
                0
            }
        }
    }
}

/// Upstream's `translateNode`. It never fails: every value that does
/// not parse is ignored as upstream ignores it, and listed in the returned issues. Absent
/// annotations are not issues, nor are the empty values kg itself writes for "none" (`endpoint`,
/// `internal-ip`, `wireguard-ip`, `discovered-endpoints`, `granularity`, `cni-compatibility-ip`).
///
/// Differences from upstream, all on values upstream cannot use either: a negative
/// `persistent-keepalive` yields zero (upstream: a negative duration); discovered endpoints whose
/// key is not a WireGuard key, whose address is null or has no IP, or whose port is out of range
/// are left out; every pod CIDR is read (upstream reads only `spec.podCIDR`, the first).
pub fn node_from_object(
    obj: &NodeObject<'_>,
    topology_label: &str,
) -> (Node, Vec<AnnotationIssue>) {
    let mut r = Reader { annotations: obj.annotations, issues: Vec::new() };

    let forced = r.endpoint(key::FORCE_ENDPOINT, "using kilo.squat.ai/endpoint instead");
    let endpoint_forced = forced.is_some();
    let published = r.endpoint(key::ENDPOINT, "ignored");
    let endpoint = forced.or(published);

    let (no_internal_ip, forced_ip) = match r.get(key::FORCE_INTERNAL_IP) {
        None => (false, None),
        Some("" | "-") => (true, None),
        Some(value) => match value.parse::<Cidr>() {
            Ok(cidr) => (false, Some(cidr)),
            Err(_) => {
                r.issue(
                    key::FORCE_INTERNAL_IP,
                    value,
                    "not a CIDR such as 10.1.0.1/24 (nor \"\" or \"-\" for none); \
                     using kilo.squat.ai/internal-ip instead",
                );
                (false, None)
            }
        },
    };
    let published_ip = r.cidr(key::INTERNAL_IP, true);
    let internal_ip_forced = no_internal_ip || forced_ip.is_some();
    let internal_ip = if no_internal_ip { None } else { forced_ip.or(published_ip) };
    let published_ip6 = r.cidr6(key::INTERNAL_IP6, internal_ip);
    let internal_ip6 = if no_internal_ip || internal_ip.is_none() { None } else { published_ip6 };

    let key = match r.get(key::KEY).map(|value| (value, go::parse_key(value))) {
        None => Key::ZERO,
        Some((_, Ok(key))) => key,
        Some((value, Err(message))) => {
            r.issue(key::KEY, value, format!("{message}; the node is not ready"));
            Key::ZERO
        }
    };

    let last_seen = r.int(key::LAST_SEEN, "Unix time");

    let keepalive = r.int(key::PERSISTENT_KEEPALIVE, "number of seconds");
    let persistent_keepalive = match u64::try_from(keepalive) {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let value = r.get(key::PERSISTENT_KEEPALIVE).unwrap_or_default();
            r.issue(key::PERSISTENT_KEEPALIVE, value, "negative keepalive; using 0");
            Duration::ZERO
        }
    };

    let location = match r.get(key::LOCATION) {
        Some(location) => location.to_string(),
        None => obj.labels.get(topology_label).cloned().unwrap_or_default(),
    };

    let mut subnets: Vec<Cidr> = Vec::with_capacity(obj.pod_cidrs.len());
    for text in obj.pod_cidrs {
        match parse_network(text) {
            Ok(cidr) if subnets.iter().any(|s| s.is_ipv4() == cidr.is_ipv4()) => r.issue(
                "spec.podCIDRs",
                text,
                "a second pod CIDR of one address family (Kubernetes allows one per family); \
                 ignored",
            ),
            Ok(cidr) => subnets.push(cidr),
            Err(_) => r.issue("spec.podCIDRs", text, "not a CIDR such as 10.2.0.0/24; ignored"),
        }
    }

    let wireguard_ip = r.cidr(key::WIREGUARD_IP, true);
    let wireguard_ip6 = r.cidr6(key::WIREGUARD_IP6, wireguard_ip);
    let cni_compatibility_ip = r.cidr(key::CNI_COMPATIBILITY_IP, true);

    let discovered_endpoints = match r.get(key::DISCOVERED_ENDPOINTS) {
        None | Some("") => None,
        Some(value) => match discovered::decode(value) {
            Ok((map, problems)) => {
                if !problems.is_empty() {
                    r.issue(key::DISCOVERED_ENDPOINTS, value, summarise(&problems, "left out"));
                }
                map
            }
            Err(message) => {
                r.issue(key::DISCOVERED_ENDPOINTS, value, format!("{message}; ignored"));
                None
            }
        },
    };

    let mut allowed_location_ips = Vec::new();
    if let Some(value) = r.get(key::ALLOWED_LOCATION_IPS) {
        let mut bad = Vec::new();
        if !value.is_empty() {
            for entry in value.split(',') {
                match entry.parse::<Cidr>() {
                    Ok(cidr) => allowed_location_ips.push(cidr),
                    Err(_) => bad.push(format!("{} is not a CIDR", go::quote_short(entry))),
                }
            }
        }
        if !bad.is_empty() {
            r.issue(key::ALLOWED_LOCATION_IPS, value, summarise(&bad, "skipped"));
        }
    }

    let granularity = match r.get(key::GRANULARITY) {
        None | Some("") => None,
        Some(value) => match value.parse::<Granularity>() {
            Ok(g) => Some(g),
            Err(e) => {
                r.issue(key::GRANULARITY, value, format!("not one of {}; ignored", e.allowed));
                None
            }
        },
    };

    let health = match r.get(key::LEADER_HEALTH) {
        None | Some("") => None,
        Some(value) => match value.parse::<LeaderHealth>() {
            Ok(h) => Some(h),
            Err(e) => {
                r.issue(
                    key::LEADER_HEALTH,
                    value,
                    format!("{e}; ignored (the mesh keeps upstream's leader election)"),
                );
                None
            }
        },
    };

    let node = Node {
        name: obj.name.to_string(),
        endpoint,
        endpoint_forced,
        key,
        no_internal_ip,
        internal_ip,
        internal_ip_forced,
        internal_ip6,
        cni_compatibility_ip,
        last_seen,
        leader: obj.annotations.contains_key(key::LEADER),
        location,
        persistent_keepalive,
        subnets,
        wireguard_ip,
        wireguard_ip6,
        discovered_endpoints,
        allowed_location_ips,
        granularity,
        health,
    };
    (node, r.issues)
}

/// `a; b; c and 4 more; <verb>`.
fn summarise(problems: &[String], verb: &str) -> String {
    let mut message = problems.iter().take(MAX_NAMED).cloned().collect::<Vec<_>>().join("; ");
    if problems.len() > MAX_NAMED {
        message.push_str(&format!(" and {} more", problems.len() - MAX_NAMED));
    }
    format!("{message}; {verb}")
}
