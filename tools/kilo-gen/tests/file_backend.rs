//! The generated files are read by the file backend as the same mesh.

use kilo_backend_file::{Options, parse_str};
use kilo_core::Readiness;
use kilo_gen::{Shape, generate, to_toml, to_yaml};

#[test]
fn the_file_backend_reads_the_generated_yaml_and_toml_as_the_same_mesh() {
    let mesh = generate(&Shape { dns_every: 3, ..Shape::baseline(200) }).unwrap();
    let yaml = parse_str(&to_yaml(&mesh), "gen.yaml", &Options::default()).unwrap();
    let toml =
        parse_str(&to_toml(&mesh, Some("location")), "gen.toml", &Options::default()).unwrap();
    for snapshot in [&yaml, &toml] {
        assert_eq!(snapshot.nodes.len(), 200);
        assert_eq!(snapshot.peers.len(), 10);
        assert!(snapshot.nodes.iter().all(|n| n.is_ready(Readiness::IgnoringLastSeen)));
    }
    for (a, b) in yaml.nodes.iter().zip(&toml.nodes) {
        assert_eq!(
            (&a.name, &a.key, &a.endpoint, &a.location),
            (&b.name, &b.key, &b.endpoint, &b.location)
        );
        assert_eq!((a.internal_ip, a.leader, &a.subnets), (b.internal_ip, b.leader, &b.subnets));
        assert_eq!(a.allowed_location_ips, b.allowed_location_ips);
        assert_eq!(a.persistent_keepalive, b.persistent_keepalive);
    }
    assert_eq!(yaml.peers, toml.peers);
}

/// The file backend's fast reader and its full YAML parser read the generated YAML alike: a
/// `%YAML` directive in front sends the same text to the full parser.
#[test]
fn the_fast_reader_and_the_full_parser_read_the_generated_yaml_alike() {
    use kilo_backend_file::{parse_kube_yaml_with_issues, read_kube_yaml};
    let options = Options::default();
    for shape in [
        Shape::baseline(1),
        Shape::baseline(20),
        Shape { dns_every: 2, ..Shape::baseline(57) },
        Shape { dns_every: 3, ..Shape::baseline(400) },
    ] {
        let text = to_yaml(&generate(&shape).unwrap());
        let full_text = format!("%YAML 1.2\n---\n{text}");
        let fast = read_kube_yaml(&text, "gen.yaml", &options).unwrap();
        let full = read_kube_yaml(&full_text, "gen.yaml", &options).unwrap();
        assert_eq!(fast, full, "{} nodes", shape.nodes);
        assert_eq!(fast.objects.len(), shape.nodes + shape.peers);
        let fast = parse_kube_yaml_with_issues(&text, "gen.yaml", &options).unwrap();
        let full = parse_kube_yaml_with_issues(&full_text, "gen.yaml", &options).unwrap();
        assert_eq!(fast, full, "{} nodes", shape.nodes);
    }
}
