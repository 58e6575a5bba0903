//! Upstream Kilo's WireGuard INI text (`Conf.Bytes()`), byte for byte.

use std::fmt::{self, Write as _};

use super::{Config, InterfaceConfig, PeerConfig};

impl Config {
    /// The configuration as upstream Kilo prints it (`kgctl showconf`).
    ///
    /// `[Interface]` is written only when [`Config::interface`] is set: `PrivateKey` (omitted
    /// when absent or all-zero), then `ListenPort` (omitted when absent). A blank line precedes
    /// the first `[Peer]` only when `[Interface]` was written, and separates peers. Each peer has
    /// exactly these keys in this order: `AllowedIPs` (omitted when empty, joined by `", "`, host
    /// bits as stored), `Endpoint` (DNS first; omitted when absent), `PersistentKeepalive`
    /// (always, `0` when off), `PresharedKey` (omitted when absent or all-zero), `PublicKey`
    /// (omitted when all-zero). Every line ends in `\n` and there is no trailing blank line, so
    /// an interface without peers ends right after its last key, and a configuration with
    /// neither interface nor peers is the empty string.
    pub fn to_ini(&self) -> String {
        // About 150 bytes per peer: one allocation instead of a dozen regrowths.
        let mut out = String::with_capacity(64 + 160 * self.peers.len());
        if let Some(interface) = &self.interface {
            write_interface(&mut out, interface);
        }
        for (i, peer) in self.peers.iter().enumerate() {
            if i > 0 || self.interface.is_some() {
                out.push('\n');
            }
            write_peer(&mut out, peer);
        }
        out
    }
}

fn write_interface(out: &mut String, interface: &InterfaceConfig) {
    out.push_str("[Interface]\n");
    if let Some(key) = interface.private_key.as_ref().filter(|k| !k.is_zero()) {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "PrivateKey = {}", key.expose_base64());
    }
    if let Some(port) = interface.listen_port {
        let _ = writeln!(out, "ListenPort = {port}");
    }
}

fn write_peer(out: &mut String, peer: &PeerConfig) {
    out.push_str("[Peer]\n");
    if !peer.allowed_ips.is_empty() {
        out.push_str("AllowedIPs = ");
        for (i, cidr) in peer.allowed_ips.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            cidr.push_text(out);
        }
        out.push('\n');
    }
    if let Some(endpoint) = &peer.endpoint {
        // Written in place; the line is taken back out when the endpoint's text is empty.
        let line = out.len();
        out.push_str("Endpoint = ");
        let text = out.len();
        let _ = write!(out, "{endpoint}");
        if out.len() == text {
            out.truncate(line);
        } else {
            out.push('\n');
        }
    }
    let _ = writeln!(out, "PersistentKeepalive = {}", peer.persistent_keepalive);
    if let Some(psk) = peer.preshared_key.filter(|k| !k.is_zero()) {
        let _ = writeln!(out, "PresharedKey = {}", psk.expose_base64());
    }
    if !peer.public_key.is_zero() {
        let _ = writeln!(out, "PublicKey = {}", peer.public_key);
    }
}

impl fmt::Display for Config {
    /// The same text as [`Config::to_ini`] (it contains the private key).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_ini())
    }
}
