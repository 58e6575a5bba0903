//! The errors of WireGuard device operations.

use std::path::PathBuf;

use kilo_core::Key;

/// Why a WireGuard device operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WireGuardError {
    /// The interface name is not a valid Linux interface name.
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The `--wireguard` value is not one of `auto`, `kernel`, `userspace`.
    #[error(
        "WireGuard implementation {input:?} unknown; possible values are: auto, kernel, userspace"
    )]
    UnknownKind {
        /// The text given.
        input: String,
    },
    /// Talking to a userspace implementation over its UAPI socket failed.
    #[error("UAPI socket {path}: {action}")]
    UapiIo {
        /// The socket path.
        path: PathBuf,
        /// What was being done (`connect`, `write`, `read`).
        action: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The userspace implementation answered a request with a non-zero `errno`.
    #[error("UAPI socket {path}: {request} failed with errno={errno}")]
    UapiErrno {
        /// The socket path.
        path: PathBuf,
        /// `get` or `set`.
        request: &'static str,
        /// The error number returned.
        errno: i64,
    },
    /// A UAPI response could not be understood.
    #[error("cannot parse UAPI line {line:?}: {reason}")]
    UapiParse {
        /// The offending line.
        line: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A kernel (netlink) WireGuard or link operation failed.
    #[error("{operation} on WireGuard interface {name:?} failed: {message}")]
    Kernel {
        /// The operation (its `ip` / `wg` equivalent).
        operation: &'static str,
        /// The interface name.
        name: String,
        /// The kernel's error text.
        message: String,
    },
    /// Entering a network namespace failed.
    #[error("cannot enter network namespace {path}: {message}")]
    Netns {
        /// The namespace file.
        path: PathBuf,
        /// The error text.
        message: String,
    },
    /// Creating or running the in-process userspace device failed.
    #[error("userspace WireGuard device {name:?}: {message}")]
    Userspace {
        /// The interface name.
        name: String,
        /// What failed.
        message: String,
    },
    /// A peer's endpoint is a DNS name that has not been resolved; devices take addresses only.
    #[error("peer {key}: endpoint {endpoint} is not resolved to an address")]
    UnresolvedEndpoint {
        /// The peer's public key.
        key: Key,
        /// The endpoint text.
        endpoint: String,
    },
    /// A peer cannot be added before the device has a private key.
    #[error("WireGuard interface {name:?} has no private key yet: set the interface before peers")]
    NoPrivateKey {
        /// The interface name.
        name: String,
    },
    /// Some operations of an [`apply`](super::Device::apply) failed; the others were applied.
    #[error("{failed} of {total} WireGuard changes on {name:?} failed; first: {first}")]
    Apply {
        /// The interface name.
        name: String,
        /// How many operations failed.
        failed: usize,
        /// How many operations were attempted.
        total: usize,
        /// The first failure.
        first: Box<WireGuardError>,
    },
}
