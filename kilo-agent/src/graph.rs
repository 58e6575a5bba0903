//! `/graph` rendering with Graphviz `dot`, bounded: `dot` is CPU-hungry and `/graph` is reachable
//! by anyone who can reach `--listen`, so one render runs at a time (a request waits at most
//! [`WAIT`] for its turn, then is refused), each render is killed after [`TIMEOUT`] or as soon as
//! its client goes away, and the last render is kept, keyed by (DOT text, format, layout), so
//! repeated requests for an unchanged mesh start no process at all.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use tokio::sync::Semaphore;

/// How long a request waits for the render slot before it is refused.
pub const WAIT: Duration = Duration::from_secs(2);

/// How long one `dot` run may take before it is killed.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a graph was not rendered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// Another render held the slot for longer than [`WAIT`].
    #[error("another graph is being rendered")]
    Busy,
    /// `dot` ran longer than [`TIMEOUT`] and was killed.
    #[error("dot ran longer than {0:?} and was killed")]
    TimedOut(Duration),
    /// `dot` could not be started or failed.
    #[error("dot failed: {0}")]
    Failed(String),
    /// The program (Graphviz's `dot`) is not installed.
    #[error(
        "Graphviz's `{}` is not installed on this host: install Graphviz (package `graphviz`) \
         for svg, png and the other formats, or ask for /graph?format=dot",
        .0.display()
    )]
    NotInstalled(PathBuf),
}

/// One finished render.
struct Rendered {
    dot: String,
    format: String,
    layout: String,
    bytes: Bytes,
}

/// Runs `dot`, one process at a time, and remembers the last result.
#[derive(Debug)]
pub struct Renderer {
    program: PathBuf,
    wait: Duration,
    timeout: Duration,
    slot: Semaphore,
    last: Mutex<Option<Arc<Rendered>>>,
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rendered").field("format", &self.format).finish_non_exhaustive()
    }
}

impl Renderer {
    /// A renderer running `program` (`dot`, looked up in `PATH`).
    pub fn new(program: impl Into<PathBuf>) -> Renderer {
        Renderer {
            program: program.into(),
            wait: WAIT,
            timeout: TIMEOUT,
            slot: Semaphore::new(1),
            last: Mutex::new(None),
        }
    }

    fn cached(&self, dot: &str, format: &str, layout: &str) -> Option<Bytes> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.as_ref()
            .filter(|r| r.dot == dot && r.format == format && r.layout == layout)
            .map(|r| r.bytes.clone())
    }

    /// `dot -K<layout> -T<format>` of `dot`: the cached bytes when the same graph was rendered
    /// last, else a new run once the slot is free. Dropping the future kills a running `dot`.
    pub async fn render(
        &self,
        dot: &str,
        format: &str,
        layout: &str,
    ) -> Result<Bytes, RenderError> {
        if let Some(bytes) = self.cached(dot, format, layout) {
            return Ok(bytes);
        }
        let _permit = match tokio::time::timeout(self.wait, self.slot.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) | Err(_) => return Err(RenderError::Busy),
        };
        // The render we waited for may have been this very graph.
        if let Some(bytes) = self.cached(dot, format, layout) {
            return Ok(bytes);
        }
        let bytes = match tokio::time::timeout(self.timeout, self.run(dot, format, layout)).await {
            Ok(result) => Bytes::from(result?),
            Err(_) => return Err(RenderError::TimedOut(self.timeout)),
        };
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(Rendered {
            dot: dot.to_string(),
            format: format.to_string(),
            layout: layout.to_string(),
            bytes: bytes.clone(),
        }));
        Ok(bytes)
    }

    async fn run(&self, dot: &str, format: &str, layout: &str) -> Result<Vec<u8>, RenderError> {
        use tokio::io::AsyncWriteExt;
        let failed = |e: std::io::Error| RenderError::Failed(e.to_string());
        let mut child = tokio::process::Command::new(&self.program)
            .arg(format!("-K{layout}"))
            .arg(format!("-T{format}"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => RenderError::NotInstalled(self.program.clone()),
                _ => failed(e),
            })?;
        let stdin = child.stdin.take();
        let write = async move {
            if let Some(mut stdin) = stdin {
                // A `dot` that exits early closes its input: its exit status tells why.
                let _ = stdin.write_all(dot.as_bytes()).await;
            }
        };
        let ((), out) = tokio::join!(write, child.wait_with_output());
        let out = out.map_err(failed)?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(RenderError::Failed(out.status.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A fake `dot` that logs its start and end to `log`, takes `seconds`, and prints its
    /// arguments and input.
    fn fake_dot(dir: &Path, seconds: &str) -> PathBuf {
        let path = dir.join(format!("dot-{seconds}"));
        let log = dir.join("log");
        let script = format!(
            "#!/bin/sh\necho \"start $$\" >> '{log}'\nsleep {seconds}\ninput=$(cat)\n\
             echo \"$* $input\"\necho \"end $$\" >> '{log}'\n",
            log = log.display()
        );
        install_script(&script, &path);
        path
    }

    /// Writes an executable script without this process ever holding it open for writing: tests
    /// run in parallel threads, and a child forked by another test between our `open` and its own
    /// `exec` would keep the file open for writing, so that running it fails with "Text file busy"
    /// (ETXTBSY). `install` (a child process) writes it instead.
    fn install_script(script: &str, path: &Path) {
        let source = path.with_extension("src");
        std::fs::write(&source, script).unwrap();
        let status = std::process::Command::new("install")
            .arg("-m")
            .arg("755")
            .arg(&source)
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "install {}: {status}", path.display());
    }

    fn log(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// The most `dot` processes that ran at once, from the start/end lines.
    fn max_overlap(lines: &[String]) -> usize {
        let (mut now, mut max) = (0usize, 0usize);
        for line in lines {
            if line.starts_with("start") {
                now += 1;
                max = max.max(now);
            } else {
                now = now.saturating_sub(1);
            }
        }
        max
    }

    fn alive(pid: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z'))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn thirty_concurrent_renders_run_one_dot_at_a_time_and_reuse_the_last_render() {
        let dir = tempfile::tempdir().unwrap();
        let renderer = Arc::new(Renderer::new(fake_dot(dir.path(), "0.3")));
        let mut tasks = Vec::new();
        for i in 0..30 {
            let renderer = renderer.clone();
            // Two different graphs: the second cannot come from the cache of the first.
            let dot = if i % 2 == 0 { "digraph{a}" } else { "digraph{b}" };
            tasks.push(tokio::spawn(async move { renderer.render(dot, "svg", "circo").await }));
        }
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        let lines = log(dir.path());
        assert_eq!(max_overlap(&lines), 1, "{lines:?}");
        let ok: Vec<&Bytes> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
        let busy = answers.iter().filter(|a| matches!(a, Err(RenderError::Busy))).count();
        assert_eq!(ok.len() + busy, 30, "{answers:?}");
        for bytes in &ok {
            let text = String::from_utf8_lossy(bytes);
            assert!(
                text == "-Kcirco -Tsvg digraph{a}\n" || text == "-Kcirco -Tsvg digraph{b}\n",
                "{text}"
            );
        }
        // Far fewer runs than requests: each waiting request found the last render in the cache
        // when it was the same graph.
        let runs = lines.iter().filter(|l| l.starts_with("start")).count();
        assert!(runs < 30, "{runs} dot runs for 30 requests");
        // Asking again for the graph rendered last starts nothing. Which one that is depends on
        // the order the waiting requests got the slot in, not on the order of the tasks.
        let last = ["digraph{a}", "digraph{b}"]
            .into_iter()
            .find(|g| renderer.cached(g, "svg", "circo").is_some())
            .expect("the last render is cached");
        let before = log(dir.path()).len();
        renderer.render(last, "svg", "circo").await.unwrap();
        assert_eq!(log(dir.path()).len(), before);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_render_kills_its_dot_and_frees_the_slot() {
        let dir = tempfile::tempdir().unwrap();
        let renderer = Arc::new(Renderer::new(fake_dot(dir.path(), "30")));
        let task = {
            let renderer = renderer.clone();
            tokio::spawn(async move { renderer.render("digraph{}", "svg", "dot").await })
        };
        let mut pid = None;
        for _ in 0..500 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            pid = log(dir.path()).first().map(|l| l.trim_start_matches("start ").to_string());
            if pid.is_some() || task.is_finished() {
                break;
            }
        }
        if pid.is_none() && task.is_finished() {
            panic!("the render ended before the fake dot started: {:?}", task.await);
        }
        let pid = pid.expect("the fake dot started");
        assert!(alive(&pid));
        task.abort();
        let _ = task.await;
        let mut gone = false;
        for _ in 0..100 {
            if !alive(&pid) {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "dot {pid} still runs after its request was dropped");
        // The slot is free again: the next render is not refused as busy.
        assert_eq!(renderer.slot.available_permits(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_render_past_its_timeout_is_killed_and_refused() {
        let dir = tempfile::tempdir().unwrap();
        let renderer = Renderer {
            timeout: Duration::from_millis(300),
            ..Renderer::new(fake_dot(dir.path(), "30"))
        };
        let answer = renderer.render("digraph{}", "svg", "dot").await;
        assert!(matches!(answer, Err(RenderError::TimedOut(_))), "{answer:?}");
        let pid = log(dir.path()).first().map(|l| l.trim_start_matches("start ").to_string());
        let pid = pid.expect("the fake dot started");
        let mut gone = false;
        for _ in 0..100 {
            if !alive(&pid) {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "dot {pid} still runs after its timeout");
        assert!(renderer.cached("digraph{}", "svg", "dot").is_none());
    }

    #[tokio::test]
    async fn a_failing_dot_is_an_error_and_nothing_is_cached() {
        let renderer = Renderer::new("/bin/false");
        assert!(matches!(renderer.render("x", "svg", "dot").await, Err(RenderError::Failed(_))));
        assert!(renderer.cached("x", "svg", "dot").is_none());
        let missing = Renderer::new("/nonexistent/dot");
        let e = missing.render("x", "svg", "dot").await.expect_err("no such program");
        assert_eq!(
            e.to_string(),
            "Graphviz's `/nonexistent/dot` is not installed on this host: install Graphviz \
             (package `graphviz`) for svg, png and the other formats, or ask for /graph?format=dot"
        );
    }
}
