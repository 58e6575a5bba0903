//! The embedding example is built by `cargo test`; this runs it and checks that it prints exactly
//! what the real `kgctl showconf node` prints for the same mesh file and node.

use std::path::PathBuf;
use std::process::{Command, Output};

/// `target/<profile>/<dir>/<name>`, built with `cargo build ARGS` when missing or `always`.
fn built(dir: Option<&str>, name: &str, build: &[&str], always: bool) -> PathBuf {
    // target/<profile>/deps/<this test> → target/<profile>/[dir/]<name>
    let mut path = std::env::current_exe().unwrap();
    path.pop();
    path.pop();
    if let Some(dir) = dir {
        path.push(dir);
    }
    path.push(name);
    // `cargo test` builds examples, but not with `--test examples_run`, and never another
    // package's binary (kgctl is built every time, so that it is never stale).
    if always || !path.exists() {
        let status =
            Command::new(env!("CARGO")).arg("build").arg("-q").args(build).status().unwrap();
        assert!(status.success());
    }
    path
}

fn example(name: &str) -> PathBuf {
    built(Some("examples"), name, &["-p", "kilo-backend-file", "--example", name], false)
}

fn kgctl() -> PathBuf {
    built(None, "kgctl", &["-p", "kgctl", "--bin", "kgctl"], true)
}

fn mesh(file: &str) -> String {
    format!("{}/../examples/{file}", env!("CARGO_MANIFEST_DIR"))
}

/// Exit status, stdout and stderr, as text.
fn whole(out: Output) -> (Option<i32>, String, String) {
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn the_embedding_example_prints_exactly_what_kgctl_showconf_node_prints() {
    let cases = [
        // Leaders of each location, a node with keepalive, a follower (message on stderr).
        ("three-locations.toml", ["gcp-1", "aws-1", "home-gw", "gcp-2"].as_slice()),
        ("nat.toml", &[]),
        ("hijack.toml", &[]),
        ("upstream-fixture.yaml", &["a", "b", "c", "d"]),
    ];
    let mut compared = 0;
    for (file, nodes) in cases {
        let path = mesh(file);
        let names: Vec<String> = if nodes.is_empty() {
            let snapshot = kilo_backend_file::load(path.as_ref(), &Default::default()).unwrap();
            snapshot.nodes.iter().map(|n| n.name.clone()).collect()
        } else {
            nodes.iter().map(|n| n.to_string()).collect()
        };
        for node in &names {
            let embed = whole(Command::new(example("embed")).args([&path, node]).output().unwrap());
            let kgctl = whole(
                Command::new(kgctl())
                    .args(["--backend", "file", "--file", &path, "showconf", "node", node])
                    .output()
                    .unwrap(),
            );
            assert_eq!(embed, kgctl, "{file} {node}");
            assert_eq!(embed.0, Some(0), "{file} {node}: {}", embed.2);
            compared += 1;
        }
    }
    assert!(compared >= 8, "{compared}");
}

#[test]
fn the_embedding_example_shows_a_leaders_configuration_and_a_followers_message() {
    let path = mesh("three-locations.toml");
    let (_, leader, _) =
        whole(Command::new(example("embed")).args([&path, "gcp-1"]).output().unwrap());
    assert!(leader.starts_with("[Interface]\nListenPort = "), "{leader}");
    let (code, out, err) =
        whole(Command::new(example("embed")).args([&path, "gcp-2"]).output().unwrap());
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (Some(0), "", "Node \"gcp-2\" is not a leader node\n")
    );
}

#[test]
fn the_embedding_example_without_arguments_fails() {
    let bad = Command::new(example("embed")).output().unwrap();
    assert!(!bad.status.success());
}
