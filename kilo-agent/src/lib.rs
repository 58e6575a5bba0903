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
//! - [`chain`]: error messages with their causes.

pub mod chain;
pub mod driver;
pub mod metrics;

pub use chain::chain;
pub use driver::{Detect, RunOptions, run};
pub use metrics::{Metrics, Shared};
