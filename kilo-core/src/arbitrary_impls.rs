//! `Arbitrary` for the types whose invariants a derive would break (feature `arbitrary`, used by
//! the fuzz targets in `fuzz/`): a [`Cidr`]'s prefix fits its address family, and an
//! [`Endpoint`] is one that its parser could have produced.

use std::net::{IpAddr, SocketAddr};

use arbitrary::{Arbitrary, Result, Unstructured};

use crate::{Cidr, Endpoint};

impl<'a> Arbitrary<'a> for Cidr {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let addr: IpAddr = u.arbitrary()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = u.int_in_range(0..=max)?;
        Ok(Cidr::new(addr, prefix).unwrap_or_else(|| Cidr::host(addr)))
    }

    fn size_hint(depth: usize) -> (usize, Option<usize>) {
        arbitrary::size_hint::and(IpAddr::size_hint(depth), (1, Some(1)))
    }
}

/// Characters of a lower-case DNS name, with `-` and `.` in it so that invalid names come up too.
const DNS_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-.";

/// A DNS-ish host of up to 24 characters followed by a port; it may not parse.
fn dns_text(u: &mut Unstructured<'_>) -> Result<String> {
    let len = u.int_in_range(1..=24)?;
    let mut host = String::with_capacity(len + 6);
    for _ in 0..len {
        host.push(char::from(*u.choose(DNS_CHARS)?));
    }
    let port: u16 = u.arbitrary()?;
    Ok(format!("{host}:{port}"))
}

impl<'a> Arbitrary<'a> for Endpoint {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let addr: SocketAddr = u.arbitrary()?;
        match u.int_in_range(0..=2u8)? {
            0 => Ok(Endpoint::from_addr(addr)),
            kind => match dns_text(u)?.parse::<Endpoint>() {
                Ok(dns) if kind == 2 => Ok(dns.with_resolved(addr)),
                Ok(dns) => Ok(dns),
                Err(_) => Ok(Endpoint::from_addr(addr)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arbitrary_cidrs_and_endpoints_print_and_parse_back() {
        let bytes: Vec<u8> =
            (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let mut u = Unstructured::new(&bytes);
        for _ in 0..64 {
            let cidr = Cidr::arbitrary(&mut u).unwrap();
            assert_eq!(cidr.to_string().parse::<Cidr>(), Ok(cidr));
            let endpoint = Endpoint::arbitrary(&mut u).unwrap();
            if endpoint.port() > 0 && endpoint.addr().is_none() {
                assert_eq!(endpoint.to_string().parse::<Endpoint>(), Ok(endpoint));
            }
        }
    }
}
