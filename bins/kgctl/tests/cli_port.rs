//! The listen port comes from `--port`, else the mesh file's `[mesh] port`, else 51820: the same
//! rule as `kg`, so that `kgctl showconf` prints what the agent listens on.

use std::process::Command;

fn showconf(mesh: &std::path::Path, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kgctl"))
        .args(["--backend", "file", "--file", mesh.to_str().unwrap()])
        .args(extra)
        .args(["showconf", "node", "a"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_mesh_files_port_applies_unless_a_flag_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = dir.path().join("mesh.toml");
    std::fs::write(
        &mesh,
        "[mesh]\nport = 51821\n\n[[node]]\nname = \"a\"\n\
         public-key = \"a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n\
         endpoint = \"203.0.113.1:51821\"\nsubnet = \"10.2.1.0/24\"\n",
    )
    .unwrap();
    assert!(showconf(&mesh, &[]).contains("ListenPort = 51821\n"));
    assert!(showconf(&mesh, &["--port", "51900"]).contains("ListenPort = 51900\n"));
}
