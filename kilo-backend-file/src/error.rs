//! The one error type of the file backend: every variant names the file, and the line where
//! there is one.

/// Why a mesh file or Kubernetes YAML snapshot could not be read.
///
/// Messages follow `FILE:LINE: OBJECT: KEY: what is wrong`, for example
/// `mesh.toml:14: node "gcp-2": public-key: invalid base64`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The file could not be opened or read (missing, permission denied, …).
    #[error("{file}: {message}")]
    Read {
        /// The file as the user named it.
        file: String,
        /// The operating system's reason.
        message: String,
    },
    /// The file is larger than [`crate::MAX_FILE_SIZE`].
    #[error("{file}: file is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The file as the user named it.
        file: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// The file is not UTF-8 text (a binary file, or another encoding).
    #[error("{file}: not UTF-8 text (invalid byte at offset {offset}); is this a binary file?")]
    NotUtf8 {
        /// The file as the user named it.
        file: String,
        /// The byte offset of the first invalid byte.
        offset: usize,
    },
    /// The file is empty or holds only white space and comments.
    #[error("{file}: file is empty")]
    Empty {
        /// The file as the user named it.
        file: String,
    },
    /// The file's directory cannot be watched for changes.
    #[error("{file}: cannot watch for changes: {message}")]
    Watch {
        /// The file as the user named it.
        file: String,
        /// The watcher's reason.
        message: String,
    },
    /// The content is neither a mesh TOML file nor Kubernetes YAML.
    #[error(
        "{file}:{line}: cannot tell the format: want a mesh TOML file ([mesh], [[node]], \
         [[peer]] tables) or Kubernetes YAML (apiVersion and kind keys)"
    )]
    UnknownFormat {
        /// The file as the user named it.
        file: String,
        /// The first significant line.
        line: usize,
    },
    /// The text does not parse as TOML or YAML.
    #[error("{file}:{line}: {message}")]
    Syntax {
        /// The file as the user named it.
        file: String,
        /// The line of the error (1-based).
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// A key holds a value that is not acceptable.
    #[error("{file}:{line}: {object}: {key}: {message}")]
    Value {
        /// The file as the user named it.
        file: String,
        /// The line of the value (1-based).
        line: usize,
        /// The object: `[mesh]`, `node "gcp-2"`, `peer "laptop"` or `node #3` when unnamed.
        object: String,
        /// The key, kebab-case as in the file.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A key the format does not know.
    #[error("{file}:{line}: {object}: unknown key {key:?} (known keys: {known})")]
    UnknownKey {
        /// The file as the user named it.
        file: String,
        /// The line of the key (1-based).
        line: usize,
        /// The object holding the key (`top level`, `[mesh]`, `node "a"`, …).
        object: String,
        /// The unknown key.
        key: String,
        /// The keys allowed there, comma-separated.
        known: &'static str,
    },
    /// A required key is absent.
    #[error("{file}:{line}: {object}: missing required key {key:?}")]
    Missing {
        /// The file as the user named it.
        file: String,
        /// The line where the object starts (1-based).
        line: usize,
        /// The object lacking the key.
        object: String,
        /// The missing key.
        key: &'static str,
    },
    /// Two objects share a name or a public key.
    #[error(
        "{file}:{line}: {object}: {key}: {value} is already used by {other} at line {other_line}"
    )]
    Duplicate {
        /// The file as the user named it.
        file: String,
        /// The line of the second use (1-based).
        line: usize,
        /// The object with the second use.
        object: String,
        /// The key that must be unique.
        key: UniqueKey,
        /// The duplicated value, quoted.
        value: String,
        /// The object with the first use.
        other: String,
        /// The line of the first use (1-based).
        other_line: usize,
    },
}

/// A key whose value must be unique in a mesh file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UniqueKey {
    /// `name`: unique among nodes, and among peers.
    Name,
    /// `public-key`: unique among all nodes and peers.
    PublicKey,
}

impl std::fmt::Display for UniqueKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UniqueKey::Name => "name",
            UniqueKey::PublicKey => "public-key",
        })
    }
}

/// The 1-based line of byte offset `offset` in `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    1 + text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count()
}
