//! Allowed-location-IP filtering (upstream `filterAllowedLocationIPs`).
//!
//! Upstream scans every segment's allowed IPs, every other segment's allowed-location IPs and
//! every peer's allowed IPs for every allowed-location IP, which is quadratic when both grow with
//! the cluster. Here the allowed IPs are matched once against the (few) allowed-location
//! addresses, sorted, and the allowed-location IPs and peer allowed IPs are indexed
//! ([`CidrIndex`]), so the cost grows as (segments + allowed-location IPs) times a logarithm;
//! the results, warnings included, are the same as upstream's scan.

use std::net::IpAddr;

use rustc_hash::{FxHashMap, FxHashSet};

use super::{Segment, Topology};
use crate::{Cidr, Peer};

/// The outcome of filtering one segment's allowed-location IPs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filtered {
    /// The entries kept, in input order.
    pub kept: Vec<Cidr>,
    /// One message per dropped entry, naming it and what it overlaps.
    pub warnings: Vec<String>,
}

/// An address as (is IPv4, integer).
fn int(addr: IpAddr) -> (bool, u128) {
    match addr {
        IpAddr::V4(v4) => (true, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (false, u128::from(v6)),
    }
}

/// The first and last address of a CIDR's network, as integers.
fn range(c: &Cidr) -> ((bool, u128), (bool, u128)) {
    let (v4, n) = int(c.addr());
    let host = u32::from(c.host_bits());
    let mask = if host >= 128 { u128::MAX } else { (1u128 << host) - 1 };
    ((v4, n & !mask), (v4, n | mask))
}

/// Answers "which allowed IP (of which segment) contains this allowed-location address" for the
/// allowed-location addresses known when it was built.
#[derive(Debug, Default)]
pub(super) struct Containment {
    /// The distinct allowed-location addresses, sorted.
    addrs: Vec<(bool, u128)>,
    /// For each of `addrs`, the first allowed IP containing it, in segment order.
    first: Vec<Option<(usize, Cidr)>>,
    /// The WireGuard subnet and how many addresses it has handed out (segments `0..count`),
    /// for WireGuard /32s not present in the segments' allowed IPs when this was built.
    wireguard: [Option<(Cidr, usize)>; 2],
}

impl Containment {
    /// Matches every segment's current allowed IPs against every allowed-location address.
    pub(super) fn new(segments: &[Segment]) -> Containment {
        let mut addrs: Vec<(bool, u128)> =
            segments.iter().flat_map(|s| &s.allowed_location_ips).map(|c| int(c.addr())).collect();
        addrs.sort_unstable();
        addrs.dedup();
        let mut first = vec![None; addrs.len()];
        if !addrs.is_empty() {
            // IPv4 addresses sort last (`(true, _)`); they are searched as `u32`s, which is
            // cheaper than comparing `(bool, u128)` pairs, for the many IPv4 allowed IPs.
            let split = addrs.partition_point(|a| !a.0);
            let v4: Vec<u32> =
                addrs[split..].iter().map(|a| u32::try_from(a.1).unwrap_or(u32::MAX)).collect();
            // Allowed-location IPs usually lie apart from pod subnets and node addresses:
            // networks outside their span hold none of them and need no search.
            let (v4_min, v4_max) =
                (v4.first().copied().unwrap_or(u32::MAX), v4.last().copied().unwrap_or(0));
            for (j, s) in segments.iter().enumerate() {
                for c in &s.allowed_ips {
                    // One binary search, then a walk: a network holds few of these addresses.
                    let (start, held) = match c.addr() {
                        IpAddr::V4(ip) => {
                            let host = u32::from(c.host_bits());
                            let mask = if host >= 32 { u32::MAX } else { (1u32 << host) - 1 };
                            let (lo, hi) = (u32::from(ip) & !mask, u32::from(ip) | mask);
                            if hi < v4_min || lo > v4_max {
                                continue;
                            }
                            let start = v4.partition_point(|a| *a < lo);
                            (split + start, v4[start..].iter().take_while(|a| **a <= hi).count())
                        }
                        IpAddr::V6(_) => {
                            let (lo, hi) = range(c);
                            let start = addrs.partition_point(|a| *a < lo);
                            (start, addrs[start..].iter().take_while(|a| **a <= hi).count())
                        }
                    };
                    for slot in &mut first[start..start + held] {
                        slot.get_or_insert((j, *c));
                    }
                }
            }
        }
        Containment { addrs, first, wireguard: [None, None] }
    }

    /// Records that the allocator over `subnet` has handed out `count` addresses.
    pub(super) fn allocated(&mut self, subnet: Cidr, count: usize) {
        let slot = usize::from(!subnet.is_ipv4());
        self.wireguard[slot] = Some((subnet.network(), count));
    }

    /// The first allowed IP (with its segment index) whose network contains `addr`.
    fn containing(&self, addr: IpAddr, segments: &[Segment]) -> Option<(usize, Cidr)> {
        let key = int(addr);
        let known = match self.addrs.binary_search(&key) {
            Ok(i) => self.first[i],
            // Not an address known at build time: scan.
            Err(_) => segments.iter().enumerate().find_map(|(j, s)| {
                s.allowed_ips.iter().find(|c| c.contains(addr)).map(|c| (j, *c))
            }),
        };
        let wireguard = self.wireguard.iter().flatten().find_map(|&(subnet, count)| {
            if !subnet.contains(addr) {
                return None;
            }
            let offset = key.1.checked_sub(int(subnet.addr()).1)?;
            let j = usize::try_from(offset).ok()?.checked_sub(1)?;
            (j < count).then(|| (j, Cidr::host(addr)))
        });
        match (known, wireguard) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

/// An owner (segment or peer index) and a position in its list.
type Tag = (usize, usize);

/// CIDRs tagged with (owner, position), answering "the smallest tag whose CIDR intersects this
/// one" (upstream's `intersects`: either network contains the other's stored address) without
/// scanning them all.
#[derive(Debug, Default)]
pub(super) struct CidrIndex {
    /// By network: the entries whose network is the key (they contain a query address when the
    /// query address masked to the key's prefix is the key).
    by_network: FxHashMap<Cidr, Vec<(Tag, Cidr)>>,
    /// The distinct prefix lengths present, per family (IPv4, IPv6).
    prefixes: (Vec<u8>, Vec<u8>),
    /// By stored address, sorted: the entries whose address lies inside a query network.
    by_addr: Vec<((bool, u128), Tag, Cidr)>,
}

impl CidrIndex {
    fn new(entries: impl IntoIterator<Item = (Tag, Cidr)>) -> CidrIndex {
        let mut index = CidrIndex::default();
        for (tag, c) in entries {
            index.by_network.entry(c.network()).or_default().push((tag, c));
            let prefixes =
                if c.addr().is_ipv4() { &mut index.prefixes.0 } else { &mut index.prefixes.1 };
            if !prefixes.contains(&c.prefix()) {
                prefixes.push(c.prefix());
            }
            index.by_addr.push((int(c.addr()), tag, c));
        }
        index.by_addr.sort_unstable_by_key(|e| (e.0, e.1));
        index
    }

    /// The entry with the smallest tag that intersects `q` and passes `live`.
    fn first_intersecting(&self, q: &Cidr, live: impl Fn(Tag) -> bool) -> Option<(Tag, Cidr)> {
        let mut best: Option<(Tag, Cidr)> = None;
        let mut consider = |tag: Tag, c: Cidr| {
            if live(tag) && best.is_none_or(|(b, _)| tag < b) {
                best = Some((tag, c));
            }
        };
        // Entries whose network contains q's address.
        let prefixes = if q.addr().is_ipv4() { &self.prefixes.0 } else { &self.prefixes.1 };
        for &p in prefixes {
            let Some(key) = Cidr::new(q.addr(), p).map(|c| c.network()) else { continue };
            for &(tag, c) in self.by_network.get(&key).into_iter().flatten() {
                consider(tag, c);
            }
        }
        // Entries whose address lies in q's network.
        let (lo, hi) = range(q);
        let start = self.by_addr.partition_point(|e| e.0 < lo);
        for &(addr, tag, c) in &self.by_addr[start..] {
            if addr > hi {
                break;
            }
            consider(tag, c);
        }
        best
    }
}

/// The allowed-location IPs of every segment and the allowed IPs of every peer, indexed, with
/// the allowed-location IPs dropped so far.
#[derive(Debug, Default)]
pub(super) struct LocationIndex {
    locations: CidrIndex,
    dropped: FxHashSet<Tag>,
    peers: CidrIndex,
}

impl LocationIndex {
    /// Indexes the segments' allowed-location IPs and the peers' allowed IPs as they are now.
    pub(super) fn new(segments: &[Segment], peers: &[Peer]) -> LocationIndex {
        let tagged = |lists: Vec<&[Cidr]>| -> Vec<(Tag, Cidr)> {
            lists
                .into_iter()
                .enumerate()
                .flat_map(|(j, list)| list.iter().enumerate().map(move |(k, c)| ((j, k), *c)))
                .collect()
        };
        LocationIndex {
            locations: CidrIndex::new(tagged(
                segments.iter().map(|s| s.allowed_location_ips.as_slice()).collect(),
            )),
            dropped: FxHashSet::default(),
            peers: CidrIndex::new(tagged(peers.iter().map(|p| p.allowed_ips.as_slice()).collect())),
        }
    }
}

impl Topology {
    /// Filters segment `index`'s current allowed-location IPs against the current state of the
    /// topology, as upstream's `filterAllowedLocationIPs` (5.6). An entry is dropped when it
    /// intersects an allowed-location IP of another segment, when an allowed IP of any segment
    /// contains its address, or when it intersects a peer's allowed IP. An out-of-range index
    /// gives an empty result.
    pub fn filter_allowed_location_ips(&self, index: usize) -> Filtered {
        let allowed = Containment::new(&self.segments);
        let mut locations = LocationIndex::new(&self.segments, &self.peers);
        self.filter_with(index, &allowed, &mut locations)
    }

    /// [`Topology::filter_allowed_location_ips`] with a prepared index of the allowed IPs and of
    /// the allowed-location IPs as they were before filtering began; the entries dropped here
    /// are recorded in `locations`, so that later segments no longer see them (upstream filters
    /// segment by segment, each against the others' current lists).
    pub(super) fn filter_with(
        &self,
        index: usize,
        allowed: &Containment,
        locations: &mut LocationIndex,
    ) -> Filtered {
        let mut out = Filtered::default();
        let Some(segment) = self.segments.get(index) else {
            return out;
        };
        let name = &segment.location;
        for (k, ip) in segment.allowed_location_ips.iter().enumerate() {
            let dropped = &locations.dropped;
            let other = locations
                .locations
                .first_intersecting(ip, |(j, k)| j != index && !dropped.contains(&(j, k)));
            if let Some(((j, _), i)) = other {
                let loc = &self.segments[j].location;
                out.warnings.push(format!(
                    "dropped allowed location IP {ip} of segment {name}: it overlaps allowed location IP {i} of segment {loc}"
                ));
                locations.dropped.insert((index, k));
                continue;
            }
            if let Some((j, i)) = allowed.containing(ip.addr(), &self.segments) {
                let loc = &self.segments[j].location;
                out.warnings.push(format!(
                    "dropped allowed location IP {ip} of segment {name}: it lies inside allowed IP {i} of segment {loc}"
                ));
                locations.dropped.insert((index, k));
                continue;
            }
            if let Some(((p, _), i)) = locations.peers.first_intersecting(ip, |_| true) {
                out.warnings.push(format!(
                    "dropped allowed location IP {ip} of segment {name}: it overlaps allowed IP {i} of peer {}",
                    self.peers[p].name
                ));
                locations.dropped.insert((index, k));
                continue;
            }
            out.kept.push(*ip);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic pseudo-random CIDR, often overlapping the others.
    fn cidr(seed: &mut u64) -> Cidr {
        *seed =
            seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let x = *seed >> 24;
        if x.is_multiple_of(5) {
            let addr = std::net::Ipv6Addr::new(0x2001, 0xdb8, (x >> 8) as u16 & 3, 0, 0, 0, 0, 1);
            Cidr::new(addr.into(), 100 + (x % 29) as u8).unwrap()
        } else {
            let addr =
                std::net::Ipv4Addr::new(10, (x >> 8) as u8 & 3, (x >> 16) as u8 & 7, x as u8);
            Cidr::new(addr.into(), 14 + (x % 19) as u8).unwrap()
        }
    }

    #[test]
    fn the_index_finds_the_same_first_intersecting_cidr_as_a_scan() {
        let mut seed = 42;
        let entries: Vec<(Tag, Cidr)> =
            (0..300).map(|i| ((i / 3, i % 3), cidr(&mut seed))).collect();
        let index = CidrIndex::new(entries.clone());
        for _ in 0..500 {
            let q = cidr(&mut seed);
            let live = |t: Tag| t.0 % 4 != 1;
            let scan = entries
                .iter()
                .copied()
                .filter(|&(t, c)| live(t) && q.intersects(&c))
                .min_by_key(|e| e.0);
            assert_eq!(index.first_intersecting(&q, live), scan, "query {q}");
        }
    }
}
