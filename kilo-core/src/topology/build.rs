//! Building a [`Topology`] (upstream `NewTopology`).

use std::borrow::Borrow;

use rustc_hash::{FxHashMap, FxHashSet};

use super::filter::{Containment, LocationIndex};
use super::{Member, Segment, Topology, TopologyError, TopologyInput};
use crate::Endpoint;
use crate::cidr::{Allocator, is_public};
use crate::{Cidr, Granularity, Node, Peer};

/// Prefix of segment keys that group a logical location.
pub const LOCATION_PREFIX: &str = "location:";
/// Prefix of segment keys that hold a single node.
pub const NODE_PREFIX: &str = "node:";

/// A segment key without allocation; its order is the order of the key strings, since every
/// `location:` key sorts before every `node:` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum GroupKey<'a> {
    Location(&'a str),
    Node(&'a str),
}

impl GroupKey<'_> {
    fn of(node: &Node, granularity: Granularity) -> GroupKey<'_> {
        match granularity {
            Granularity::Location if node.internal_ip.is_some() => {
                GroupKey::Location(&node.location)
            }
            _ => GroupKey::Node(&node.name),
        }
    }

    fn text(self) -> String {
        match self {
            GroupKey::Location(l) => format!("{LOCATION_PREFIX}{l}"),
            GroupKey::Node(n) => format!("{NODE_PREFIX}{n}"),
        }
    }
}

/// The distinct segment keys of `nodes`, sorted, and each node's index in them.
fn rank_keys(nodes: &[Node], granularity: Granularity) -> (Vec<GroupKey<'_>>, Vec<usize>) {
    // Number the keys in order of appearance, then renumber them in key order.
    let mut ids: FxHashMap<GroupKey<'_>, usize> = FxHashMap::default();
    let mut keys = Vec::new();
    let seen: Vec<usize> = nodes
        .iter()
        .map(|n| {
            let key = GroupKey::of(n, granularity);
            *ids.entry(key).or_insert_with(|| {
                keys.push(key);
                keys.len() - 1
            })
        })
        .collect();
    let mut by_key: Vec<usize> = (0..keys.len()).collect();
    by_key.sort_unstable_by_key(|&id| keys[id]);
    let mut rank = vec![0; keys.len()];
    for (r, &id) in by_key.iter().enumerate() {
        rank[id] = r;
    }
    let sorted = by_key.iter().map(|&id| keys[id]).collect();
    (sorted, seen.into_iter().map(|id| rank[id]).collect())
}

/// The node location of a node in `cross` granularity (Appendix A), else `None`.
fn node_location(node: &Node, granularity: Granularity) -> Option<String> {
    (granularity == Granularity::Cross).then(|| format!("{LOCATION_PREFIX}{}", node.location))
}

/// A node's segment key and, in `cross` granularity, its node location (upstream 5.1, Appendix A):
/// `location` → `location:<location>`, or `node:<name>` for a node without an internal IP;
/// `full` → `node:<name>`; `cross` → `node:<name>` with node location `location:<location>`.
pub fn segment_key(node: &Node, granularity: Granularity) -> (String, Option<String>) {
    (GroupKey::of(node, granularity).text(), node_location(node, granularity))
}

/// Upstream's `findLeader` (5.2) over a segment's nodes in the order given: the first volunteer
/// (`leader`) whose endpoint IP is public, else the first volunteer, else the first node whose
/// endpoint has a public (resolved) IP, else 0. An empty list gives 0.
///
/// Static meshes (contract 3) may hold nodes without an endpoint, which upstream never sees
/// (they are not ready there): such a node is never elected while a node of its segment has an
/// endpoint, so the rules above run over the dialable nodes first.
pub fn find_leader<N: Borrow<Node>>(nodes: &[N]) -> usize {
    let dialable: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].borrow().endpoint.as_ref().is_some_and(Endpoint::is_ready))
        .collect();
    if dialable.is_empty() || dialable.len() == nodes.len() {
        return upstream_find_leader(nodes);
    }
    let subset: Vec<&Node> = dialable.iter().map(|&i| nodes[i].borrow()).collect();
    dialable[upstream_find_leader(&subset)]
}

fn upstream_find_leader<N: Borrow<Node>>(nodes: &[N]) -> usize {
    let public = |n: &Node| n.endpoint.as_ref().and_then(|e| e.ip()).is_some_and(is_public);
    let mut volunteer = None;
    let mut first_public = None;
    for (i, node) in nodes.iter().map(Borrow::borrow).enumerate() {
        if node.leader {
            if public(node) {
                return i;
            }
            volunteer.get_or_insert(i);
        }
        if public(node) {
            first_public.get_or_insert(i);
        }
    }
    volunteer.or(first_public).unwrap_or(0)
}

/// Upstream's `deduplicatePeerIPs` (5.3): walking the peers in order, every allowed IP already
/// seen (in an earlier peer or earlier in the same peer) is dropped. Peers are kept even when
/// they end up with no allowed IPs.
pub fn deduplicate_peer_ips(peers: &[Peer]) -> Vec<Peer> {
    let mut seen = FxHashSet::default();
    peers
        .iter()
        .map(|p| Peer {
            allowed_ips: p.allowed_ips.iter().copied().filter(|ip| seen.insert(*ip)).collect(),
            ..p.clone()
        })
        .collect()
}

impl Topology {
    /// Builds the mesh as seen from `input.hostname`, exactly as upstream's `NewTopology`, except
    /// that running out of WireGuard addresses is an error naming the subnet (contract C5).
    pub fn new(input: TopologyInput<'_>) -> Result<Topology, TopologyError> {
        let TopologyInput {
            nodes,
            peers,
            granularity,
            hostname,
            port,
            key,
            subnet,
            subnet6,
            service_cidrs,
            persistent_keepalive,
        } = input;
        // A second range is used only beside a first of the other family (settings keep the
        // IPv4 range first).
        let subnet6 = subnet6.filter(|s6| s6.is_ipv4() != subnet.is_ipv4());
        let local = nodes.iter().find(|n| n.name == hostname).ok_or_else(|| {
            TopologyError::UnknownNode { hostname: hostname.to_string(), nodes: nodes.len() }
        })?;

        // Group: sort node indexes by (segment key, name); equal keys become one segment. The
        // distinct keys are numbered in key order first, so that the sort of all nodes compares
        // integers and compares names only within a segment (at 10,000 nodes, comparing the key
        // strings was most of the grouping's cost).
        let (keys, ranks) = rank_keys(nodes, granularity);
        let mut order: Vec<(usize, &str, usize)> = nodes
            .iter()
            .zip(ranks)
            .enumerate()
            .map(|(i, (n, rank))| (rank, n.name.as_str(), i))
            .collect();
        // Entries are distinct (the index is last), so a stable sort gives the same order as an
        // unstable one; it merges the runs that node lists usually hold (sorted by name, a
        // location's nodes together) instead of partitioning.
        order.sort();
        if let Some(w) = order.windows(2).find(|w| w[0].1 == w[1].1) {
            return Err(TopologyError::DuplicateNode { name: w[0].1.to_string() });
        }
        let local_key = GroupKey::of(local, granularity);
        let (location, node_location) = segment_key(local, granularity);

        let mut segments = Vec::new();
        let mut discovering: Vec<Vec<&Node>> = Vec::new();
        let mut leader = granularity == Granularity::Cross;
        let mut group = Vec::new();
        // Leaders follow the published health verdicts only when every node publishes one and
        // locations group nodes (see `crate::health`).
        let health = granularity == Granularity::Location && crate::health::in_use(nodes);
        for chunk in order.chunk_by(|a, b| a.0 == b.0) {
            let key = keys[chunk[0].0];
            group.clear();
            group.extend(chunk.iter().map(|&(_, _, i)| &nodes[i]));
            let segment =
                new_segment(&group, key.text(), self::node_location(group[0], granularity), health);
            if key == local_key && segment.leader_member().name == hostname {
                leader = true;
            }
            segments.push(segment);
            if group.iter().any(|n| n.discovered_endpoints.as_ref().is_some_and(|d| !d.is_empty()))
            {
                discovering.push(group.clone());
            } else {
                discovering.push(Vec::new());
            }
        }

        let mut sorted_peers: Vec<Peer> = peers.to_vec();
        sorted_peers.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = sorted_peers.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(TopologyError::DuplicatePeer { name: w[0].name.clone() });
        }

        // Allowed IPs that would take over a node's default route or underlay addresses are
        // left out, in every family (see `guard`).
        let (guarded, warnings) = super::guard::guard_peers(sorted_peers, nodes);
        let mut t = Topology {
            key,
            port,
            location,
            node_location,
            leader,
            persistent_keepalive,
            private_ip: local.internal_ip,
            private_ip6: local.internal_ip6,
            subnets: local.subnets.clone(),
            wireguard_cidr: subnet,
            wireguard_cidr6: subnet6,
            segments,
            peers: deduplicate_peer_ips(&guarded),
            discovered_endpoints: local.discovered_endpoints.clone().unwrap_or_default(),
            service_cidrs: service_cidrs.to_vec(),
            warnings,
        };
        t.allocate(subnet, subnet6, &discovering)?;
        Ok(t)
    }

    /// Allocates WireGuard IPs in segment order (5.5), merging discovered endpoints (5.4) and
    /// filtering allowed-location IPs (5.6) inside the same loop, as upstream does. A dual-stack
    /// mesh gives segment `i` the `i`-th address of each range.
    fn allocate(
        &mut self,
        subnet: Cidr,
        subnet6: Option<Cidr>,
        groups: &[Vec<&Node>],
    ) -> Result<(), TopologyError> {
        let mut allocator = Allocator::new(subnet);
        let mut allocator6 = subnet6.map(Allocator::new);
        let count = self.segments.len();
        let full = |subnet: Cidr| TopologyError::SubnetFull {
            subnet: subnet.network(),
            capacity: Allocator::new(subnet).capacity(),
            segments: count,
        };
        for range in std::iter::once(subnet).chain(subnet6) {
            if u128::try_from(count).map_or(true, |n| n > Allocator::new(range).capacity()) {
                return Err(full(range));
            }
        }
        // Built before any WireGuard /32 is appended; those are tracked by `allocated`.
        let mut index = Containment::new(&self.segments);
        let mut locations = LocationIndex::new(&self.segments, &self.peers);
        for (i, group) in groups.iter().enumerate() {
            let ip = allocator.next_ip().ok_or_else(|| full(subnet))?;
            let ip6 = match (&mut allocator6, subnet6) {
                (Some(a), Some(s6)) => Some(a.next_ip().ok_or_else(|| full(s6))?),
                _ => None,
            };
            let segment = &mut self.segments[i];
            segment.wireguard_ip = Some(ip.addr());
            segment.allowed_ips.push(Cidr::host(ip.addr()));
            index.allocated(subnet, i + 1);
            if let (Some(ip6), Some(s6)) = (ip6, subnet6) {
                segment.wireguard_ip6 = Some(ip6.addr());
                segment.allowed_ips.push(Cidr::host(ip6.addr()));
                index.allocated(s6, i + 1);
            }
            if self.leader && segment.location == self.location {
                self.wireguard_cidr = ip;
                if ip6.is_some() {
                    self.wireguard_cidr6 = ip6;
                }
            }
            for node in group {
                for (k, addr) in node.discovered_endpoints.iter().flatten() {
                    self.discovered_endpoints.entry(*k).or_insert(*addr);
                }
            }
            if !self.segments[i].allowed_location_ips.is_empty() {
                let filtered = self.filter_with(i, &index, &mut locations);
                self.segments[i].allowed_location_ips = filtered.kept;
                self.warnings.extend(filtered.warnings);
            }
        }
        Ok(())
    }
}

/// One segment from its name-sorted nodes (5.1), before allocation.
fn new_segment(
    nodes: &[&Node],
    location: String,
    node_location: Option<String>,
    health: bool,
) -> Segment {
    let (leader, election) = crate::health::elect(nodes, health);
    let mut allowed_ips = Vec::with_capacity(nodes.len() * 2 + 1);
    let mut seen = FxHashSet::default();
    let mut allowed_location_ips = Vec::new();
    let mut members = Vec::with_capacity(nodes.len());
    for node in nodes {
        allowed_ips.extend(node.subnets.iter().copied());
        allowed_location_ips
            .extend(node.allowed_location_ips.iter().copied().filter(|c| seen.insert(*c)));
        allowed_ips.extend(node.internal_ips().map(|ip| Cidr::host(ip.addr())));
        members.push(Member {
            name: node.name.clone(),
            subnets: node.subnets.clone(),
            internal_ip: node.internal_ip,
            internal_ip6: node.internal_ip6,
            cni_compatibility_ip: node.cni_compatibility_ip,
        });
    }
    allowed_location_ips.sort_by_cached_key(|c| c.to_string());
    let lead = nodes[leader];
    Segment {
        location,
        node_location,
        members,
        leader,
        key: lead.key,
        endpoint: lead.endpoint.clone(),
        persistent_keepalive: lead.persistent_keepalive,
        allowed_ips,
        wireguard_ip: None,
        wireguard_ip6: None,
        allowed_location_ips,
        election,
    }
}
