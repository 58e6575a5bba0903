//! Any bytes → the file backend's reader and static mesh TOML parser: never panics. An error is
//! one line that names the file; a mesh that parses has unique node and peer names and answers
//! `validate` and `graph` (the offline view `kgctl` uses) without a panic.
#![no_main]

use kilo_backend_file::{FileError, parse_mesh_toml, parse_str, read_reader};
use libfuzzer_sys::fuzz_target;

#[path = "common/mesh.rs"]
mod mesh;

const FILE: &str = "mesh.toml";

fn check_error(e: &FileError) {
    let message = e.to_string();
    assert!(message.starts_with(FILE), "{message:?} does not name the file");
}

fuzz_target!(|data: &[u8]| {
    let text = match read_reader(data, FILE) {
        Ok(text) => text,
        Err(e) => return check_error(&e),
    };
    let _ =
        parse_str(&text, FILE, &kilo_backend_file::Options::default()).map_err(|e| check_error(&e));
    match parse_mesh_toml(&text, FILE) {
        Ok(snapshot) => mesh::exercise(&snapshot),
        Err(e) => check_error(&e),
    }
});
