//! An on-disk cache of compiled components, trusted only because Axon wrote it.
//!
//! Deserialising a compiled artifact runs native code wasmtime produced, so it
//! is unsafe by design: an artifact from anywhere else could do anything. Each
//! entry is therefore sealed with an HMAC-SHA256 under a key that only this
//! cache holds (`<dir>.key` beside the directory, never in it, created on
//! first use, mode 0600), over the module
//! digest and the artifact bytes. An entry whose seal does not verify, because
//! it was planted, copied from another host or corrupted, is ignored and
//! recompiled. Entries live under a directory named for the engine's
//! compatibility hash, so an upgrade starts a fresh cache.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use plugin_store::Digest;
use sha2::Sha256;
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 8] = b"AXONCWA1";
const TAG_LEN: usize = 32;

type Seal = Hmac<Sha256>;

/// Compiled components on disk, sealed by this host.
pub(crate) struct ArtifactCache {
    dir: PathBuf,
    key: [u8; 32],
}

impl ArtifactCache {
    /// Opens (creating if needed) the cache under `root` for `engine`. The
    /// key lives beside `root`, not in it: whoever can write (or copy, or
    /// clear) the artifacts does not thereby hold the key that vouches for
    /// them.
    pub(crate) fn open(root: &Path, engine: &Engine) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        restrict_to_owner(root, 0o700)?;
        let key = load_or_create_key(&Self::key_path(root))?;
        // Where the key used to live, inside the artifacts: gone.
        let _ = std::fs::remove_file(root.join("key"));
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let dir = root.join(format!("engine-{:016x}", hasher.finish()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir, key })
    }

    /// Where the sealing key of the cache at `root` lives: `<root>.key`.
    pub(crate) fn key_path(root: &Path) -> PathBuf {
        let mut name = root.file_name().unwrap_or_default().to_os_string();
        name.push(".key");
        root.with_file_name(name)
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{}.cwasm", digest.hex()))
    }

    fn seal(&self, digest: &Digest, artifact: &[u8]) -> std::io::Result<Seal> {
        let mut mac = <Seal as Mac>::new_from_slice(&self.key).map_err(std::io::Error::other)?;
        mac.update(digest.as_bytes());
        mac.update(artifact);
        Ok(mac)
    }

    /// The cached component for `digest`, if one is present and sealed by us.
    pub(crate) fn load(&self, engine: &Engine, digest: &Digest) -> Option<Component> {
        let path = self.path(digest);
        let file = std::fs::read(&path).ok()?;
        let (header, artifact) = file.split_at_checked(MAGIC.len() + TAG_LEN)?;
        let (magic, tag) = header.split_at(MAGIC.len());
        let sealed = self
            .seal(digest, artifact)
            .is_ok_and(|seal| seal.verify_slice(tag).is_ok());
        if magic != MAGIC || !sealed {
            tracing::warn!(path = %path.display(), "ignoring compiled artifact with a bad seal");
            return None;
        }
        // SAFETY: the artifact was produced by `Component::serialize` in this
        // cache (the HMAC under our private key proves it) for an engine with
        // the same compatibility hash; wasmtime re-checks compatibility itself.
        #[expect(
            unsafe_code,
            reason = "loading an artifact this host compiled and sealed"
        )]
        let component = unsafe { Component::deserialize(engine, artifact) };
        match component {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable compiled artifact");
                None
            }
        }
    }

    /// Stores the compiled form of `digest`. Failures are logged, not fatal:
    /// the cache only saves time.
    pub(crate) fn store(&self, digest: &Digest, component: &Component) {
        let result = component
            .serialize()
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|artifact| {
                let tag = self.seal(digest, &artifact)?.finalize().into_bytes();
                let path = self.path(digest);
                // Unique per writer: concurrent first loads of one module
                // (in this process or another) must not share a temporary.
                let tmp = path.with_extension(format!(
                    "tmp{}-{:016x}",
                    std::process::id(),
                    rand::random::<u64>()
                ));
                let mut file = std::fs::File::create(&tmp)?;
                file.write_all(MAGIC)?;
                file.write_all(&tag)?;
                file.write_all(&artifact)?;
                file.sync_all()?;
                std::fs::rename(&tmp, &path)
            });
        if let Err(e) = result {
            tracing::warn!(%digest, error = %e, "cannot cache compiled component");
        }
    }
}

fn load_or_create_key(path: &Path) -> std::io::Result<[u8; 32]> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() == 32 => {
            let mut key = [0u8; 32];
            key.copy_from_slice(&bytes);
            return Ok(key);
        }
        Ok(_) => {
            tracing::warn!(path = %path.display(), "cache key has the wrong size; replacing it")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let key: [u8; 32] = rand::random();
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    write_private(&tmp, &key)?;
    std::fs::rename(&tmp, path)?;
    Ok(key)
}

/// Writes a new file readable only by its owner from the start.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    restrict_to_owner(path, 0o600)
}

#[cfg(unix)]
fn restrict_to_owner(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn restrict_to_owner(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}
