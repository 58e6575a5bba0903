//! Running the built `kgctl` binary.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What one run of `kgctl` produced.
#[derive(Debug)]
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `kgctl args...` from the workspace root with `stdin` as standard input.
pub fn kgctl_with(args: &[&str], stdin: &str, envs: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kgctl"));
    command
        .args(args)
        .current_dir(root())
        .env("RUST_BACKTRACE", "1")
        .env_remove("KUBECONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("kgctl runs");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("stdin written");
    let output = child.wait_with_output().expect("kgctl ends");
    Run {
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
        code: output.status.code().expect("kgctl exits, not killed"),
    }
}

/// Runs `kgctl args...` with empty standard input.
pub fn kgctl(args: &[&str]) -> Run {
    kgctl_with(args, "", &[])
}

/// Runs `kgctl --backend file --file FILE args...`.
pub fn kgctl_file(file: &str, args: &[&str]) -> Run {
    let mut all = vec!["--backend", "file", "--file", file];
    all.extend_from_slice(args);
    kgctl(&all)
}
