//! A host that records what the driver asks of it, in memory: simulations (the multi-node
//! tests, an embedder's own) run the real driver against it without root.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kilo_core::Cidr;
use kilo_core::agent::HostFacts;
use kilo_core::plan::Plan;
use kilo_net_linux::host::ApplyReport;
use kilo_net_linux::wireguard::DeviceState;
use tokio::sync::Notify;

use crate::host::{Host, HostCounters};

/// An error the test asked the recording host to report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RecordedError(pub String);

/// What the host was asked to do, and what it will report.
#[derive(Debug, Default)]
pub struct Recording {
    /// Every plan applied, in order.
    pub plans: Vec<Plan>,
    /// Every CNI update asked for, in order.
    pub cni: Vec<Vec<Cidr>>,
    /// Firewall repairs asked for.
    pub firewall_reconciles: u64,
    /// Device reads asked for.
    pub observes: u64,
    /// Host detections asked for.
    pub detections: u64,
    /// `Some(interface)` once cleaned up.
    pub cleaned_up: Option<bool>,
    /// What detection reports.
    pub facts: Option<HostFacts>,
    /// What the device reports.
    pub device: DeviceState,
    /// The error the next apply reports, once.
    pub fail_next_apply: Option<String>,
    /// Every probe asked for: its targets, in order.
    pub probes: Vec<Vec<IpAddr>>,
    /// Whether probes are answered (`true`), unanswered (`false`) or cannot be sent (`None`,
    /// the default: an error).
    pub probe_answer: Option<bool>,
}

/// The test's side of a [`RecordingHost`]: reads what was recorded and sets what is reported.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    recording: Arc<Mutex<Recording>>,
    deleted: Arc<Notify>,
}

impl Recorder {
    /// The recording, locked.
    pub fn lock(&self) -> MutexGuard<'_, Recording> {
        self.recording.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last plan applied.
    pub fn last_plan(&self) -> Option<Plan> {
        self.lock().plans.last().cloned()
    }

    /// Tells the driver that the WireGuard interface was deleted.
    pub fn delete_interface(&self) {
        self.deleted.notify_one();
    }
}

/// A host that records in memory (see [`Recorder`]).
#[derive(Debug, Default)]
pub struct RecordingHost {
    recorder: Recorder,
}

impl RecordingHost {
    /// A new host reporting `facts` when asked to detect, and its recorder.
    pub fn new(facts: Option<HostFacts>) -> (RecordingHost, Recorder) {
        let recorder = Recorder::default();
        recorder.lock().facts = facts;
        (RecordingHost { recorder: recorder.clone() }, recorder)
    }
}

impl Host for RecordingHost {
    type Error = RecordedError;

    async fn apply(&mut self, plan: &Plan) -> Result<ApplyReport, RecordedError> {
        let mut r = self.recorder.lock();
        if let Some(message) = r.fail_next_apply.take() {
            return Err(RecordedError(message));
        }
        let changed = r.plans.last() != Some(plan);
        r.plans.push(plan.clone());
        Ok(ApplyReport { wireguard: usize::from(changed), ..ApplyReport::default() })
    }

    async fn observe(&mut self) -> Result<DeviceState, RecordedError> {
        let mut r = self.recorder.lock();
        r.observes += 1;
        Ok(r.device.clone())
    }

    async fn detect(&mut self) -> Option<HostFacts> {
        let mut r = self.recorder.lock();
        r.detections += 1;
        r.facts.clone()
    }

    fn update_cni(&mut self, subnets: &[Cidr]) -> Result<bool, RecordedError> {
        let mut r = self.recorder.lock();
        let changed = r.cni.last().map(Vec::as_slice) != Some(subnets);
        r.cni.push(subnets.to_vec());
        Ok(changed)
    }

    fn reconcile_firewall(&mut self) -> Result<(), RecordedError> {
        self.recorder.lock().firewall_reconciles += 1;
        Ok(())
    }

    async fn interface_deleted(&mut self) {
        self.recorder.deleted.notified().await;
    }

    fn probe(
        &self,
        targets: Vec<IpAddr>,
        _timeout: Duration,
    ) -> impl std::future::Future<Output = std::io::Result<bool>> + Send + 'static {
        let answer = {
            let mut r = self.recorder.lock();
            r.probes.push(targets);
            r.probe_answer
        };
        async move { answer.ok_or_else(|| std::io::Error::other("the recording host does not probe")) }
    }

    fn counters(&self) -> HostCounters {
        HostCounters::default()
    }

    async fn clean_up(self, interface: bool) -> Result<(), RecordedError> {
        self.recorder.lock().cleaned_up = Some(interface);
        Ok(())
    }
}
