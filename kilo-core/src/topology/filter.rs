//! Allowed-location-IP filtering (upstream `filterAllowedLocationIPs`, upstream-kilo.md 5.6).
//!
//! Upstream scans every segment for every allowed-location IP. Here the "some allowed IP of any
//! segment contains the address" test uses an index of the allowed IPs by prefix length, so the
//! cost per allowed-location IP does not grow with the number of segments; the results are the
//! same as upstream's scan.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use super::Topology;
use crate::Cidr;

/// The outcome of filtering one segment's allowed-location IPs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filtered {
    /// The entries kept, in input order.
    pub kept: Vec<Cidr>,
    /// One message per dropped entry, naming it and what it overlaps.
    pub warnings: Vec<String>,
}

/// The network of `addr` at `prefix`, as an integer (IPv4 in the low 32 bits).
fn masked(addr: IpAddr, prefix: u8) -> u128 {
    match addr {
        IpAddr::V4(v4) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u128::from(u32::from(v4) & m)
        }
        IpAddr::V6(v6) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(v6) & m
        }
    }
}

/// Every segment's allowed IPs by (family, prefix, network), answering "which allowed IP
/// contains this address" with one hash look-up per distinct prefix length.
#[derive(Debug, Default)]
pub(super) struct AllowedIpIndex {
    prefixes: BTreeSet<(bool, u8)>,
    networks: HashMap<(bool, u8, u128), (usize, Cidr)>,
}

impl AllowedIpIndex {
    /// Adds allowed IPs of segment `segment`.
    pub(super) fn extend(&mut self, segment: usize, cidrs: &[Cidr]) {
        for c in cidrs {
            let key = (c.is_ipv4(), c.prefix(), masked(c.addr(), c.prefix()));
            self.prefixes.insert((key.0, key.1));
            let e = self.networks.entry(key).or_insert((segment, *c));
            if segment < e.0 {
                *e = (segment, *c);
            }
        }
    }

    /// An allowed IP (with its segment) whose network contains `addr`, if any.
    fn containing(&self, addr: IpAddr) -> Option<(usize, Cidr)> {
        let v4 = addr.is_ipv4();
        self.prefixes
            .range((v4, 0)..=(v4, u8::MAX))
            .find_map(|&(_, p)| self.networks.get(&(v4, p, masked(addr, p))).copied())
    }
}

impl Topology {
    /// Filters segment `index`'s current allowed-location IPs against the current state of the
    /// topology, as upstream's `filterAllowedLocationIPs` (5.6). An entry is dropped when it
    /// intersects an allowed-location IP of another segment, when an allowed IP of any segment
    /// contains its address, or when it intersects a peer's allowed IP. An out-of-range index
    /// gives an empty result.
    pub fn filter_allowed_location_ips(&self, index: usize) -> Filtered {
        let mut allowed = AllowedIpIndex::default();
        for (i, s) in self.segments.iter().enumerate() {
            allowed.extend(i, &s.allowed_ips);
        }
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
        allowed: &AllowedIpIndex,
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
            if let Some((j, i)) = allowed.containing(ip.addr()) {
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
