//! The simulation example (`examples/simulate.rs`) runs one agent per node of a mesh file on the
//! real driver with recording hosts; each plan it prints must be exactly what `kgctl plan` prints
//! for that node.

use std::path::PathBuf;
use std::process::Command;

/// `target/<profile>/[dir/]<name>`, built with `cargo build ARGS` (always: never stale).
fn built(dir: Option<&str>, name: &str, build: &[&str]) -> PathBuf {
    let mut path = std::env::current_exe().unwrap();
    path.pop();
    path.pop();
    if let Some(dir) = dir {
        path.push(dir);
    }
    path.push(name);
    let status = Command::new(env!("CARGO")).arg("build").arg("-q").args(build).status().unwrap();
    assert!(status.success());
    path
}

fn stdout(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(out.status.success(), "{command:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_simulated_agent_applies_the_plan_kgctl_shows_for_its_node() {
    let simulate =
        built(Some("examples"), "simulate", &["-p", "kilo-agent", "--example", "simulate"]);
    let kgctl = built(None, "kgctl", &["-p", "kgctl", "--bin", "kgctl"]);
    for file in ["three-locations.toml", "nat.toml"] {
        let path = format!("{}/../examples/{file}", env!("CARGO_MANIFEST_DIR"));
        let simulated = stdout(Command::new(&simulate).arg(&path));
        let snapshot =
            kilo_backend_file::load(path.as_ref(), &kilo_backend_file::Options::default()).unwrap();
        assert!(snapshot.nodes.len() >= 2, "{file}");
        let mut expected = String::new();
        for node in &snapshot.nodes {
            expected.push_str(&stdout(Command::new(&kgctl).args([
                "--backend",
                "file",
                "--file",
                &path,
                "plan",
                "node",
                &node.name,
                "-o",
                "json",
            ])));
        }
        assert_eq!(simulated, expected, "{file}");
    }
}
