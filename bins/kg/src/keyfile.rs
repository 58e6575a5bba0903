//! The node's private key file (upstream 4.2 step 1): read it, or create it 0600 in a 0700
//! directory. Keys never reach a log line.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result, anyhow};
use kilo_core::PrivateKey;

/// Reads the key at `path`, creating it (and its directory) when missing. A file readable by
/// others is tightened to 0600 with a warning. An unparseable key is an error naming the file
/// (upstream silently replaced it, which changes the node's identity).
pub fn load_or_create(path: &Path) -> Result<PrivateKey> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    match fs::read_to_string(path) {
        Ok(text) => {
            let meta = fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    file = %path.display(),
                    mode = format!("{:o}", meta.permissions().mode() & 0o777),
                    "private key file is readable by others; tightening it to 0600"
                );
                fs::set_permissions(path, fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("chmod 0600 {}", path.display()))?;
            }
            text.trim()
                .parse::<PrivateKey>()
                .map_err(|e| anyhow!("{}: not a WireGuard private key: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| anyhow!("no randomness for a new key: {e}"))?;
            let key = PrivateKey::from_random_bytes(bytes);
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            file.write_all(key.expose_base64().as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            tracing::info!(file = %path.display(), public_key = %key.public_key(), "generated a new private key");
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
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
