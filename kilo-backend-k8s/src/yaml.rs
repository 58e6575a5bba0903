//! Kubernetes objects as YAML, in the style kubectl and `serde_yaml` (which wrote this output
//! before) print: block collections, list items at their key's indentation, strings plain where
//! YAML 1.2 reads them back as strings, single-quoted where they cannot be plain, and text of
//! several lines as a `|` block. `kg crds` (`manifests/crds.yaml`) and
//! `kgctl showconf --as-peer -o yaml` print through [`to_yaml`].

use serde::{Serialize, Serializer};
use serde_json::Value;

/// Why a value could not be written as YAML.
pub type YamlError = serde_saphyr::SerializeError;

/// `value` as a YAML document (no `---`), ending with a newline.
pub fn to_yaml<T: Serialize + ?Sized>(value: &T) -> Result<String, YamlError> {
    let value = serde_json::to_value(value).map_err(<YamlError as serde::ser::Error>::custom)?;
    serde_saphyr::to_string_with_options(&Styled(&value), options())
}

/// YAML 1.2 quoting (an IP address such as `198.51.100.1` stays plain), no `%YAML` directive,
/// long strings on one line.
fn options() -> serde_saphyr::SerializerOptions {
    serde_saphyr::ser_options! {
        yaml_12: true,
        no_lang_directive: true,
        prefer_block_scalars: false,
    }
}

/// A value whose strings are written in `serde_yaml`'s styles: the serializer double-quotes every
/// string it cannot write plain; single quotes are preferred wherever they can say the same.
struct Styled<'a>(&'a Value);

impl Serialize for Styled<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::String(text) if text.contains('\n') => serde_saphyr::LitStr(text).serialize(s),
            Value::String(text) if needs_quotes(text) && single_quotable(text) => {
                serde_saphyr::SingleQuoted(text.as_str()).serialize(s)
            }
            Value::Array(items) => s.collect_seq(items.iter().map(Styled)),
            Value::Object(map) => s.collect_map(map.iter().map(|(k, v)| (k, Styled(v)))),
            other => other.serialize(s),
        }
    }
}

/// Whether the serializer would quote `text` (as a value).
fn needs_quotes(text: &str) -> bool {
    serde_saphyr::to_string_with_options(&text, options()).map_or(true, |y| y.starts_with('"'))
}

/// Whether single quotes say what `text` says (they have no escapes).
fn single_quotable(text: &str) -> bool {
    !text.chars().any(|c| c.is_control() || c == '\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each string as a list item, as `serde_yaml` 0.9 wrote it.
    #[test]
    fn strings_are_written_as_serde_yaml_wrote_them() {
        let cases = [
            ("198.51.100.1", "198.51.100.1"),
            ("10.2.1.0/24", "10.2.1.0/24"),
            ("fc00::1/128", "fc00::1/128"),
            ("fe80::1%eth0", "fe80::1%eth0"),
            ("example.com", "example.com"),
            ("dc-1", "dc-1"),
            (
                "EByqJQCvuBx7I590eXNwqiwWHGznjrfOFtO518/0jzI=",
                "EByqJQCvuBx7I590eXNwqiwWHGznjrfOFtO518/0jzI=",
            ),
            ("^$|^[A-Za-z0-9+/]{43}=$", "^$|^[A-Za-z0-9+/]{43}=$"),
            ("self == '' || isIP(self)", "self == '' || isIP(self)"),
            ("yes", "yes"),
            ("12:30", "12:30"),
            ("2001-12-14", "2001-12-14"),
            ("é", "é"),
            ("a: b", "'a: b'"),
            ("it's: x", "'it''s: x'"),
            ("\"d\"", "'\"d\"'"),
            ("true", "'true'"),
            ("null", "'null'"),
            ("~", "'~'"),
            ("", "''"),
            ("1.2", "'1.2'"),
            ("010", "'010'"),
            ("0x1f", "'0x1f'"),
            ("-1", "'-1'"),
            ("-", "'-'"),
            (" x", "' x'"),
            ("#x", "'#x'"),
            ("[x]", "'[x]'"),
            ("*a", "'*a'"),
            ("a\nb", "|-\n  a\n  b"),
            ("a\nb\n", "|\n  a\n  b"),
            ("tab\tx", "\"tab\\tx\""),
        ];
        for (text, want) in cases {
            assert_eq!(to_yaml(&[text]).unwrap(), format!("- {want}\n"), "{text:?}");
        }
    }

    #[test]
    fn objects_keep_their_field_order_numbers_and_empty_collections() {
        let value = serde_json::json!({
            "kind": "Peer",
            "spec": {"allowedIPs": ["10.5.0.1/32"], "port": 51820, "max": 65535.0,
                     "on": true, "none": null, "list": [], "map": {}},
        });
        assert_eq!(
            to_yaml(&value).unwrap(),
            "kind: Peer\nspec:\n  allowedIPs:\n  - 10.5.0.1/32\n  port: 51820\n  max: 65535.0\n  \
             on: true\n  none: null\n  list: []\n  map: {}\n"
        );
    }
}
