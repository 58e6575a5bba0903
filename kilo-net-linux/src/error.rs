//! Errors of the netlink operations.

use std::path::PathBuf;

/// Why a netlink operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetlinkError {
    /// The netlink socket could not be opened (or the namespace could not be entered).
    #[error("cannot open a netlink connection{}: {message}", namespace_suffix(.namespace))]
    Connect {
        /// The network namespace that was asked for, if any.
        namespace: Option<PathBuf>,
        /// What went wrong.
        message: String,
    },
    /// No link has this name.
    #[error("no network link named {name:?}")]
    LinkNotFound {
        /// The link name.
        name: String,
    },
    /// A route or rule names a device that does not exist.
    #[error("{what} names device {dev:?}, which does not exist")]
    UnknownDevice {
        /// The route or rule, in `ip` syntax.
        what: String,
        /// The missing device.
        dev: String,
    },
    /// The kernel refused a request.
    #[error("`{operation}` failed: {message}{}", errno_advice(*.errno))]
    Request {
        /// The request in `ip` syntax (`ip route replace 10.2.0.0/24 dev kilo0`).
        operation: String,
        /// The kernel's errno (positive), when it gave one.
        errno: Option<i32>,
        /// The kernel's (or the library's) message.
        message: String,
    },
    /// The kernel cannot create IPIP tunnels (no `ipip` module).
    #[error(
        "cannot create IPIP tunnel {name:?}: this kernel has no IPIP support ({message}); load the \
         `ipip` module (`modprobe ipip`) or run with --encapsulate=never"
    )]
    IpipUnsupported {
        /// The tunnel name.
        name: String,
        /// The kernel's message.
        message: String,
    },
    /// A route or rule cannot be expressed (mixed address families, a rule with no selector).
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// The route or rule, in `ip` syntax.
        what: String,
        /// Why it is invalid.
        reason: String,
    },
}

/// What to do about a kernel refusal, when the errno says: appended to the message.
fn errno_advice(errno: Option<i32>) -> &'static str {
    match errno {
        Some(1 | 13) => PERMISSION_ADVICE,
        _ => "",
    }
}

/// What a user without the privileges for netlink writes needs to hear.
pub(crate) const PERMISSION_ADVICE: &str = "; configuring the network needs root or the \
     CAP_NET_ADMIN capability: run as root (in a container: privileged, or with NET_ADMIN)";

fn namespace_suffix(ns: &Option<PathBuf>) -> String {
    ns.as_ref().map(|p| format!(" in namespace {}", p.display())).unwrap_or_default()
}

impl NetlinkError {
    /// The kernel errno, when the kernel refused a request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Request { errno, .. } => *errno,
            _ => None,
        }
    }

    /// The error of `operation` that the kernel refused with `errno` (positive) and `message`.
    pub fn refused(operation: impl Into<String>, errno: i32, message: impl Into<String>) -> Self {
        NetlinkError::Request {
            operation: operation.into(),
            errno: Some(errno),
            message: message.into(),
        }
    }

    pub(crate) fn request(operation: impl Into<String>, err: rtnetlink::Error) -> NetlinkError {
        let (errno, message) = match &err {
            rtnetlink::Error::NetlinkError(e) if e.raw_code() != 0 => {
                (Some(e.raw_code().abs()), e.to_io().to_string())
            }
            other => (None, other.to_string()),
        };
        NetlinkError::Request { operation: operation.into(), errno, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_refused_for_lack_of_privileges_says_what_to_do() {
        let e =
            NetlinkError::refused("ip link add kilo0", 1, "Operation not permitted (os error 1)");
        assert_eq!(
            e.to_string(),
            "`ip link add kilo0` failed: Operation not permitted (os error 1); configuring the \
             network needs root or the CAP_NET_ADMIN capability: run as root (in a container: \
             privileged, or with NET_ADMIN)"
        );
        let e = NetlinkError::refused("ip route add 10.2.0.0/24 dev kilo0", 17, "File exists");
        assert_eq!(e.to_string(), "`ip route add 10.2.0.0/24 dev kilo0` failed: File exists");
    }
}
