//! What can be dispatched: plugin versions from the registry, kept in memory
//! and refreshed, so a dispatch resolves its version without a store call.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use plugin_store::{PluginManifest, PluginName, PluginSource, StoreError, Version};

/// A miss refreshes from the store at most this often (unknown names must not
/// turn into a flood of store reads).
const MISS_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

type Index = BTreeMap<String, Vec<Arc<PluginManifest>>>;

pub struct Catalogue {
    source: PluginSource,
    index: RwLock<Arc<Index>>,
    last_refresh: Mutex<Instant>,
}

/// Why a plugin could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no plugin `{0}` is published")]
    UnknownPlugin(String),
    #[error("plugin `{name}` has no published version `{version}`")]
    UnknownVersion { name: String, version: String },
    #[error("the plugin registry is unavailable: {0}")]
    Unavailable(StoreError),
}

/// What "the newest version" means: the newest release, or the newest
/// pre-release when there is no release. `versions` is sorted, oldest first.
pub fn newest_release(versions: &[Arc<PluginManifest>]) -> Option<&Arc<PluginManifest>> {
    versions
        .iter()
        .rev()
        .find(|m| m.version.pre.is_empty())
        .or_else(|| versions.last())
}

impl Catalogue {
    pub async fn load(source: PluginSource) -> Result<Self, StoreError> {
        let catalogue = Self {
            source,
            index: RwLock::new(Arc::default()),
            last_refresh: Mutex::new(Instant::now()),
        };
        catalogue.refresh().await?;
        Ok(catalogue)
    }

    /// Re-reads every manifest.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let mut index = Index::new();
        for manifest in self.source.list().await? {
            index
                .entry(manifest.name.to_string())
                .or_default()
                .push(Arc::new(manifest));
        }
        for versions in index.values_mut() {
            versions.sort_by(|a, b| a.version.cmp(&b.version));
        }
        *self.index.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(index);
        *self
            .last_refresh
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        Ok(())
    }

    fn snapshot(&self) -> Arc<Index> {
        self.index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn find(
        index: &Index,
        name: &PluginName,
        version: Option<&Version>,
    ) -> Result<Arc<PluginManifest>, ResolveError> {
        let versions = index
            .get(name.as_str())
            .ok_or_else(|| ResolveError::UnknownPlugin(name.to_string()))?;
        let found = match version {
            Some(v) => versions.iter().find(|m| &m.version == v),
            None => newest_release(versions),
        };
        found.cloned().ok_or_else(|| ResolveError::UnknownVersion {
            name: name.to_string(),
            version: version.map_or_else(|| "latest".to_owned(), ToString::to_string),
        })
    }

    /// The manifest of `name` at `version` (the newest release if `None`).
    pub async fn resolve(
        &self,
        name: &PluginName,
        version: Option<&Version>,
    ) -> Result<Arc<PluginManifest>, ResolveError> {
        match Self::find(&self.snapshot(), name, version) {
            Ok(manifest) => Ok(manifest),
            Err(miss) => {
                let due = self
                    .last_refresh
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .elapsed()
                    >= MISS_REFRESH_INTERVAL;
                if !due {
                    return Err(miss);
                }
                self.refresh().await.map_err(ResolveError::Unavailable)?;
                Self::find(&self.snapshot(), name, version)
            }
        }
    }

    /// Every plugin with its versions, oldest first.
    pub fn list(&self) -> Vec<Vec<Arc<PluginManifest>>> {
        self.snapshot().values().cloned().collect()
    }
}
