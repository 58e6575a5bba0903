//! Hostile input: whatever the bytes, parsing returns a snapshot or an error, never a panic.

use kilo_backend_file::{Options, parse_str};
use proptest::prelude::*;

/// Lines built from the pieces that matter to YAML and TOML parsers.
fn yamlish() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "- ",
        "-",
        ": ",
        ":",
        "  ",
        " ",
        "\n",
        "\n  ",
        "\n    ",
        "\n- ",
        "#",
        " #",
        "|",
        "|-",
        "|+",
        ">",
        "'",
        "''",
        "\"",
        "\\",
        "\\u00e9",
        "\\x",
        "[",
        "]",
        "{",
        "}",
        "[]",
        "{}",
        ",",
        "&a",
        "*a",
        "!",
        "?",
        "---",
        "...",
        "%",
        "\t",
        "=",
        "[[node]]",
        "[mesh]",
        "name",
        "kind",
        "List",
        "Node",
        "Peer",
        "apiVersion",
        "v1",
        "items",
        "metadata",
        "annotations",
        "labels",
        "spec",
        "kilo.squat.ai/key",
        "podCIDR",
        "10.0.0.1/24",
        "é",
        "\r\n",
        "~",
        "null",
        "25",
    ]);
    prop::collection::vec(piece, 0..60).prop_map(|pieces| pieces.concat())
}

proptest! {
    #[test]
    fn random_yaml_like_text_never_panics(text in yamlish()) {
        let _ = parse_str(&text, "f", &Options::default());
        let _ = parse_str(&format!("apiVersion: v1\nkind: List\nitems:\n{text}"), "f", &Options::default());
        let _ = parse_str(&format!("apiVersion: v1\nkind: Node\nmetadata:\n  {text}"), "f", &Options::default());
    }

    #[test]
    fn random_toml_like_text_never_panics(text in yamlish()) {
        let _ = parse_str(&format!("[[node]]\n{text}"), "f", &Options::default());
        let _ = parse_str(&format!("[mesh]\n{text}"), "f", &Options::default());
    }

    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        let _ = parse_str(&text, "f", &Options::default());
    }
}
