//! Reading input safely (size limit, UTF-8) and telling the two formats apart by content.

use std::io::Read;
use std::path::Path;

use crate::error::FileError;

/// The largest input accepted, in bytes (64 MiB): ten thousand Kubernetes nodes as YAML take
/// about 19 MB.
pub const MAX_FILE_SIZE: u64 = 64 << 20;

/// The two formats the file backend reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// The static mesh file (contract 3).
    MeshToml,
    /// Kubernetes `Node` and `Peer` objects (contract 4); JSON is read as YAML too.
    KubeYaml,
}

/// How an input is named in messages: `<stdin>` for `-`, else the path as given.
pub fn display_name(path: &Path) -> String {
    if path == Path::new("-") { "<stdin>".to_string() } else { path.display().to_string() }
}

/// Reads `path` (`-`: standard input) as UTF-8 text of at most [`MAX_FILE_SIZE`] bytes.
pub fn read_text(path: &Path) -> Result<String, FileError> {
    let file = display_name(path);
    if path == Path::new("-") {
        return read_reader(std::io::stdin().lock(), &file);
    }
    let read_err =
        |e: std::io::Error| FileError::Read { file: file.clone(), message: e.to_string() };
    let f = std::fs::File::open(path).map_err(read_err)?;
    let metadata = f.metadata().map_err(read_err)?;
    if metadata.is_dir() {
        return Err(FileError::Read { file, message: "is a directory".to_string() });
    }
    // Room for the whole file (and one byte more, to see that it ends) at once, instead of
    // growing the buffer as it fills.
    let size = metadata.len().min(MAX_FILE_SIZE + 1);
    read_into(f, &file, Vec::with_capacity(usize::try_from(size).unwrap_or(0) + 1))
}

/// Reads UTF-8 text of at most [`MAX_FILE_SIZE`] bytes from `reader`; `file` names it in errors.
pub fn read_reader(reader: impl Read, file: &str) -> Result<String, FileError> {
    read_into(reader, file, Vec::new())
}

/// [`read_reader`] into `bytes` (empty; its capacity a guess of the size).
fn read_into(reader: impl Read, file: &str, mut bytes: Vec<u8>) -> Result<String, FileError> {
    reader
        .take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| FileError::Read { file: file.to_string(), message: e.to_string() })?;
    text_from_bytes(bytes, file)
}

/// Checks size and encoding of bytes read from `file`.
pub fn text_from_bytes(bytes: Vec<u8>, file: &str) -> Result<String, FileError> {
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(FileError::TooLarge { file: file.to_string(), limit: MAX_FILE_SIZE });
    }
    String::from_utf8(bytes).map_err(|e| FileError::NotUtf8 {
        file: file.to_string(),
        offset: e.utf8_error().valid_up_to(),
    })
}

/// Tells the format from the first significant line (blank lines and `#` comments skipped):
/// `[table]`, `[[table]]` or `key = value` is TOML; `---`, `key:` or `{` is YAML (JSON included).
///
/// Errors: [`FileError::Empty`] when nothing significant is there, [`FileError::UnknownFormat`]
/// when the first significant line fits neither.
pub fn detect_format(text: &str, file: &str) -> Result<Format, FileError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let Some((index, line)) =
        text.lines().map(str::trim).enumerate().find(|(_, l)| !l.is_empty() && !l.starts_with('#'))
    else {
        return Err(FileError::Empty { file: file.to_string() });
    };
    if line.starts_with('[') {
        return Ok(Format::MeshToml);
    }
    if line.starts_with("---") || line.starts_with('{') || line.starts_with("%YAML") {
        return Ok(Format::KubeYaml);
    }
    let key_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '"' | '\'')))
        .unwrap_or(line.len());
    let rest = line[key_end..].trim_start();
    if key_end > 0 && rest.starts_with('=') {
        return Ok(Format::MeshToml);
    }
    if key_end > 0 && rest.starts_with(':') {
        return Ok(Format::KubeYaml);
    }
    Err(FileError::UnknownFormat { file: file.to_string(), line: index + 1 })
}
