//! # kilo-core
//!
//! The pure model of a [Kilo](https://kilo.squat.ai) WireGuard mesh, and every decision Kilo
//! makes: segments and leaders, WireGuard addresses and configuration, routes, policy rules,
//! firewall rules, validation findings and the agent's reactions. No I/O, no async runtime, no
//! clock, no DNS: time, resolved addresses and device state come in as arguments, and effects go
//! out as data.
//!
//! Behaviour matches upstream Kilo (Go) so that both agents can run in one cluster; the upstream
//! quirks that are fixed are listed in the project's contract.

pub mod admission;
pub mod agent;
pub mod annotations;
#[cfg(feature = "arbitrary")]
mod arbitrary_impls;
pub mod backend;
pub mod cidr;
pub mod connect;
pub mod discovery;
pub mod dns;
pub mod duration;
pub mod endpoint;
pub mod firewall;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod graph;
pub mod health;
pub mod key;
pub mod mesh;
pub mod offline;
pub mod options;
pub mod peer_spec;
pub mod plan;
pub mod routes;
pub mod settings;
pub mod topology;
pub mod validate;
pub mod wireguard;

pub use backend::{Backend, Event, Invalid, MeshSettings, ObjectKind, Snapshot};
pub use cidr::Cidr;
pub use endpoint::Endpoint;
pub use key::{Key, PresharedKey, PrivateKey};
pub use mesh::{Node, Peer, Readiness};
pub use options::{Compatibility, Encapsulation, Granularity};
pub use topology::{Segment, Topology, TopologyInput};
