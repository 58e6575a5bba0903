//! DOT output (`kgctl graph`) for upstream's fixture: golden files, Graphviz acceptance, and the
//! contract's fixes (peers never merge into nodes).

use kilo_core::{Granularity, PrivateKey, Topology, TopologyInput, fixtures};

fn topology(granularity: Granularity, peers: &[kilo_core::Peer]) -> Topology {
    let nodes = fixtures::nodes();
    Topology::new(TopologyInput {
        nodes: &nodes,
        peers,
        granularity,
        hostname: "d",
        port: 0,
        key: PrivateKey::from_bytes([0; 32]),
        subnet: fixtures::subnet(),
        subnet6: None,
        service_cidrs: &[],
        persistent_keepalive: std::time::Duration::ZERO,
    })
    .unwrap()
}

fn golden(name: &str, actual: &str) {
    let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(actual, expected, "golden file {path} differs (UPDATE_GOLDEN=1 rewrites it)");
}

#[test]
fn location_graph_of_the_upstream_fixture_matches_the_golden_file() {
    golden("graph_location.dot", &topology(Granularity::Location, &fixtures::peers()).dot());
}

#[test]
fn full_graph_of_the_upstream_fixture_matches_the_golden_file() {
    golden("graph_full.dot", &topology(Granularity::Full, &fixtures::peers()).dot());
}

#[test]
fn cross_graph_of_the_upstream_fixture_matches_the_golden_file() {
    golden("graph_cross.dot", &topology(Granularity::Cross, &fixtures::peers()).dot());
}

#[test]
fn a_peer_named_like_a_node_stays_a_separate_vertex() {
    // The fixture's peer "a" shares its name with node "a": upstream merged them.
    let g = topology(Granularity::Location, &fixtures::peers()).graph();
    let ids: Vec<_> = g.graph.node_weights().map(|v| v.id.as_str()).collect();
    assert!(ids.contains(&"a") && ids.contains(&"peer:a"));
    assert_eq!(g.graph.node_count(), 6);
}

#[test]
fn graphviz_accepts_every_granularity() {
    if std::process::Command::new("dot").arg("-V").output().is_err() {
        panic!("Graphviz `dot` is required for this test (scripts/setup.sh installs it)");
    }
    for g in [Granularity::Location, Granularity::Full, Granularity::Cross] {
        let mut child = std::process::Command::new("dot")
            .arg("-Tsvg")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(topology(g, &fixtures::peers()).dot().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{g}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("<svg"));
    }
}
