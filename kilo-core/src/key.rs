//! WireGuard keys: public keys ([`Key`]), pre-shared keys ([`PresharedKey`]) and private keys
//! ([`PrivateKey`]).

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Why a string is not a WireGuard key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not standard base64.
    #[error("key is not base64 encoded")]
    NotBase64,
    /// The decoded bytes are not 32 long.
    #[error("key has invalid length {0} (want 32 bytes)")]
    InvalidLength(usize),
}

fn decode(s: &str) -> Result<[u8; 32], KeyError> {
    let bytes = STANDARD.decode(s).map_err(|_| KeyError::NotBase64)?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| KeyError::InvalidLength(bytes.len()))
}

/// A 32-byte WireGuard public key, printed as standard base64.
///
/// The all-zero key means "unset", as upstream Kilo treats it.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Key([u8; 32]);

impl Key {
    /// The all-zero key, which means "no key".
    pub const ZERO: Key = Key([0; 32]);

    /// A key from raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Key(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether this is the all-zero (unset) key.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 32]
    }

    /// The standard base64 text of the key.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
}

impl FromStr for Key {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        decode(s).map(Key)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Encoded on the stack: configurations print thousands of keys.
        let mut buf = [0u8; 44];
        let n = STANDARD.encode_slice(self.0, &mut buf).map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.to_base64())
    }
}

impl serde::Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A WireGuard private key. Its `Debug` output never shows the key, and it has no `Display`:
/// use [`PrivateKey::expose_base64`] where the secret must be written (a key file, a device).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey([u8; 32]);

impl PrivateKey {
    /// A private key from 32 random bytes (clamped as Curve25519 requires).
    pub fn from_random_bytes(mut bytes: [u8; 32]) -> Self {
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        PrivateKey(bytes)
    }

    /// A private key from its raw bytes, unchanged.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        PrivateKey(bytes)
    }

    /// The raw secret bytes.
    pub const fn expose_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The base64 text of the secret, for writing it to a key file or a device.
    pub fn expose_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Whether this is the all-zero key (upstream's "no key", used by `kgctl`).
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 32]
    }

    /// The public key of this private key (as `wg pubkey`).
    pub fn public_key(&self) -> Key {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        Key(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }
}

impl FromStr for PrivateKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        decode(s.trim_end_matches('\n')).map(PrivateKey)
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// A WireGuard pre-shared key (32 bytes). A secret like [`PrivateKey`]: its `Debug` output never
/// shows the key and it has no `Display`; use [`PresharedKey::expose_base64`] or
/// [`PresharedKey::expose_bytes`] where the format must carry it (a WireGuard configuration, the
/// UAPI, a Peer spec).
///
/// The all-zero key means "unset", as upstream Kilo treats it.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PresharedKey([u8; 32]);

impl PresharedKey {
    /// The all-zero key, which means "no pre-shared key".
    pub const ZERO: PresharedKey = PresharedKey([0; 32]);

    /// A pre-shared key from raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        PresharedKey(bytes)
    }

    /// The raw secret bytes.
    pub const fn expose_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The standard base64 text of the secret, for formats that must carry it.
    pub fn expose_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Whether this is the all-zero (unset) key.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 32]
    }
}

impl FromStr for PresharedKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        decode(s).map(PresharedKey)
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_test_keys_parse_and_print_identically() {
        let k: Key = "a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".parse().unwrap();
        assert_eq!(&k.as_bytes()[..4], b"key1");
        assert_eq!(k.to_string(), "a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    }

    #[test]
    fn bad_keys_are_errors_not_panics() {
        assert_eq!("foo!".parse::<Key>(), Err(KeyError::NotBase64));
        assert_eq!("Zm9v".parse::<Key>(), Err(KeyError::InvalidLength(3)));
    }

    #[test]
    fn public_key_matches_wg_pubkey() {
        // wg genkey / wg pubkey pair (RFC 7748 test vector, Alice).
        let private = PrivateKey::from_bytes([
            0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1, 0x72, 0x51, 0xb2,
            0x66, 0x45, 0xdf, 0x4c, 0x2f, 0x87, 0xeb, 0xc0, 0x99, 0x2a, 0xb1, 0x77, 0xfb, 0xa5,
            0x1d, 0xb9, 0x2c, 0x2a,
        ]);
        assert_eq!(private.public_key().as_bytes()[..4], [0x85, 0x20, 0xf0, 0x09]);
        assert!(!format!("{private:?}").contains(&private.expose_base64()));
    }

    #[test]
    fn preshared_keys_parse_round_trip_and_never_debug_print() {
        let text = "a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let psk: PresharedKey = text.parse().unwrap();
        assert_eq!(psk.expose_base64(), text);
        assert_eq!(&psk.expose_bytes()[..4], b"key1");
        assert_eq!(format!("{psk:?}"), "PresharedKey(<redacted>)");
        assert_eq!(format!("{:?}", Some(psk)), "Some(PresharedKey(<redacted>))");
        assert!(!psk.is_zero());
        assert!(PresharedKey::ZERO.is_zero());
        assert_eq!("Zm9v".parse::<PresharedKey>(), Err(KeyError::InvalidLength(3)));
        assert_eq!("foo!".parse::<PresharedKey>(), Err(KeyError::NotBase64));
    }

    #[test]
    fn debug_output_of_peers_and_peer_configs_and_specs_never_shows_the_preshared_key() {
        let text = "cHNrMQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let psk: PresharedKey = text.parse().unwrap();
        let hex: String = psk.expose_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let peer = crate::Peer {
            name: "p".into(),
            public_key: Key::from_bytes([1; 32]),
            preshared_key: Some(psk),
            ..crate::Peer::default()
        };
        let config = crate::wireguard::PeerConfig {
            public_key: peer.public_key,
            preshared_key: Some(psk),
            ..Default::default()
        };
        let spec = crate::peer_spec::spec_from_peer(&peer);
        assert_eq!(spec.preshared_key.as_deref(), Some(text), "the spec still carries it");
        for debug in [
            format!("{peer:?}"),
            format!("{peer:#?}"),
            format!("{config:?}"),
            format!("{spec:?}"),
            format!("{spec:#?}"),
        ] {
            assert!(debug.contains("redacted"), "{debug}");
            assert!(!debug.contains(text) && !debug.contains("cHNr"), "{debug}");
            assert!(!debug.contains(&hex[..16]), "{debug}");
            assert!(!debug.contains("[112, 115, 107"), "{debug}");
        }
    }
}
