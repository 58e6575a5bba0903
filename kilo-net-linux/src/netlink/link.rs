//! Links: lookup, up/down, MTU, delete, and the IPIP tunnel.

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::{LinkIpIp, LinkUnspec};

use super::Netlink;
use crate::error::NetlinkError;

/// The IPIP tunnel device Kilo uses (`tunl0`, created with the `ipip` module).
pub const IPIP_TUNNEL: &str = kilo_core::routes::IPIP_TUNNEL;

const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const EOPNOTSUPP: i32 = 95;

/// What Kilo needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// MTU (0 when the kernel did not say).
    pub mtu: u32,
    /// Whether the link is administratively up (`IFF_UP`).
    pub up: bool,
    /// The link's kind (`IFLA_INFO_KIND`, what `ip -d link` shows: `wireguard`, `tun`,
    /// `bridge`, …), when the kernel says.
    pub kind: Option<String>,
}

impl LinkInfo {
    fn from_message(msg: &LinkMessage) -> LinkInfo {
        let mut info = LinkInfo {
            index: msg.header.index,
            name: String::new(),
            mtu: 0,
            up: msg.header.flags.contains(LinkFlags::Up),
            kind: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => info.name.clone_from(name),
                LinkAttribute::Mtu(mtu) => info.mtu = *mtu,
                LinkAttribute::LinkInfo(infos) => {
                    info.kind = infos.iter().find_map(|i| match i {
                        rtnetlink::packet_route::link::LinkInfo::Kind(kind) => {
                            Some(kind.to_string())
                        }
                        _ => None,
                    });
                }
                _ => {}
            }
        }
        info
    }
}

impl Netlink {
    /// Every link (`ip link show`).
    pub async fn links(&self) -> Result<Vec<LinkInfo>, NetlinkError> {
        super::dump(|| self.links_once()).await
    }

    async fn links_once(&self) -> Result<Vec<LinkInfo>, NetlinkError> {
        let mut stream = self.handle().link().get().execute();
        let mut links = Vec::new();
        while let Some(msg) =
            stream.try_next().await.map_err(|e| NetlinkError::request("ip link show", e))?
        {
            links.push(LinkInfo::from_message(&msg));
        }
        Ok(links)
    }

    /// The link called `name` (`ip link show dev NAME`); [`NetlinkError::LinkNotFound`] if none.
    pub async fn link(&self, name: &str) -> Result<LinkInfo, NetlinkError> {
        self.find_link(name)
            .await?
            .ok_or_else(|| NetlinkError::LinkNotFound { name: name.to_string() })
    }

    /// The link called `name`, or `None` (`ip link show dev NAME`).
    pub async fn find_link(&self, name: &str) -> Result<Option<LinkInfo>, NetlinkError> {
        let mut stream = self.handle().link().get().match_name(name.to_string()).execute();
        match stream.try_next().await {
            Ok(msg) => Ok(msg.as_ref().map(LinkInfo::from_message)),
            Err(e) => {
                let err = NetlinkError::request(format!("ip link show dev {name}"), e);
                if err.errno() == Some(ENODEV) { Ok(None) } else { Err(err) }
            }
        }
    }

    /// The link with interface index `index` (`ip link show` filtered by index).
    pub async fn link_by_index(&self, index: u32) -> Result<Option<LinkInfo>, NetlinkError> {
        let mut stream = self.handle().link().get().match_index(index).execute();
        match stream.try_next().await {
            Ok(msg) => Ok(msg.as_ref().map(LinkInfo::from_message)),
            Err(e) => {
                let err = NetlinkError::request(format!("ip link show (index {index})"), e);
                if err.errno() == Some(ENODEV) { Ok(None) } else { Err(err) }
            }
        }
    }

    /// Brings a link up (`ip link set dev NAME up`).
    pub async fn set_link_up(&self, link: &LinkInfo) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(link.index).up().build();
        self.handle()
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| NetlinkError::request(format!("ip link set dev {} up", link.name), e))
    }

    /// Takes a link down (`ip link set dev NAME down`).
    pub async fn set_link_down(&self, link: &LinkInfo) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(link.index).down().build();
        self.handle()
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| NetlinkError::request(format!("ip link set dev {} down", link.name), e))
    }

    /// Sets a link's MTU (`ip link set dev NAME mtu MTU`).
    pub async fn set_link_mtu(&self, link: &LinkInfo, mtu: u32) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(link.index).mtu(mtu).build();
        self.handle().link().set(msg).execute().await.map_err(|e| {
            NetlinkError::request(format!("ip link set dev {} mtu {mtu}", link.name), e)
        })
    }

    /// Brings the link `name` up or down only if it is not already so (`ip link set dev NAME
    /// up|down`). Returns whether it wrote.
    pub async fn ensure_link_state(&self, name: &str, up: bool) -> Result<bool, NetlinkError> {
        let link = self.link(name).await?;
        if link.up == up {
            return Ok(false);
        }
        if up {
            self.set_link_up(&link).await?;
        } else {
            self.set_link_down(&link).await?;
        }
        Ok(true)
    }

    /// Sets the MTU of the link `name` only if it differs (`ip link set dev NAME mtu MTU`,
    /// upstream 9.4: "set only if it differs"). Returns whether it wrote.
    pub async fn ensure_link_mtu(&self, name: &str, mtu: u32) -> Result<bool, NetlinkError> {
        let link = self.link(name).await?;
        if link.mtu == mtu {
            return Ok(false);
        }
        self.set_link_mtu(&link, mtu).await?;
        Ok(true)
    }

    /// Deletes a link (`ip link delete dev NAME`).
    pub async fn delete_link(&self, link: &LinkInfo) -> Result<(), NetlinkError> {
        self.handle()
            .link()
            .del(link.index)
            .execute()
            .await
            .map_err(|e| NetlinkError::request(format!("ip link delete dev {}", link.name), e))
    }

    /// Makes sure the IPIP tunnel `name` exists and returns it (`ip tunnel add NAME mode ipip`,
    /// "File exists" tolerated). Loading the `ipip` module creates `tunl0` by itself; a kernel
    /// without IPIP support gives [`NetlinkError::IpipUnsupported`].
    pub async fn ensure_ipip_tunnel(&self, name: &str) -> Result<LinkInfo, NetlinkError> {
        if let Some(link) = self.find_link(name).await? {
            return Ok(link);
        }
        let msg = LinkIpIp::new(name).build();
        match self.handle().link().add(msg).execute().await {
            Ok(()) => {}
            Err(e) => {
                let err = NetlinkError::request(format!("ip tunnel add {name} mode ipip"), e);
                match err.errno() {
                    Some(EEXIST) => {}
                    Some(EOPNOTSUPP) => {
                        let NetlinkError::Request { message, .. } = err else { return Err(err) };
                        return Err(NetlinkError::IpipUnsupported {
                            name: name.to_string(),
                            message,
                        });
                    }
                    _ => return Err(err),
                }
            }
        }
        self.link(name).await
    }
}
