//! `Topology::routes` and `Topology::peer_routes`.

use std::hash::Hash;

use rustc_hash::FxHashSet;
use std::net::IpAddr;

use super::{Encapsulator, EncapsulatorConfig, Interfaces, KILO_TABLE, MAIN_TABLE, Route, Rule};
use crate::topology::{Member, Segment};
use crate::{Cidr, Encapsulation, Topology};

/// A route with its destination masked to the network (contract C17: the kernel refuses IPv4
/// destinations with host bits set).
fn route(
    dst: Cidr,
    via: Option<IpAddr>,
    dev: &str,
    src: Option<IpAddr>,
    table: u32,
    onlink: bool,
) -> Route {
    Route { dst: dst.network(), via, dev: dev.to_string(), src, table, onlink }
}

/// A policy rule looking up [`KILO_TABLE`].
fn rule(from: Option<Cidr>, to: Option<Cidr>, iif: Option<&str>) -> Rule {
    Rule {
        from: from.map(|c| c.network()),
        to: to.map(|c| c.network()),
        iif: iif.map(str::to_string),
        table: KILO_TABLE,
    }
}

/// Keeps the first of identical items (peer allowed IPs that differ only in host bits become
/// identical routes once masked).
///
/// The set holds references and uses a fast non-cryptographic hash (the items are not
/// attacker-chosen keys of a long-lived table): cloning every route into a SipHash set was a
/// fifth of a whole plan's cost in the profile.
fn dedup<T: Eq + Hash>(items: Vec<T>) -> Vec<T> {
    let mut seen = FxHashSet::with_capacity_and_hasher(items.len(), Default::default());
    let keep: Vec<bool> = items.iter().map(|i| seen.insert(i)).collect();
    drop(seen);
    items.into_iter().zip(keep).filter_map(|(i, k)| k.then_some(i)).collect()
}

/// A member's private IP of `v4`'s family (IPv4 when `v4`), if it has one.
fn private_ip(m: &Member, v4: bool) -> Option<IpAddr> {
    m.internal_ip.into_iter().chain(m.internal_ip6).map(|c| c.addr()).find(|a| a.is_ipv4() == v4)
}

/// A member's private IPs (both families on a dual-stack LAN).
fn private_ips(m: &Member) -> impl Iterator<Item = IpAddr> + '_ {
    m.internal_ip.into_iter().chain(m.internal_ip6).map(|c| c.addr())
}

/// A segment's WireGuard IP of `v4`'s family.
fn wireguard_ip(seg: &Segment, v4: bool) -> Option<IpAddr> {
    seg.wireguard_ip.into_iter().chain(seg.wireguard_ip6).find(|a| a.is_ipv4() == v4)
}

/// A member's next hop on the LAN towards destinations of `v4`'s family
/// (`enc.Gw(endpointIP, privIP_i, cniIP_i, cidr_i)` for IPv4). IPv4: what the encapsulator says
/// (the private IP; in compatibility modes the pod CIDR's network address or the CNI's address,
/// reached through its tunnel). IPv6 is never encapsulated, so it always goes to the member's IPv6
/// private IP (none without a private IP of ours: [`Encapsulator::Noop`]).
fn lan_gw(
    enc: &EncapsulatorConfig,
    m: &Member,
    endpoint: Option<IpAddr>,
    subnet: Option<Cidr>,
    v4: bool,
) -> Option<IpAddr> {
    if !v4 {
        return (enc.encapsulator != Encapsulator::Noop).then(|| private_ip(m, false)).flatten();
    }
    let subnet = subnet.or_else(|| m.subnets.iter().copied().find(|s| s.is_ipv4()));
    let cni = m.cni_compatibility_ip.map(|c| c.addr()).filter(IpAddr::is_ipv4);
    enc.encapsulator.gw(endpoint, private_ip(m, true), cni, subnet)
}

/// Collects routes and rules for one node.
struct Builder<'a> {
    topology: &'a Topology,
    ifaces: &'a Interfaces,
    enc: &'a EncapsulatorConfig,
    routes: Vec<Route>,
    rules: Vec<Rule>,
    warnings: Vec<String>,
}

impl Builder<'_> {
    /// Our private IP of `v4`'s family.
    fn our_ip(&self, v4: bool) -> Option<IpAddr> {
        self.topology.private_ip_of(v4)
    }

    /// Upstream's `encapsulateRoute`: through the tunnel (with our private IP as source) when
    /// the strategy says so for the route's gateway. Only IPv4 routes are encapsulated: the
    /// tunnels (IPIP, and the CNIs' in compatibility mode) carry IPv4; IPv6 goes over the LAN
    /// as it is.
    fn push_encapsulated(&mut self, mut r: Route) {
        if r.dst.is_ipv4() && self.enc.encapsulates(self.topology.private_ip, r.via) {
            r.dev.clone_from(&self.ifaces.tunnel);
            if r.src.is_none() {
                r.src = self.our_ip(true);
            }
        }
        self.routes.push(r);
    }

    /// Our pod CIDRs as rule sources for a destination of `dst`'s family (`None` when we have
    /// no pod CIDR, as upstream's nil source).
    fn rule_sources(&self, dst: IpAddr) -> Vec<Option<Cidr>> {
        if self.topology.subnets.is_empty() {
            return vec![None];
        }
        self.topology
            .subnets
            .iter()
            .filter(|s| s.is_ipv4() == dst.is_ipv4())
            .map(|s| Some(*s))
            .collect()
    }

    /// Routes to the other nodes of a segment treated as local when `--local` is set (7.1 step
    /// 2 and the first bullet of 7.2); `leader` adds the `iif` rule.
    fn local_members(&mut self, seg: &Segment, leader: bool) {
        let ours = self.our_ip(true).or(self.our_ip(false));
        for m in &seg.members {
            let theirs = private_ip(m, true).or_else(|| private_ip(m, false));
            if theirs.is_some() && theirs == ours {
                continue;
            }
            for subnet in &m.subnets {
                let gw = lan_gw(self.enc, m, None, Some(*subnet), subnet.is_ipv4());
                if gw.is_none() {
                    continue;
                }
                let r = route(*subnet, gw, &self.ifaces.private, None, MAIN_TABLE, true);
                self.push_encapsulated(r);
            }
            // The tunnel carries IPv4 only: private IPs reached through it are IPv4.
            let Some(theirs) = private_ip(m, true) else { continue };
            if !self.enc.encapsulates(self.topology.private_ip, Some(theirs)) {
                continue;
            }
            let host = Cidr::host(theirs);
            let gw = lan_gw(self.enc, m, None, None, true);
            let tunnel = self.ifaces.tunnel.clone();
            self.routes.push(route(host, gw, &tunnel, self.our_ip(true), KILO_TABLE, true));
            for from in self.rule_sources(theirs) {
                self.rules.push(rule(from, Some(host), None));
            }
            if leader {
                self.rules.push(rule(None, Some(host), Some(&self.ifaces.kilo)));
            }
        }
    }

    /// Compatibility modes on a leader without `--local` (7.2, second bullet): private IPs of
    /// the location reached through the CNI's tunnel when its gateway is not the private IP.
    fn compat_members(&mut self, seg: &Segment) {
        let ours = self.our_ip(true);
        for m in &seg.members {
            let Some(theirs) = private_ip(m, true) else { continue };
            if Some(theirs) == ours {
                continue;
            }
            let Some(gw) = lan_gw(self.enc, m, None, None, true) else { continue };
            if gw == theirs {
                continue;
            }
            let host = Cidr::host(theirs);
            let tunnel = self.ifaces.tunnel.clone();
            self.routes.push(route(host, Some(gw), &tunnel, None, KILO_TABLE, true));
            self.rules.push(rule(None, Some(host), Some(&self.ifaces.kilo)));
        }
    }

    fn non_leader(&mut self, local: bool) {
        let t = self.topology;
        // The leader, over the LAN, per family: IPv4 destinations through its IPv4 private IP
        // (or the compatibility mode's gateway), IPv6 ones through its IPv6 private IP (a route
        // never crosses families).
        let gw_of = |v4: bool| {
            t.segments.iter().find(|s| s.location == t.location).and_then(|s| {
                let leader = s.members.get(s.leader)?;
                let endpoint = t.nat_endpoint_ip(s);
                lan_gw(self.enc, leader, endpoint, None, v4)
            })
        };
        let (gw4, gw6) = (gw_of(true), gw_of(false));
        let gw = |dst: &Cidr| if dst.is_ipv4() { gw4 } else { gw6 };
        // A family the leader has no next hop of, while it has one of the other family, cannot
        // be reached through it: those destinations are left out, with one warning per family
        // counting distinct routes.
        let unreachable = |dst: &Cidr| {
            let (this, other) = if dst.is_ipv4() { (gw4, gw6) } else { (gw6, gw4) };
            this.is_none() && other.is_some()
        };
        let mut left_out: [FxHashSet<Cidr>; 2] = Default::default();
        let dev = self.ifaces.private.clone();
        let mut through_leader = |b: &mut Self, dst: Cidr| {
            if unreachable(&dst) {
                left_out[usize::from(!dst.is_ipv4())].insert(dst.network());
            } else {
                b.push_encapsulated(route(dst, gw(&dst), &dev, None, MAIN_TABLE, true));
            }
        };
        for seg in &t.segments {
            for wg in seg.wireguard_ip.into_iter().chain(seg.wireguard_ip6) {
                through_leader(self, Cidr::host(wg));
            }
            if seg.location == t.location {
                if local {
                    self.local_members(seg, false);
                }
                continue;
            }
            let subnets = seg.members.iter().flat_map(|m| m.subnets.iter().copied());
            let privates = seg.members.iter().flat_map(private_ips).map(Cidr::host);
            for dst in subnets.chain(privates).chain(seg.allowed_location_ips.iter().copied()) {
                through_leader(self, dst);
            }
        }
        for peer in &t.peers {
            for aip in &peer.allowed_ips {
                through_leader(self, *aip);
            }
        }
        for (dsts, (family, other)) in left_out.iter().zip([("IPv4", "IPv6"), ("IPv6", "IPv4")]) {
            if !dsts.is_empty() {
                self.warnings.push(format!(
                    "{} {family} routes through the location's leader left out: the leader \
                     has no {family} private IP, and Linux does not route {family} through an \
                     {other} next hop on the LAN (give the location's nodes {family} addresses on \
                     their private network, or give this node a location of its own)",
                    dsts.len()
                ));
            }
        }
    }

    fn leader(&mut self, local: bool) {
        let t = self.topology;
        let src = |dst: &Cidr| t.private_ip_of(dst.is_ipv4());
        let kilo = self.ifaces.kilo.clone();
        // At most one route per member subnet, private IP, allowed location IP and peer allowed
        // IP: one allocation instead of a dozen regrowths at 10,000 nodes.
        let members: usize =
            t.segments.iter().flat_map(|s| &s.members).map(|m| m.subnets.len() + 2).sum();
        let others: usize = t.segments.iter().map(|s| s.allowed_location_ips.len()).sum::<usize>()
            + t.peers.iter().map(|p| p.allowed_ips.len()).sum::<usize>();
        self.routes.reserve(members + others);
        let has_private = t.private_ip.is_some();
        for seg in &t.segments {
            if t.is_local_like(seg) {
                if local && has_private {
                    self.local_members(seg, true);
                } else if !local && has_private && self.enc.strategy != Encapsulation::Never {
                    self.compat_members(seg);
                }
                continue;
            }
            let wg = |dst: &Cidr| wireguard_ip(seg, dst.is_ipv4());
            let endpoint_ip = t.nat_endpoint_ip(seg);
            for m in &seg.members {
                for subnet in &m.subnets {
                    self.routes.push(route(
                        *subnet,
                        wg(subnet),
                        &kilo,
                        src(subnet),
                        MAIN_TABLE,
                        true,
                    ));
                }
                for ip in private_ips(m).filter(|ip| Some(*ip) != endpoint_ip) {
                    let dst = Cidr::host(ip);
                    self.routes.push(route(dst, wg(&dst), &kilo, src(&dst), MAIN_TABLE, true));
                }
            }
            for alip in &seg.allowed_location_ips {
                self.routes.push(route(*alip, wg(alip), &kilo, src(alip), MAIN_TABLE, true));
            }
        }
        for peer in &t.peers {
            for aip in &peer.allowed_ips {
                self.routes.push(route(*aip, None, &kilo, src(aip), MAIN_TABLE, false));
            }
        }
    }
}

impl Topology {
    /// The local node's private IP of `v4`'s family (IPv4 when `v4`), if it has one.
    pub fn private_ip_of(&self, v4: bool) -> Option<IpAddr> {
        self.private_ip
            .into_iter()
            .chain(self.private_ip6)
            .map(|c| c.addr())
            .find(|a| a.is_ipv4() == v4)
    }

    /// Whether `seg` is handled like the local segment: it is the local segment, or (in `cross`
    /// granularity) it shares the local node's location (Appendix A).
    pub(crate) fn is_local_like(&self, seg: &Segment) -> bool {
        seg.location == self.location
            || (self.node_location.is_some() && seg.node_location == self.node_location)
    }

    /// The IP of a segment leader's endpoint after NAT substitution (upstream's
    /// `updateEndpoint(...).IP()`): the discovered address when the leader has a keepalive and
    /// one was discovered, else the endpoint's resolved IP.
    pub(crate) fn nat_endpoint_ip(&self, seg: &Segment) -> Option<IpAddr> {
        if !seg.persistent_keepalive.is_zero()
            && let Some(addr) = self.discovered_endpoints.get(&seg.key)
        {
            return Some(addr.ip());
        }
        seg.endpoint.as_ref().and_then(|e| e.ip())
    }

    /// The routes and policy rules the local node needs (upstream's `Topology.Routes`, 7.1-7.3),
    /// in upstream's order. Devices are named by `ifaces`; `local` is `--local`.
    ///
    /// Differences from upstream: destinations are masked to their network (contract C17), and
    /// identical routes or rules are listed once (the first occurrence is kept).
    pub fn routes(
        &self,
        ifaces: &Interfaces,
        local: bool,
        enc: &EncapsulatorConfig,
    ) -> (Vec<Route>, Vec<Rule>) {
        let (routes, rules, _) = self.routes_checked(ifaces, local, enc);
        (routes, rules)
    }

    /// [`Topology::routes`], with a warning for each route left out because the kernel would
    /// refuse it.
    ///
    /// A route takes a source address of its own family only (an IPv6 route never gets the
    /// node's IPv4 private IP as `src`; it gets none). A route whose next hop is of the other
    /// family is left out: Linux refuses IPv6 through an IPv4 gateway, and Kilo does not write
    /// IPv4 routes through an IPv6 gateway either. A plan with such a route would otherwise fail
    /// at the routes step on every apply, and nothing after it (rules, firewall) would happen.
    pub fn routes_checked(
        &self,
        ifaces: &Interfaces,
        local: bool,
        enc: &EncapsulatorConfig,
    ) -> (Vec<Route>, Vec<Rule>, Vec<String>) {
        let mut b = Builder {
            topology: self,
            ifaces,
            enc,
            routes: Vec::new(),
            rules: Vec::new(),
            warnings: Vec::new(),
        };
        if self.leader {
            b.leader(local);
        } else {
            b.non_leader(local);
        }
        let mut warnings = std::mem::take(&mut b.warnings);
        let routes = dedup(b.routes)
            .into_iter()
            .filter_map(|mut r| {
                let v4 = r.dst.is_ipv4();
                if r.src.is_some_and(|s| s.is_ipv4() != v4) {
                    r.src = None;
                }
                match r.via {
                    Some(via) if via.is_ipv4() != v4 => {
                        warnings.push(format!(
                            "route to {} left out: its next hop {via} is of the other address \
                             family (the node reaches that family's destinations only through a \
                             next hop of the same family)",
                            r.dst
                        ));
                        None
                    }
                    _ => Some(r),
                }
            })
            .collect();
        (routes, dedup(b.rules), warnings)
    }

    /// The routes a Kilo peer named `name` needs to reach the mesh through its WireGuard
    /// interface `kilo_iface` (upstream's `PeerRoutes`, 7.4; used by `kgctl connect`).
    ///
    /// Each of `additional_allowed_ips` is routed via the WireGuard IP of the segment that
    /// carries it (contract C11): the first segment with an allowed IP or allowed-location IP
    /// whose network covers it; upstream's first segment when none does. Destinations are
    /// masked (contract C17) and identical routes listed once.
    pub fn peer_routes(
        &self,
        name: &str,
        kilo_iface: &str,
        additional_allowed_ips: &[Cidr],
    ) -> Vec<Route> {
        let mut routes = Vec::new();
        for seg in &self.segments {
            let subnets = seg.members.iter().flat_map(|m| m.subnets.iter().copied());
            let privates = seg.members.iter().flat_map(private_ips).map(Cidr::host);
            for dst in subnets.chain(privates).chain(seg.allowed_location_ips.iter().copied()) {
                let wg = wireguard_ip(seg, dst.is_ipv4());
                routes.push(route(dst, wg, kilo_iface, None, MAIN_TABLE, true));
            }
            for wg in seg.wireguard_ip.into_iter().chain(seg.wireguard_ip6) {
                routes.push(route(Cidr::host(wg), None, kilo_iface, None, MAIN_TABLE, false));
            }
        }
        for peer in self.peers.iter().filter(|p| p.name != name) {
            for aip in &peer.allowed_ips {
                routes.push(route(*aip, None, kilo_iface, None, MAIN_TABLE, false));
            }
        }
        for aip in additional_allowed_ips {
            let carrier = self
                .segments
                .iter()
                .find(|s| {
                    s.allowed_ips.iter().chain(&s.allowed_location_ips).any(|c| c.covers(aip))
                })
                .or_else(|| self.segments.first());
            let wg = carrier.and_then(|s| wireguard_ip(s, aip.is_ipv4()));
            routes.push(route(*aip, wg, kilo_iface, None, MAIN_TABLE, true));
        }
        dedup(routes)
    }
}
