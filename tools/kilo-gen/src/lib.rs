//! # kilo-gen
//!
//! A deterministic generator of synthetic Kilo meshes, for benchmarks and load tests. It builds
//! the cluster shape of the project's upstream baseline (see `BENCHMARKS.md`) or a
//! variation of it, and writes it as the static mesh TOML (contract 3) or as a
//! `kubectl get nodes,peers -o yaml` document (contract 4).
//!
//! The model is plain text on purpose: this crate does not depend on `kilo-core`, so that
//! `kilo-core`'s benchmarks can use it without a dependency cycle. Node annotations come out as
//! the map a Kubernetes Node would carry ([`GenNode::annotations`]).
//!
//! The shape, node `i` of `N` in `L` locations (`j = i mod L`, member `k = i div L`):
//! - name `n%05d`, location `site-%04d` (annotation and region label);
//! - internal IP `172.(16+j/256).(j%256).(10+k)/24`, pod CIDR `10.(64+(i+1)/256).((i+1)%256).0/24`;
//! - member `k = j mod 10` carries the `leader` annotation;
//! - members 3 and 7 have public endpoints `34.a.b.c:51820`; in every 4th location member 5 has
//!   an IPv6 endpoint `[2001:db8::i]:51820` (`i` in hex); with `dns_every = d > 0`, in every d-th
//!   location member 1 has a DNS endpoint `n%05d.nodes.example.com:51820`; the others dial
//!   `<internal IP>:51820`;
//! - 1% of nodes (chosen by the seeded generator) have `force-internal-ip: ""`; member 0 of every
//!   other location has one `/28` allowed-location IP; 2% of nodes have `persistent-keepalive: 25`;
//! - peers `peer-%04d`: a /32 each, one in three also a /24, every 4th with an IP endpoint, every
//!   5th with keepalive 25, every 7th with a pre-shared key;
//! - every node has `last-seen: 4102444800` (year 2100), so it is ready.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

mod toml;
mod yaml;

pub use toml::to_toml;
pub use yaml::to_yaml;

/// The largest node count the address plan supports (pod CIDRs run out at 10.255.x.0/24).
pub const MAX_NODES: usize = 48_000;
/// The largest peer count the address plan supports (peer /24s run out at 10.239.x.0/24).
pub const MAX_PEERS: usize = 28_000;
/// The most nodes one location may hold (internal IPs run from .10 to .254).
pub const MAX_MEMBERS: usize = 244;
/// The `last-seen` every node carries: 2100-01-01T00:00:00Z, so every node is ready.
pub const LAST_SEEN: i64 = 4_102_444_800;
/// The WireGuard listen port of every endpoint.
pub const PORT: u16 = 51820;

/// The mesh to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Number of nodes (1 to [`MAX_NODES`]).
    pub nodes: usize,
    /// Number of locations (1 to `nodes`, at most [`MAX_MEMBERS`] nodes each).
    pub locations: usize,
    /// Number of peers (0 to [`MAX_PEERS`]).
    pub peers: usize,
    /// The seed of the random choices (keys, forced internal IPs, keepalives).
    pub seed: u64,
    /// Every `dns_every`-th location gives its member 1 a DNS endpoint; 0 means none.
    pub dns_every: usize,
}

impl Shape {
    /// The baseline's cluster shape for `nodes` nodes: `nodes/10` locations, `nodes/20` peers,
    /// seed `5000 + nodes`, no DNS endpoints.
    pub fn baseline(nodes: usize) -> Shape {
        Shape {
            nodes,
            locations: (nodes / 10).max(1),
            peers: nodes / 20,
            seed: 5000 + nodes as u64,
            dns_every: 0,
        }
    }
}

/// Why a shape cannot be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    /// The node count is 0 or above [`MAX_NODES`].
    #[error("--nodes {nodes}: must be 1 to {MAX_NODES}")]
    Nodes {
        /// The requested count.
        nodes: usize,
    },
    /// The location count is 0, above the node count, or leaves more than [`MAX_MEMBERS`] per
    /// location.
    #[error(
        "--locations {locations}: must be 1 to {nodes} and leave at most {MAX_MEMBERS} nodes per location"
    )]
    Locations {
        /// The requested count.
        locations: usize,
        /// The node count.
        nodes: usize,
    },
    /// The peer count is above [`MAX_PEERS`].
    #[error("--peers {peers}: must be at most {MAX_PEERS}")]
    Peers {
        /// The requested count.
        peers: usize,
    },
}

/// One generated node, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenNode {
    /// `n%05d`.
    pub name: String,
    /// `site-%04d`.
    pub location: String,
    /// The base64 WireGuard public key.
    pub key: String,
    /// The endpoint (`ip:port`, `[ipv6]:port` or `dns:port`).
    pub endpoint: String,
    /// The internal IP with its /24 mask.
    pub internal_ip: String,
    /// Whether the node carries `force-internal-ip: ""` (no private IP).
    pub no_internal_ip: bool,
    /// Whether the node carries the `leader` annotation.
    pub leader: bool,
    /// `persistent-keepalive` in seconds, if set.
    pub keepalive: Option<u32>,
    /// The pod CIDR.
    pub pod_cidr: String,
    /// The allowed-location IPs.
    pub allowed_location_ips: Vec<String>,
}

impl GenNode {
    /// The `kilo.squat.ai/*` annotations the node's agent (and its user) would have written,
    /// with the last-seen time [`LAST_SEEN`].
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        let mut put = |k: &str, v: String| a.insert(format!("kilo.squat.ai/{k}"), v);
        put("endpoint", self.endpoint.clone());
        put("internal-ip", self.internal_ip.clone());
        put("key", self.key.clone());
        put("last-seen", LAST_SEEN.to_string());
        put("location", self.location.clone());
        put("wireguard-ip", String::new());
        put("discovered-endpoints", String::new());
        if self.no_internal_ip {
            put("force-internal-ip", String::new());
        }
        if self.leader {
            put("leader", String::new());
        }
        if let Some(k) = self.keepalive {
            put("persistent-keepalive", k.to_string());
        }
        if !self.allowed_location_ips.is_empty() {
            put("allowed-location-ips", self.allowed_location_ips.join(","));
        }
        a
    }

    /// The labels a cloud node would carry, the region label naming the location.
    pub fn labels(&self) -> BTreeMap<String, String> {
        [
            ("kubernetes.io/arch", "amd64"),
            ("kubernetes.io/hostname", self.name.as_str()),
            ("kubernetes.io/os", "linux"),
            ("topology.kubernetes.io/region", self.location.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The internal IP without its mask.
    pub fn internal_addr(&self) -> &str {
        self.internal_ip.split('/').next().unwrap_or(&self.internal_ip)
    }
}

/// A peer's endpoint: an IP and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenEndpoint {
    /// The IP address.
    pub ip: String,
    /// The port.
    pub port: u16,
}

/// One generated peer, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenPeer {
    /// `peer-%04d`.
    pub name: String,
    /// The base64 public key.
    pub key: String,
    /// Allowed IPs: a /32, and for one in three also a /24.
    pub allowed_ips: Vec<String>,
    /// The endpoint of every 4th peer.
    pub endpoint: Option<GenEndpoint>,
    /// Keepalive 25 on every 5th peer.
    pub keepalive: Option<u32>,
    /// A base64 pre-shared key on every 7th peer.
    pub preshared_key: Option<String>,
}

/// A generated mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mesh {
    /// The nodes, `n00000` first.
    pub nodes: Vec<GenNode>,
    /// The peers, `peer-0000` first.
    pub peers: Vec<GenPeer>,
}

/// SplitMix64: small, fast, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn key(&mut self) -> String {
        let mut bytes = [0u8; 32];
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        STANDARD.encode(bytes)
    }

    /// True with probability 1/n.
    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }
}

/// Generates the mesh of `shape`; the same shape always gives the same mesh.
pub fn generate(shape: &Shape) -> Result<Mesh, ShapeError> {
    let Shape { nodes: n, locations: l, peers: p, seed, dns_every } = *shape;
    if n == 0 || n > MAX_NODES {
        return Err(ShapeError::Nodes { nodes: n });
    }
    if l == 0 || l > n || n.div_ceil(l) > MAX_MEMBERS {
        return Err(ShapeError::Locations { locations: l, nodes: n });
    }
    if p > MAX_PEERS {
        return Err(ShapeError::Peers { peers: p });
    }
    let mut rng = Rng(seed);
    let nodes = (0..n).map(|i| node(i, l, dns_every, &mut rng)).collect();
    let peers = (0..p).map(|q| peer(q, &mut rng)).collect();
    Ok(Mesh { nodes, peers })
}

fn node(i: usize, l: usize, dns_every: usize, rng: &mut Rng) -> GenNode {
    let (j, k) = (i % l, i / l);
    let internal = format!("172.{}.{}.{}", 16 + j / 256, j % 256, 10 + k);
    let endpoint = if k == 3 || k == 7 {
        format!("34.{}.{}.{}:{PORT}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
    } else if k == 5 && j % 4 == 0 {
        format!("[2001:db8::{i:x}]:{PORT}")
    } else if k == 1 && dns_every > 0 && j % dns_every == 0 {
        format!("n{i:05}.nodes.example.com:{PORT}")
    } else {
        format!("{internal}:{PORT}")
    };
    let pod = i + 1;
    let allowed_location_ips = if k == 0 && j % 2 == 0 {
        vec![format!("100.{}.{}.{}/28", 64 + (j >> 12), (j >> 4) & 255, (j & 15) << 4)]
    } else {
        Vec::new()
    };
    GenNode {
        name: format!("n{i:05}"),
        location: format!("site-{j:04}"),
        key: rng.key(),
        endpoint,
        internal_ip: format!("{internal}/24"),
        no_internal_ip: rng.one_in(100),
        leader: k == j % 10,
        keepalive: rng.one_in(50).then_some(25),
        pod_cidr: format!("10.{}.{}.0/24", 64 + pod / 256, pod % 256),
        allowed_location_ips,
    }
}

fn peer(q: usize, rng: &mut Rng) -> GenPeer {
    let mut allowed_ips = vec![format!("10.240.{}.{}/32", q >> 8, q & 255)];
    if q.is_multiple_of(3) {
        allowed_ips.push(format!("10.{}.{}.0/24", 128 + (q >> 8), q & 255));
    }
    GenPeer {
        name: format!("peer-{q:04}"),
        key: rng.key(),
        allowed_ips,
        endpoint: q
            .is_multiple_of(4)
            .then(|| GenEndpoint { ip: format!("198.18.{}.{}", q >> 8, q & 255), port: PORT }),
        keepalive: q.is_multiple_of(5).then_some(25),
        preshared_key: q.is_multiple_of(7).then(|| rng.key()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_shape_gives_the_same_mesh() {
        let shape = Shape::baseline(1000);
        assert_eq!(generate(&shape), generate(&shape));
    }

    #[test]
    fn another_seed_gives_other_keys() {
        let a = generate(&Shape::baseline(100)).unwrap();
        let b = generate(&Shape { seed: 1, ..Shape::baseline(100) }).unwrap();
        assert_ne!(a.nodes[0].key, b.nodes[0].key);
        assert_eq!(a.nodes[0].name, b.nodes[0].name);
    }

    #[test]
    fn the_baseline_shape_has_ten_nodes_per_location_and_spread_leaders() {
        let mesh = generate(&Shape::baseline(1000)).unwrap();
        assert_eq!(mesh.nodes.len(), 1000);
        assert_eq!(mesh.peers.len(), 50);
        let first = &mesh.nodes[0];
        assert_eq!(first.name, "n00000");
        assert_eq!(first.location, "site-0000");
        assert_eq!(first.internal_ip, "172.16.0.10/24");
        assert_eq!(first.pod_cidr, "10.64.1.0/24");
        assert!(first.leader);
        assert_eq!(first.allowed_location_ips, ["100.64.0.0/28"]);
        let site3: Vec<&GenNode> =
            mesh.nodes.iter().filter(|n| n.location == "site-0003").collect();
        assert_eq!(site3.len(), 10);
        assert_eq!(site3.iter().filter(|n| n.leader).count(), 1);
        assert!(site3[3].leader);
        assert!(site3[3].endpoint.starts_with("34."));
        let ipv6 = mesh.nodes.iter().filter(|n| n.endpoint.starts_with('[')).count();
        assert_eq!(ipv6, 25);
        let forced = mesh.nodes.iter().filter(|n| n.no_internal_ip).count();
        assert!((3..=25).contains(&forced), "{forced} nodes without internal IP");
    }

    #[test]
    fn peers_follow_the_every_nth_rules() {
        let mesh = generate(&Shape::baseline(2000)).unwrap();
        let p = &mesh.peers;
        assert_eq!(p.len(), 100);
        assert_eq!(p.iter().filter(|p| p.allowed_ips.len() == 2).count(), 34);
        assert_eq!(p.iter().filter(|p| p.endpoint.is_some()).count(), 25);
        assert_eq!(p.iter().filter(|p| p.keepalive.is_some()).count(), 20);
        assert_eq!(p.iter().filter(|p| p.preshared_key.is_some()).count(), 15);
    }

    #[test]
    fn dns_endpoints_appear_only_when_asked() {
        let shape = Shape { dns_every: 2, ..Shape::baseline(100) };
        let mesh = generate(&shape).unwrap();
        let dns = mesh.nodes.iter().filter(|n| n.endpoint.contains("example.com")).count();
        assert_eq!(dns, 5);
    }

    #[test]
    fn impossible_shapes_are_refused_with_the_offending_value() {
        assert_eq!(
            generate(&Shape { nodes: 0, ..Shape::baseline(10) }),
            Err(ShapeError::Nodes { nodes: 0 })
        );
        let crowded = Shape { locations: 1, ..Shape::baseline(1000) };
        assert_eq!(generate(&crowded), Err(ShapeError::Locations { locations: 1, nodes: 1000 }));
        let err = generate(&Shape { peers: 1_000_000, ..Shape::baseline(10) }).unwrap_err();
        assert!(err.to_string().contains("1000000"));
    }
}
