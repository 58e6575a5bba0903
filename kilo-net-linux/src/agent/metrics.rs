//! The agent's Prometheus metrics: upstream's names (upstream 11) plus per-peer WireGuard figures
//! and a reconcile duration histogram.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::firewall::OpLabels;
use crate::wireguard::DeviceState;

/// `kilo_errors_total{event}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// `run`, `checkin`, `local`, `apply`, `cleanUp`.
    pub event: String,
}

/// `kilo_iptables_operations_total{protocol, operation, table, chain}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IptablesLabels {
    /// `IPv4` or `IPv6`.
    pub protocol: String,
    /// Upstream's operation name.
    pub operation: String,
    /// The table.
    pub table: String,
    /// The chain (`*` for listings of chains).
    pub chain: String,
}

/// Per-peer WireGuard figures.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    /// The interface.
    pub interface: String,
    /// The peer's public key.
    pub public_key: String,
}

/// Everything the agent exports, registered in one registry.
#[derive(Debug)]
pub struct Metrics {
    /// The registry to encode on `/metrics`.
    pub registry: Mutex<Registry>,
    /// `kilo_errors_total`.
    pub errors: Family<EventLabels, Counter>,
    /// `kilo_leader`.
    pub leader: Gauge,
    /// `kilo_nodes`.
    pub nodes: Gauge,
    /// `kilo_peers`.
    pub peers: Gauge,
    /// `kilo_reconciles_total`.
    pub reconciles: Counter,
    /// `kilo_invalid_objects`: nodes and peers left out because they do not parse.
    pub invalid: Gauge,
    /// `kilo_iptables_operations_total`.
    pub iptables: Family<IptablesLabels, Counter>,
    /// `kilo_reconcile_duration_seconds`.
    pub reconcile_duration: Histogram,
    /// `kilo_wireguard_operations_total`: WireGuard sets (one per changed peer).
    pub wireguard_operations: Counter,
    /// `kilo_netlink_writes_total`: link, address, route and rule writes.
    pub netlink_writes: Counter,
    /// `kilo_wireguard_peer_last_handshake_seconds`.
    pub peer_handshake: Family<PeerLabels, Gauge<i64, AtomicI64>>,
    /// `kilo_wireguard_peer_receive_bytes_total`.
    pub peer_rx: Family<PeerLabels, Counter<u64, AtomicU64>>,
    /// `kilo_wireguard_peer_transmit_bytes_total`.
    pub peer_tx: Family<PeerLabels, Counter<u64, AtomicU64>>,
    iptables_seen: Mutex<std::collections::BTreeMap<OpLabels, u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Fresh metrics, registered.
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            errors: Family::default(),
            leader: Gauge::default(),
            nodes: Gauge::default(),
            peers: Gauge::default(),
            reconciles: Counter::default(),
            invalid: Gauge::default(),
            iptables: Family::default(),
            reconcile_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            wireguard_operations: Counter::default(),
            netlink_writes: Counter::default(),
            peer_handshake: Family::default(),
            peer_rx: Family::default(),
            peer_tx: Family::default(),
            iptables_seen: Mutex::new(Default::default()),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|e| e.into_inner());
            r.register("kilo_errors", "Number of errors that occurred while administering the mesh.", m.errors.clone());
            r.register("kilo_leader", "Leadership status of the node.", m.leader.clone());
            r.register("kilo_nodes", "Number of nodes in the mesh.", m.nodes.clone());
            r.register("kilo_peers", "Number of peers in the mesh.", m.peers.clone());
            r.register("kilo_reconciles", "Number of reconciliation attempts.", m.reconciles.clone());
            r.register("kilo_invalid_objects", "Nodes and peers left out because they do not parse.", m.invalid.clone());
            r.register("kilo_iptables_operations", "Number of iptables operations.", m.iptables.clone());
            r.register("kilo_reconcile_duration_seconds", "Time to apply one plan.", m.reconcile_duration.clone());
            r.register("kilo_wireguard_operations", "WireGuard configuration operations (one per changed peer).", m.wireguard_operations.clone());
            r.register("kilo_netlink_writes", "Link, address, route and rule writes.", m.netlink_writes.clone());
            r.register("kilo_wireguard_peer_last_handshake_seconds", "Unix time of the last handshake with a peer.", m.peer_handshake.clone());
            r.register("kilo_wireguard_peer_receive_bytes", "Bytes received from a peer.", m.peer_rx.clone());
            r.register("kilo_wireguard_peer_transmit_bytes", "Bytes sent to a peer.", m.peer_tx.clone());
        }
        m
    }

    /// Counts an error of upstream's `event` kind.
    pub fn error(&self, event: &str) {
        self.errors.get_or_create(&EventLabels { event: event.to_string() }).inc();
    }

    /// Brings the iptables counters up to the firewall's own counts.
    pub fn sync_iptables(&self, counts: &std::collections::BTreeMap<OpLabels, u64>) {
        let mut seen = self.iptables_seen.lock().unwrap_or_else(|e| e.into_inner());
        for (labels, &count) in counts {
            let before = seen.insert(labels.clone(), count).unwrap_or(0);
            let labels = IptablesLabels {
                protocol: labels.protocol_label().to_string(),
                operation: labels.operation.as_str().to_string(),
                table: labels.table.clone(),
                chain: labels.chain.clone(),
            };
            self.iptables.get_or_create(&labels).inc_by(count.saturating_sub(before));
        }
    }

    /// Records the device's per-peer figures.
    pub fn observe_device(&self, state: &DeviceState) {
        for peer in &state.peers {
            let labels = PeerLabels { interface: state.name.clone(), public_key: peer.config.public_key.to_string() };
            let handshake = peer
                .last_handshake
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            self.peer_handshake.get_or_create(&labels).set(handshake);
            let rx = self.peer_rx.get_or_create(&labels);
            rx.inc_by(peer.rx_bytes.saturating_sub(rx.get()));
            let tx = self.peer_tx.get_or_create(&labels);
            tx.inc_by(peer.tx_bytes.saturating_sub(tx.get()));
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// What the HTTP surface shows besides metrics.
#[derive(Debug, Default)]
pub struct Shared {
    /// The metrics.
    pub metrics: Metrics,
    /// Whether a plan has been applied successfully (`/health`).
    pub healthy: std::sync::atomic::AtomicBool,
    /// The current mesh in DOT (`/graph`); `None` while the local node is not ready.
    pub graph: Mutex<Option<String>>,
}

impl Shared {
    /// New shared state.
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared::default())
    }
}
