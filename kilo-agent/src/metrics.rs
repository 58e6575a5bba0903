//! The agent's Prometheus metrics: upstream's names (upstream 11) plus per-peer WireGuard figures
//! and a reconcile duration histogram, the standard `process_*` metrics, and both exposition
//! formats: Prometheus text 0.0.4 (the default, as upstream's) and OpenMetrics 1.0.0.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use kilo_net_linux::firewall::OpLabels;
use kilo_net_linux::wireguard::DeviceState;

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

/// `kilo_location_leader{location, node}` and the other per-location leader metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct LeaderLabels {
    /// The location (segment key without `location:`).
    pub location: String,
    /// The leading node.
    pub node: String,
}

/// `kilo_location_leader_changes_total{location}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LocationLabels {
    /// The location (segment key without `location:`).
    pub location: String,
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
    /// `kilo_location_leader`: 1 for each location's current leader, as this agent sees it.
    pub location_leader: Family<LeaderLabels, Gauge>,
    /// `kilo_location_leader_healthy`: whether that leader is not reported down (1) or is (0).
    pub location_leader_healthy: Family<LeaderLabels, Gauge>,
    /// `kilo_location_leader_changes_total`.
    pub location_leader_changes: Family<LocationLabels, Counter>,
    iptables_seen: Mutex<std::collections::BTreeMap<OpLabels, u64>>,
    leaders_seen: Mutex<std::collections::BTreeSet<LeaderLabels>>,
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
            location_leader: Family::default(),
            location_leader_healthy: Family::default(),
            location_leader_changes: Family::default(),
            iptables_seen: Mutex::new(Default::default()),
            leaders_seen: Mutex::new(Default::default()),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|e| e.into_inner());
            r.register(
                "kilo_errors",
                "Number of errors that occurred while administering the mesh.",
                m.errors.clone(),
            );
            r.register("kilo_leader", "Leadership status of the node.", m.leader.clone());
            r.register("kilo_nodes", "Number of nodes in the mesh.", m.nodes.clone());
            r.register("kilo_peers", "Number of peers in the mesh.", m.peers.clone());
            r.register(
                "kilo_reconciles",
                "Number of reconciliation attempts.",
                m.reconciles.clone(),
            );
            r.register(
                "kilo_invalid_objects",
                "Nodes and peers left out because they do not parse.",
                m.invalid.clone(),
            );
            r.register(
                "kilo_iptables_operations",
                "Number of iptables operations.",
                m.iptables.clone(),
            );
            r.register(
                "kilo_reconcile_duration_seconds",
                "Time to apply one plan.",
                m.reconcile_duration.clone(),
            );
            r.register(
                "kilo_wireguard_operations",
                "WireGuard configuration operations (one per changed peer).",
                m.wireguard_operations.clone(),
            );
            r.register(
                "kilo_netlink_writes",
                "Link, address, route and rule writes (the route monitor's restores included).",
                m.netlink_writes.clone(),
            );
            r.register(
                "kilo_wireguard_peer_last_handshake_seconds",
                "Unix time of the last handshake with a peer.",
                m.peer_handshake.clone(),
            );
            r.register(
                "kilo_wireguard_peer_receive_bytes",
                "Bytes received from a peer.",
                m.peer_rx.clone(),
            );
            r.register(
                "kilo_wireguard_peer_transmit_bytes",
                "Bytes sent to a peer.",
                m.peer_tx.clone(),
            );
            r.register(
                "kilo_location_leader",
                "Each location's leader as this agent sees it (1; one series per location).",
                m.location_leader.clone(),
            );
            r.register(
                "kilo_location_leader_healthy",
                "Whether each location's leader carries its location's traffic (1) or is \
                 reported down by the location's other nodes (0).",
                m.location_leader_healthy.clone(),
            );
            r.register(
                "kilo_location_leader_changes",
                "Changes of a location's leader seen by this agent.",
                m.location_leader_changes.clone(),
            );
            r.register_collector(Box::new(ProcessCollector));
        }
        m
    }

    /// Sets the per-location leader gauges to `leaders` (location, node, healthy), removing the
    /// series of former leaders.
    pub fn set_leaders(&self, leaders: &[(String, String, bool)]) {
        let mut seen = self.leaders_seen.lock().unwrap_or_else(|e| e.into_inner());
        let now: std::collections::BTreeSet<LeaderLabels> = leaders
            .iter()
            .map(|(location, node, _)| LeaderLabels {
                location: location.clone(),
                node: node.clone(),
            })
            .collect();
        for gone in seen.difference(&now) {
            self.location_leader.remove(gone);
            self.location_leader_healthy.remove(gone);
        }
        for (location, node, healthy) in leaders {
            let labels = LeaderLabels { location: location.clone(), node: node.clone() };
            self.location_leader.get_or_create(&labels).set(1);
            self.location_leader_healthy.get_or_create(&labels).set(i64::from(*healthy));
        }
        *seen = now;
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
            let labels = PeerLabels {
                interface: state.name.clone(),
                public_key: peer.config.public_key.to_string(),
            };
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

    /// Every metric in Prometheus text format 0.0.4.
    pub fn encode(&self) -> String {
        openmetrics_to_prometheus(&self.encode_openmetrics())
    }

    /// Every metric in OpenMetrics 1.0.0 (ending with `# EOF`).
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    /// Every metric in `format`.
    pub fn encode_as(&self, format: Exposition) -> String {
        match format {
            Exposition::Prometheus => self.encode(),
            Exposition::OpenMetrics => self.encode_openmetrics(),
        }
    }
}

/// The exposition formats `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exposition {
    /// Prometheus text format 0.0.4: what upstream's agent serves and every scraper reads.
    Prometheus,
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
}

impl Exposition {
    /// The format a scraper's `Accept` header asks for: OpenMetrics only when it names
    /// `application/openmetrics-text`, else Prometheus text 0.0.4.
    pub fn negotiate(accept: Option<&str>) -> Exposition {
        let asks = accept.is_some_and(|a| {
            a.split(',').any(|range| {
                let mut parts = range.split(';').map(str::trim);
                let media = parts.next().unwrap_or("");
                // `q=0` means "not acceptable".
                let refused = parts
                    .any(|p| p.strip_prefix("q=").and_then(|q| q.parse::<f64>().ok()) == Some(0.0));
                media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            })
        });
        if asks { Exposition::OpenMetrics } else { Exposition::Prometheus }
    }

    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Rewrites OpenMetrics text (as `prometheus-client` writes it) into Prometheus text 0.0.4:
/// counter families take their samples' `_total` name (`# TYPE kilo_errors_total counter`),
/// `unknown` becomes `untyped`, info metrics become gauges named `_info`, and what 0.0.4 has no
/// place for goes: `# UNIT`, `# EOF`, counters' `_created` samples and exemplars.
pub fn openmetrics_to_prometheus(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // The family being written and its OpenMetrics type; a `# HELP` waits for its `# TYPE`.
    let mut family = String::new();
    let mut kind = String::new();
    let mut help: Option<(String, String)> = None;
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name.to_string(), doc.to_string()));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, om_kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            family = name.to_string();
            kind = om_kind.to_string();
            let (exposed, kind_004) = match om_kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "gauge" | "histogram" | "summary" => (name.to_string(), om_kind),
                _ => (name.to_string(), "untyped"),
            };
            if let Some((help_name, doc)) = help.take().filter(|(n, _)| *n == family) {
                let _ = help_name;
                out.push_str(&format!("# HELP {exposed} {doc}\n"));
            }
            out.push_str(&format!("# TYPE {exposed} {kind_004}\n"));
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        // A sample: `name{labels} value [timestamp] [# exemplar]`.
        let sample = match line.find(" # ") {
            Some(at) if !in_label_value(line, at) => &line[..at],
            _ => line,
        };
        let name_end = sample.find(['{', ' ']).unwrap_or(sample.len());
        let name = &sample[..name_end];
        if kind == "counter" && name.strip_prefix(family.as_str()) == Some("_created") {
            continue;
        }
        out.push_str(sample);
        out.push('\n');
    }
    out
}

/// Whether byte `at` of a sample line is inside a quoted label value.
fn in_label_value(line: &str, at: usize) -> bool {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if i >= at {
            break;
        }
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            _ => {}
        }
    }
    quoted
}

/// The standard `process_*` metrics of Prometheus' client libraries (what upstream's Go process
/// collector exports and its Grafana dashboard reads), read from `/proc/self` at each scrape.
/// Figures that cannot be read are left out.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessCollector;

/// The process figures of one scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessFigures {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Open file descriptors.
    pub open_fds: Option<i64>,
    /// The soft limit of open file descriptors.
    pub max_fds: Option<i64>,
    /// Virtual memory size, in bytes.
    pub virtual_memory_bytes: Option<i64>,
    /// The address space limit, in bytes (`-1`: unlimited, as Go's collector).
    pub virtual_memory_max_bytes: Option<i64>,
    /// Resident memory size, in bytes.
    pub resident_memory_bytes: Option<i64>,
    /// Start time since the Unix epoch, in seconds.
    pub start_time_seconds: Option<f64>,
}

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`: 100 on every Linux architecture
/// Kilo runs on; Prometheus' own procfs library assumes the same).
const USER_HZ: f64 = 100.0;

impl ProcessFigures {
    /// This process's figures now.
    pub fn read() -> ProcessFigures {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let boot = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| i64::try_from(d.count()).unwrap_or(i64::MAX));
        ProcessFigures::parse(&stat, &status, &limits, &boot, open_fds)
    }

    /// The figures from the text of `/proc/self/stat`, `/proc/self/status`, `/proc/self/limits`
    /// and `/proc/stat`, and the number of open descriptors.
    pub fn parse(
        stat: &str,
        status: &str,
        limits: &str,
        proc_stat: &str,
        open_fds: Option<i64>,
    ) -> ProcessFigures {
        // Fields after the command name, which is in parentheses and may hold spaces: the
        // first of them is field 3 (`state`).
        let fields: Vec<&str> = stat
            .rfind(')')
            .map(|at| stat[at + 1..].split_whitespace().collect())
            .unwrap_or_default();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        let cpu_seconds = match (field(14), field(15)) {
            (Some(user), Some(system)) => Some((user + system) as f64 / USER_HZ),
            _ => None,
        };
        let boot_time = proc_stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<u64>().ok());
        let start_time_seconds = match (boot_time, field(22)) {
            (Some(boot), Some(ticks)) => Some(boot as f64 + ticks as f64 / USER_HZ),
            _ => None,
        };
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
                .map(|k| k.saturating_mul(1024))
        };
        let limit = |name: &str| {
            let line = limits.lines().find(|l| l.starts_with(name))?;
            let soft = line[name.len()..].split_whitespace().next()?;
            if soft == "unlimited" { Some(-1) } else { soft.parse::<i64>().ok() }
        };
        ProcessFigures {
            cpu_seconds,
            open_fds,
            max_fds: limit("Max open files"),
            virtual_memory_bytes: kib("VmSize:"),
            virtual_memory_max_bytes: limit("Max address space"),
            resident_memory_bytes: kib("VmRSS:"),
            start_time_seconds,
        }
    }
}

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let f = ProcessFigures::read();
        if let Some(v) = f.cpu_seconds {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                c.metric_type(),
            )?)?;
        }
        let gauges: [(&str, &str, Option<i64>); 5] = [
            ("process_max_fds", "Maximum number of open file descriptors.", f.max_fds),
            ("process_open_fds", "Number of open file descriptors.", f.open_fds),
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                f.resident_memory_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                f.virtual_memory_bytes,
            ),
            (
                "process_virtual_memory_max_bytes",
                "Maximum amount of virtual memory available in bytes.",
                f.virtual_memory_max_bytes,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let g = ConstGauge::new(v);
                g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
            }
        }
        if let Some(v) = f.start_time_seconds {
            let g = ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                None,
                g.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// A scrape's request for fresh per-peer figures, answered once the driver has read the device.
pub type DeviceRead = tokio::sync::oneshot::Sender<()>;

/// How long a scrape waits for the driver to read the device before it shows what it has.
pub const SCRAPE_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Scrapes closer together than this share one device read (a read of 1,000 peers costs tens
/// of milliseconds of CPU).
pub const SCRAPE_READ_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Scrapes' requests to the driver (see [`Shared::refresh_device`]).
#[derive(Debug)]
pub struct DeviceReads {
    sender: tokio::sync::mpsc::Sender<DeviceRead>,
    receiver: Mutex<Option<tokio::sync::mpsc::Receiver<DeviceRead>>>,
    /// When a scrape last had the device read.
    last: Mutex<Option<tokio::time::Instant>>,
}

impl Default for DeviceReads {
    fn default() -> DeviceReads {
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        DeviceReads { sender, receiver: Mutex::new(Some(receiver)), last: Mutex::new(None) }
    }
}

/// What the HTTP surface shows besides metrics.
#[derive(Debug, Default)]
pub struct Shared {
    /// The metrics.
    pub metrics: Metrics,
    /// Whether the host is in the planned state: the last plan was applied successfully and
    /// nothing has been seen to undo it since (`/health`; see [`Shared::health`]).
    pub healthy: std::sync::atomic::AtomicBool,
    /// Why the host is not in the planned state, when it is not ([`Shared::set_unhealthy`]).
    pub unhealthy_reason: Mutex<Option<String>>,
    /// The agent as of its last reconcile, for `/graph` (computed on request: the DOT of a big
    /// full mesh is megabytes, too much to rebuild on every event).
    pub mesh: Mutex<Option<Arc<kilo_core::agent::Agent>>>,
    /// The per-peer WireGuard figures are read when `/metrics` is scraped, not on a timer: the
    /// scrape asks the driver, which owns the device.
    pub device_reads: DeviceReads,
}

impl Shared {
    /// New shared state.
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared::default())
    }

    /// The host is in the planned state (a plan was just applied successfully).
    pub fn set_healthy(&self) {
        let mut reason = self.unhealthy_reason.lock().unwrap_or_else(|e| e.into_inner());
        self.healthy.store(true, std::sync::atomic::Ordering::Relaxed);
        *reason = None;
    }

    /// The host is not in the planned state, for `reason` (applying failed, the interface is
    /// gone, …); healthy again at the next successful apply.
    pub fn set_unhealthy(&self, reason: impl Into<String>) {
        let mut current = self.unhealthy_reason.lock().unwrap_or_else(|e| e.into_inner());
        self.healthy.store(false, std::sync::atomic::Ordering::Relaxed);
        *current = Some(reason.into());
    }

    /// `/health`: `Ok` while the host is in the planned state, else why not (before the first
    /// successful apply: `no plan applied yet`).
    pub fn health(&self) -> Result<(), String> {
        let reason = self.unhealthy_reason.lock().unwrap_or_else(|e| e.into_inner());
        if self.healthy.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        Err(reason.clone().unwrap_or_else(|| "no plan applied yet".to_string()))
    }

    /// Has the driver read the WireGuard device into the per-peer metrics, waiting at most
    /// [`SCRAPE_READ_TIMEOUT`]; without a running driver (or while it is busy for longer) the
    /// last figures stay (no driver has taken the requests yet: at once). Within
    /// [`SCRAPE_READ_INTERVAL`] of the last such read, the figures of that read are shown.
    pub async fn refresh_device(&self) {
        let driving =
            self.device_reads.receiver.lock().unwrap_or_else(|e| e.into_inner()).is_none();
        if !driving {
            return;
        }
        {
            let mut last = self.device_reads.last.lock().unwrap_or_else(|e| e.into_inner());
            let now = tokio::time::Instant::now();
            if last.is_some_and(|at| now.duration_since(at) < SCRAPE_READ_INTERVAL) {
                return;
            }
            *last = Some(now);
        }
        let (done, read) = tokio::sync::oneshot::channel();
        if self.device_reads.sender.try_send(done).is_ok() {
            let _ = tokio::time::timeout(SCRAPE_READ_TIMEOUT, read).await;
        }
    }

    /// The driver's end of the scrapes' requests; `None` once taken.
    pub fn take_device_reads(&self) -> Option<tokio::sync::mpsc::Receiver<DeviceRead>> {
        self.device_reads.receiver.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The current mesh in DOT (`/graph`); `None` while the local node is not ready.
    pub fn graph(&self) -> Option<String> {
        let agent = self.mesh.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        agent.graph(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_becomes_prometheus_text_0_0_4() {
        let openmetrics = "\
# HELP kilo_errors Number of errors.
# TYPE kilo_errors counter
kilo_errors_total{event=\"run\"} 2
kilo_errors_created{event=\"run\"} 1700000000.0
# HELP kilo_leader Leadership status of the node.
# TYPE kilo_leader gauge
kilo_leader 1
# HELP kilo_duration_seconds Time to apply one plan.
# TYPE kilo_duration_seconds histogram
# UNIT kilo_duration_seconds seconds
kilo_duration_seconds_sum 0.25
kilo_duration_seconds_count 1
kilo_duration_seconds_bucket{le=\"0.5\"} 1 # {trace=\"a # b\"} 0.25
kilo_duration_seconds_bucket{le=\"+Inf\"} 1
# HELP build Build.
# TYPE build info
build_info{version=\"1\"} 1
# HELP odd Odd.
# TYPE odd unknown
odd{note=\"a # b\"} 3
# EOF
";
        let expected = "\
# HELP kilo_errors_total Number of errors.
# TYPE kilo_errors_total counter
kilo_errors_total{event=\"run\"} 2
# HELP kilo_leader Leadership status of the node.
# TYPE kilo_leader gauge
kilo_leader 1
# HELP kilo_duration_seconds Time to apply one plan.
# TYPE kilo_duration_seconds histogram
kilo_duration_seconds_sum 0.25
kilo_duration_seconds_count 1
kilo_duration_seconds_bucket{le=\"0.5\"} 1
kilo_duration_seconds_bucket{le=\"+Inf\"} 1
# HELP build_info Build.
# TYPE build_info gauge
build_info{version=\"1\"} 1
# HELP odd Odd.
# TYPE odd untyped
odd{note=\"a # b\"} 3
";
        assert_eq!(openmetrics_to_prometheus(openmetrics), expected);
    }

    #[test]
    fn upstreams_counters_are_typed_under_their_total_name() {
        let m = Metrics::new();
        m.error("run");
        m.reconciles.inc();
        // Families without a series are left out, as Go's client does.
        let op = IptablesLabels {
            protocol: "IPv4".into(),
            operation: "Append".into(),
            table: "nat".into(),
            chain: "KILO-NAT".into(),
        };
        m.iptables.get_or_create(&op).inc();
        let peer = PeerLabels { interface: "kilo0".into(), public_key: "k".into() };
        m.peer_handshake.get_or_create(&peer).set(1);
        m.peer_rx.get_or_create(&peer).inc();
        m.peer_tx.get_or_create(&peer).inc();
        let text = m.encode();
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE kilo_")).collect();
        assert_eq!(
            types,
            [
                "# TYPE kilo_errors_total counter",
                "# TYPE kilo_leader gauge",
                "# TYPE kilo_nodes gauge",
                "# TYPE kilo_peers gauge",
                "# TYPE kilo_reconciles_total counter",
                "# TYPE kilo_invalid_objects gauge",
                "# TYPE kilo_iptables_operations_total counter",
                "# TYPE kilo_reconcile_duration_seconds histogram",
                "# TYPE kilo_wireguard_operations_total counter",
                "# TYPE kilo_netlink_writes_total counter",
                "# TYPE kilo_wireguard_peer_last_handshake_seconds gauge",
                "# TYPE kilo_wireguard_peer_receive_bytes_total counter",
                "# TYPE kilo_wireguard_peer_transmit_bytes_total counter",
            ]
        );
        assert!(text.contains("\nkilo_errors_total{event=\"run\"} 1\n"), "{text}");
        assert!(text.contains("\nkilo_reconciles_total 1\n"), "{text}");
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
        assert!(m.encode_openmetrics().ends_with("# EOF\n"));
    }

    #[test]
    fn the_process_metrics_are_exported() {
        let text = Metrics::new().encode();
        for family in [
            "# TYPE process_cpu_seconds_total counter",
            "# TYPE process_max_fds gauge",
            "# TYPE process_open_fds gauge",
            "# TYPE process_resident_memory_bytes gauge",
            "# TYPE process_virtual_memory_bytes gauge",
            "# TYPE process_virtual_memory_max_bytes gauge",
            "# TYPE process_start_time_seconds gauge",
        ] {
            assert!(text.contains(family), "{family:?} not in {text}");
        }
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {text}"))
        };
        assert!(value("process_resident_memory_bytes") > 0.0);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let start = value("process_start_time_seconds");
        assert!(start > now - 3600.0 && start <= now + 1.0, "start {start}, now {now}");
    }

    #[test]
    fn process_figures_are_read_from_procfs_text() {
        let stat = "1234 (kg (agent) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 \
                    4 0 360000 123456789 500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 17 1 0";
        let status = "Name:\tkg\nVmSize:\t  120560 kB\nVmRSS:\t    8200 kB\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max address space         unlimited            unlimited            bytes\n\
                      Max open files            1024                 524288               files\n";
        let proc_stat = "cpu  1 2 3\nbtime 1700000000\nprocesses 5\n";
        assert_eq!(
            ProcessFigures::parse(stat, status, limits, proc_stat, Some(9)),
            ProcessFigures {
                cpu_seconds: Some(3.0),
                open_fds: Some(9),
                max_fds: Some(1024),
                virtual_memory_bytes: Some(120_560 * 1024),
                virtual_memory_max_bytes: Some(-1),
                resident_memory_bytes: Some(8200 * 1024),
                start_time_seconds: Some(1_700_003_600.0),
            }
        );
        assert_eq!(ProcessFigures::parse("", "", "", "", None), ProcessFigures::default());
    }

    #[test]
    fn openmetrics_is_served_only_to_scrapers_that_ask_for_it() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                          version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Exposition::negotiate(Some(prometheus)), Exposition::OpenMetrics);
        assert_eq!(Exposition::negotiate(None), Exposition::Prometheus);
        assert_eq!(Exposition::negotiate(Some("*/*")), Exposition::Prometheus);
        assert_eq!(
            Exposition::negotiate(Some("text/plain;version=0.0.4;q=1,*/*;q=0.1")),
            Exposition::Prometheus
        );
        assert_eq!(
            Exposition::negotiate(Some("application/openmetrics-text;q=0, text/plain")),
            Exposition::Prometheus
        );
        assert_eq!(
            Exposition::Prometheus.content_type(),
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert_eq!(
            Exposition::OpenMetrics.content_type(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
    }

    #[test]
    fn health_follows_the_last_apply_and_names_why_it_is_not_healthy() {
        let shared = Shared::new();
        assert_eq!(shared.health(), Err("no plan applied yet".to_string()));
        shared.set_healthy();
        assert_eq!(shared.health(), Ok(()));
        shared.set_unhealthy("applying the plan failed: the WireGuard interface kilo0 is gone");
        assert_eq!(
            shared.health(),
            Err("applying the plan failed: the WireGuard interface kilo0 is gone".to_string())
        );
        assert!(!shared.healthy.load(std::sync::atomic::Ordering::Relaxed));
        shared.set_healthy();
        assert_eq!(shared.health(), Ok(()));
    }
}
