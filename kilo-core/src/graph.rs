//! The mesh as a graph ([petgraph]) and its Graphviz DOT text with upstream's structure:
//! one subgraph per segment, `cluster_peers`, leader edges `dir=both`,
//! dashed edges to peers.
//!
//! Differences from upstream, both deliberate: a peer named like a node is drawn as its own
//! vertex (`"peer:<name>"`) instead of merging into the node, and the writer is linear in its
//! output (upstream's is quadratic).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use petgraph::graph::{DiGraph, NodeIndex};

use crate::Topology;

/// A vertex of the mesh graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vertex {
    /// The DOT identifier, unquoted (the node or peer name).
    pub id: String,
    /// The DOT subgraph holding it, unquoted (`cluster_location_location:gcp`, `cluster_peers`).
    pub subgraph: String,
    /// The label lines (joined with DOT's `\n`).
    pub label: Vec<String>,
    /// Whether this vertex leads its segment.
    pub leader: bool,
    /// Whether this is an external peer (its label ends with a newline, as upstream's does).
    pub peer: bool,
}

/// What an edge means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EdgeKind {
    /// A segment leader to a member of its segment (WireGuard or private network).
    Member,
    /// Two members of one location in `cross` granularity (private network, dotted).
    SameLocation,
    /// Two segment leaders (a WireGuard tunnel).
    Leaders,
    /// A segment leader to an external peer (dashed).
    Peer,
}

impl EdgeKind {
    fn attrs(self) -> &'static str {
        match self {
            EdgeKind::Member | EdgeKind::Leaders => "dir=both",
            EdgeKind::SameLocation => "arrowhead=none, arrowtail=none, dir=both, style=dotted",
            EdgeKind::Peer => "dir=both, style=dashed",
        }
    }
}

/// A subgraph (cluster) and its label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// The label (`location:gcp`, `peers`).
    pub label: String,
}

/// The mesh as a directed graph; edge indexes follow upstream's insertion order.
#[derive(Debug, Clone)]
pub struct MeshGraph {
    /// The graph; edges are in DOT output order.
    pub graph: DiGraph<Vertex, EdgeKind>,
    /// Clusters by name.
    pub clusters: BTreeMap<String, Cluster>,
    /// The graph label: the WireGuard subnet.
    pub label: String,
}

fn subgraph_name(location: &str) -> String {
    format!("cluster_location_{location}")
}

impl Topology {
    /// The mesh as a graph, built as upstream's `Dot()` builds it.
    pub fn graph(&self) -> MeshGraph {
        let mut graph = DiGraph::new();
        let mut clusters = BTreeMap::new();
        let mut leaders = Vec::with_capacity(self.segments.len());
        let mut node_names = HashSet::new();
        // Members of each cluster, in name order (upstream's `SortedChildren`).
        let mut cluster_members: BTreeMap<String, Vec<(String, NodeIndex)>> = BTreeMap::new();
        let mut edges: Vec<(NodeIndex, NodeIndex, EdgeKind)> = Vec::new();

        for s in &self.segments {
            let location = s.node_location.as_deref().unwrap_or(&s.location);
            let cluster = subgraph_name(location);
            clusters.insert(cluster.clone(), Cluster { label: location.to_string() });
            let mut indexes = Vec::with_capacity(s.members.len());
            for (j, m) in s.members.iter().enumerate() {
                let leader = j == s.leader;
                let mut label = vec![location.to_string(), m.name.clone()];
                label.push(
                    m.subnets.first().map(|c| c.to_string()).unwrap_or_else(|| "<nil>".into()),
                );
                // A dual-stack node's other pod subnet follows the first.
                label.extend(m.subnets.iter().skip(1).map(ToString::to_string));
                for ip in m.internal_ip.iter().chain(&m.internal_ip6) {
                    label.push(ip.addr().to_string());
                }
                if leader {
                    for wg in s.wireguard_ip.iter().chain(&s.wireguard_ip6) {
                        label.push(wg.to_string());
                    }
                    if let Some(e) = &s.endpoint {
                        label.push(e.to_string());
                    }
                }
                node_names.insert(m.name.clone());
                let ix = graph.add_node(Vertex {
                    id: m.name.clone(),
                    subgraph: cluster.clone(),
                    label,
                    leader,
                    peer: false,
                });
                indexes.push((m.name.clone(), ix));
            }
            let members = cluster_members.entry(cluster).or_default();
            members.extend(indexes.iter().cloned());
            if s.node_location.is_some() {
                // cross: members of one location reach each other over the private network.
                members.sort();
                if let Some(&(_, me)) = indexes.get(s.leader) {
                    for (_, other) in members.iter().filter(|(_, ix)| *ix != me) {
                        edges.push((*other, me, EdgeKind::SameLocation));
                    }
                }
            } else {
                let mut sorted = indexes.clone();
                sorted.sort();
                if let Some((_, leader)) = indexes.iter().find(|(_, ix)| graph[*ix].leader) {
                    for (_, ix) in sorted.iter().filter(|(_, ix)| ix != leader) {
                        edges.push((*leader, *ix, EdgeKind::Member));
                    }
                }
            }
            if let Some((_, ix)) = indexes.iter().find(|(_, ix)| graph[*ix].leader) {
                leaders.push(*ix);
            }
        }
        let leader_ix = leaders;
        let mut connected: HashSet<(NodeIndex, NodeIndex)> =
            edges.iter().map(|(a, b, _)| (*a, *b)).collect();
        for i in 0..leader_ix.len() {
            for j in i + 1..leader_ix.len() {
                let (a, b) = (leader_ix[i], leader_ix[j]);
                let same_location = self.segments[i].node_location.is_some()
                    && self.segments[i].node_location == self.segments[j].node_location;
                if same_location || connected.contains(&(a, b)) {
                    continue;
                }
                connected.insert((a, b));
                edges.push((a, b, EdgeKind::Leaders));
            }
        }

        clusters.insert("cluster_peers".into(), Cluster { label: "peers".into() });
        let mut peers: Vec<(String, NodeIndex)> = Vec::with_capacity(self.peers.len());
        for p in &self.peers {
            let id = if node_names.contains(&p.name) {
                format!("peer:{}", p.name)
            } else {
                p.name.clone()
            };
            let endpoint = p.endpoint.as_ref().map(|e| e.to_string()).unwrap_or_default();
            let ix = graph.add_node(Vertex {
                id: id.clone(),
                subgraph: "cluster_peers".into(),
                label: vec![p.name.clone(), endpoint],
                leader: false,
                peer: true,
            });
            peers.push((id, ix));
        }
        peers.sort();
        for &leader in &leader_ix {
            for (_, peer) in &peers {
                edges.push((leader, *peer, EdgeKind::Peer));
            }
        }
        for (a, b, kind) in edges {
            graph.add_edge(a, b, kind);
        }

        // The mesh's WireGuard range, and in a dual-stack mesh its IPv6 range after it.
        let label = std::iter::once(self.wireguard_cidr)
            .chain(self.wireguard_cidr6)
            .map(|c| c.network().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        MeshGraph { graph, clusters, label }
    }

    /// The mesh in Graphviz DOT, as `kgctl graph` prints it (without the final newline that
    /// `kgctl` adds).
    pub fn dot(&self) -> String {
        self.graph().to_dot()
    }
}

/// Escapes a name for use inside a DOT double-quoted string.
fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['"', '\\', '\n']) {
        s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n").into()
    } else {
        s.into()
    }
}

impl MeshGraph {
    /// The DOT text, byte-compatible with upstream's for the same mesh.
    pub fn to_dot(&self) -> String {
        let g = &self.graph;
        let mut out = String::with_capacity(64 * (g.node_count() + g.edge_count()) + 256);
        out.push_str("digraph kilo {\n");
        let _ = writeln!(out, "\tlabel=\"{}\";", esc(&self.label));
        out.push_str("\tlabelloc=t;\n\toutputorder=nodesfirst;\n\toverlap=false;\n");
        for e in g.edge_indices() {
            let (a, b) = g.edge_endpoints(e).unwrap_or_default();
            let _ = writeln!(
                out,
                "\t\"{}\"->\"{}\"[ {} ];",
                esc(&g[a].id),
                esc(&g[b].id),
                g[e].attrs()
            );
        }
        let mut by_cluster: BTreeMap<&str, Vec<&Vertex>> = BTreeMap::new();
        for v in g.node_weights() {
            by_cluster.entry(v.subgraph.as_str()).or_default().push(v);
        }
        for (name, cluster) in &self.clusters {
            let _ = writeln!(out, "\tsubgraph \"{}\" {{", esc(name));
            let _ = writeln!(out, "\tlabel=\"{}\";", esc(&cluster.label));
            out.push_str("\tstyle=\"dashed,rounded\";\n");
            let mut vertices = by_cluster.remove(name.as_str()).unwrap_or_default();
            vertices.sort_by(|a, b| a.id.cmp(&b.id));
            vertices.dedup_by(|a, b| a.id == b.id);
            for v in vertices {
                let label: Vec<_> = v.label.iter().map(|l| esc(l)).collect();
                let _ = write!(out, "\t\"{}\" [ label=\"{}", esc(&v.id), label.join("\\n"));
                if v.peer {
                    out.push('\n');
                }
                out.push('"');
                if v.leader {
                    out.push_str(", rank=1");
                }
                out.push_str(", shape=ellipse ];\n");
            }
            out.push_str("\n}\n;\n");
        }
        out.push_str("\n}\n");
        out
    }
}
