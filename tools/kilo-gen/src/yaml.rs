//! The `kubectl get nodes,peers -o yaml` writer: a `v1` `List` in kubectl's formatting (keys
//! sorted, two-space indentation, sequences flush with their key), with a realistic `status` so
//! that each node takes about 1.8 kB, as in the baseline.

use std::fmt::Write as _;

use crate::{GenNode, GenPeer, Mesh};

/// The mesh as one `kubectl get nodes,peers -o yaml` document.
pub fn to_yaml(mesh: &Mesh) -> String {
    let mut out = String::with_capacity(1900 * mesh.nodes.len() + 600 * mesh.peers.len() + 64);
    out.push_str("apiVersion: v1\nitems:\n");
    for (i, n) in mesh.nodes.iter().enumerate() {
        node(&mut out, i, n);
    }
    for (i, p) in mesh.peers.iter().enumerate() {
        peer(&mut out, i, p);
    }
    out.push_str("kind: List\nmetadata:\n  resourceVersion: \"\"\n");
    out
}

/// A scalar as kubectl prints it: plain when YAML reads it back as the same string, else
/// double-quoted.
fn scalar(s: &str) -> String {
    let plain = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "._/:+=-".contains(c))
        && s.parse::<f64>().is_err()
        && !s.chars().all(|c| c.is_ascii_digit() || c == '.' || c == ':')
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n"
        );
    if plain {
        s.to_string()
    } else {
        let escaped = s.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{escaped}\"")
    }
}

fn node(out: &mut String, i: usize, n: &GenNode) {
    let created = format!("2026-{:02}-{:02}T{:02}:00:00Z", 1 + i % 12, 1 + i % 28, i % 24);
    out.push_str("- apiVersion: v1\n  kind: Node\n  metadata:\n    annotations:\n");
    let mut annotations = n.annotations();
    annotations
        .insert("volumes.kubernetes.io/controller-managed-attach-detach".into(), "true".into());
    for (k, v) in &annotations {
        let _ = writeln!(out, "      {k}: {}", scalar(v));
    }
    let _ = writeln!(out, "    creationTimestamp: \"{created}\"\n    labels:");
    for (k, v) in &n.labels() {
        let _ = writeln!(out, "      {k}: {}", scalar(v));
    }
    let _ = write!(
        out,
        "    name: {name}\n    resourceVersion: \"{rv}\"\n    uid: {uid}\n  spec:\n    podCIDR: {pod}\n    podCIDRs:\n    - {pod}\n",
        name = n.name,
        rv = 100_000 + i * 7,
        uid = uuid(1, i),
        pod = n.pod_cidr,
    );
    let _ = write!(
        out,
        "  status:\n    addresses:\n    - address: {ip}\n      type: InternalIP\n    - address: {name}\n      type: Hostname\n",
        ip = n.internal_addr(),
        name = n.name,
    );
    out.push_str(
        "    capacity:\n      cpu: \"2\"\n      ephemeral-storage: 20134592Ki\n      memory: 8136912Ki\n      pods: \"110\"\n",
    );
    out.push_str("    conditions:\n");
    for (kind, status, reason, message) in [
        (
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ] {
        let _ = write!(
            out,
            "    - lastHeartbeatTime: \"2026-11-23T05:59:{s:02}Z\"\n      lastTransitionTime: \"{created}\"\n      message: {message}\n      reason: {reason}\n      status: \"{status}\"\n      type: {kind}\n",
            s = i % 60,
        );
    }
    let _ = write!(
        out,
        "    daemonEndpoints:\n      kubeletEndpoint:\n        Port: 10250\n    nodeInfo:\n      architecture: amd64\n      containerRuntimeVersion: containerd://1.7.22\n      kubeletVersion: v1.31.4\n      machineID: {machine:032x}\n      operatingSystem: linux\n      osImage: Debian GNU/Linux 12 (bookworm)\n",
        machine = 0x5eed_0000_0000_0000_u128 + i as u128,
    );
}

fn peer(out: &mut String, i: usize, p: &GenPeer) {
    let _ = write!(
        out,
        "- apiVersion: kilo.squat.ai/v1alpha1\n  kind: Peer\n  metadata:\n    creationTimestamp: \"2026-11-01T00:00:00Z\"\n    generation: 1\n    name: {name}\n    resourceVersion: \"{rv}\"\n    uid: {uid}\n  spec:\n    allowedIPs:\n",
        name = p.name,
        rv = 900_000 + i * 3,
        uid = uuid(4, i),
    );
    for ip in &p.allowed_ips {
        let _ = writeln!(out, "    - {ip}");
    }
    if let Some(e) = &p.endpoint {
        let _ = write!(
            out,
            "    endpoint:\n      dnsOrIP:\n        ip: {}\n      port: {}\n",
            e.ip, e.port
        );
    }
    if let Some(k) = p.keepalive {
        let _ = writeln!(out, "    persistentKeepalive: {k}");
    }
    if let Some(psk) = &p.preshared_key {
        let _ = writeln!(out, "    presharedKey: {}", scalar(psk));
    }
    let _ = writeln!(out, "    publicKey: {}", scalar(&p.key));
}

fn uuid(kind: u8, i: usize) -> String {
    format!("{kind:08x}-5eed-4000-8000-{i:012x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Shape, generate};

    #[test]
    fn scalars_that_yaml_would_retype_are_quoted() {
        assert_eq!(scalar(""), "\"\"");
        assert_eq!(scalar("4102444800"), "\"4102444800\"");
        assert_eq!(scalar("true"), "\"true\"");
        assert_eq!(scalar("[2001:db8::5]:51820"), "\"[2001:db8::5]:51820\"");
        assert_eq!(scalar("172.16.0.10:51820"), "\"172.16.0.10:51820\"");
        assert_eq!(scalar("10.64.1.0/24"), "10.64.1.0/24");
        assert_eq!(scalar("site-0001"), "site-0001");
    }

    #[test]
    fn a_node_takes_about_1_8_kb_like_the_baseline() {
        let mesh = generate(&Shape { peers: 0, ..Shape::baseline(1000) }).unwrap();
        let per_node = to_yaml(&mesh).len() / 1000;
        assert!((1600..=2100).contains(&per_node), "{per_node} bytes per node");
    }

    #[test]
    fn the_document_is_a_v1_list_of_nodes_then_peers() {
        let text = to_yaml(&generate(&Shape::baseline(20)).unwrap());
        assert!(text.starts_with("apiVersion: v1\nitems:\n- apiVersion: v1\n  kind: Node\n"));
        assert_eq!(text.matches("\n  kind: Node\n").count(), 20);
        assert_eq!(text.matches("\n  kind: Peer\n").count(), 1);
        assert!(text.ends_with("kind: List\nmetadata:\n  resourceVersion: \"\"\n"));
    }
}
