//! Cluster state from files: the static mesh TOML (contract 3) and Kubernetes YAML snapshots
//! (contract 4), as a [`kilo_core::Snapshot`] or as a watching [`FileBackend`].
//!
//! The format is chosen by content, not by file name ([`detect_format`]); `-` reads standard
//! input. Inputs over [`MAX_FILE_SIZE`] or not UTF-8 are refused with a clear error.
//!
//! Readiness: a file is a snapshot, so nodes read from it carry [`SNAPSHOT_LAST_SEEN`] as their
//! last check-in, which makes `Node::is_ready_at(now)` equal to
//! `Node::is_ready_ignoring_last_seen()` for every `now`; callers should use the latter.
//!
//! # The static mesh file ([`parse_mesh_toml`])
//!
//! Every key is kebab-case; an unknown key, a value of the wrong type or one that does not parse
//! fails the whole file with `FILE:LINE: OBJECT: KEY: message`, for example
//! `mesh.toml:14: node "gcp-2": public-key: invalid base64`. A node needs only `name` and
//! `public-key`; every node of the file is kept, whatever upstream's readiness says (a node
//! without `endpoint` is dialed by no one, and the topology handles it). Node names are unique
//! among nodes, peer names among peers, and a public key (never the all-zero key) is used by one
//! node or peer only; a repeat is an error naming both lines. A node's `subnet` is masked to its
//! network like `spec.podCIDR`; `internal-ip`, `allowed-location-ips` and peers' `allowed-ips`
//! keep their host bits as upstream's annotations do. `[mesh] subnet` is masked too.
//!
//! # Kubernetes YAML ([`parse_kube_yaml`])
//!
//! Objects that do not translate are left out with an [`kilo_core::Invalid`] entry, never
//! failing the file: peers that fail upstream's `Validate()`, other kinds, repeated names. The
//! reader decides nothing else ([`read_kube_yaml`]): which nodes and peers are ready and which
//! settings the nodes imply is [`kilo_core::settings`]'s decision
//! ([`kilo_core::settings::KubernetesDump::settle`]), which [`parse_kube_yaml`], [`parse_str`],
//! [`load`] and [`FileBackend`] apply for their callers: nodes that are not ready (upstream's
//! rules minus last-seen) and peers that are not ready are left out there. Block-style YAML as
//! kubectl prints it is read by a fast reader that translates each object as it ends, keeping
//! only what Kilo reads and no tree of the file (10,000 nodes, 25 MB: `cargo run --release -p
//! kilo-backend-file --example bench_parse`); it does not check the fields it skips (`status`,
//! …). Other YAML,
//! and JSON, go through `serde-saphyr`, limited to 32 levels of nesting; flow collections
//! nested deeper than 1,000 levels are refused before it sees them.
//!
//! ```
//! let snapshot = kilo_backend_file::parse_str(
//!     "[[node]]\nname = \"a\"\npublic-key = \"a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n",
//!     "mesh.toml",
//!     &kilo_backend_file::Options::default(),
//! )?;
//! assert_eq!(snapshot.nodes[0].name, "a");
//! # Ok::<(), kilo_backend_file::FileError>(())
//! ```

mod error;
mod fast_yaml;
mod input;
mod kube_yaml;
mod mesh_toml;
mod watch;

use std::path::Path;

use kilo_core::{Node, Snapshot};

pub use error::{FileError, UniqueKey};
pub use input::{Format, MAX_FILE_SIZE, detect_format, display_name, read_reader, read_text};
pub use kube_yaml::{NodeIssue, parse_kube_yaml, parse_kube_yaml_with_issues, read_kube_yaml};
pub use mesh_toml::parse_mesh_toml;
pub use watch::{DEBOUNCE, FileBackend, SETTLE};

/// The `last_seen` of every node read from a file: far in the future, so that the last-seen
/// rule of readiness always holds (a file is a snapshot; contract 4).
pub const SNAPSHOT_LAST_SEEN: i64 = i64::MAX;

/// How Kubernetes YAML is translated: [`Options::default`], then fields set as needed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// The node label that gives a node's location when it has no `kilo.squat.ai/location`
    /// annotation (default `topology.kubernetes.io/region`).
    pub topology_label: String,
}

impl Default for Options {
    fn default() -> Self {
        Options { topology_label: kilo_core::annotations::DEFAULT_TOPOLOGY_LABEL.to_string() }
    }
}

/// Reads and parses `path` (`-`: standard input), choosing the format by content.
pub fn load(path: &Path, options: &Options) -> Result<Snapshot, FileError> {
    let text = read_text(path)?;
    parse_str(&text, &display_name(path), options)
}

/// Parses `text`, choosing the format by content; `file` names the input in errors. Kubernetes
/// YAML is settled as every command reads it ([`parse_kube_yaml`]).
pub fn parse_str(text: &str, file: &str, options: &Options) -> Result<Snapshot, FileError> {
    match detect_format(text, file)? {
        Format::MeshToml => parse_mesh_toml(text, file),
        Format::KubeYaml => parse_kube_yaml(text, file, options),
    }
}

/// The node named `name` (the agent's `--hostname`) in a snapshot.
pub fn local_node<'a>(snapshot: &'a Snapshot, name: &str) -> Option<&'a Node> {
    snapshot.nodes.iter().find(|n| n.name == name)
}
