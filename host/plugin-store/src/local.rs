//! The embedded blob store: module bytes in a directory, one file per digest.
//!
//! ```text
//! <root>/blobs/sha256/<hex>                 module bytes
//! ```
//!
//! Writes go to a temporary file that is renamed into place, so a crash never
//! leaves a half-written blob behind.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::error::StoreError;
use crate::manifest::Digest;
use crate::source::BlobStore;

/// Module blobs in a directory, one file per digest.
#[derive(Debug, Clone)]
pub struct LocalBlobStore {
    dir: PathBuf,
}

impl LocalBlobStore {
    /// Blobs under `root/blobs/sha256`, created if missing.
    pub async fn open(root: &Path) -> Result<Self, StoreError> {
        let dir = root.join("blobs").join("sha256");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(StoreError::io(format!("cannot create `{}`", dir.display())))?;
        Ok(Self { dir })
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }
}

#[async_trait]
impl BlobStore for LocalBlobStore {
    async fn put(&self, digest: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.path(digest);
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(());
        }
        write_atomically(&path, bytes).await
    }

    async fn get(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.path(digest);
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::NotFound(format!("module blob {digest}")))
            }
            Err(e) => Err(StoreError::io(format!("cannot read `{}`", path.display()))(
                e,
            )),
        }
    }
}

/// Writes `bytes` to a temporary sibling, then renames it over `path`.
async fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(StoreError::io(format!("cannot create `{}`", dir.display())))?;
    // Unique per writer: two writers of one blob must not share a temporary.
    let tmp = dir.join(format!(
        ".{}.{}.{:016x}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("blob"),
        std::process::id(),
        rand::random::<u64>()
    ));
    tokio::fs::write(&tmp, bytes)
        .await
        .map_err(StoreError::io(format!("cannot write `{}`", tmp.display())))?;
    tokio::fs::rename(&tmp, path)
        .await
        .map_err(StoreError::io(format!(
            "cannot move `{}` into place",
            path.display()
        )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blobs_round_trip_and_missing_ones_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBlobStore::open(dir.path()).await.unwrap();
        let digest = Digest::of(b"bytes");
        assert!(store.get(&digest).await.unwrap_err().is_not_found());
        store.put(&digest, b"bytes").await.unwrap();
        store.put(&digest, b"bytes").await.unwrap();
        assert_eq!(store.get(&digest).await.unwrap(), b"bytes");
    }
}
