//! A parser for wg(8)'s configuration file format, as `wg showconf`, `kgctl showconf` and
//! wg-quick files contain it.

use std::net::IpAddr;

use super::{Config, InterfaceConfig, PeerConfig};
use crate::{Cidr, Endpoint, Key, PresharedKey, PrivateKey};

/// Why a text is not a WireGuard configuration. Every variant carries the 1-based line number.
///
/// Messages never contain the value of `PrivateKey` or `PresharedKey`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IniError {
    /// A `[Section]` header other than `[Interface]` or `[Peer]`.
    #[error("line {line}: unknown section [{section}] (want [Interface] or [Peer])")]
    UnknownSection {
        /// The 1-based line number.
        line: usize,
        /// The section name as written.
        section: String,
    },
    /// A key before the first section header.
    #[error("line {line}: key {key:?} is outside a section (start with [Interface] or [Peer])")]
    OutsideSection {
        /// The 1-based line number.
        line: usize,
        /// The key as written.
        key: String,
    },
    /// A line that is neither a section header, a comment, nor `Key = value`.
    #[error("line {line}: missing '=' in {text:?} (want Key = value)")]
    MissingEquals {
        /// The 1-based line number.
        line: usize,
        /// The line's text, comment removed and trimmed.
        text: String,
    },
    /// A key that the section does not have.
    #[error("line {line}: unknown key {key:?} in [{section}]")]
    UnknownKey {
        /// The 1-based line number.
        line: usize,
        /// `Interface` or `Peer`.
        section: &'static str,
        /// The key as written.
        key: String,
    },
    /// A known key with a value that does not parse.
    #[error("line {line}: invalid {key}: {reason}")]
    InvalidValue {
        /// The 1-based line number.
        line: usize,
        /// The key, in its canonical spelling (`AllowedIPs`).
        key: &'static str,
        /// What is wrong, quoting the value unless it is a secret.
        reason: String,
    },
    /// A `[Peer]` section without `PublicKey`.
    #[error("line {line}: [Peer] section has no PublicKey")]
    MissingPublicKey {
        /// The line of the section's `[Peer]` header.
        line: usize,
    },
}

impl IniError {
    /// The 1-based line number the error is about.
    pub fn line(&self) -> usize {
        match self {
            IniError::UnknownSection { line, .. }
            | IniError::OutsideSection { line, .. }
            | IniError::MissingEquals { line, .. }
            | IniError::UnknownKey { line, .. }
            | IniError::InvalidValue { line, .. }
            | IniError::MissingPublicKey { line } => *line,
        }
    }
}

/// Keys that wg-quick(8) reads from `[Interface]` and wg(8) ignores or that have no place in
/// [`InterfaceConfig`]: accepted and ignored.
pub const IGNORED_INTERFACE_KEYS: [&str; 10] = [
    "Address",
    "DNS",
    "MTU",
    "Table",
    "PreUp",
    "PostUp",
    "PreDown",
    "PostDown",
    "SaveConfig",
    "FwMark",
];

enum Section {
    None,
    Interface,
    /// A peer, with the line of its header and whether it has a public key yet.
    Peer {
        line: usize,
        has_key: bool,
    },
}

impl Config {
    /// Parses wg(8)'s configuration format (the output of [`Config::to_ini`], `wg showconf`,
    /// `kgctl showconf`, or a wg-quick file).
    ///
    /// Accepted: a leading byte-order mark; `\n` or `\r\n` line ends; section names and keys
    /// in any case; `#` comments, whole-line or trailing; blank lines and whitespace around
    /// keys, values and list items; `AllowedIPs` repeated (the lists append) and written with
    /// or without spaces after the commas, an address without a prefix meaning `/32` or
    /// `/128`, host bits kept as written; `Endpoint` as `ipv4:port`, `[ipv6]:port` or
    /// `dns-name:port` (see [`Endpoint`]'s parser; a DNS name with upper-case letters is
    /// stored in lower case); `PersistentKeepalive = off`; `ListenPort = 0` … `65535`.
    /// Several `[Interface]` sections merge into one. A repeated scalar key overwrites the
    /// earlier value, as in wg(8).
    ///
    /// Ignored: the wg-quick keys listed in [`IGNORED_INTERFACE_KEYS`], in `[Interface]` only.
    ///
    /// Rejected with an [`IniError`] naming the line: any other key, a line without `=`, a key
    /// before the first section, an unknown section, a value that does not parse, a `[Peer]`
    /// without `PublicKey`.
    pub fn from_ini(text: &str) -> Result<Config, IniError> {
        let mut config = Config::default();
        let mut section = Section::None;
        // A byte-order mark, as some editors write, is not part of the first line.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.split_once('#').map_or(raw, |(before, _)| before).trim();
            if content.is_empty() {
                continue;
            }
            if let Some(name) = content.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                finish(&section)?;
                section = start_section(&mut config, name.trim(), line)?;
                continue;
            }
            let Some((key, value)) = content.split_once('=') else {
                return Err(IniError::MissingEquals { line, text: redact(content) });
            };
            let (key, value) = (key.trim(), value.trim());
            match &mut section {
                Section::None => {
                    return Err(IniError::OutsideSection { line, key: key.to_string() });
                }
                Section::Interface => {
                    let interface = config.interface.get_or_insert_with(Default::default);
                    interface_key(interface, key, value, line)?;
                }
                Section::Peer { has_key, .. } => {
                    // `start_section` pushed the peer this section fills.
                    if let Some(peer) = config.peers.last_mut() {
                        *has_key |= peer_key(peer, key, value, line)?;
                    }
                }
            }
        }
        finish(&section)?;
        Ok(config)
    }
}

/// A line for an error message, without what follows a secret key's name.
fn redact(content: &str) -> String {
    let lower = content.to_ascii_lowercase();
    match ["privatekey", "presharedkey"].iter().find(|k| lower.starts_with(*k)) {
        Some(k) if content.len() > k.len() => format!("{} <redacted>", &content[..k.len()]),
        _ => content.to_string(),
    }
}

fn start_section(config: &mut Config, name: &str, line: usize) -> Result<Section, IniError> {
    if name.eq_ignore_ascii_case("interface") {
        config.interface.get_or_insert_with(Default::default);
        Ok(Section::Interface)
    } else if name.eq_ignore_ascii_case("peer") {
        config.peers.push(PeerConfig::default());
        Ok(Section::Peer { line, has_key: false })
    } else {
        Err(IniError::UnknownSection { line, section: name.to_string() })
    }
}

fn finish(section: &Section) -> Result<(), IniError> {
    match section {
        Section::Peer { line, has_key: false } => Err(IniError::MissingPublicKey { line: *line }),
        _ => Ok(()),
    }
}

fn invalid(line: usize, key: &'static str, reason: impl Into<String>) -> IniError {
    IniError::InvalidValue { line, key, reason: reason.into() }
}

fn interface_key(
    interface: &mut InterfaceConfig,
    key: &str,
    value: &str,
    line: usize,
) -> Result<(), IniError> {
    if key.eq_ignore_ascii_case("PrivateKey") {
        let parsed =
            value.parse::<PrivateKey>().map_err(|e| invalid(line, "PrivateKey", e.to_string()))?;
        // An all-zero key is none, as `to_ini` and the normal form have it.
        interface.private_key = Some(parsed).filter(|k| !k.is_zero());
    } else if key.eq_ignore_ascii_case("ListenPort") {
        interface.listen_port = Some(parse_u16(value).ok_or_else(|| {
            invalid(line, "ListenPort", format!("{value:?} is not a port between 0 and 65535"))
        })?);
    } else if !IGNORED_INTERFACE_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key)) {
        return Err(IniError::UnknownKey { line, section: "Interface", key: key.to_string() });
    }
    Ok(())
}

fn parse_u16(value: &str) -> Option<u16> {
    if value.is_empty() || value.len() > 5 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Applies one `Key = value` line to a peer; returns whether it was the public key.
fn peer_key(peer: &mut PeerConfig, key: &str, value: &str, line: usize) -> Result<bool, IniError> {
    if key.eq_ignore_ascii_case("PublicKey") {
        peer.public_key = value
            .parse::<Key>()
            .map_err(|e| invalid(line, "PublicKey", format!("{value:?}: {e}")))?;
        if peer.public_key.is_zero() {
            // No device accepts it, and `to_ini` leaves it out: refuse it here.
            return Err(invalid(line, "PublicKey", "the all-zero key is not a public key"));
        }
        return Ok(true);
    }
    if key.eq_ignore_ascii_case("PresharedKey") {
        let psk = value
            .parse::<PresharedKey>()
            .map_err(|e| invalid(line, "PresharedKey", e.to_string()))?;
        // An all-zero key is none, as in wg(8), `to_ini` and the normal form.
        peer.preshared_key = Some(psk).filter(|k| !k.is_zero());
    } else if key.eq_ignore_ascii_case("AllowedIPs") {
        if !value.is_empty() {
            for item in value.split(',') {
                peer.allowed_ips.push(parse_allowed_ip(item.trim(), line)?);
            }
        }
    } else if key.eq_ignore_ascii_case("Endpoint") {
        // DNS names are case-insensitive; upstream's endpoint parser takes lower case only.
        let endpoint = value
            .parse::<Endpoint>()
            .or_else(|e| value.to_ascii_lowercase().parse::<Endpoint>().map_err(|_| e))
            .map_err(|e| invalid(line, "Endpoint", e.to_string()))?;
        peer.endpoint = Some(endpoint);
    } else if key.eq_ignore_ascii_case("PersistentKeepalive") {
        peer.persistent_keepalive = if value.eq_ignore_ascii_case("off") {
            0
        } else {
            parse_u16(value).ok_or_else(|| {
                invalid(
                    line,
                    "PersistentKeepalive",
                    format!("{value:?} is not \"off\" or a number of seconds between 0 and 65535"),
                )
            })?
        };
    } else {
        return Err(IniError::UnknownKey { line, section: "Peer", key: key.to_string() });
    }
    Ok(false)
}

fn parse_allowed_ip(item: &str, line: usize) -> Result<Cidr, IniError> {
    if item.contains('/') {
        return item.parse::<Cidr>().map_err(|e| invalid(line, "AllowedIPs", e.to_string()));
    }
    item.parse::<IpAddr>().map(Cidr::host).map_err(|_| {
        invalid(
            line,
            "AllowedIPs",
            format!("{item:?} is not an address or a CIDR such as 10.4.0.0/16"),
        )
    })
}
