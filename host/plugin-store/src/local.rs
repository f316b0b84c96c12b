//! The embedded default: both stores as plain directories, no set-up.
//!
//! ```text
//! <root>/blobs/sha256/<hex>                 module bytes
//! <root>/registry/<name>/<version>.json     manifests
//! ```
//!
//! Writes go to a temporary file that is renamed into place, so a crash never
//! leaves a half-written blob or manifest behind.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use semver::Version;

use crate::error::StoreError;
use crate::manifest::{Digest, PluginManifest, PluginName};
use crate::source::{BlobStore, Registry};

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

/// Manifests in a directory, one JSON file per version.
#[derive(Debug, Clone)]
pub struct LocalRegistry {
    dir: PathBuf,
}

impl LocalRegistry {
    /// Manifests under `root/registry`, created if missing.
    pub async fn open(root: &Path) -> Result<Self, StoreError> {
        let dir = root.join("registry");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(StoreError::io(format!("cannot create `{}`", dir.display())))?;
        Ok(Self { dir })
    }

    fn path(&self, name: &PluginName, version: &Version) -> PathBuf {
        // Names are validated ([a-z0-9-]) and versions are semver: no path tricks.
        self.dir.join(name.as_str()).join(format!("{version}.json"))
    }

    async fn read(path: &Path) -> Result<Option<PluginManifest>, StoreError> {
        let text = match tokio::fs::read(path).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StoreError::io(format!("cannot read `{}`", path.display()))(
                    e,
                ));
            }
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path: path.to_owned(),
                reason: e.to_string(),
            })
    }
}

#[async_trait]
impl Registry for LocalRegistry {
    async fn put(&self, manifest: &PluginManifest) -> Result<(), StoreError> {
        let path = self.path(&manifest.name, &manifest.version);
        if let Some(existing) = Self::read(&path).await? {
            return if existing.same_content(manifest) {
                Ok(())
            } else {
                Err(StoreError::AlreadyPublished {
                    name: manifest.name.to_string(),
                    version: manifest.version.to_string(),
                })
            };
        }
        let json = serde_json::to_vec_pretty(manifest)
            .map_err(|e| StoreError::Invalid(format!("cannot encode manifest: {e}")))?;
        write_atomically(&path, &json).await
    }

    async fn get(
        &self,
        name: &PluginName,
        version: &Version,
    ) -> Result<PluginManifest, StoreError> {
        Self::read(&self.path(name, version))
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("plugin `{name}` version `{version}`")))
    }

    async fn list(&self) -> Result<Vec<PluginManifest>, StoreError> {
        let mut manifests = Vec::new();
        for plugin_dir in read_dir(&self.dir).await? {
            for file in read_dir(&plugin_dir).await? {
                if file.extension().is_some_and(|e| e == "json")
                    && let Some(manifest) = Self::read(&file).await?
                {
                    manifests.push(manifest);
                }
            }
        }
        manifests.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        Ok(manifests)
    }
}

async fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let context = || format!("cannot list `{}`", dir.display());
    let mut entries = tokio::fs::read_dir(dir)
        .await
        .map_err(StoreError::io(context()))?;
    let mut paths = Vec::new();
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(StoreError::io(context()))?
    {
        paths.push(entry.path());
    }
    Ok(paths)
}

/// Writes `bytes` to a temporary sibling, then renames it over `path`.
async fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(StoreError::io(format!("cannot create `{}`", dir.display())))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("blob"),
        std::process::id()
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
    use std::sync::Arc;

    use super::*;
    use crate::manifest::PublishSpec;
    use crate::source::PluginSource;

    const MODULE: &[u8] = b"\0asm\x0d\0\x01\0 pretend component";

    async fn source(root: &Path) -> PluginSource {
        PluginSource::new(
            Arc::new(LocalBlobStore::open(root).await.unwrap()),
            Arc::new(LocalRegistry::open(root).await.unwrap()),
        )
    }

    fn spec(name: &str, version: &str) -> PublishSpec {
        PublishSpec::from_toml(&format!("name = \"{name}\"\nversion = \"{version}\"")).unwrap()
    }

    #[tokio::test]
    async fn publish_then_fetch_returns_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let source = source(dir.path()).await;
        let published = source.publish(MODULE, spec("echo", "1.0.0")).await.unwrap();
        let manifest = source
            .manifest(&"echo".parse().unwrap(), &Version::new(1, 0, 0))
            .await
            .unwrap();
        assert_eq!(manifest, published);
        assert_eq!(source.module(&manifest).await.unwrap(), MODULE);
        assert_eq!(source.list().await.unwrap(), vec![published]);
    }

    #[tokio::test]
    async fn versions_are_immutable_but_republishing_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let source = source(dir.path()).await;
        source.publish(MODULE, spec("echo", "1.0.0")).await.unwrap();
        source.publish(MODULE, spec("echo", "1.0.0")).await.unwrap();
        let err = source
            .publish(b"\0asm other bytes", spec("echo", "1.0.0"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::AlreadyPublished { .. }), "{err}");
    }

    #[tokio::test]
    async fn tampered_blobs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let source = source(dir.path()).await;
        let manifest = source.publish(MODULE, spec("echo", "1.0.0")).await.unwrap();
        let blob = dir.path().join("blobs/sha256").join(manifest.digest.hex());
        std::fs::write(&blob, b"\0asm tampered!!!!!!!!!!!!!!!").unwrap();
        let err = source.module(&manifest).await.unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    }

    #[tokio::test]
    async fn unknown_versions_and_non_wasm_modules_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let source = source(dir.path()).await;
        let err = source
            .manifest(&"nope".parse().unwrap(), &Version::new(1, 0, 0))
            .await
            .unwrap_err();
        assert!(err.is_not_found());
        assert_eq!(err.to_string(), "plugin `nope` version `1.0.0` not found");
        let err = source
            .publish(b"MZ not wasm", spec("x", "1.0.0"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not WebAssembly"), "{err}");
    }
}
