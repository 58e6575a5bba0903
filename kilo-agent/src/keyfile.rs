//! The node's private key file (upstream 4.2 step 1): read it, or create it 0600 in a 0700
//! directory. Keys never reach a log line.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kilo_core::{PrivateKey, key::KeyError};

/// Why the key file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// A file operation failed (`action` is e.g. `creating`, `reading`).
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no WireGuard private key (its content is never shown).
    #[error("{}: not a WireGuard private key: {reason}", path.display())]
    NotAKey {
        /// The key file.
        path: PathBuf,
        /// Why it does not parse.
        reason: KeyError,
    },
    /// The system has no randomness for a new key.
    #[error("no randomness for a new key: {0}")]
    Randomness(getrandom::Error),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError {
    let path = path.to_path_buf();
    move |source| KeyFileError::Io { action, path, source }
}

/// Reads the key at `path`, creating it (and its directory) when missing. A file readable by
/// others is tightened to 0600 with a warning. An unparseable key is an error naming the file
/// (upstream silently replaced it, which changes the node's identity).
pub fn load_or_create(path: &Path) -> Result<PrivateKey, KeyFileError> {
    match fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = new_key()?;
            create(path)?.write_all(key.expose_base64().as_bytes()).map_err(io("writing", path))?;
            tracing::info!(file = %path.display(), public_key = %key.public_key(), "generated a new private key");
            Ok(key)
        }
        Err(e) => Err(io("reading", path)(e)),
        Ok(text) => {
            let meta = fs::metadata(path).map_err(io("reading", path))?;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    file = %path.display(),
                    mode = format!("{:o}", meta.permissions().mode() & 0o777),
                    "private key file is readable by others; tightening it to 0600"
                );
                fs::set_permissions(path, fs::Permissions::from_mode(0o600))
                    .map_err(io("chmod 0600", path))?;
            }
            text.trim()
                .parse::<PrivateKey>()
                .map_err(|reason| KeyFileError::NotAKey { path: path.to_path_buf(), reason })
        }
    }
}

fn new_key() -> Result<PrivateKey, KeyFileError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(KeyFileError::Randomness)?;
    Ok(PrivateKey::from_random_bytes(bytes))
}

/// Creates `path` 0600 (and its directory 0700 when missing); an existing file is an error.
fn create(path: &Path) -> Result<fs::File, KeyFileError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("creating", dir))?;
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true).mode(0o600);
    options.open(path).map_err(io("creating", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_key_is_created_0600_in_a_0700_directory_and_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("kilo/key");
        let key = load_or_create(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(
            fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(load_or_create(&path).unwrap(), key);
    }

    #[test]
    fn a_loose_key_file_is_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("key");
        fs::write(&path, PrivateKey::from_random_bytes([3; 32]).expose_base64()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        load_or_create(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_garbage_key_file_is_an_error_naming_the_file_without_its_content() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("key");
        fs::write(&path, "not-a-key-secret").unwrap();
        let err = load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("key") && err.contains("not a WireGuard private key"));
        assert!(!err.contains("not-a-key-secret"));
    }
}
