//! The plugins Axon can run: loaded on first use (or at start-up) from the
//! plugin source, compiled once per version and kept.
//!
//! Versions are immutable, so a loaded version never goes stale. Permanent
//! failures (a module that does not compile, does not fit the contract or
//! asks for too much) are remembered, so a bad plugin costs one compile, not
//! one per request; transient ones (the store is down) are retried.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use plugin_store::{Digest, PluginManifest, PluginName, PluginSource, StoreError, Version};
use tokio::sync::OnceCell;
use wasmtime::component::Component;

use crate::metrics::{AxonMetrics, Outcome, PluginMetrics};
use crate::sandbox::{Answer, Invocation, PreparedPlugin, RunError, Sandbox};

/// A plugin version ready to serve.
pub struct LoadedPlugin {
    pub manifest: PluginManifest,
    prepared: PreparedPlugin,
    metrics: PluginMetrics,
}

/// Why a plugin version cannot be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("plugin `{name}` has no published version `{version}`")]
    NotFound { name: String, version: String },
    #[error("plugin `{name}` version `{version}` cannot be loaded: {reason}")]
    Unusable {
        name: String,
        version: String,
        reason: String,
        /// Retrying cannot help (the module itself is at fault).
        permanent: bool,
    },
    #[error("the plugin store is unavailable: {0}")]
    StoreUnavailable(String),
}

impl LoadError {
    fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::Unusable {
                permanent: true,
                ..
            }
        )
    }
}

type Slot = Arc<OnceCell<Result<Arc<LoadedPlugin>, LoadError>>>;

/// Loads, keeps and runs plugins.
pub struct PluginHost {
    sandbox: Arc<Sandbox>,
    source: PluginSource,
    metrics: AxonMetrics,
    loaded: Mutex<HashMap<String, HashMap<Version, Slot>>>,
    /// Compiled components by module digest: versions that share a module
    /// (say, the same code with other config) compile once.
    components: Mutex<HashMap<Digest, Component>>,
}

impl PluginHost {
    pub fn new(sandbox: Arc<Sandbox>, source: PluginSource, metrics: AxonMetrics) -> Self {
        Self {
            sandbox,
            source,
            metrics,
            loaded: Mutex::new(HashMap::new()),
            components: Mutex::new(HashMap::new()),
        }
    }

    /// The sandbox plugins run in.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// Every published manifest.
    pub async fn published(&self) -> Result<Vec<PluginManifest>, StoreError> {
        self.source.list().await
    }

    /// Loads every published version now, so first requests do not compile.
    /// Returns how many loaded and how many failed (failures are logged).
    pub async fn preload(&self) -> Result<(usize, usize), StoreError> {
        let (mut ok, mut failed) = (0, 0);
        for manifest in self.source.list().await? {
            match self.get(&manifest.name, &manifest.version).await {
                Ok(_) => ok += 1,
                Err(_) => failed += 1,
            }
        }
        Ok((ok, failed))
    }

    /// The loaded plugin `name` at `version`, loading it if needed.
    pub async fn get(
        &self,
        name: &PluginName,
        version: &Version,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        let slot = self.slot(name, version);
        if let Some(Ok(plugin)) = slot.get() {
            self.metrics.lookup(true);
            return Ok(plugin.clone());
        }
        self.metrics.lookup(false);
        let result = slot.get_or_init(|| self.load(name, version)).await.clone();
        if let Err(error) = &result
            && !error.is_permanent()
        {
            self.forget(name, version, &slot);
        }
        result
    }

    /// Runs one request and records its outcome.
    pub async fn run(
        &self,
        plugin: &LoadedPlugin,
        invocation: Invocation,
    ) -> Result<Answer, RunError> {
        let _running = self.metrics.running();
        let started = Instant::now();
        let result = self.sandbox.run(&plugin.prepared, invocation).await;
        let seconds = started.elapsed().as_secs_f64();
        match &result {
            Ok(_) => plugin.metrics.record(Outcome::ok, Some(seconds)),
            Err(error @ RunError::Overloaded { .. }) => {
                plugin.metrics.record(Outcome::of(error), None)
            }
            Err(error) => plugin.metrics.record(Outcome::of(error), Some(seconds)),
        }
        result
    }

    fn slot(&self, name: &PluginName, version: &Version) -> Slot {
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = loaded
            .get(name.as_str())
            .and_then(|versions| versions.get(version))
        {
            return slot.clone();
        }
        loaded
            .entry(name.as_str().to_owned())
            .or_default()
            .entry(version.clone())
            .or_default()
            .clone()
    }

    fn forget(&self, name: &PluginName, version: &Version, slot: &Slot) {
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(versions) = loaded.get_mut(name.as_str())
            && versions.get(version).is_some_and(|s| Arc::ptr_eq(s, slot))
        {
            versions.remove(version);
        }
    }

    async fn load(
        &self,
        name: &PluginName,
        version: &Version,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        let unusable = |reason: String, permanent: bool| LoadError::Unusable {
            name: name.to_string(),
            version: version.to_string(),
            reason,
            permanent,
        };
        let store_error = |error: StoreError| match error {
            StoreError::NotFound(_) => LoadError::NotFound {
                name: name.to_string(),
                version: version.to_string(),
            },
            error @ (StoreError::DigestMismatch { .. } | StoreError::Corrupt { .. }) => {
                tracing::error!(plugin = %name, %version, %error, "plugin failed its integrity check");
                unusable(error.to_string(), false)
            }
            error => LoadError::StoreUnavailable(error.to_string()),
        };
        let manifest = self
            .source
            .manifest(name, version)
            .await
            .map_err(store_error)?;
        let module = self.source.module(&manifest).await.map_err(store_error)?;

        let digest = manifest.digest;
        let started = Instant::now();
        let known = self
            .components
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&digest)
            .cloned();
        let compiled = match known {
            Some(component) => Ok((component, "memory")),
            None => {
                let sandbox = self.sandbox.clone();
                let compiled =
                    tokio::task::spawn_blocking(move || sandbox.compile(&digest, &module))
                        .await
                        .map_err(|e| unusable(format!("compilation stopped: {e}"), false))?;
                compiled.map(|(component, from_disk)| {
                    self.components
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(digest, component.clone());
                    (component, if from_disk { "disk_cache" } else { "compiled" })
                })
            }
        };
        let prepared = compiled.and_then(|(component, origin)| {
            let prepared = self.sandbox.prepare(&manifest, &component)?;
            Ok((prepared, origin))
        });
        match prepared {
            Ok((prepared, origin)) => {
                self.metrics.load(origin);
                tracing::info!(
                    plugin = %name, %version, %digest, origin,
                    load_ms = started.elapsed().as_millis() as u64,
                    "plugin loaded"
                );
                Ok(Arc::new(LoadedPlugin {
                    metrics: self.metrics.for_plugin(name.as_str()),
                    manifest,
                    prepared,
                }))
            }
            Err(error) => {
                self.metrics.load("failed");
                tracing::error!(plugin = %name, %version, %error, "plugin cannot be loaded");
                Err(unusable(error.to_string(), true))
            }
        }
    }
}
