//! The CNI conflist update, on temporary files.

use std::os::unix::fs::PermissionsExt;

use kilo_core::Cidr;
use kilo_net_linux::cni::{self, CniError};

const SHIPPED: &str = r#"{
  "cniVersion": "0.4.0",
  "name": "kilo",
  "plugins": [
    {
      "name": "kubernetes",
      "type": "bridge",
      "bridge": "kube-bridge",
      "isDefaultGateway": true,
      "forceAddress": true,
      "mtu": 1420,
      "ipam": { "type": "host-local" }
    },
    { "type": "portmap", "snat": true, "capabilities": { "portMappings": true } }
  ]
}"#;

fn c(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn write(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("10-kilo.conflist");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn the_shipped_conflist_gets_the_pod_cidr_compact_with_sorted_keys_and_mode_0644() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, SHIPPED);
    assert!(cni::update_cni_config(&path, &[c("10.2.1.0/24")]).unwrap());
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        r#"{"cniVersion":"0.4.0","name":"kilo","plugins":[{"bridge":"kube-bridge","forceAddress":true,"ipam":{"ranges":[[{"subnet":"10.2.1.0/24"}]],"type":"host-local"},"isDefaultGateway":true,"mtu":1420,"name":"kubernetes","type":"bridge"},{"capabilities":{"portMappings":true},"snat":true,"type":"portmap"}]}"#
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
}

#[test]
fn an_unchanged_pod_cidr_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, SHIPPED);
    assert!(cni::update_cni_config(&path, &[c("10.2.1.0/24")]).unwrap());
    let before = std::fs::metadata(&path).unwrap().modified().unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(!cni::update_cni_config(&path, &[c("10.2.1.0/24")]).unwrap());
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), before);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "untouched");
    // A different pod CIDR is rewritten.
    assert!(cni::update_cni_config(&path, &[c("10.2.7.0/24")]).unwrap());
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(cni::current_pod_cidr(&v), Some(c("10.2.7.0/24")));
}

#[test]
fn every_plugin_with_ipam_is_rewritten_and_only_typed_ipam_is_read() {
    let v: serde_json::Value = serde_json::from_str(
        r#"{"plugins":[{"ipam":{"ranges":[[{"subnet":"10.9.0.0/24"}]]}},
                       {"ipam":{"type":"host-local","ranges":[[],[{"gateway":"x","subnet":"10.2.0.1/24"}]]}},
                       {"type":"portmap"}]}"#,
    )
    .unwrap();
    // The first plugin has no ipam.type: not host-local, not read. Host bits are kept.
    assert_eq!(cni::current_pod_cidr(&v), Some(c("10.2.0.1/24")));
    let mut v = v;
    cni::set_pod_cidr(&mut v, c("10.2.0.0/24"), "x.conflist".as_ref()).unwrap();
    assert_eq!(
        cni::render(&v),
        r#"{"plugins":[{"ipam":{"ranges":[[{"subnet":"10.2.0.0/24"}]]}},{"ipam":{"ranges":[[{"subnet":"10.2.0.0/24"}]],"type":"host-local"}},{"type":"portmap"}]}"#
    );
}

type Expect = fn(&CniError) -> bool;

#[test]
fn bad_conflists_give_errors_that_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Expect); 3] = [
        ("{not json", |e| matches!(e, CniError::Parse { .. })),
        (r#"{"name":"kilo"}"#, |e| matches!(e, CniError::NoPlugins { .. })),
        (r#"{"plugins":[{"type":"portmap"}]}"#, |e| matches!(e, CniError::NoIpam { .. })),
    ];
    for (text, is_expected) in cases {
        let path = write(&dir, text);
        let err = cni::update_cni_config(&path, &[c("10.2.1.0/24")]).unwrap_err();
        assert!(is_expected(&err), "{text}: {err:?}");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            text,
            "a failed update leaves the file alone"
        );
    }
    let missing = dir.path().join("missing.conflist");
    let err = cni::update_cni_config(&missing, &[c("10.2.1.0/24")]).unwrap_err();
    assert!(
        matches!(err, CniError::Read { .. }) && err.to_string().contains("missing.conflist"),
        "{err}"
    );
}

#[test]
fn a_dual_stack_node_gets_one_host_local_range_set_per_pod_cidr_and_rewrites_only_on_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, SHIPPED);
    let both = [c("10.2.1.0/24"), c("fd02:1::/64")];
    assert!(cni::update_cni_config(&path, &both).unwrap());
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        v["plugins"][0]["ipam"],
        serde_json::json!({"type": "host-local", "ranges": [[{"subnet": "10.2.1.0/24"}], [{"subnet": "fd02:1::/64"}]]})
    );
    assert_eq!(cni::current_pod_cidrs(&v), both);
    assert!(!cni::update_cni_config(&path, &both).unwrap(), "unchanged: not rewritten");
    // Back to one family: the IPv6 range goes.
    assert!(cni::update_cni_config(&path, &both[..1]).unwrap());
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(v["plugins"][0]["ipam"]["ranges"], serde_json::json!([[{"subnet": "10.2.1.0/24"}]]));
}
