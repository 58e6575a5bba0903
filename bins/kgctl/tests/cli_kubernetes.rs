//! `--backend kubernetes` against a small API server on loopback serving the upstream fixture
//! (13.1) with fresh last-seen annotations: same outputs as the file backend on
//! `examples/upstream-fixture.yaml`.

mod kgctl_run;

use std::path::PathBuf;

use kgctl_run::{Run, kgctl_file, kgctl_with, root};
use kilo_backend_k8s::testing::{Collection, FakeApiServer};
use serde_json::{Value, json};

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The example's objects, with every node's last-seen set to `last_seen`.
fn fixture_objects(last_seen: i64) -> Vec<Value> {
    let text = std::fs::read_to_string(root().join("examples/upstream-fixture.yaml")).unwrap();
    let list: Value = serde_saphyr::from_str(&text).unwrap();
    let mut items = list["items"].as_array().unwrap().clone();
    for item in &mut items {
        if item["kind"] == "Node" {
            item["metadata"]["annotations"]["kilo.squat.ai/last-seen"] =
                json!(last_seen.to_string());
        }
    }
    items
}

/// A running fake API server (its runtime lives as long as this value).
struct Cluster {
    _runtime: tokio::runtime::Runtime,
    server: FakeApiServer,
    dir: PathBuf,
}

impl Cluster {
    fn start(name: &str, objects: Vec<Value>) -> Cluster {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime.block_on(FakeApiServer::start());
        for object in objects {
            let collection =
                if object["kind"] == "Node" { Collection::Nodes } else { Collection::Peers };
            server.put(collection, object);
        }
        let dir = std::env::temp_dir().join(format!("kgctl-k8s-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Cluster { _runtime: runtime, server, dir }
    }

    /// Writes a kubeconfig pointing at `url` and returns its path.
    fn kubeconfig_for(&self, url: &str) -> String {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\nusers:\n- name: fake\n  user: {{}}\n"
        );
        let path = self.dir.join("kubeconfig");
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }

    fn kubeconfig(&self) -> String {
        self.kubeconfig_for(&format!("http://{}", self.server.addr))
    }

    fn kgctl(&self, args: &[&str]) -> Run {
        let kubeconfig = self.kubeconfig();
        let mut all = vec!["--backend", "kubernetes", "--kubeconfig", kubeconfig.as_str()];
        all.extend_from_slice(args);
        kgctl_with(&all, "", &[])
    }
}

#[test]
fn the_kubernetes_backend_gives_the_same_outputs_as_the_file_backend() {
    let cluster = Cluster::start("same", fixture_objects(now()));
    for args in [
        &["showconf", "node", "a"][..],
        &["showconf", "node", "b", "--as-peer", "-o", "yaml"],
        &["showconf", "peer", "b"],
        &["graph"],
        &["plan", "node", "a", "-o", "json"],
        &["--mesh-granularity", "full", "showconf", "node", "d"],
    ] {
        let live = cluster.kgctl(args);
        let file = kgctl_file("examples/upstream-fixture.yaml", args);
        assert_eq!(live.code, 0, "{args:?}: {}", live.stderr);
        assert_eq!(live.stderr, "", "{args:?}");
        assert_eq!(live.stdout, file.stdout, "{args:?}");
    }
    let requests = cluster.server.requests();
    assert!(requests.iter().any(|r| r.starts_with("GET /api/v1/nodes")), "{requests:?}");
    assert!(
        requests.iter().any(|r| r.starts_with("GET /apis/kilo.squat.ai/v1alpha1/peers")),
        "{requests:?}"
    );
}

#[test]
fn a_node_that_is_not_a_leader_gets_upstreams_message_from_the_cluster_too() {
    let cluster = Cluster::start("follower", fixture_objects(now()));
    let run = cluster.kgctl(&["showconf", "node", "c"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr, "Node \"c\" is not a leader node\n");
}

#[test]
fn nodes_that_have_not_checked_in_for_a_minute_do_not_count() {
    let cluster = Cluster::start("stale", fixture_objects(now() - 3600));
    let run = cluster.kgctl(&["showconf", "node", "a"]);
    assert_eq!(run.code, 1);
    assert_eq!(run.stderr, "kgctl: did not find any valid Kilo nodes in the cluster\n");
    // A snapshot file of the same objects ignores last-seen.
    let objects = json!({"apiVersion": "v1", "kind": "List", "items": fixture_objects(1)});
    let path = cluster.dir.join("snapshot.yaml");
    std::fs::write(&path, serde_saphyr::to_string(&objects).unwrap()).unwrap();
    let run = kgctl_file(path.to_str().unwrap(), &["showconf", "node", "a"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[test]
fn validate_reads_the_cluster() {
    let cluster = Cluster::start("validate", fixture_objects(now()));
    let live = cluster.kgctl(&["validate"]);
    let file = kgctl_file("examples/upstream-fixture.yaml", &["validate"]);
    assert_eq!(live.code, file.code);
    assert_eq!(live.stdout, file.stdout);
}

#[test]
fn kubeconfig_comes_from_the_environment_when_the_flag_is_absent() {
    let cluster = Cluster::start("env", fixture_objects(now()));
    let kubeconfig = cluster.kubeconfig();
    let run = kgctl_with(
        &["--backend", "kubernetes", "showconf", "node", "a"],
        "",
        &[("KUBECONFIG", &kubeconfig), ("HOME", "/nonexistent")],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.starts_with("[Interface]\nListenPort = 51820\n"));
}

#[test]
fn an_unreachable_api_server_is_one_clear_line_and_exit_1() {
    let cluster = Cluster::start("unreachable", Vec::new());
    // Bind and drop a listener: its port is closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let kubeconfig = cluster.kubeconfig_for(&format!("http://127.0.0.1:{port}"));
    let run =
        kgctl_with(&["--backend", "kubernetes", "--kubeconfig", &kubeconfig, "graph"], "", &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr.lines().count(), 1, "{:?}", run.stderr);
    assert!(run.stderr.starts_with("kgctl: cannot list nodes and peers"), "{:?}", run.stderr);
    assert!(!run.stderr.contains("panicked"));
}

#[test]
fn a_missing_kubeconfig_is_named() {
    let run = kgctl_with(
        &["--backend", "kubernetes", "--kubeconfig", "/nonexistent/kubeconfig", "graph"],
        "",
        &[],
    );
    assert_eq!(run.code, 1);
    assert_eq!(run.stderr.lines().count(), 1, "{:?}", run.stderr);
    assert!(run.stderr.contains("/nonexistent/kubeconfig"), "{:?}", run.stderr);
}

#[test]
fn no_kubeconfig_and_no_cluster_is_one_clear_line() {
    let run = kgctl_with(
        &["--backend", "kubernetes", "graph"],
        "",
        &[("HOME", "/nonexistent"), ("KUBERNETES_SERVICE_HOST", "")],
    );
    assert_eq!(run.code, 1);
    assert_eq!(run.stderr.lines().count(), 1, "{:?}", run.stderr);
}
