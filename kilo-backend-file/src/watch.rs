//! [`FileBackend`]: a mesh file (or Kubernetes YAML snapshot) as a [`Backend`] that re-reads the
//! file when it changes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kilo_core::{Backend, Event, Node, Snapshot};
use notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use crate::{FileError, Options, display_name, parse_str, read_text};

/// How long the file must be quiet before it is re-read.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// A mesh file as a [`Backend`].
///
/// [`FileBackend::open`] reads the file once (failing if it does not parse) and watches its
/// directory, so that editors that write a new file and rename it over the old one, and
/// Kubernetes ConfigMap volumes that swap a symbolic link, are caught. Each change, once the
/// directory has been quiet for [`DEBOUNCE`], re-reads the file:
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
    _debouncer: Option<Debouncer<RecommendedWatcher>>,
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
            _debouncer: None,
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
        let mut debouncer = new_debouncer(DEBOUNCE, move |_: DebounceEventResult| {
            // Errors from the watcher also trigger a re-read: the file is the truth.
            let _ = tx.send(());
        })
        .map_err(watch_err)?;
        debouncer.watcher().watch(&dir, RecursiveMode::NonRecursive).map_err(watch_err)?;
        self.changes = Some(rx);
        self._debouncer = Some(debouncer);
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

    /// Reads the file again (standard input: the snapshot read at start).
    fn read(&self) -> Result<Snapshot, FileError> {
        if self.path == Path::new("-") {
            return Ok(self.current.clone());
        }
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
