//! `kgctl connect` argument handling, without a cluster or network privileges: every failure
//! comes before any interface is created.

mod kgctl_run;

use kgctl_run::{Run, kgctl, kgctl_with};

fn assert_one_line_error(run: &Run, needle: &str) {
    assert_eq!(run.code, 1, "{:?}", run.stderr);
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr.lines().count(), 1, "{:?}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{:?}", run.stderr);
    assert!(run.stderr.contains(needle), "{needle:?} not in {:?}", run.stderr);
}

/// A usage error: clap's whole message (ending with its hint), exit code 2 as `kg`'s.
fn assert_usage_error(run: &Run, needle: &str) {
    assert_eq!(run.code, 2, "{:?}", run.stderr);
    assert_eq!(run.stdout, "");
    assert!(run.stderr.starts_with("error: "), "{:?}", run.stderr);
    assert!(run.stderr.ends_with("For more information, try '--help'.\n"), "{:?}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{:?}", run.stderr);
    assert!(run.stderr.contains(needle), "{needle:?} not in {:?}", run.stderr);
}

#[test]
fn connect_needs_the_kubernetes_backend() {
    let run = kgctl(&[
        "--backend",
        "file",
        "--file",
        "examples/upstream-fixture.yaml",
        "connect",
        "laptop",
    ]);
    assert_one_line_error(&run, "--backend kubernetes");
}

#[test]
fn connect_rejects_bad_flag_values() {
    assert_usage_error(&kgctl(&["connect", "x", "--resync-period", "soon"]), "soon");
    assert_usage_error(&kgctl(&["connect", "x", "--wireguard", "magic"]), "magic");
    assert_usage_error(&kgctl(&["connect", "x", "--allowed-ip", "10.10.10.10"]), "10.10.10.10");
    assert_usage_error(
        &kgctl(&["connect", "x", "--allowed-ips", "10.0.0.0/8,bad"]),
        "allowed-ips must contain only valid CIDRs; got \"bad\"",
    );
    assert_usage_error(&kgctl(&["connect", "x", "--clean-up=perhaps"]), "perhaps");
    assert_usage_error(&kgctl(&["connect", "x", "--mtu", "-1"]), "-1");
}

#[test]
fn connect_rejects_an_unusable_private_key_file() {
    assert_one_line_error(
        &kgctl(&["connect", "x", "--private-key", "/nonexistent/key"]),
        "/nonexistent/key",
    );
    let path = std::env::temp_dir().join(format!("kgctl-connect-key-{}", std::process::id()));
    std::fs::write(&path, "not a key\n").unwrap();
    let path = path.to_string_lossy().into_owned();
    assert_one_line_error(&kgctl(&["connect", "x", "--private-key", &path]), "not a private key");
}

#[test]
fn connect_rejects_a_bad_interface_name() {
    assert_one_line_error(
        &kgctl(&["connect", "x", "-i", "this-name-is-far-too-long"]),
        "this-name-is-far-too-long",
    );
}

#[test]
fn connect_to_an_unreachable_api_server_is_one_line() {
    let dir = std::env::temp_dir().join(format!("kgctl-connect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: f\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             contexts:\n- name: f\n  context:\n    cluster: f\n    user: f\ncurrent-context: f\n\
             users:\n- name: f\n  user: {{}}\n"
        ),
    )
    .unwrap();
    let run =
        kgctl_with(&["--kubeconfig", kubeconfig.to_str().unwrap(), "connect", "laptop"], "", &[]);
    assert_one_line_error(&run, "cannot read Peer \"laptop\"");
}
