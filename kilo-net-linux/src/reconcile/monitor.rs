//! The route monitor: restores managed routes deleted behind Kilo's back (upstream 7.5 `Run`);
//! and the link monitor, which tells when the WireGuard interface is deleted.

use std::sync::atomic::Ordering;

use futures::{Stream, StreamExt};
use kilo_core::routes::Route;
use rtnetlink::MulticastGroup;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;

use super::{RouteKey, RouteReconciler, installed_route};
use crate::error::NetlinkError;
use crate::netlink::Notifications;

/// Listens to route deletions (`ip monitor route`, groups `RTNLGRP_IPV4_ROUTE` and
/// `RTNLGRP_IPV6_ROUTE`) and re-adds every deleted route that the reconciler still wants.
///
/// Drive it with [`RouteMonitor::run`] (forever, logging) or step it with
/// [`RouteMonitor::next_restored`] / [`RouteMonitor::into_stream`].
pub struct RouteMonitor {
    reconciler: RouteReconciler,
    messages: Notifications,
    /// Whether the subscription still delivers (it counts among the reconciler's monitors).
    listening: bool,
}

impl std::fmt::Debug for RouteMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMonitor").field("reconciler", &self.reconciler).finish_non_exhaustive()
    }
}

impl Drop for RouteMonitor {
    fn drop(&mut self) {
        self.stop_listening();
    }
}

impl RouteMonitor {
    pub(super) fn new(reconciler: RouteReconciler) -> Result<RouteMonitor, NetlinkError> {
        let messages = reconciler.netlink.subscribe(&[
            MulticastGroup::Ipv4Route,
            MulticastGroup::Ipv6Route,
            MulticastGroup::Ipv4Rule,
            MulticastGroup::Ipv6Rule,
        ])?;
        // Counted from here: the reconciler trusts its view only after a read that follows.
        reconciler.events.count.fetch_add(1, Ordering::AcqRel);
        reconciler.events.monitors.fetch_add(1, Ordering::AcqRel);
        Ok(RouteMonitor { reconciler, messages, listening: true })
    }

    /// Leaves the reconciler's monitors: its view is no longer kept current by this one.
    fn stop_listening(&mut self) {
        if std::mem::take(&mut self.listening) {
            self.reconciler.events.count.fetch_add(1, Ordering::AcqRel);
            self.reconciler.events.monitors.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Waits until a desired route is deleted and restores it (`ip route replace …`). Returns
    /// the restored route, the failure to restore it, or `None` when the subscription ended.
    pub async fn next_restored(&mut self) -> Option<Result<Route, NetlinkError>> {
        while let Some((message, _)) = self.messages.next().await {
            // Every route or rule change (whoever made it, this reconciler too) makes the next
            // reconcile read the kernel.
            self.reconciler.events.count.fetch_add(1, Ordering::AcqRel);
            let NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(msg)) = message.payload
            else {
                continue;
            };
            let names = match self.reconciler.netlink.link_names().await {
                Ok(names) => names,
                Err(e) => return Some(Err(e)),
            };
            let Some(kernel) = crate::netlink::route_from_message(&msg, &names) else { continue };
            let key = RouteKey::of_installed(&installed_route(&kernel));
            if let Some(result) = self.reconciler.restore(&key).await {
                if let Ok(route) = &result {
                    tracing::info!(route = %crate::netlink::describe_route(route), "restored a deleted route");
                }
                return Some(result);
            }
        }
        self.stop_listening();
        None
    }

    /// The monitor as a stream of restored routes (or failures to restore them).
    pub fn into_stream(self) -> impl Stream<Item = Result<Route, NetlinkError>> + Send {
        futures::stream::unfold(self, |mut monitor| async move {
            monitor.next_restored().await.map(|item| (item, monitor))
        })
    }

    /// Restores deleted routes until the subscription ends, logging failures (the agent spawns
    /// this).
    pub async fn run(mut self) {
        while let Some(result) = self.next_restored().await {
            if let Err(e) = result {
                tracing::warn!(error = %e, "cannot restore a deleted route");
            }
        }
    }
}

/// Listens to link deletions (`ip monitor link`, group `RTNLGRP_LINK`) and reports those of one
/// link, by name: the agent repairs at once when its WireGuard interface is deleted, instead of
/// at the next resync.
pub struct LinkMonitor {
    name: String,
    messages: Notifications,
}

impl std::fmt::Debug for LinkMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkMonitor").field("name", &self.name).finish_non_exhaustive()
    }
}

impl LinkMonitor {
    /// Subscribes, through `netlink`'s namespace, to the deletions of link `name`.
    pub fn new(netlink: &crate::Netlink, name: &str) -> Result<LinkMonitor, NetlinkError> {
        let messages = netlink.subscribe(&[MulticastGroup::Link])?;
        Ok(LinkMonitor { name: name.to_string(), messages })
    }

    /// Waits until the link is deleted (`RTM_DELLINK` naming it); `None` when the subscription
    /// ended.
    pub async fn deleted(&mut self) -> Option<()> {
        use rtnetlink::packet_route::link::LinkAttribute;
        while let Some((message, _)) = self.messages.next().await {
            let NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(msg)) = message.payload
            else {
                continue;
            };
            let named = msg
                .attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::IfName(n) if *n == self.name));
            if named {
                return Some(());
            }
        }
        None
    }
}
