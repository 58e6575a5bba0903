//! Mesh-wide checks (`kgctl validate`): structured findings naming the objects involved and what
//! to do. Errors are states the mesh cannot work in, or that silently divert traffic; warnings are
//! states that work but are probably not meant.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use crate::admission::{Cluster, ClusterIndex, Refusal};
use crate::backend::{Invalid, ObjectKind};
use crate::cidr::{Allocator, describe_ip_class};
use crate::{Cidr, Granularity, Node, Peer};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Severity {
    /// Works, but probably not as meant.
    Warning,
    /// The mesh cannot work this way, or traffic is diverted.
    Error,
}

/// An object a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct ObjectRef {
    /// Node or peer.
    pub kind: ObjectKind,
    /// Its name.
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ObjectKind::Node => "node",
            ObjectKind::Peer => "peer",
            ObjectKind::Other => "object",
        };
        write!(f, "{kind} {:?}", self.name)
    }
}

/// One problem found in the mesh.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// The objects involved.
    pub objects: Vec<ObjectRef>,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

impl fmt::Display for Finding {
    /// `error: node "a", peer "b": <message>; <hint>`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let objects: Vec<String> = self.objects.iter().map(ToString::to_string).collect();
        write!(f, "{sev}: {}: {}; {}", objects.join(", "), self.message, self.hint)
    }
}

/// What [`validate`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct ValidationInput<'a> {
    /// Every node the source has (ready or not).
    pub nodes: &'a [Node],
    /// Every peer the source has.
    pub peers: &'a [Peer],
    /// Objects the source left out, and fields it ignored.
    pub invalid: &'a [Invalid],
    /// Objects kept with an ignored field.
    pub ignored: &'a [Invalid],
    /// The mesh granularity.
    pub granularity: Granularity,
    /// The WireGuard subnet.
    pub subnet: Cidr,
    /// The IPv6 WireGuard subnet of a dual-stack mesh.
    pub subnet6: Option<Cidr>,
    /// The service CIDRs (`--service-cidr`), which no peer may route.
    pub service_cidrs: &'a [Cidr],
}

fn node(name: &str) -> ObjectRef {
    ObjectRef { kind: ObjectKind::Node, name: name.to_string() }
}

fn peer(name: &str) -> ObjectRef {
    ObjectRef { kind: ObjectKind::Peer, name: name.to_string() }
}

fn finding(severity: Severity, objects: Vec<ObjectRef>, message: String, hint: &str) -> Finding {
    Finding { severity, objects, message, hint: hint.to_string() }
}

/// How many segments (WireGuard addresses) the mesh needs.
pub fn segment_count(nodes: &[Node], granularity: Granularity) -> usize {
    match granularity {
        Granularity::Full | Granularity::Cross => nodes.len(),
        Granularity::Location => {
            let mut keys = BTreeSet::new();
            for n in nodes {
                keys.insert(match n.internal_ip {
                    Some(_) => ("location", n.location.as_str()),
                    None => ("node", n.name.as_str()),
                });
            }
            keys.len()
        }
    }
}

/// Checks the whole mesh; findings are sorted errors first, in a stable order.
pub fn validate(input: &ValidationInput<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for inv in input.invalid {
        let obj = ObjectRef { kind: inv.kind, name: inv.name.clone() };
        out.push(finding(
            Severity::Error,
            vec![obj],
            format!("left out of the mesh: {}", inv.message),
            "fix the object; until then the agent ignores it",
        ));
    }
    for inv in input.ignored {
        let obj = ObjectRef { kind: inv.kind, name: inv.name.clone() };
        out.push(finding(
            Severity::Warning,
            vec![obj],
            format!("ignored: {}", inv.message),
            "the agent ignores this value as upstream Kilo does; fix or remove it",
        ));
    }
    duplicates(input, &mut out);
    nodes(input, &mut out);
    peers(input, &mut out);
    allowed_location_ips(input, &mut out);
    lan_families(input, &mut out);
    let needed = segment_count(input.nodes, input.granularity);
    for subnet in std::iter::once(input.subnet).chain(input.subnet6) {
        let capacity = Allocator::new(subnet).capacity();
        if (needed as u128) > capacity {
            out.push(finding(
                Severity::Error,
                vec![],
                format!(
                    "WireGuard subnet {} has {capacity} addresses but the mesh has {needed} segments in {} granularity",
                    subnet.network(),
                    input.granularity
                ),
                "use a larger --subnet",
            ));
        }
    }
    out.sort_by_key(|f| std::cmp::Reverse(f.severity));
    out
}

fn duplicates(input: &ValidationInput<'_>, out: &mut Vec<Finding>) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    for n in input.nodes {
        *names.entry(&n.name).or_default() += 1;
    }
    let mut dups: Vec<_> = names.into_iter().filter(|(_, c)| *c > 1).collect();
    dups.sort();
    for (name, count) in dups {
        out.push(finding(
            Severity::Error,
            vec![node(name)],
            format!("{count} nodes share this name"),
            "give every node a unique name",
        ));
    }
    let mut keys: HashMap<crate::Key, Vec<ObjectRef>> = HashMap::new();
    for n in input.nodes.iter().filter(|n| !n.key.is_zero()) {
        keys.entry(n.key).or_default().push(node(&n.name));
    }
    for p in input.peers.iter().filter(|p| !p.public_key.is_zero()) {
        keys.entry(p.public_key).or_default().push(peer(&p.name));
    }
    let mut dups: Vec<_> = keys.into_iter().filter(|(_, v)| v.len() > 1).collect();
    dups.sort_by(|a, b| a.1.cmp(&b.1));
    for (key, objects) in dups {
        out.push(finding(
            Severity::Error,
            objects,
            format!("public key {key} is used more than once"),
            "every node and peer needs its own key pair (wg genkey | wg pubkey)",
        ));
    }
}

fn nodes(input: &ValidationInput<'_>, out: &mut Vec<Finding>) {
    for n in input.nodes {
        if n.key.is_zero() {
            out.push(finding(
                Severity::Error,
                vec![node(&n.name)],
                "has no WireGuard public key".into(),
                "the node is left out until its agent publishes a key",
            ));
        }
        if n.endpoint.is_none() && n.persistent_keepalive.is_zero() {
            out.push(finding(
                Severity::Warning,
                vec![node(&n.name)],
                "has no endpoint and no persistent-keepalive: no one can dial it and it never dials out".into(),
                "give it an endpoint, or persistent-keepalive (e.g. 25) if it is behind NAT",
            ));
        }
        let ip = n.endpoint.as_ref().and_then(|e| e.ip());
        if let Some(ip) = ip.filter(|ip| ip.is_loopback() || ip.is_unspecified()) {
            out.push(finding(
                Severity::Error,
                vec![node(&n.name)],
                format!("endpoint {ip} is a {} address", describe_ip_class(ip)),
                "set force-endpoint to an address other nodes can reach",
            ));
        }
    }
}

fn peers(input: &ValidationInput<'_>, out: &mut Vec<Finding>) {
    let wireguard_subnets: Vec<Cidr> = std::iter::once(input.subnet).chain(input.subnet6).collect();
    // The admission rules, against the nodes and the peers listed before each peer (so that each
    // overlapping pair is reported once); the nodes are indexed once for all the peers.
    let mut admission = ClusterIndex::new(Cluster {
        nodes: input.nodes,
        peers: &[],
        wireguard_subnets: &wireguard_subnets,
        service_cidrs: input.service_cidrs,
    });
    for (i, p) in input.peers.iter().enumerate() {
        if p.allowed_ips.is_empty() {
            out.push(finding(
                Severity::Error,
                vec![peer(&p.name)],
                "has no allowed IPs".into(),
                "give the peer at least one allowed IP",
            ));
        }
        if p.endpoint.as_ref().is_some_and(|e| e.dns().is_some() && e.ip().is_some()) {
            out.push(finding(
                Severity::Warning,
                vec![peer(&p.name)],
                "endpoint has both a DNS name and an IP; the DNS name wins".into(),
                "set only one of endpoint.dnsOrIP.dns and endpoint.dnsOrIP.ip",
            ));
        }
        for aip in p.allowed_ips.iter().filter(|aip| !aip.is_network()) {
            out.push(finding(
                Severity::Warning,
                vec![peer(&p.name)],
                format!("allowed IP {aip} has host bits set; it is used as {}", aip.network()),
                "write the network address",
            ));
        }
        admission.set_peers(&input.peers[..i]);
        for refusal in admission.refusals(p) {
            if matches!(refusal, Refusal::KeyOfNode { .. } | Refusal::KeyOfPeer { .. }) {
                // Reported once per key, naming every holder, by `duplicates`.
                continue;
            }
            let mut objects: Vec<ObjectRef> = refusal.peer().map(peer).into_iter().collect();
            objects.push(peer(&p.name));
            objects.extend(refusal.node().map(node));
            out.push(finding(Severity::Error, objects, refusal.to_string(), refusal.hint()));
        }
    }
}

/// Nodes that share a location (location granularity) reach the other locations through the
/// leader, over their private network, one address family at a time: a node of such a location
/// without a private IP of a family the mesh routes cannot reach that family elsewhere whenever
/// it is not the leader (Linux routes IPv6 only through an IPv6 next hop, and Kilo routes IPv4
/// only through an IPv4 one).
fn lan_families(input: &ValidationInput<'_>, out: &mut Vec<Finding>) {
    if input.granularity != Granularity::Location {
        return;
    }
    // Pod subnets of the family make it an error; only peers' allowed IPs, a warning (the
    // location's pods still reach each other; those peers are reached from the leader only).
    let routed = |v4: bool| {
        if input.nodes.iter().any(|n| n.subnets.iter().any(|s| s.is_ipv4() == v4)) {
            Some(Severity::Error)
        } else {
            input
                .peers
                .iter()
                .any(|p| p.allowed_ips.iter().any(|a| a.is_ipv4() == v4))
                .then_some(Severity::Warning)
        }
    };
    let mut locations: BTreeMap<&str, Vec<&Node>> = BTreeMap::new();
    for n in input.nodes.iter().filter(|n| n.internal_ip.is_some()) {
        locations.entry(&n.location).or_default().push(n);
    }
    for (location, members) in locations.into_iter().filter(|(_, m)| m.len() > 1) {
        for (v4, family, other) in [(true, "IPv4", "IPv6"), (false, "IPv6", "IPv4")] {
            let Some(severity) = routed(v4) else { continue };
            let lacking: Vec<ObjectRef> = members
                .iter()
                .filter(|n| !n.internal_ips().any(|c| c.is_ipv4() == v4))
                .map(|n| node(&n.name))
                .collect();
            if lacking.is_empty() {
                continue;
            }
            out.push(finding(
                severity,
                lacking,
                format!(
                    "location {location:?} shares a LAN without {family} private IPs on these \
                     nodes: a node that is not the leader reaches other locations' {family} \
                     destinations through the leader's {family} private IP, and a route cannot \
                     go through an {other} next hop, so those routes are left out"
                ),
                "give every node of the location a private IP of that family (kg publishes it as \
                 kilo.squat.ai/internal-ip6; a mesh file lists both in internal-ip), or put the \
                 node in a location of its own",
            ));
        }
    }
}

fn allowed_location_ips(input: &ValidationInput<'_>, out: &mut Vec<Finding>) {
    let mut seen: Vec<(Cidr, &str, &str)> = Vec::new();
    for n in input.nodes {
        for alip in &n.allowed_location_ips {
            let net = alip.network();
            for (other, name, location) in &seen {
                let same = *name == n.name
                    || (*location == n.location && input.granularity == Granularity::Location);
                if !same && net.overlaps(other) {
                    out.push(finding(
                        Severity::Error,
                        vec![node(name), node(&n.name)],
                        format!("allowed-location-ips {other} and {alip} overlap across locations: both are dropped from the mesh"),
                        "give each location distinct allowed-location-ips",
                    ));
                }
            }
            for m in input.nodes {
                if let Some(s) = m.subnets.iter().find(|s| s.contains(alip.addr())) {
                    out.push(finding(
                        Severity::Error,
                        vec![node(&n.name), node(&m.name)],
                        format!(
                            "allowed-location-ip {alip} lies inside pod subnet {s}; it is dropped"
                        ),
                        "remove it from kilo.squat.ai/allowed-location-ips",
                    ));
                }
            }
            seen.push((net, &n.name, &n.location));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn run(nodes: &[Node], peers: &[Peer], subnet: &str) -> Vec<Finding> {
        validate(&ValidationInput {
            nodes,
            peers,
            invalid: &[],
            ignored: &[],
            granularity: Granularity::Location,
            subnet: subnet.parse().unwrap(),
            subnet6: None,
            service_cidrs: &[],
        })
    }

    #[test]
    fn a_peer_that_hijacks_a_pod_subnet_is_an_error_naming_both() {
        let mut peers = fixtures::peers();
        peers[1].allowed_ips.push("10.2.1.0/25".parse().unwrap());
        let found = run(&fixtures::nodes(), &peers, "10.4.0.0/16");
        let f = found
            .iter()
            .find(|f| f.message.contains("pod subnet 10.2.1.0/24"))
            .expect("hijack reported");
        assert_eq!(f.severity, Severity::Error);
        assert_eq!(f.objects, vec![peer("b"), node("a")]);
        assert!(f.to_string().starts_with("error: peer \"b\", node \"a\": allowed IP 10.2.1.0/25"));
    }

    #[test]
    fn the_upstream_fixture_reports_its_shared_key_and_host_bits() {
        let found = run(&fixtures::nodes(), &fixtures::peers(), "10.4.0.0/16");
        assert!(found.iter().any(|f| f.severity == Severity::Error
            && f.objects == vec![node("d"), peer("a")]
            && f.message.contains("used more than once")));
        assert!(found.iter().any(|f| f.severity == Severity::Warning
            && f.message.contains("10.5.0.1/24 has host bits set")));
        // Peer a's 10.5.0.1/24 and 10.5.0.2/24 are the same network: the second overlaps the first
        // within the same peer, which is not a hijack.
        assert!(!found.iter().any(|f| f.objects == vec![peer("a"), peer("a")]));
    }

    /// Two nodes of location "lab" and one elsewhere, with pod subnets of both families; the
    /// lab's private IPs as given.
    fn lab(a: &[&str], b: &[&str], peer_v6_only: bool) -> (Vec<Node>, Vec<Peer>) {
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        let ips = |list: &[&str]| {
            let all: Vec<Cidr> = list.iter().map(|s| c(s)).collect();
            crate::cidr::per_family(&all).unwrap()
        };
        let node = |name: &str, location: &str, n: u8, (ip, ip6): (Option<Cidr>, Option<Cidr>)| {
            let subnets = if peer_v6_only {
                vec![c(&format!("10.2.{n}.0/24"))]
            } else {
                vec![c(&format!("10.2.{n}.0/24")), c(&format!("fd02:{n}::/64"))]
            };
            Node {
                name: name.into(),
                location: location.into(),
                key: crate::Key::from_bytes([n; 32]),
                internal_ip: ip,
                internal_ip6: ip6,
                subnets,
                ..Node::default()
            }
        };
        let nodes = vec![
            node("a", "lab", 1, ips(a)),
            node("b", "lab", 2, ips(b)),
            node("c", "cloud", 3, ips(&["10.0.0.3/24", "fd00:20::3/64"])),
        ];
        let peers = vec![Peer {
            name: "p".into(),
            allowed_ips: vec![c("fd05::1/128")],
            public_key: crate::Key::from_bytes([9; 32]),
            ..Peer::default()
        }];
        (nodes, peers)
    }

    #[test]
    fn a_location_whose_lan_lacks_a_family_the_pods_use_is_an_error_naming_its_nodes() {
        let lan = |found: Vec<Finding>| -> Vec<String> {
            found
                .iter()
                .filter(|f| f.message.contains("shares a LAN"))
                .map(ToString::to_string)
                .collect()
        };
        // A dual-stack LAN: nothing to say.
        let (nodes, peers) =
            lab(&["192.168.1.1/24", "fd00:1::1/64"], &["192.168.1.2/24", "fd00:1::2/64"], false);
        assert_eq!(lan(run(&nodes, &peers, "10.4.0.0/16")), Vec::<String>::new());
        // b has no IPv6 private IP: whichever leads, IPv6 cannot cross the LAN to or from it.
        let (nodes, peers) = lab(&["192.168.1.1/24", "fd00:1::1/64"], &["192.168.1.2/24"], false);
        assert_eq!(
            lan(run(&nodes, &peers, "10.4.0.0/16")),
            ["error: node \"b\": location \"lab\" shares a LAN without IPv6 private IPs on these \
              nodes: a node that is not the leader reaches other locations' IPv6 destinations \
              through the leader's IPv6 private IP, and a route cannot go through an IPv4 next \
              hop, so those routes are left out; give every node of the location a private IP of \
              that family (kg publishes it as kilo.squat.ai/internal-ip6; a mesh file lists both \
              in internal-ip), or put the node in a location of its own"]
        );
        // An IPv6-only LAN with IPv4 pods: the same, for IPv4.
        let (nodes, peers) = lab(&["fd00:1::1/64"], &["fd00:1::2/64"], false);
        let found = lan(run(&nodes, &peers, "10.4.0.0/16"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with(
            "error: node \"a\", node \"b\": location \"lab\" shares a LAN without IPv4"
        ));
        // Only a peer uses IPv6: a warning.
        let (nodes, peers) = lab(&["192.168.1.1/24"], &["192.168.1.2/24"], true);
        let found = lan(run(&nodes, &peers, "10.4.0.0/16"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with(
            "warning: node \"a\", node \"b\": location \"lab\" shares a LAN without IPv6"
        ));
    }

    #[test]
    fn a_subnet_too_small_for_the_segments_is_an_error() {
        let found = run(&fixtures::nodes(), &[], "10.4.0.0/31");
        assert!(found.iter().any(|f| f.severity == Severity::Error
            && f.message.contains("has 1 addresses but the mesh has 3 segments")));
        assert!(
            !run(&fixtures::nodes(), &[], "10.4.0.0/30")
                .iter()
                .any(|f| f.message.contains("segments"))
        );
    }

    #[test]
    fn a_node_no_one_can_dial_is_a_warning() {
        let mut nodes = fixtures::nodes();
        nodes[2].endpoint = None;
        let found = run(&nodes, &[], "10.4.0.0/16");
        assert!(
            found.iter().any(|f| f.objects == vec![node("c")] && f.message.contains("no endpoint"))
        );
        nodes[2].persistent_keepalive = std::time::Duration::from_secs(25);
        assert!(!run(&nodes, &[], "10.4.0.0/16").iter().any(|f| f.message.contains("no endpoint")));
    }

    #[test]
    fn overlapping_allowed_location_ips_across_locations_are_errors() {
        let mut nodes = fixtures::nodes();
        nodes[0].allowed_location_ips = vec!["192.168.178.0/24".parse().unwrap()];
        let found = run(&nodes, &[], "10.4.0.0/16");
        assert!(found.iter().any(|f| f.objects == vec![node("a"), node("b")]
            && f.message.contains("overlap across locations")));
    }
}
