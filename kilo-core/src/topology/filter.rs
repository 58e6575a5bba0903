//! Allowed-location-IP filtering (upstream `filterAllowedLocationIPs`, upstream-kilo.md 5.6).
//!
//! Upstream scans every segment's allowed IPs for every allowed-location IP. Here the allowed
//! IPs are matched once against the (few) allowed-location addresses, sorted, so the cost grows
//! with the number of segments times the logarithm of the number of allowed-location IPs; the
//! results are the same as upstream's scan.

use std::net::IpAddr;

use super::{Segment, Topology};
use crate::Cidr;

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
    wireguard: Option<(Cidr, usize)>,
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
            for (j, s) in segments.iter().enumerate() {
                for c in &s.allowed_ips {
                    let (lo, hi) = range(c);
                    let start = addrs.partition_point(|a| *a < lo);
                    let end = addrs.partition_point(|a| *a <= hi);
                    for slot in &mut first[start..end] {
                        slot.get_or_insert((j, *c));
                    }
                }
            }
        }
        Containment { addrs, first, wireguard: None }
    }

    /// Records that the allocator over `subnet` has handed out `count` addresses.
    pub(super) fn allocated(&mut self, subnet: Cidr, count: usize) {
        self.wireguard = Some((subnet.network(), count));
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
        let wireguard = self.wireguard.and_then(|(subnet, count)| {
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

impl Topology {
    /// Filters segment `index`'s current allowed-location IPs against the current state of the
    /// topology, as upstream's `filterAllowedLocationIPs` (5.6). An entry is dropped when it
    /// intersects an allowed-location IP of another segment, when an allowed IP of any segment
    /// contains its address, or when it intersects a peer's allowed IP. An out-of-range index
    /// gives an empty result.
    pub fn filter_allowed_location_ips(&self, index: usize) -> Filtered {
        let allowed = Containment::new(&self.segments);
        let with_location_ips: Vec<usize> = (0..self.segments.len())
            .filter(|&i| !self.segments[i].allowed_location_ips.is_empty())
            .collect();
        self.filter_with(index, &allowed, &with_location_ips)
    }

    /// [`Topology::filter_allowed_location_ips`] with a prepared index of the allowed IPs and the
    /// list of segments that may hold allowed-location IPs.
    pub(super) fn filter_with(
        &self,
        index: usize,
        allowed: &Containment,
        with_location_ips: &[usize],
    ) -> Filtered {
        let mut out = Filtered::default();
        let Some(segment) = self.segments.get(index) else {
            return out;
        };
        let name = &segment.location;
        for ip in &segment.allowed_location_ips {
            let other = with_location_ips.iter().filter(|&&j| j != index).find_map(|&j| {
                let s = &self.segments[j];
                s.allowed_location_ips.iter().find(|i| ip.intersects(i)).map(|i| (&s.location, i))
            });
            if let Some((loc, i)) = other {
                out.warnings.push(format!(
                    "dropped allowed location IP {ip} of segment {name}: it overlaps allowed location IP {i} of segment {loc}"
                ));
                continue;
            }
            if let Some((j, i)) = allowed.containing(ip.addr(), &self.segments) {
                let loc = &self.segments[j].location;
                out.warnings.push(format!(
                    "dropped allowed location IP {ip} of segment {name}: it lies inside allowed IP {i} of segment {loc}"
                ));
                continue;
            }
            let peer = self
                .peers
                .iter()
                .find_map(|p| p.allowed_ips.iter().find(|i| ip.intersects(i)).map(|i| (p, i)));
            if let Some((p, i)) = peer {
                out.warnings.push(format!(
                    "dropped allowed location IP {ip} of segment {name}: it overlaps allowed IP {i} of peer {}",
                    p.name
                ));
                continue;
            }
            out.kept.push(*ip);
        }
        out
    }
}
