//! The store traits and [`PluginSource`], the seam Axon loads plugins through.

use std::sync::Arc;

use async_trait::async_trait;
use semver::Version;

use crate::error::StoreError;
use crate::manifest::{Digest, PluginManifest, PluginName, PublishSpec};

/// Module bytes addressed by their sha256 digest.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Stores `bytes` under `digest` (the caller computed it). Idempotent.
    async fn put(&self, digest: &Digest, bytes: &[u8]) -> Result<(), StoreError>;
    /// The bytes stored under `digest`, unchecked: [`PluginSource`] checks them.
    async fn get(&self, digest: &Digest) -> Result<Vec<u8>, StoreError>;
}

/// Immutable manifests, one per plugin version.
#[async_trait]
pub trait Registry: Send + Sync {
    /// Records `manifest`. Publishing the same content again is a no-op;
    /// different content under an existing version is [`StoreError::AlreadyPublished`].
    async fn put(&self, manifest: &PluginManifest) -> Result<(), StoreError>;
    /// The manifest of `name` at `version`.
    async fn get(&self, name: &PluginName, version: &Version)
    -> Result<PluginManifest, StoreError>;
    /// Every manifest, sorted by name then version.
    async fn list(&self) -> Result<Vec<PluginManifest>, StoreError>;
}

/// Publishes to and fetches from a blob store and a registry together.
#[derive(Clone)]
pub struct PluginSource {
    blobs: Arc<dyn BlobStore>,
    registry: Arc<dyn Registry>,
}

impl PluginSource {
    /// Joins a blob store and a registry.
    pub fn new(blobs: Arc<dyn BlobStore>, registry: Arc<dyn Registry>) -> Self {
        Self { blobs, registry }
    }

    /// The embedded default: both stores as directories under `dir`
    /// ([`LocalBlobStore`](crate::LocalBlobStore), [`LocalRegistry`](crate::LocalRegistry)).
    pub async fn local(dir: &std::path::Path) -> Result<Self, StoreError> {
        let blobs = crate::LocalBlobStore::open(dir).await?;
        let registry = crate::LocalRegistry::open(dir).await?;
        Ok(Self::new(Arc::new(blobs), Arc::new(registry)))
    }

    /// Publishes `module` under `spec`: blob first, so a manifest never points
    /// at missing bytes.
    pub async fn publish(
        &self,
        module: &[u8],
        spec: PublishSpec,
    ) -> Result<PluginManifest, StoreError> {
        if !module.starts_with(b"\0asm") {
            return Err(StoreError::Invalid(
                "module is not WebAssembly (no `\\0asm` header); build it with `--target wasm32-wasip2`".into(),
            ));
        }
        let manifest = PluginManifest::new(spec, module);
        self.blobs.put(&manifest.digest, module).await?;
        self.registry.put(&manifest).await?;
        Ok(manifest)
    }

    /// The manifest of `name` at `version`.
    pub async fn manifest(
        &self,
        name: &PluginName,
        version: &Version,
    ) -> Result<PluginManifest, StoreError> {
        self.registry.get(name, version).await
    }

    /// Every published manifest.
    pub async fn list(&self) -> Result<Vec<PluginManifest>, StoreError> {
        self.registry.list().await
    }

    /// The module bytes of `manifest`, checked against its digest and size.
    pub async fn module(&self, manifest: &PluginManifest) -> Result<Vec<u8>, StoreError> {
        let bytes = self.blobs.get(&manifest.digest).await?;
        let actual = Digest::of(&bytes);
        if actual != manifest.digest || bytes.len() as u64 != manifest.size {
            return Err(StoreError::DigestMismatch {
                expected: manifest.digest,
                actual,
            });
        }
        Ok(bytes)
    }
}
