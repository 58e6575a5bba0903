//! Routes in the main table and in Kilo's table 1107.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use kilo_core::Cidr;
use kilo_core::routes::{KILO_TABLE, MAIN_TABLE, Route};
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol, RouteRealm, RouteScope,
    RouteType,
};

use super::Netlink;
use crate::error::NetlinkError;

pub use kilo_core::routes::{KILO_REALM, PROTO_STATIC, RouteKind};

/// A route's type from the kernel's `RTN_*`.
fn kind_of(t: RouteType) -> RouteKind {
    match t {
        RouteType::Unicast => RouteKind::Unicast,
        RouteType::BlackHole => RouteKind::Blackhole,
        RouteType::Unreachable => RouteKind::Unreachable,
        RouteType::Prohibit => RouteKind::Prohibit,
        other => RouteKind::Other(u8::from(other)),
    }
}

/// A route read back from the kernel, normalised to kilo-core's [`Route`]: the destination is
/// the masked network (`0.0.0.0/0` or `::/0` for a default route), the device a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRoute {
    /// The route. `dev` is empty when the route has no single output device (multipath).
    pub route: Route,
    /// The route's type.
    pub kind: RouteKind,
    /// The protocol that installed it (`RTPROT_*`, [`PROTO_STATIC`] for Kilo's).
    pub protocol: u8,
    /// The metric (`RTA_PRIORITY`), 0 when absent.
    pub priority: u32,
    /// The output interface index (0 when absent).
    pub oif: u32,
    /// The destination realm (`RTA_FLOW`), 0 when absent; [`KILO_REALM`] marks Kilo's IPv4
    /// routes.
    pub realm: u16,
    pub(crate) message: RouteMessage,
}

/// A route in `ip route` syntax: `DST [via GW] dev DEV [src SRC] [table T] [onlink] proto static`.
pub fn describe_route(route: &Route) -> String {
    let mut s = route.dst.network().to_string();
    if let Some(via) = route.via {
        s += &format!(" via {via}");
    }
    s += &format!(" dev {}", route.dev);
    if let Some(src) = route.src {
        s += &format!(" src {src}");
    }
    if route.table != MAIN_TABLE {
        s += &format!(" table {}", route.table);
    }
    if route.onlink {
        s += " onlink";
    }
    s + " proto static"
}

fn addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// The table a route message belongs to (`RTA_TABLE` wins over the 8-bit header field).
pub(crate) fn table_of(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| if let RouteAttribute::Table(t) = a { Some(*t) } else { None })
        .unwrap_or(u32::from(msg.header.table))
}

/// Normalises a kernel route message; `None` for families Kilo does not handle.
pub(crate) fn from_message(
    msg: &RouteMessage,
    names: &HashMap<u32, String>,
) -> Option<KernelRoute> {
    let ipv4 = match msg.header.address_family {
        rtnetlink::packet_route::AddressFamily::Inet => true,
        rtnetlink::packet_route::AddressFamily::Inet6 => false,
        _ => return None,
    };
    let (mut dst, mut via, mut src, mut oif, mut priority, mut realm) = (None, None, None, 0, 0, 0);
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst = addr(a),
            RouteAttribute::Gateway(a) => via = addr(a),
            RouteAttribute::PrefSource(a) => src = addr(a),
            RouteAttribute::Oif(i) => oif = *i,
            RouteAttribute::Priority(p) => priority = *p,
            RouteAttribute::Realm(r) => realm = r.destination,
            _ => {}
        }
    }
    let unspecified =
        if ipv4 { IpAddr::V4(Ipv4Addr::UNSPECIFIED) } else { IpAddr::V6(Ipv6Addr::UNSPECIFIED) };
    let dst =
        Cidr::new(dst.unwrap_or(unspecified), msg.header.destination_prefix_length)?.network();
    let route = Route {
        dst,
        via,
        dev: names.get(&oif).cloned().unwrap_or_default(),
        src,
        table: table_of(msg),
        onlink: msg.header.flags.contains(RouteFlags::Onlink),
    };
    Some(KernelRoute {
        route,
        kind: kind_of(msg.header.kind),
        protocol: u8::from(msg.header.protocol),
        priority,
        oif,
        realm,
        message: msg.clone(),
    })
}

/// The netlink message for `ip route replace ROUTE` with the device resolved to `oif` (an IPv4
/// route with `realm 1107`, [`KILO_REALM`]).
pub(crate) fn to_message(route: &Route, oif: u32) -> Result<RouteMessage, NetlinkError> {
    let invalid = |e: String| NetlinkError::Invalid {
        what: format!("route {}", describe_route(route)),
        reason: e,
    };
    let dst = route.dst.network();
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dst.addr(), dst.prefix())
        .map_err(|e| invalid(e.to_string()))?;
    if let Some(via) = route.via {
        b = b.gateway(via).map_err(|e| invalid(e.to_string()))?;
    }
    if let Some(src) = route.src {
        b = b.pref_source(src).map_err(|e| invalid(e.to_string()))?;
    }
    b = b.output_interface(oif).table_id(route.table).protocol(RouteProtocol::Static);
    if route.via.is_none() && dst.is_ipv4() {
        // As `ip route` does: a route without a gateway is scope link.
        b = b.scope(RouteScope::Link);
    }
    if route.onlink {
        b = b.onlink();
    }
    let mut msg = b.build();
    if dst.is_ipv4() {
        let realm = RouteRealm { source: 0, destination: KILO_REALM };
        msg.attributes.push(RouteAttribute::Realm(realm));
    }
    Ok(msg)
}

impl Netlink {
    /// Interface index → name, for every link.
    pub(crate) async fn link_names(&self) -> Result<HashMap<u32, String>, NetlinkError> {
        Ok(self.links().await?.into_iter().map(|l| (l.index, l.name)).collect())
    }

    /// Every IPv4 and IPv6 route of the main table and of table 1107, any protocol
    /// (`ip route show table main; ip route show table 1107`, and `ip -6 …`).
    pub async fn routes(&self) -> Result<Vec<KernelRoute>, NetlinkError> {
        super::dump(|| self.routes_once()).await
    }

    async fn routes_once(&self) -> Result<Vec<KernelRoute>, NetlinkError> {
        let names = self.link_names().await?;
        let mut out = Vec::new();
        let requests = [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ];
        for request in requests {
            let mut stream = self.handle().route().get(request).execute();
            while let Some(msg) = stream
                .try_next()
                .await
                .map_err(|e| NetlinkError::request("ip route show table all", e))?
            {
                let table = table_of(&msg);
                if table != MAIN_TABLE && table != KILO_TABLE {
                    continue;
                }
                out.extend(from_message(&msg, &names));
            }
        }
        Ok(out)
    }

    /// Adds or replaces a route (`ip route replace DST [via GW] dev DEV [src SRC] [table T]
    /// [onlink] proto static`, and `realm 1107` for IPv4: [`KILO_REALM`]).
    pub async fn replace_route(&self, route: &Route) -> Result<(), NetlinkError> {
        let what = describe_route(route);
        let link = self.find_link(&route.dev).await?.ok_or_else(|| {
            NetlinkError::UnknownDevice { what: format!("route {what}"), dev: route.dev.clone() }
        })?;
        let msg = to_message(route, link.index)?;
        self.handle()
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(|e| NetlinkError::request(format!("ip route replace {what}"), e))
    }

    /// Deletes a route read back from the kernel (`ip route del DST [via GW] dev DEV [table T]
    /// [metric M]`).
    pub async fn delete_route(&self, route: &KernelRoute) -> Result<(), NetlinkError> {
        let mut msg = route.message.clone();
        msg.attributes.retain(|a| {
            matches!(
                a,
                RouteAttribute::Destination(_)
                    | RouteAttribute::Gateway(_)
                    | RouteAttribute::Via(_)
                    | RouteAttribute::Oif(_)
                    | RouteAttribute::PrefSource(_)
                    | RouteAttribute::Table(_)
                    | RouteAttribute::Priority(_)
            )
        });
        self.handle().route().del(msg).execute().await.map_err(|e| {
            NetlinkError::request(format!("ip route del {}", describe_route(&route.route)), e)
        })
    }
}

#[cfg(test)]
impl KernelRoute {
    /// A kernel route without a wire message, for pure tests.
    pub(crate) fn synthetic(route: Route, kind: RouteKind, protocol: u8) -> KernelRoute {
        KernelRoute {
            route,
            kind,
            protocol,
            priority: 0,
            oif: 1,
            realm: 0,
            message: RouteMessage::default(),
        }
    }
}
