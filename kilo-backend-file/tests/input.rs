//! Reading input: limits, encodings, and telling the formats apart by content.

use std::io::Read;
use std::path::Path;

use kilo_backend_file::{
    FileError, Format, MAX_FILE_SIZE, Options, detect_format, display_name, load, read_reader,
};

#[test]
fn input_over_the_size_limit_is_refused() {
    let big = std::io::repeat(b'#').take(MAX_FILE_SIZE + 1);
    let err = read_reader(big, "<stdin>").unwrap_err();
    assert_eq!(err, FileError::TooLarge { file: "<stdin>".into(), limit: MAX_FILE_SIZE });
    assert_eq!(err.to_string(), "<stdin>: file is larger than the limit of 67108864 bytes");
}

#[test]
fn input_at_the_size_limit_is_read() {
    let text = read_reader(std::io::repeat(b'#').take(MAX_FILE_SIZE), "f").unwrap();
    assert_eq!(text.len() as u64, MAX_FILE_SIZE);
}

#[test]
fn standard_input_is_named_stdin_in_messages() {
    assert_eq!(display_name(Path::new("-")), "<stdin>");
    assert_eq!(display_name(Path::new("mesh.toml")), "mesh.toml");
}

#[test]
fn the_format_is_chosen_by_content_not_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("mesh.toml");
    std::fs::write(&yaml, "apiVersion: v1\nkind: List\nitems: []\n").unwrap();
    assert_eq!(load(&yaml, &Options::default()).unwrap(), Default::default());
    let toml = dir.path().join("cluster.yaml");
    std::fs::write(&toml, "[mesh]\nport = 51821\n").unwrap();
    assert_eq!(load(&toml, &Options::default()).unwrap().settings.port, Some(51821));
}

#[test]
fn formats_are_told_apart_by_the_first_significant_line() {
    let f = |t: &str| detect_format(t, "f");
    assert_eq!(f("# a comment\n\n[mesh]\n"), Ok(Format::MeshToml));
    assert_eq!(f("[[node]]\n"), Ok(Format::MeshToml));
    assert_eq!(f("\u{feff}granularity = \"full\"\n"), Ok(Format::MeshToml));
    assert_eq!(f("\"quoted-key\" = 1\n"), Ok(Format::MeshToml));
    assert_eq!(f("apiVersion: v1\n"), Ok(Format::KubeYaml));
    assert_eq!(f("---\nkind: Node\n"), Ok(Format::KubeYaml));
    assert_eq!(f("{\"kind\": \"List\"}"), Ok(Format::KubeYaml));
    assert_eq!(f("  \n# only comments\n"), Err(FileError::Empty { file: "f".into() }));
    assert_eq!(f("x\ny\n"), Err(FileError::UnknownFormat { file: "f".into(), line: 1 }));
}

#[test]
fn windows_line_endings_are_read() {
    let text = "[[node]]\r\nname = \"a\"\r\npublic-key = \"a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\r\n";
    let s = kilo_backend_file::parse_str(text, "f", &Options::default()).unwrap();
    assert_eq!(s.nodes[0].name, "a");
    let yaml = "apiVersion: v1\r\nkind: Node\r\nmetadata:\r\n  name: a\r\n";
    let s = kilo_backend_file::parse_str(yaml, "f", &Options::default()).unwrap();
    assert_eq!(s.invalid[0].name, "a");
}
