//! The embedding example is built by `cargo test`; this runs it and checks that it prints what
//! `kgctl showconf node` prints for the same mesh.

use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/<this test> → target/<profile>/examples/<name>
    let mut path = std::env::current_exe().unwrap();
    path.pop();
    path.pop();
    path.push("examples");
    path.push(name);
    if !path.exists() {
        // `cargo test` builds examples; `cargo test --test examples_run` alone does not.
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "kilo-backend-file", "--example", name])
            .status()
            .unwrap();
        assert!(status.success());
    }
    path
}

#[test]
fn the_embedding_example_prints_a_nodes_wireguard_configuration() {
    let mesh = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/three-locations.toml");
    let out = Command::new(example("embed")).args([mesh, "gcp-1"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("[Interface]\nListenPort = 51820\n\n[Peer]\n"), "{text}");
    let bad = Command::new(example("embed")).output().unwrap();
    assert!(!bad.status.success());
}
