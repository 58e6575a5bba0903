//! Parse-time benchmark: a Kubernetes YAML file of N nodes (`kubectl get nodes,peers -o yaml`
//! shape, ≈ 1.9 kB each) and a mesh TOML file of N nodes.
//!
//! `cargo run --release -p kilo-backend-file --example bench_parse [N]` (default 10000).

use std::time::Instant;

use kilo_backend_file::{Options, parse_str};

fn key(i: usize) -> String {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    kilo_core::Key::from_bytes(b).to_string()
}

fn yaml(n: usize) -> String {
    let mut s = String::from("apiVersion: v1\nitems:\n");
    for i in 0..n {
        let (a, b) = (i / 250, i % 250);
        s.push_str(&format!(
            r#"- apiVersion: v1
  kind: Node
  metadata:
    annotations:
      kilo.squat.ai/discovered-endpoints: '{{}}'
      kilo.squat.ai/endpoint: 10.{a}.{b}.1:51820
      kilo.squat.ai/granularity: location
      kilo.squat.ai/internal-ip: 192.168.{a}.{b}/16
      kilo.squat.ai/key: {key}
      kilo.squat.ai/last-seen: "1700000000"
      kilo.squat.ai/wireguard-ip: ""
      node.alpha.kubernetes.io/ttl: "0"
      volumes.kubernetes.io/controller-managed-attach-detach: "true"
    creationTimestamp: "2026-11-01T00:00:00Z"
    labels:
      beta.kubernetes.io/arch: amd64
      beta.kubernetes.io/os: linux
      kubernetes.io/arch: amd64
      kubernetes.io/hostname: node-{i}
      kubernetes.io/os: linux
      topology.kubernetes.io/region: region-{region}
    name: node-{i}
    resourceVersion: "{i}"
    uid: 5e8a1c2d-0000-4000-8000-{i:012}
  spec:
    podCIDR: 10.{pa}.{pb}.0/24
    podCIDRs:
    - 10.{pa}.{pb}.0/24
    providerID: gce://project/zone/node-{i}
  status:
    addresses:
    - address: 192.168.{a}.{b}
      type: InternalIP
    - address: node-{i}
      type: Hostname
    allocatable:
      cpu: "4"
      ephemeral-storage: "95491281146"
      memory: 16279948Ki
      pods: "110"
    capacity:
      cpu: "4"
      ephemeral-storage: 103612076Ki
      memory: 16382348Ki
      pods: "110"
    conditions:
    - lastHeartbeatTime: "2026-11-01T00:00:00Z"
      lastTransitionTime: "2026-11-01T00:00:00Z"
      message: kubelet has sufficient memory available
      reason: KubeletHasSufficientMemory
      status: "False"
      type: MemoryPressure
    - lastHeartbeatTime: "2026-11-01T00:00:00Z"
      lastTransitionTime: "2026-11-01T00:00:00Z"
      message: kubelet is posting ready status
      reason: KubeletReady
      status: "True"
      type: Ready
    daemonEndpoints:
      kubeletEndpoint:
        Port: 10250
    images:
    - names:
      - registry.k8s.io/kube-proxy@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
      - registry.k8s.io/kube-proxy:v1.31.0
      sizeBytes: 30000000
    nodeInfo:
      architecture: amd64
      bootID: 00000000-0000-0000-0000-000000000000
      containerRuntimeVersion: containerd://1.7.0
      kernelVersion: 6.1.0
      kubeProxyVersion: v1.31.0
      kubeletVersion: v1.31.0
      machineID: 0123456789abcdef
      operatingSystem: linux
      osImage: Debian GNU/Linux 12 (bookworm)
      systemUUID: 00000000-0000-0000-0000-000000000000
"#,
            key = key(i),
            region = i % 10,
            pa = 64 + i / 256,
            pb = i % 256,
        ));
    }
    s.push_str("kind: List\nmetadata:\n  resourceVersion: \"\"\n");
    s
}

fn toml(n: usize) -> String {
    let mut s = String::from("[mesh]\nsubnet = \"10.4.0.0/16\"\n");
    for i in 0..n {
        s.push_str(&format!(
            "\n[[node]]\nname = \"node-{i}\"\npublic-key = \"{}\"\nendpoint = \"10.{}.{}.1:51820\"\n\
             location = \"region-{}\"\nsubnet = \"10.{}.{}.0/24\"\n",
            key(i),
            i / 250,
            i % 250,
            i % 10,
            64 + i / 256,
            i % 256
        ));
    }
    s
}

/// This thread's CPU time in nanoseconds (Linux `/proc/thread-self/schedstat`; 0 elsewhere).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    println!("| input | size | wall time (best of 5) | CPU time (best of 5) | nodes |");
    println!("|---|---|---|---|---|");
    for (name, text) in [("kubernetes yaml", yaml(n)), ("mesh toml", toml(n))] {
        // The best of five runs: the machine may be shared.
        let mut best = std::time::Duration::MAX;
        let mut best_cpu = u64::MAX;
        let mut snapshot = kilo_core::Snapshot::default();
        for _ in 0..5 {
            let (start, cpu) = (Instant::now(), thread_cpu_ns());
            snapshot = parse_str(&text, name, &Options::default()).expect("benchmark input parses");
            best = best.min(start.elapsed());
            best_cpu = best_cpu.min(thread_cpu_ns().saturating_sub(cpu));
        }
        let elapsed = best;
        println!(
            "| {name} | {:.1} MB | {:.1} ms | {:.1} ms | {} |",
            text.len() as f64 / 1e6,
            elapsed.as_secs_f64() * 1e3,
            best_cpu as f64 / 1e6,
            snapshot.nodes.len()
        );
    }
}
