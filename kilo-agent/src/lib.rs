//! The Kilo agent's runtime driver.
//!
//! `kilo-core`'s [`kilo_core::agent::Agent`] decides everything; this crate moves data: it feeds
//! the state machine with backend events, the timers it asks for and what it observes on the
//! host, and carries out the actions that come back on a [`Host`]: the Linux host
//! ([`LinuxHost`]) or an in-memory [`RecordingHost`] in tests and simulations. One loop
//! ([`run`]) runs the real agent, `kgctl connect` and the multi-node simulations.
//!
//! - [`driver`]: the loop and the clean-up on exit.
//! - [`metrics`]: the agent's Prometheus metrics, `/health` and `/graph` state.
//! - [`chain`](mod@chain): error messages with their causes.
//! - [`clock`]: the system's clock, or tokio's for simulations with a manual clock.
//! - [`host`]: what the driver needs from a host; [`linux`] and [`recording`] provide it.
//! - [`probe`]: an ICMP echo probe ("does any of these addresses answer?") of the data path.

pub mod chain;
pub mod clock;
pub mod connect;
pub mod driver;
pub mod graph;
pub mod host;
pub mod http;
pub mod keyfile;
pub mod kube;
pub mod linux;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod node;
pub mod probe;
pub mod recording;
pub mod sidecar;

pub use chain::chain;
pub use clock::{Clock, SystemClock, TokioClock};
pub use driver::{RunOptions, run};
pub use host::{Host, HostCounters};
pub use linux::{Detect, LinuxHost, LinuxHostError};
pub use metrics::{Metrics, Shared};
pub use node::{MeshSource, NodeOptions};
pub use recording::{Recorder, RecordingHost};
