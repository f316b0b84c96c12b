//! [`PluginSource`]: a blob store and a registry together, the one way
//! plugins are published and fetched.
//!
//! Publishing reads the world from the component, signs the manifest with the
//! publisher's key, stores the module content-addressed, then registers the
//! version (blob first, so a registered version never points at missing
//! bytes). Fetching checks the bytes against the digest the verified manifest
//! names, every time: a store that does not check checksums (or was tampered
//! with) cannot hand Axon other bytes.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use semver::Version;

use crate::error::StoreError;
use crate::manifest::{Digest, PluginManifest, PluginName, PublishSpec};
use crate::registry::{Registered, Registry, VersionEntry, VersionRecord};
use crate::signing::KeyPair;
use crate::trust::{Trust, TrustError, VerifiedManifest};

/// Reports how many more bytes an upload has stored.
pub type Progress<'a> = &'a (dyn Fn(u64) + Send + Sync);

/// Module bytes addressed by their sha256 digest.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Stores `bytes` under `digest` (the caller computed it), calling
    /// `progress` with each part stored. Idempotent: content-addressed bytes
    /// already there are not written again.
    async fn put_with_progress(
        &self,
        digest: &Digest,
        bytes: &[u8],
        progress: Progress<'_>,
    ) -> Result<(), StoreError>;

    /// [`put_with_progress`](Self::put_with_progress) with nobody watching.
    async fn put(&self, digest: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        self.put_with_progress(digest, bytes, &|_| {}).await
    }

    /// The bytes stored under `digest`, unchecked ([`PluginSource`] checks
    /// them), but never more than `size`: a larger blob is
    /// [`StoreError::SizeMismatch`] before it is read into memory.
    async fn get(&self, digest: &Digest, size: u64) -> Result<Vec<u8>, StoreError>;

    /// True when the blob under `digest` is there, at most `size` bytes, and
    /// hashes to `digest`: what a put may keep instead of writing again.
    async fn holds(&self, digest: &Digest, size: u64) -> bool {
        self.get(digest, size)
            .await
            .is_ok_and(|stored| Digest::of(&stored) == *digest)
    }
}

/// What [`PluginSource::publish`] did.
#[derive(Debug, Clone)]
pub struct Published {
    pub manifest: PluginManifest,
    /// False when the same module was already published under this version.
    pub new: bool,
}

/// Why a registered version cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("plugin `{name}` version `{version}` is revoked")]
    Revoked { name: String, version: String },
    #[error("plugin `{name}` version `{version}` is not trusted: {reason}")]
    Untrusted {
        name: String,
        version: String,
        reason: Box<TrustError>,
    },
    #[error("the registry's digest for `{name}@{version}` differs from its signed manifest")]
    RecordMismatch { name: String, version: String },
}

/// Checks a registered version: not revoked, its manifest signed by a trusted
/// key for this name and version, and the registry's digest the manifest's.
pub fn verify_entry(
    trust: &Trust,
    entry: &VersionEntry,
    now: SystemTime,
) -> Result<VerifiedManifest, VerifyError> {
    let record = &entry.record;
    let (name, version) = (record.name.to_string(), record.version.to_string());
    if entry.revoked {
        return Err(VerifyError::Revoked { name, version });
    }
    let verified = trust
        .verify_manifest(&record.envelope, &record.name, &record.version, now)
        .map_err(|reason| VerifyError::Untrusted {
            name: name.clone(),
            version: version.clone(),
            reason: Box::new(reason),
        })?;
    if verified.manifest.digest != record.digest {
        return Err(VerifyError::RecordMismatch { name, version });
    }
    Ok(verified)
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

    /// The embedded default under `dir`: blobs in `dir/blobs/`
    /// ([`LocalBlobStore`](crate::LocalBlobStore)), the registry in
    /// `dir/registry.db` ([`SqliteRegistry`](crate::SqliteRegistry)).
    pub async fn local(dir: &std::path::Path) -> Result<Self, StoreError> {
        let blobs = crate::LocalBlobStore::open(dir).await?;
        let registry = crate::SqliteRegistry::open(&dir.join("registry.db")).await?;
        Ok(Self::new(Arc::new(blobs), Arc::new(registry)))
    }

    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.registry
    }

    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }

    /// Publishes `module` under `spec`, signed by `key`, as `actor`. The
    /// same module again under the same version is a no-op; another module
    /// under a published version is [`StoreError::AlreadyPublished`].
    pub async fn publish(
        &self,
        module: &[u8],
        spec: PublishSpec,
        key: &KeyPair,
        actor: &str,
    ) -> Result<Published, StoreError> {
        self.publish_with_progress(module, spec, key, actor, &|_| {})
            .await
    }

    /// [`publish`](Self::publish), reporting the module upload's progress.
    pub async fn publish_with_progress(
        &self,
        module: &[u8],
        spec: PublishSpec,
        key: &KeyPair,
        actor: &str,
        progress: Progress<'_>,
    ) -> Result<Published, StoreError> {
        let world = crate::component::reasoning_world(module).map_err(StoreError::Invalid)?;
        if let Some((capability, import)) = crate::component::needed_capabilities(module)
            .into_iter()
            .find(|(capability, _)| !spec.capabilities.contains(*capability))
        {
            return Err(StoreError::Invalid(format!(
                "the component imports `{import}`, which needs the `{capability}` capability: declare it in plugin.toml (`capabilities = [\"{capability}\"]`, with its `[{capability}]` table)"
            )));
        }
        let manifest = PluginManifest::new(spec, module, world, key.id().clone());
        let record = VersionRecord::signed(&manifest, key, actor);
        self.blobs
            .put_with_progress(&manifest.digest, module, progress)
            .await?;
        match self.registry.register(&record).await? {
            Registered::New => Ok(Published {
                manifest,
                new: true,
            }),
            Registered::Unchanged(existing) => {
                let manifest = serde_json::from_slice(
                    &existing
                        .envelope
                        .unverified_payload()
                        .map_err(|e| StoreError::Invalid(e.to_string()))?,
                )
                .map_err(|e| StoreError::Corrupt {
                    what: format!(
                        "the stored manifest of `{}@{}`",
                        existing.name, existing.version
                    ),
                    reason: e.to_string(),
                })?;
                Ok(Published {
                    manifest,
                    new: false,
                })
            }
        }
    }

    /// The registry's entry for `name` at `version`.
    pub async fn entry(
        &self,
        name: &PluginName,
        version: &Version,
    ) -> Result<VersionEntry, StoreError> {
        self.registry.version(name, version).await
    }

    /// The module bytes of `manifest`, checked against its digest and size.
    pub async fn module(&self, manifest: &PluginManifest) -> Result<Vec<u8>, StoreError> {
        let bytes = self.blobs.get(&manifest.digest, manifest.size).await?;
        if bytes.len() as u64 != manifest.size {
            return Err(StoreError::SizeMismatch {
                expected: manifest.size,
                actual: bytes.len() as u64,
            });
        }
        let actual = Digest::of(&bytes);
        if actual != manifest.digest {
            return Err(StoreError::DigestMismatch {
                expected: manifest.digest,
                actual,
            });
        }
        Ok(bytes)
    }
}
