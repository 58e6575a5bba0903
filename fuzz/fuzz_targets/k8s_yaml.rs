//! Any bytes → the file backend's Kubernetes YAML reader (with and without the annotation issues,
//! which must agree): never panics. An error is one line
//! that names the file; objects that do not translate are left out with an `Invalid` entry, and
//! what is kept answers `validate` and `graph` without a panic.
#![no_main]

use kilo_backend_file::{
    FileError, Options, parse_kube_yaml, parse_kube_yaml_with_issues, read_reader,
};
use libfuzzer_sys::fuzz_target;

#[path = "common/mesh.rs"]
mod mesh;

const FILE: &str = "nodes.yaml";

fn check_error(e: &FileError) {
    let message = e.to_string();
    assert!(message.starts_with(FILE), "{message:?} does not name the file");
}

fuzz_target!(|data: &[u8]| {
    let text = match read_reader(data, FILE) {
        Ok(text) => text,
        Err(e) => return check_error(&e),
    };
    let options = Options::default();
    let plain = parse_kube_yaml(&text, FILE, &options);
    match parse_kube_yaml_with_issues(&text, FILE, &options) {
        Ok((snapshot, issues)) => {
            assert_eq!(plain.as_ref(), Ok(&snapshot), "the two readers disagree");
            for invalid in &snapshot.invalid {
                let _ = invalid.to_string();
            }
            for issue in &issues {
                let _ = issue.to_string();
            }
            mesh::exercise(&snapshot);
        }
        Err(e) => {
            assert_eq!(plain.as_ref().err(), Some(&e), "the two readers disagree");
            check_error(&e);
        }
    }
});
