//! Issue: `/graph` started one `dot` per request, with no limit, and left it running when the
//! client went away (30 requests pinned both cores for two minutes). One `kg` (file backend) runs
//! in a network namespace (see `support`) with a fake `dot` first in its `PATH`: a script that
//! takes as long as the test says and logs its start and end. Needs root.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use support::{Cluster, MeshSpec, Process, wait_for};

/// Writes the fake `dot` into `dir`: it sleeps for the seconds in `dir/sleep`, logs `start PID`
/// and `end PID` to `dir/log`, and prints a tiny SVG.
fn fake_dot(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let d = dir.display();
    let script = format!(
        "#!/bin/sh\necho \"start $$\" >> '{d}/log'\nsleep \"$(cat '{d}/sleep')\"\ncat > /dev/null\n\
         echo '<svg/>'\necho \"end $$\" >> '{d}/log'\n"
    );
    std::fs::write(dir.join("dot"), script)?;
    std::fs::set_permissions(dir.join("dot"), std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn start_kg(cluster: &Cluster, name: &str, bin: &Path) -> Result<Process> {
    let dir = cluster.dir.path();
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let child = Command::new("ip")
        .args(["netns", "exec", &cluster.ns(name).name, env!("CARGO_BIN_EXE_kg")])
        .args(["--backend", "file", "--file"])
        .arg(&cluster.mesh)
        .args(["--hostname", name, "--wireguard", "userspace", "--wireguard-socket-dir"])
        .arg(dir.join(format!("{name}.wg")))
        .args(["--encapsulate", "never", "--cni=false", "--key-file"])
        .arg(dir.join(format!("{name}.key")))
        .args(["--listen", "127.0.0.1:1107", "--log-format", "human"])
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start kg")?;
    Ok(Process { child, what: format!("kg on {name}") })
}

/// The children of `pid` whose command is `dot`.
fn dots_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                return false;
            };
            // pid (comm) state ppid ...
            let Some((head, rest)) = stat.rsplit_once(") ") else { return false };
            let comm = head.split_once(" (").map_or("", |(_, c)| c);
            let mut fields = rest.split_whitespace();
            let state = fields.next().unwrap_or("");
            let ppid = fields.next().and_then(|f| f.parse::<u32>().ok());
            comm == "dot" && state != "Z" && ppid == Some(pid)
        })
        .collect()
}

/// `curl` of `path` inside namespace `ns`, giving up after `max` seconds: the status code (0
/// when curl gave up) and how long it took.
fn get(ns: &str, path: &str, max: &str) -> (u16, Duration) {
    let started = Instant::now();
    let url = format!("http://127.0.0.1:1107{path}");
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["--max-time", max, &url])
        .output();
    let code = out.ok().and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok());
    (code.unwrap_or(0), started.elapsed())
}

#[test]
fn thirty_concurrent_graph_requests_run_one_dot_at_a_time_and_a_dropped_client_kills_its_dot()
-> Result<()> {
    if support::skip_unless_root() {
        return Ok(());
    }
    let mut cluster = Cluster::build(&MeshSpec::new("location"))?;
    let bin: PathBuf = cluster.dir.path().join("fakebin");
    std::fs::create_dir(&bin)?;
    fake_dot(&bin)?;
    std::fs::write(bin.join("sleep"), "1")?;
    let agent = start_kg(&cluster, "a1", &bin)?;
    let pid = agent.pid();
    cluster.agents.push(("a1".into(), agent));
    cluster.wait_healthy("a1")?;
    let ns = cluster.ns("a1").name.clone();

    // 30 at once, each willing to wait a minute.
    let started = Instant::now();
    let requests: Vec<_> = (0..30)
        .map(|_| {
            let ns = ns.clone();
            std::thread::spawn(move || get(&ns, "/graph?format=svg", "60"))
        })
        .collect();
    let mut most = 0;
    while requests.iter().any(|r| !r.is_finished()) {
        most = most.max(dots_of(pid).len());
        std::thread::sleep(Duration::from_millis(20));
    }
    let answers: Vec<(u16, Duration)> = requests.into_iter().map(|r| r.join().unwrap()).collect();
    let all = started.elapsed();
    let log = std::fs::read_to_string(bin.join("log")).unwrap_or_default();
    let runs = log.lines().filter(|l| l.starts_with("start")).count();
    let mut codes: Vec<u16> = answers.iter().map(|(c, _)| *c).collect();
    codes.sort();
    codes.dedup();
    let slowest = answers.iter().map(|(_, t)| *t).max().unwrap_or_default();
    eprintln!(
        "30 concurrent /graph: at most {most} dot at a time, {runs} dot runs, status codes \
         {codes:?}, slowest answer {slowest:?}, all answered after {all:?}"
    );
    assert_eq!(most, 1, "dot processes at once");
    assert!(
        answers.iter().all(|(c, _)| *c == 200 || *c == 503),
        "every request is answered or refused: {answers:?}"
    );
    assert!(answers.iter().any(|(c, _)| *c == 200), "{answers:?}");
    wait_for(Duration::from_secs(5), || Ok(dots_of(pid).is_empty()))
        .context("a dot is left running")?;

    // A client that gives up: its dot goes with it. (Another layout: not in the cache.)
    std::fs::write(bin.join("sleep"), "30")?;
    let (code, _) = get(&ns, "/graph?format=svg&layout=dot", "1");
    assert_eq!(code, 0, "curl gave up");
    let gave_up = Instant::now();
    let gone = wait_for(Duration::from_secs(10), || Ok(dots_of(pid).is_empty()));
    eprintln!(
        "dropped client: dot {} after the client left",
        if gone.is_ok() { format!("gone {:?}", gave_up.elapsed()) } else { "still running".into() }
    );
    gone.context("the dot of a client that went away still runs")?;
    Ok(())
}
