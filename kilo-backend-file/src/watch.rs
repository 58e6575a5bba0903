//! [`FileBackend`]: a mesh file (or Kubernetes YAML snapshot) as a [`Backend`] that re-reads the
//! file when it changes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use kilo_core::{Backend, Event, Node, Snapshot};
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::{FileError, Options, display_name, parse_str, read_text};

/// How long the directory must be quiet after a change that may be partial (a write still
/// going on, a file created or deleted) before the file is re-read.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// How long the directory must be quiet after a change that completes a file (a file closed
/// after writing, or renamed into place) before it is re-read.
pub const SETTLE: Duration = Duration::from_millis(20);

/// The longest a stream of changes delays a re-read.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// A mesh file as a [`Backend`].
///
/// [`FileBackend::open`] reads the file once (failing if it does not parse) and watches its
/// directory, so that editors that write a new file and rename it over the old one, and
/// Kubernetes ConfigMap volumes that swap a symbolic link, are caught. Each change re-reads the
/// file once the directory has been quiet for [`SETTLE`] after a change that completes a file
/// (closed after writing, renamed into place), or for [`DEBOUNCE`] after any other (a write
/// still going on, say); a file opened or read, by the agent itself or anyone else, is no change:
///
/// - it parses and differs from the last good snapshot (or the last read failed): the next event
///   is [`Event::Reset`] with the new snapshot;
/// - it does not parse: the last good snapshot is kept, the next event is `Some(Err(..))`, and
///   watching goes on (the same error is reported once, not at every change);
/// - nothing that matters changed: no event.
///
/// A mesh file is read-only to the agent: [`Backend::publish_local`] and
/// [`Backend::clean_up_local`] do nothing. Standard input (`-`) is read once and never changes:
/// [`Backend::next_event`] then returns `None`.
///
/// The watch runs on `notify`'s own threads; [`Backend::next_event`] only awaits a channel, so
/// it works under any async runtime.
pub struct FileBackend {
    path: PathBuf,
    options: Options,
    current: Snapshot,
    last_error: Option<FileError>,
    changes: Option<UnboundedReceiver<()>>,
    _watcher: Option<RecommendedWatcher>,
    reads: AtomicU64,
}

/// What a watched event says about the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// Something changed; more may follow (a write going on).
    Partial,
    /// A file was completed: closed after writing, or renamed into place.
    Complete,
}

/// What `event` means for the watched directory: nothing when a file was only opened or read
/// (the agent's own re-reads raise those, and must not raise another).
fn classify(event: &notify::Result<notify::Event>) -> Option<Change> {
    let Ok(event) = event else {
        // Errors from the watcher also trigger a re-read: the file is the truth.
        return Some(Change::Partial);
    };
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(Change::Complete),
        EventKind::Access(_) => None,
        EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)) => {
            Some(Change::Complete)
        }
        _ => Some(Change::Partial),
    }
}

/// Turns the watcher's changes into one signal per burst: after the first change, waits until
/// the directory is quiet ([`SETTLE`] once a file is complete, [`DEBOUNCE`] otherwise, at most
/// [`MAX_WAIT`] in all), then signals `tx`. Returns when the watcher or the receiver is gone.
fn debounce(raw: Receiver<Change>, tx: UnboundedSender<()>) {
    while let Ok(first) = raw.recv() {
        let start = Instant::now();
        let mut complete = first == Change::Complete;
        while start.elapsed() < MAX_WAIT {
            match raw.recv_timeout(if complete { SETTLE } else { DEBOUNCE }) {
                Ok(change) => complete |= change == Change::Complete,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        if tx.send(()).is_err() {
            return;
        }
    }
}

impl std::fmt::Debug for FileBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBackend")
            .field("path", &self.path)
            .field("nodes", &self.current.nodes.len())
            .field("peers", &self.current.peers.len())
            .field("watching", &self.changes.is_some())
            .finish()
    }
}

impl FileBackend {
    /// Reads and parses `path` (`-`: standard input) and starts watching it.
    ///
    /// Errors: the file's first read or parse error, or [`FileError::Watch`] when its directory
    /// cannot be watched.
    pub fn open(path: impl Into<PathBuf>, options: Options) -> Result<FileBackend, FileError> {
        let path = path.into();
        let current = parse_str(&read_text(&path)?, &display_name(&path), &options)?;
        let mut backend = FileBackend {
            path,
            options,
            current,
            last_error: None,
            changes: None,
            _watcher: None,
            reads: AtomicU64::new(1),
        };
        if backend.path != Path::new("-") {
            backend.watch()?;
        }
        Ok(backend)
    }

    fn watch(&mut self) -> Result<(), FileError> {
        let watch_err = |e: notify::Error| FileError::Watch {
            file: display_name(&self.path),
            message: e.to_string(),
        };
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let (tx, rx) = unbounded_channel();
        let (raw_tx, raw_rx) = std::sync::mpsc::channel();
        let mut watcher = notify::recommended_watcher(move |event| {
            if let Some(change) = classify(&event) {
                let _ = raw_tx.send(change);
            }
        })
        .map_err(watch_err)?;
        watcher.watch(&dir, RecursiveMode::NonRecursive).map_err(watch_err)?;
        std::thread::Builder::new()
            .name("kilo-file-watch".into())
            .spawn(move || debounce(raw_rx, tx))
            .map_err(|e| FileError::Watch {
                file: display_name(&self.path),
                message: e.to_string(),
            })?;
        self.changes = Some(rx);
        self._watcher = Some(watcher);
        Ok(())
    }

    /// The file as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last snapshot that parsed.
    pub fn current(&self) -> &Snapshot {
        &self.current
    }

    /// How many times the file has been read, the first read included.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Reads the file again (standard input: the snapshot read at start).
    fn read(&self) -> Result<Snapshot, FileError> {
        if self.path == Path::new("-") {
            return Ok(self.current.clone());
        }
        self.reads.fetch_add(1, Ordering::Relaxed);
        parse_str(&read_text(&self.path)?, &display_name(&self.path), &self.options)
    }
}

impl Backend for FileBackend {
    type Error = FileError;

    /// Re-reads the file (standard input: the snapshot read at start).
    async fn snapshot(&mut self) -> Result<Snapshot, FileError> {
        let snapshot = self.read()?;
        self.current = snapshot.clone();
        Ok(snapshot)
    }

    async fn next_event(&mut self) -> Option<Result<Event, FileError>> {
        loop {
            let changes = self.changes.as_mut()?;
            changes.recv().await?;
            while changes.try_recv().is_ok() {}
            match self.read() {
                Ok(snapshot) => {
                    let recovered = self.last_error.take().is_some();
                    if recovered || snapshot != self.current {
                        self.current = snapshot.clone();
                        return Some(Ok(Event::Reset(snapshot)));
                    }
                }
                Err(e) => {
                    if self.last_error.as_ref() != Some(&e) {
                        self.last_error = Some(e.clone());
                        return Some(Err(e));
                    }
                }
            }
        }
    }

    /// Does nothing: a mesh file is read-only to the agent.
    async fn publish_local(&mut self, _node: &Node) -> Result<(), FileError> {
        Ok(())
    }

    /// Does nothing: a mesh file is read-only to the agent.
    async fn clean_up_local(&mut self, _name: &str) -> Result<(), FileError> {
        Ok(())
    }
}
