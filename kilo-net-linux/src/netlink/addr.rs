//! Interface addresses.

use std::net::IpAddr;

use futures::TryStreamExt;
use kilo_core::Cidr;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};

use super::Netlink;
use super::link::LinkInfo;
use crate::error::NetlinkError;

/// An address assigned to an interface, host bits kept (`10.4.0.1/16`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The interface index.
    pub index: u32,
    /// The address with its prefix length.
    pub cidr: Cidr,
}

fn from_message(msg: &AddressMessage) -> Option<Address> {
    // IFA_LOCAL is the interface's own address on point-to-point links; IFA_ADDRESS otherwise.
    let mut address = None;
    let mut local = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Local(ip) => local = Some(*ip),
            _ => {}
        }
    }
    let ip: IpAddr = local.or(address)?;
    Some(Address { index: msg.header.index, cidr: Cidr::new(ip, msg.header.prefix_len)? })
}

impl Netlink {
    /// Every address on every interface (`ip address show`).
    pub async fn addresses(&self) -> Result<Vec<Address>, NetlinkError> {
        super::dump(|| self.addresses_once()).await
    }

    async fn addresses_once(&self) -> Result<Vec<Address>, NetlinkError> {
        let mut stream = self.handle().address().get().execute();
        let mut out = Vec::new();
        while let Some(msg) =
            stream.try_next().await.map_err(|e| NetlinkError::request("ip address show", e))?
        {
            out.extend(from_message(&msg));
        }
        Ok(out)
    }

    /// The addresses of one link (`ip address show dev NAME`).
    pub async fn link_addresses(&self, link: &LinkInfo) -> Result<Vec<Address>, NetlinkError> {
        let mut stream = self.handle().address().get().set_link_index_filter(link.index).execute();
        let mut out = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(|e| NetlinkError::request(format!("ip address show dev {}", link.name), e))?
        {
            out.extend(from_message(&msg).filter(|a| a.index == link.index));
        }
        Ok(out)
    }

    /// Adds or replaces an address (`ip address replace CIDR dev NAME`).
    pub async fn replace_address(&self, link: &LinkInfo, cidr: Cidr) -> Result<(), NetlinkError> {
        self.handle()
            .address()
            .add(link.index, cidr.addr(), cidr.prefix())
            .replace()
            .execute()
            .await
            .map_err(|e| {
                NetlinkError::request(format!("ip address replace {cidr} dev {}", link.name), e)
            })
    }

    /// Removes an address (`ip address del CIDR dev NAME`).
    pub async fn delete_address(&self, link: &LinkInfo, cidr: Cidr) -> Result<(), NetlinkError> {
        let mut stream = self
            .handle()
            .address()
            .get()
            .set_link_index_filter(link.index)
            .set_address_filter(cidr.addr())
            .set_prefix_length_filter(cidr.prefix())
            .execute();
        let operation = format!("ip address del {cidr} dev {}", link.name);
        while let Some(msg) =
            stream.try_next().await.map_err(|e| NetlinkError::request(operation.clone(), e))?
        {
            if from_message(&msg).is_some_and(|a| a.index == link.index && a.cidr == cidr) {
                return self
                    .handle()
                    .address()
                    .del(msg)
                    .execute()
                    .await
                    .map_err(|e| NetlinkError::request(operation.clone(), e));
            }
        }
        Ok(())
    }

    /// Makes `cidr` the only address of `link` (upstream 9.2, the leader's `kilo0` address):
    /// see [`Netlink::set_only_addresses`].
    pub async fn set_only_address(
        &self,
        link: &LinkInfo,
        cidr: Cidr,
    ) -> Result<usize, NetlinkError> {
        self.set_only_addresses(link, &[cidr]).await
    }

    /// Makes `cidrs` the only addresses of `link` besides IPv6 link-local ones (`fe80::/10`,
    /// which the kernel manages): removes every other address, adds each of `cidrs` that is
    /// missing (`ip address flush dev NAME` then `ip address replace CIDR dev NAME`,
    /// minimally). Returns how many writes it made.
    pub async fn set_only_addresses(
        &self,
        link: &LinkInfo,
        cidrs: &[Cidr],
    ) -> Result<usize, NetlinkError> {
        let mut writes = 0;
        let mut present = vec![false; cidrs.len()];
        for address in self.link_addresses(link).await? {
            if let Some(i) = cidrs.iter().position(|c| *c == address.cidr) {
                present[i] = true;
            } else if !is_link_local(address.cidr.addr()) {
                self.delete_address(link, address.cidr).await?;
                writes += 1;
            }
        }
        for (cidr, _) in cidrs.iter().zip(present).filter(|(_, p)| !p) {
            self.replace_address(link, *cidr).await?;
            writes += 1;
        }
        Ok(writes)
    }
}

/// Whether `ip` is an IPv6 link-local address (`fe80::/10`).
fn is_link_local(ip: std::net::IpAddr) -> bool {
    matches!(ip, std::net::IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}
