//! Upstream's userspace manifests run a WireGuard sidecar (boringtun, wireguard-go) that creates the
//! interface and serves its UAPI socket, and pass kg `--create-interface=false`. Upstream's kg
//! talks to whichever implementation has the interface; kg's `--wireguard=auto` would pick the
//! kernel module wherever it exists and then refuse the sidecar's TUN device. So with
//! `--create-interface=false`, a UAPI socket for the interface means userspace.

use std::path::Path;

use kilo_net_linux::wireguard::uapi::socket_path;

/// Whether `--wireguard=auto` should attach to a userspace implementation that already serves
/// `interface`: the interface is not ours to create and its UAPI socket exists in `socket_dir`.
pub fn serves_interface(create_interface: bool, socket_dir: &Path, interface: &str) -> bool {
    !create_interface && socket_path(socket_dir, interface).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sidecar_socket_for_an_interface_kg_does_not_create_means_userspace() {
        let dir = std::env::temp_dir().join(format!("kg-sidecar-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(!serves_interface(false, &dir, "kilo0"), "no socket yet");
        std::fs::write(dir.join("kilo0.sock"), b"").unwrap();
        let found = serves_interface(false, &dir, "kilo0");
        let when_creating = serves_interface(true, &dir, "kilo0");
        let other_interface = serves_interface(false, &dir, "kilo1");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!((found, when_creating, other_interface), (true, false, false));
    }
}
