//! `FileBackend`: the watch of a mesh file.

use std::path::Path;
use std::time::Duration;

use kilo_backend_file::{FileBackend, FileError, Options};
use kilo_core::{Backend, Event, Node, Snapshot};

const K1: &str = "a2V5MQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

fn mesh(names: &[&str]) -> String {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut key = [0u8; 32];
            key[0] = i as u8 + 1;
            format!(
                "[[node]]\nname = \"{n}\"\npublic-key = \"{}\"\n",
                kilo_core::Key::from_bytes(key)
            )
        })
        .collect()
}

/// The next event, or a panic after a generous timeout.
async fn next(backend: &mut FileBackend) -> Result<Event, FileError> {
    tokio::time::timeout(Duration::from_secs(10), backend.next_event())
        .await
        .expect("an event within 10 s")
        .expect("the backend keeps running")
}

fn names(snapshot: &Snapshot) -> Vec<&str> {
    snapshot.nodes.iter().map(|n| n.name.as_str()).collect()
}

fn reset(event: Result<Event, FileError>) -> Snapshot {
    match event {
        Ok(Event::Reset(s)) => s,
        other => panic!("want a reset, got {other:?}"),
    }
}

/// Writes a new file and renames it over `path`, as editors do.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn edits_reset_breaks_report_errors_and_fixes_reset_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.toml");
    std::fs::write(&path, mesh(&["a"])).unwrap();
    let mut backend = FileBackend::open(&path, Options::default()).unwrap();
    assert_eq!(names(&backend.snapshot().await.unwrap()), ["a"]);

    std::fs::write(&path, mesh(&["a", "b"])).unwrap();
    assert_eq!(names(&reset(next(&mut backend).await)), ["a", "b"]);

    std::fs::write(&path, "[[node]]\nname = \"a\"\npublic-key = \"broken\"\n").unwrap();
    let err = next(&mut backend).await.unwrap_err();
    assert!(err.to_string().contains(":3: node \"a\": public-key: invalid base64"), "{err}");
    assert_eq!(names(backend.current()), ["a", "b"], "the last good snapshot is kept");

    replace(&path, &mesh(&["a", "b", "c"]));
    assert_eq!(names(&reset(next(&mut backend).await)), ["a", "b", "c"]);
    assert_eq!(names(backend.current()), ["a", "b", "c"]);
}

#[tokio::test]
async fn changes_to_other_files_in_the_directory_are_not_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.toml");
    std::fs::write(&path, mesh(&["a"])).unwrap();
    let mut backend = FileBackend::open(&path, Options::default()).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(800), backend.next_event()).await;
    assert!(quiet.is_err(), "no event for an unrelated file: {quiet:?}");
    std::fs::write(&path, mesh(&["z"])).unwrap();
    assert_eq!(names(&reset(next(&mut backend).await)), ["z"]);
}

#[tokio::test]
async fn a_removed_file_is_an_error_and_its_return_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.toml");
    std::fs::write(&path, mesh(&["a"])).unwrap();
    let mut backend = FileBackend::open(&path, Options::default()).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(next(&mut backend).await, Err(FileError::Read { .. })));
    std::fs::write(&path, mesh(&["a"])).unwrap();
    assert_eq!(names(&reset(next(&mut backend).await)), ["a"]);
}

#[tokio::test]
async fn opening_a_broken_file_fails_with_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.toml");
    std::fs::write(&path, "").unwrap();
    let err = FileBackend::open(&path, Options::default()).unwrap_err();
    assert_eq!(err.to_string(), format!("{}: file is empty", path.display()));
}

#[tokio::test]
async fn publishing_does_nothing_to_a_read_only_mesh_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.toml");
    let text = format!("[[node]]\nname = \"a\"\npublic-key = \"{K1}\"\n");
    std::fs::write(&path, &text).unwrap();
    let mut backend = FileBackend::open(&path, Options::default()).unwrap();
    backend.publish_local(&Node { name: "a".into(), ..Node::default() }).await.unwrap();
    backend.clean_up_local("a").await.unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn backend_futures_are_send() {
    fn is_send<T: Send>(_: &T) {}
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.toml");
    std::fs::write(&path, format!("[[node]]\nname = \"a\"\npublic-key = \"{K1}\"\n")).unwrap();
    let mut backend = FileBackend::open(&path, Options::default()).unwrap();
    is_send(&backend.next_event());
}

#[tokio::test]
async fn reading_the_file_is_no_change_so_the_watch_never_reads_it_in_a_loop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.toml");
    std::fs::write(&path, mesh(&["a"])).unwrap();
    let mut backend = FileBackend::open(&path, Options::default()).unwrap();
    assert_eq!(backend.reads(), 1);
    // Someone reads the file (opens and closes it without writing): not a change.
    for _ in 0..5 {
        std::fs::read_to_string(&path).unwrap();
    }
    let quiet = tokio::time::timeout(Duration::from_millis(1500), backend.next_event()).await;
    assert!(quiet.is_err(), "no event: {quiet:?}");
    assert_eq!(backend.reads(), 1, "reads of the file are not changes");

    // An edit is read, and the watch's own read of it raises nothing more.
    replace(&path, &mesh(&["b"]));
    assert_eq!(names(&reset(next(&mut backend).await)), ["b"]);
    let after_edit = backend.reads();
    let quiet = tokio::time::timeout(Duration::from_millis(1500), backend.next_event()).await;
    assert!(quiet.is_err(), "no event: {quiet:?}");
    assert_eq!(backend.reads(), after_edit, "the watch's own read raised another read");
}
