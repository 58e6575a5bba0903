//! The errors of WireGuard device operations.

use std::path::PathBuf;

use kilo_core::Key;

/// Why a WireGuard device operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// The WireGuard listen port is taken by another socket (the userspace implementations
    /// answer `errno=22` then; the kernel `EADDRINUSE`).
    #[error(
        "cannot listen on UDP port {port}: port {port} is in use by another program; stop it or \
         give WireGuard another port (--port, or the mesh file's [mesh] port)"
    )]
    PortInUse {
        /// The port.
        port: u16,
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
    #[error(
        "{operation} on WireGuard interface {name:?} failed: {message}{}",
        kernel_advice(operation, message)
    )]
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
    #[error("userspace WireGuard device {name:?}: {message}{}", userspace_advice(message))]
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

use crate::error::PERMISSION_ADVICE;

/// What to do about a kernel failure, from the kernel's message: appended to it.
fn kernel_advice(operation: &str, message: &str) -> &'static str {
    let errno = |n: i32| message.contains(&format!("(os error {n})"));
    if errno(1) || errno(13) {
        PERMISSION_ADVICE
    } else if (operation.contains("link add") && (errno(95) || errno(19) || errno(93)))
        || message.starts_with(super::genl::NO_FAMILY)
    {
        "; this kernel has no WireGuard module: load it (`modprobe wireguard`) or use the \
         built-in userspace implementation (--wireguard userspace)"
    } else if errno(98) {
        "; the WireGuard UDP listen port is in use by another program: stop it or give \
         WireGuard another port (--port, or the mesh file's [mesh] port)"
    } else {
        ""
    }
}

/// What to do about a failure of the userspace implementation, from its message.
fn userspace_advice(message: &str) -> &'static str {
    if message.contains("(os error 1)") || message.contains("(os error 13)") {
        PERMISSION_ADVICE
    } else if message.contains("(os error 2)") && message.contains("TUN") {
        "; the kernel offers no TUN device: load the `tun` module (`modprobe tun`) or create \
         /dev/net/tun"
    } else {
        ""
    }
}

/// The error of a UAPI `set` that the implementation refused with `errno`: when the request
/// sets a listen port that another socket holds now, [`WireGuardError::PortInUse`] (the
/// userspace implementations say only `errno=22` then).
pub(crate) fn uapi_set_error(path: &std::path::Path, request: &str, errno: i64) -> WireGuardError {
    let port = request
        .lines()
        .find_map(|l| l.strip_prefix("listen_port="))
        .and_then(|p| p.trim().parse::<u16>().ok())
        .filter(|p| *p != 0);
    match port {
        Some(port) if udp_port_in_use(port) => WireGuardError::PortInUse { port },
        _ => WireGuardError::UapiErrno { path: path.to_path_buf(), request: "set", errno },
    }
}

/// Whether another socket holds UDP `port` on every IPv4 or every IPv6 address.
pub(crate) fn udp_port_in_use(port: u16) -> bool {
    let taken = |r: std::io::Result<std::net::UdpSocket>| matches!(r, Err(e) if e.kind() == std::io::ErrorKind::AddrInUse);
    taken(std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, port)))
        || taken(std::net::UdpSocket::bind((std::net::Ipv6Addr::UNSPECIFIED, port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_kernel_operation_says_what_to_do() {
        let err = |operation, message: &str| {
            WireGuardError::Kernel { operation, name: "kilo0".into(), message: message.into() }
                .to_string()
        };
        assert_eq!(
            err("ip link add type wireguard", "Operation not supported (os error 95)"),
            "ip link add type wireguard on WireGuard interface \"kilo0\" failed: Operation not \
             supported (os error 95); this kernel has no WireGuard module: load it (`modprobe \
             wireguard`) or use the built-in userspace implementation (--wireguard userspace)"
        );
        assert_eq!(
            err("ip link add type wireguard", "Operation not permitted (os error 1)"),
            format!(
                "ip link add type wireguard on WireGuard interface \"kilo0\" failed: Operation \
                 not permitted (os error 1){PERMISSION_ADVICE}"
            )
        );
        assert_eq!(
            err(
                "wg show",
                "generic netlink family \"wireguard\" not found: No such file or directory (os error 2)"
            ),
            "wg show on WireGuard interface \"kilo0\" failed: generic netlink family \"wireguard\" \
             not found: No such file or directory (os error 2); this kernel has no WireGuard module: \
             load it (`modprobe wireguard`) or use the built-in userspace implementation \
             (--wireguard userspace)"
        );
        assert!(err("wg set", "Address in use (os error 98)").ends_with(
            "the WireGuard UDP listen port is in use by another program: stop it or give \
             WireGuard another port (--port, or the mesh file's [mesh] port)"
        ));
        assert_eq!(
            err("wg set", "No buffer space"),
            "wg set on WireGuard interface \"kilo0\" failed: No buffer space"
        );
    }

    #[test]
    fn a_userspace_device_without_privileges_says_what_to_do() {
        let e = WireGuardError::Userspace {
            name: "kilo0".into(),
            message: "cannot create TUN interface: Permission denied (os error 13)".into(),
        };
        assert_eq!(
            e.to_string(),
            format!(
                "userspace WireGuard device \"kilo0\": cannot create TUN interface: Permission \
                 denied (os error 13){PERMISSION_ADVICE}"
            )
        );
    }

    #[test]
    fn a_refused_set_of_a_taken_port_names_the_port() {
        let held = std::net::UdpSocket::bind("0.0.0.0:0").expect("a UDP port");
        let port = held.local_addr().expect("address").port();
        let path = std::path::Path::new("/run/wireguard/kilo0.sock");
        let e = uapi_set_error(path, &format!("set=1\nlisten_port={port}\n\n"), 22);
        assert_eq!(
            e.to_string(),
            format!(
                "cannot listen on UDP port {port}: port {port} is in use by another program; stop \
                 it or give WireGuard another port (--port, or the mesh file's [mesh] port)"
            )
        );
        drop(held);
        let e = uapi_set_error(path, &format!("set=1\nlisten_port={port}\n\n"), 22);
        assert_eq!(
            e.to_string(),
            "UAPI socket /run/wireguard/kilo0.sock: set failed with errno=22"
        );
    }
}
