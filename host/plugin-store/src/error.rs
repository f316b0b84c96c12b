use crate::manifest::Digest;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such plugin version, or no such blob.
    #[error("{0} not found")]
    NotFound(String),
    /// The version exists already with different content; versions are immutable.
    #[error(
        "{kind} `{name}` version `{version}` is already published with other bytes; publish a new version"
    )]
    AlreadyPublished {
        /// `plugin` or `model`.
        kind: &'static str,
        name: String,
        version: String,
    },
    /// A name, version or spec that cannot be accepted; says what to fix.
    #[error("{0}")]
    Invalid(String),
    /// The bytes fetched do not match the manifest: tampering or corruption.
    #[error("module digest mismatch: manifest says {expected}, fetched bytes are {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    /// The stored blob is not the size the manifest names: tampering or corruption.
    #[error("module size mismatch: manifest says {expected} bytes, the store holds {actual}")]
    SizeMismatch { expected: u64, actual: u64 },
    /// A stored record cannot be read back.
    #[error("{what} is corrupt: {reason}")]
    Corrupt { what: String, reason: String },
    /// A conditional write lost to another writer; read again and retry.
    #[error("{0}")]
    Conflict(String),
    /// The backing database or service failed.
    #[error("{0}")]
    Backend(String),
    /// The backing storage failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }

    /// True when the thing asked for does not exist (as opposed to a failure).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound(_))
    }
}
