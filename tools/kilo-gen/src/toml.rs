//! The static mesh file writer (contract 3).

use std::fmt::Write as _;

use crate::Mesh;

/// A TOML basic string.
fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// The mesh as a static mesh file. `granularity`, when given, is written in a `[mesh]` table
/// (with the default subnet and port). A node with `force-internal-ip: ""` is written without
/// `internal-ip`, which means the same thing.
pub fn to_toml(mesh: &Mesh, granularity: Option<&str>) -> String {
    let mut out = String::with_capacity(300 * mesh.nodes.len() + 200 * mesh.peers.len() + 128);
    if let Some(g) = granularity {
        let _ = writeln!(
            out,
            "[mesh]\ngranularity = {}\nsubnet = \"10.4.0.0/16\"\nport = 51820\n",
            q(g)
        );
    }
    for n in &mesh.nodes {
        let _ = writeln!(out, "[[node]]\nname = {}\npublic-key = {}", q(&n.name), q(&n.key));
        let _ = writeln!(out, "endpoint = {}\nlocation = {}", q(&n.endpoint), q(&n.location));
        if !n.no_internal_ip {
            let _ = writeln!(out, "internal-ip = {}", q(&n.internal_ip));
        }
        let _ = writeln!(out, "subnet = {}", q(&n.pod_cidr));
        if n.leader {
            out.push_str("leader = true\n");
        }
        if let Some(k) = n.keepalive {
            let _ = writeln!(out, "persistent-keepalive = {k}");
        }
        if !n.allowed_location_ips.is_empty() {
            let _ = writeln!(out, "allowed-location-ips = {}", list(&n.allowed_location_ips));
        }
        out.push('\n');
    }
    for p in &mesh.peers {
        let _ = writeln!(out, "[[peer]]\nname = {}\npublic-key = {}", q(&p.name), q(&p.key));
        let _ = writeln!(out, "allowed-ips = {}", list(&p.allowed_ips));
        if let Some(e) = &p.endpoint {
            let host = if e.ip.contains(':') { format!("[{}]", e.ip) } else { e.ip.clone() };
            let _ = writeln!(out, "endpoint = {}", q(&format!("{host}:{}", e.port)));
        }
        if let Some(k) = p.keepalive {
            let _ = writeln!(out, "persistent-keepalive = {k}");
        }
        if let Some(psk) = &p.preshared_key {
            let _ = writeln!(out, "preshared-key = {}", q(psk));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Shape, generate};

    #[test]
    fn the_file_lists_every_node_and_peer_with_the_contract_keys() {
        let mesh = generate(&Shape::baseline(100)).unwrap();
        let text = to_toml(&mesh, Some("full"));
        assert!(text.starts_with("[mesh]\ngranularity = \"full\"\n"));
        assert_eq!(text.matches("[[node]]\n").count(), 100);
        assert_eq!(text.matches("[[peer]]\n").count(), 5);
        assert!(text.contains("[[node]]\nname = \"n00000\"\npublic-key = \""));
        assert!(text.contains("allowed-location-ips = [\"100.64.0.0/28\"]"));
        assert!(text.contains("endpoint = \"[2001:db8::"));
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(q("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000A\"");
    }
}
