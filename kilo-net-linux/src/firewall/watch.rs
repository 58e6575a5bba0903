//! Notifications of nf_tables changes (what `nft monitor` shows): the kernel view that lets a
//! resync skip listing the firewall when nothing changed since the last listing found it whole.
//!
//! The kernel multicasts every change to an nf_tables table, chain, rule, set or object of the
//! namespace (group `NFNLGRP_NFTABLES` of `NETLINK_NETFILTER`), whoever makes it: `nft`,
//! `iptables-nft` (whose tables are nf_tables tables named `filter`, `nat`, …) or Kilo itself.
//! [`TableWatch`] counts them per table name. A count that did not move since the last complete
//! listing means the kernel holds what that listing saw. Legacy iptables (x_tables) sends no
//! notifications: there the listing stays.
//!
//! Lost notifications (the socket's buffer overflowed: `ENOBUFS`) and messages it cannot read
//! count as a change of every table, and a watch whose socket failed reports nothing
//! ([`TableWatch::stamp`] is `None`), so that the caller lists again: the watch may make a
//! resync list when it need not, never skip a listing it needed.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};
use nix::errno::Errno;
use nix::sys::socket::{setsockopt, sockopt};

/// `NFNLGRP_NFTABLES`: the multicast group of nf_tables changes.
const NFNLGRP_NFTABLES: u32 = 7;
/// `NFNL_SUBSYS_NFTABLES`: the high byte of an nf_tables message's type.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFT_MSG_NEWGEN`: the end of a transaction (names no table).
const NFT_MSG_NEWGEN: u16 = 15;
/// The attribute that names the table, in every table-scoped nf_tables message
/// (`NFTA_TABLE_NAME`, `NFTA_CHAIN_TABLE`, `NFTA_RULE_TABLE`, `NFTA_SET_TABLE`, …).
const NFTA_TABLE: u16 = 1;
/// `NLA_TYPE_MASK`: an attribute's type without its flags.
const NLA_TYPE_MASK: u16 = 0x3fff;
/// The receive buffer asked for (an apply of a large mesh sends thousands of rules at once).
const RECEIVE_BUFFER: usize = 4 << 20;

#[derive(Debug, Default)]
struct Counts {
    /// Changes per table name.
    tables: Mutex<HashMap<String, u64>>,
    /// Changes that may have touched any table (lost or unreadable notifications).
    any: AtomicU64,
    /// Whether the socket still delivers.
    alive: AtomicBool,
}

impl Counts {
    fn table(&self, name: &str) {
        let mut tables = self.tables.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *tables.entry(name.to_string()).or_default() += 1;
    }

    fn any(&self) {
        self.any.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts nf_tables changes per table, from the kernel's notifications, in the network namespace
/// it was opened in. Dropping it stops the watch.
#[derive(Debug)]
pub struct TableWatch {
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TableWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TableWatch {
    /// Subscribes to nf_tables notifications in the current network namespace. Call it inside a
    /// tokio runtime (it spawns the task that reads them).
    pub fn open() -> io::Result<TableWatch> {
        let mut socket = TokioSocket::new(NETLINK_NETFILTER)?;
        let inner = socket.socket_mut();
        // Without CAP_NET_ADMIN the forced size is refused; the default buffer only means more
        // overflows, each counted as a change.
        if setsockopt(&*inner, sockopt::RcvBufForce, &RECEIVE_BUFFER).is_err() {
            let _ = inner.set_rx_buf_sz(RECEIVE_BUFFER);
        }
        inner.bind(&SocketAddr::new(0, 0))?;
        inner.add_membership(NFNLGRP_NFTABLES)?;
        let counts = Arc::new(Counts::default());
        counts.alive.store(true, Ordering::Relaxed);
        let task = tokio::spawn(read(socket, Arc::clone(&counts)));
        Ok(TableWatch { counts, task })
    }

    /// A number that changes whenever one of `tables` (by name, any family) changes, or a
    /// notification was lost; `None` when the watch no longer receives notifications.
    pub fn stamp<'a>(&self, tables: impl IntoIterator<Item = &'a str>) -> Option<u64> {
        if !self.counts.alive.load(Ordering::Relaxed) || self.task.is_finished() {
            return None;
        }
        let counted = self.counts.tables.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let sum = tables
            .into_iter()
            .map(|t| counted.get(t).copied().unwrap_or(0))
            .fold(0u64, u64::wrapping_add);
        Some(sum.wrapping_add(self.counts.any.load(Ordering::Relaxed)))
    }
}

/// Reads notifications until the socket fails, counting them.
async fn read(socket: TokioSocket, counts: Arc<Counts>) {
    loop {
        // A whole datagram each time (the socket peeks at its size first).
        match socket.recv_from_full().await {
            Ok((data, _)) => count_messages(&data, &counts),
            Err(e) if e.raw_os_error() == Some(Errno::ENOBUFS as i32) => counts.any(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(error = %e, "nf_tables notifications stopped; the firewall is listed on every resync");
                break;
            }
        }
    }
    counts.any();
    counts.alive.store(false, Ordering::Relaxed);
}

/// Counts the nf_tables changes in one datagram of netlink messages.
fn count_messages(mut data: &[u8], counts: &Counts) {
    for change in changes(&mut data) {
        match change {
            Change::Table(name) => counts.table(&String::from_utf8_lossy(name)),
            Change::Unknown => counts.any(),
        }
    }
}

/// What one notification changed.
#[derive(Debug, PartialEq, Eq)]
enum Change<'a> {
    /// Something of the table of this name.
    Table(&'a [u8]),
    /// Something that may be any table's.
    Unknown,
}

/// The changes the netlink messages of `data` report (transaction ends and other subsystems'
/// messages report none).
fn changes<'a>(data: &mut &'a [u8]) -> Vec<Change<'a>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let Some((kind, payload, rest)) = message(data) else {
            out.push(Change::Unknown);
            break;
        };
        *data = rest;
        if kind >> 8 != NFNL_SUBSYS_NFTABLES || kind & 0xff == NFT_MSG_NEWGEN {
            continue;
        }
        // The nfgenmsg header (family, version, resource id), then attributes.
        let table = payload.get(4..).and_then(table_attribute);
        out.push(table.map_or(Change::Unknown, Change::Table));
    }
    out
}

/// The first netlink message of `data`: its type, its payload and the data after it.
fn message(data: &[u8]) -> Option<(u16, &[u8], &[u8])> {
    let len = u32::from_ne_bytes(data.get(0..4)?.try_into().ok()?) as usize;
    let kind = u16::from_ne_bytes(data.get(4..6)?.try_into().ok()?);
    if len < 16 || len > data.len() {
        return None;
    }
    let next = len.next_multiple_of(4).min(data.len());
    Some((kind, &data[16..len], &data[next..]))
}

/// The table name among netlink attributes (without its terminating NUL).
fn table_attribute(mut attributes: &[u8]) -> Option<&[u8]> {
    while attributes.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes(attributes[0..2].try_into().ok()?));
        let kind = u16::from_ne_bytes(attributes[2..4].try_into().ok()?) & NLA_TYPE_MASK;
        if len < 4 || len > attributes.len() {
            return None;
        }
        if kind == NFTA_TABLE {
            let value = &attributes[4..len];
            let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
            return Some(&value[..end]);
        }
        attributes = &attributes[len.next_multiple_of(4).min(attributes.len())..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One netlink message of `kind` with an nfgenmsg header and the attributes `(type, value)`.
    fn message_of(kind: u16, attributes: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = vec![2u8, 0, 0, 0];
        for (t, v) in attributes {
            let len = 4 + v.len();
            body.extend_from_slice(&(len as u16).to_ne_bytes());
            body.extend_from_slice(&t.to_ne_bytes());
            body.extend_from_slice(v);
            body.resize(body.len().next_multiple_of(4), 0);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&[0; 10]);
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn changes_name_their_tables_and_skip_transaction_ends() {
        let rule = (NFNL_SUBSYS_NFTABLES << 8) | 6;
        let chain = (NFNL_SUBSYS_NFTABLES << 8) | 3;
        let gen_end = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN;
        let mut data = message_of(rule, &[(NFTA_TABLE, b"kilo\0"), (2, b"KILO-NAT\0")]);
        data.extend(message_of(chain, &[(3, b"x"), (NFTA_TABLE | 0x8000, b"nat\0")]));
        data.extend(message_of(gen_end, &[(1, &[0, 0, 0, 7])]));
        // Another subsystem (conntrack) reports nothing; a rule without a table is unknown.
        data.extend(message_of(1 << 8, &[(1, b"x")]));
        data.extend(message_of(rule, &[(2, b"KILO-NAT\0")]));
        let mut input = data.as_slice();
        assert_eq!(
            changes(&mut input),
            vec![Change::Table(b"kilo"), Change::Table(b"nat"), Change::Unknown]
        );
        assert!(input.is_empty());
    }

    #[test]
    fn truncated_or_malformed_data_is_a_change_of_anything() {
        let rule = (NFNL_SUBSYS_NFTABLES << 8) | 6;
        let whole = message_of(rule, &[(NFTA_TABLE, b"kilo\0")]);
        for cut in 1..whole.len() {
            let mut input = &whole[..cut];
            assert_eq!(changes(&mut input), vec![Change::Unknown], "cut at {cut}");
        }
        // An attribute longer than its message.
        let mut bad = whole.clone();
        bad[20] = 200;
        assert_eq!(changes(&mut bad.as_slice()), vec![Change::Unknown]);
    }

    #[test]
    fn stamps_move_with_their_tables_only() {
        let counts = Counts::default();
        counts.alive.store(true, Ordering::Relaxed);
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let _guard = runtime.enter();
        let watch = TableWatch {
            counts: Arc::new(counts),
            task: runtime.spawn(std::future::pending::<()>()),
        };
        let before = watch.stamp(["kilo", "kilo6"]);
        watch.counts.table("filter");
        assert_eq!(watch.stamp(["kilo", "kilo6"]), before);
        watch.counts.table("kilo6");
        let after = watch.stamp(["kilo", "kilo6"]);
        assert_ne!(after, before);
        watch.counts.any();
        assert_ne!(watch.stamp(["kilo", "kilo6"]), after);
        watch.counts.alive.store(false, Ordering::Relaxed);
        assert_eq!(watch.stamp(["kilo", "kilo6"]), None);
    }
}
