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
use crate::manifest::{Digest, InferenceNeed, PluginManifest, PluginName, PublishSpec};
use crate::model::{ModelManifest, ModelSpec};
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

/// What [`PluginSource::publish_model`] did.
#[derive(Debug, Clone)]
pub struct PublishedModel {
    pub manifest: ModelManifest,
    /// False when the same bytes were already published under this version.
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
        let spec = self.pin_model_digests(spec).await?;
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
            Registered::Unchanged(existing) => Ok(Published {
                manifest: stored_manifest(&existing)?,
                new: false,
            }),
        }
    }

    /// `spec` with the digest of every model it pins, as published: the
    /// signed manifest then names the model's bytes, not only its version.
    /// Refused if a model is not published yet, or is not the digest the
    /// spec names.
    async fn pin_model_digests(&self, mut spec: PublishSpec) -> Result<PublishSpec, StoreError> {
        let Some(InferenceNeed {
            models, digests, ..
        }) = spec.inference.as_mut()
        else {
            return Ok(spec);
        };
        if let Some(name) = digests.keys().find(|name| !models.contains_key(*name)) {
            return Err(StoreError::Invalid(format!(
                "plugin.toml names a digest for model `{name}`, which is not among its `[inference] models`"
            )));
        }
        for (name, version) in models.iter() {
            let record = self.registry.model(name, version).await.map_err(|e| {
                if e.is_not_found() {
                    StoreError::Invalid(format!(
                        "plugin.toml pins model `{name}` version `{version}`, which is not published: publish the model first (`agentctl model publish`)"
                    ))
                } else {
                    e
                }
            })?;
            // The digest its publisher signed: a record whose digest is not
            // its manifest's was altered, and no plugin should pin it.
            let signed: ModelManifest = stored_manifest(&record)?;
            if signed.digest != record.digest {
                return Err(StoreError::Invalid(format!(
                    "the registry's record of model `{name}` version `{version}` was altered (its digest is not its signed manifest's): an operator must restore it before plugins can pin it"
                )));
            }
            match digests.get(name) {
                Some(named) if *named != record.digest => {
                    return Err(StoreError::Invalid(format!(
                        "plugin.toml pins model `{name}` version `{version}` to {named}, but that version is published as {}",
                        record.digest
                    )));
                }
                _ => {
                    digests.insert(name.clone(), record.digest);
                }
            }
        }
        Ok(spec)
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
        self.checked_blob(&manifest.digest, manifest.size).await
    }

    /// Publishes model `bytes` under `spec`, signed by `key`, as `actor`:
    /// the bytes content-addressed in the blob store, then the signed
    /// manifest in the registry (so a registered model never points at
    /// missing bytes). The same bytes again under the same version are a
    /// no-op; other bytes under a published version are
    /// [`StoreError::AlreadyPublished`].
    pub async fn publish_model(
        &self,
        bytes: &[u8],
        spec: ModelSpec,
        key: &KeyPair,
        actor: &str,
        progress: Progress<'_>,
    ) -> Result<PublishedModel, StoreError> {
        let manifest = ModelManifest::new(spec, bytes, key.id().clone());
        let record = VersionRecord::signed_model(&manifest, key, actor);
        self.blobs
            .put_with_progress(&manifest.digest, bytes, progress)
            .await?;
        match self.registry.register_model(&record).await? {
            Registered::New => Ok(PublishedModel {
                manifest,
                new: true,
            }),
            Registered::Unchanged(existing) => Ok(PublishedModel {
                manifest: stored_manifest(&existing)?,
                new: false,
            }),
        }
    }

    /// The registry's record of model `name` at `version`: its signed
    /// manifest, which the reader verifies before it fetches the bytes.
    pub async fn model_record(
        &self,
        name: &PluginName,
        version: &Version,
    ) -> Result<VersionRecord, StoreError> {
        self.registry.model(name, version).await
    }

    /// The bytes of model `manifest` (verified by the caller), checked
    /// against its digest and size.
    pub async fn model_bytes(&self, manifest: &ModelManifest) -> Result<Vec<u8>, StoreError> {
        self.checked_blob(&manifest.digest, manifest.size).await
    }

    /// The blob under `digest`, refused unless it is `size` bytes that hash
    /// to `digest`: a store that does not check checksums, or was tampered
    /// with, cannot hand out other bytes.
    async fn checked_blob(&self, digest: &Digest, size: u64) -> Result<Vec<u8>, StoreError> {
        let bytes = self.blobs.get(digest, size).await?;
        if bytes.len() as u64 != size {
            return Err(StoreError::SizeMismatch {
                expected: size,
                actual: bytes.len() as u64,
            });
        }
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(StoreError::DigestMismatch {
                expected: *digest,
                actual,
            });
        }
        Ok(bytes)
    }
}

/// The manifest inside a stored record's envelope, as its publisher signed
/// it (read unverified: the caller published it, or verifies it next).
fn stored_manifest<M: serde::de::DeserializeOwned>(
    record: &VersionRecord,
) -> Result<M, StoreError> {
    let payload = record
        .envelope
        .unverified_payload()
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    serde_json::from_slice(&payload).map_err(|e| StoreError::Corrupt {
        what: format!(
            "the stored manifest of `{}@{}`",
            record.name, record.version
        ),
        reason: e.to_string(),
    })
}
