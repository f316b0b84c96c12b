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
use tokio::io::AsyncReadExt;

use crate::error::StoreError;
use crate::manifest::Digest;
use crate::source::{BlobStore, Progress};

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
    async fn put_with_progress(
        &self,
        digest: &Digest,
        bytes: &[u8],
        progress: Progress<'_>,
    ) -> Result<(), StoreError> {
        // A blob already there is kept if it is these bytes and replaced if
        // not, so a damaged blob is repaired by publishing again.
        let intact = self.holds(digest, bytes.len() as u64).await;
        if !intact {
            write_atomically(&self.path(digest), bytes).await?;
        }
        progress(bytes.len() as u64);
        Ok(())
    }

    async fn get(&self, digest: &Digest, size: u64) -> Result<Vec<u8>, StoreError> {
        let path = self.path(digest);
        let unreadable = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StoreError::NotFound(format!("blob {digest}"))
            } else {
                StoreError::io(format!("cannot read `{}`", path.display()))(e)
            }
        };
        let file = tokio::fs::File::open(&path).await.map_err(unreadable)?;
        // Read one byte past `size`, so a larger file is caught without
        // reading all of it.
        let mut bytes = Vec::new();
        file.take(size.saturating_add(1))
            .read_to_end(&mut bytes)
            .await
            .map_err(unreadable)?;
        if bytes.len() as u64 > size {
            let actual = tokio::fs::metadata(&path)
                .await
                .map_or(size + 1, |m| m.len());
            return Err(StoreError::SizeMismatch {
                expected: size,
                actual,
            });
        }
        Ok(bytes)
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
    async fn keeps_the_blob_store_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBlobStore::open(dir.path()).await.unwrap();
        crate::contract::blob_store(std::sync::Arc::new(store), 3 << 20).await;
    }
}
