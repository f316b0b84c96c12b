//! The plugins Axon can run: verified, compiled once per version and kept.
//!
//! Loading a version, in this order, with no fallback: read its registry entry;
//! refuse it if revoked; verify its signed manifest under the trust list
//! (trusted, unrevoked, in-window key allowed for this name, manifest bound to
//! this name and version); fetch the module and check its digest; then compile
//! (or reuse the compiled component of that digest), load the models it pins
//! (verified and digest-checked, see [`crate::inference`]) and link it. A request also names the
//! digest Orbit governed, and Axon runs that digest or refuses.
//!
//! Concurrent requests for a version that is loading wait for the one load.
//! Compile failures are remembered (a bad module costs one compile); trust,
//! store and model failures are not, so a fixed trust list, store or model
//! directory takes effect.
//! [`PluginHost::reconcile`] applies each new registry view: it evicts versions
//! that were revoked or no longer verify, and preloads new ones, so a version
//! is compiled before an alias sends it traffic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use plugin_store::{
    Catalog, Digest, PluginManifest, PluginName, PluginSource, StoreError, VerifyError, Version,
    Watcher, verify_entry,
};
use tokio::sync::OnceCell;
use wasmtime::component::Component;

use crate::inference::{FetchError, fetch_model};
use crate::metrics::{AxonMetrics, Outcome, PluginMetrics};
use crate::sandbox::{Answer, Invocation, PreparedPlugin, RunError, Sandbox};

/// A plugin version ready to serve.
pub struct LoadedPlugin {
    pub manifest: PluginManifest,
    /// The verified publisher (from the trust list).
    pub publisher: String,
    prepared: PreparedPlugin,
    metrics: PluginMetrics,
}

/// Why a plugin version cannot be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("plugin `{name}` has no published version `{version}`")]
    NotFound { name: String, version: String },
    #[error("{0}")]
    Revoked(String),
    #[error("{0}")]
    Untrusted(String),
    #[error("{0}")]
    DigestMismatch(String),
    #[error("plugin `{name}` version `{version}` cannot be loaded: {reason}")]
    Unusable {
        name: String,
        version: String,
        reason: String,
    },
    #[error("the plugin store is unavailable: {0}")]
    StoreUnavailable(String),
    /// A model the version pins cannot be used (not published, untrusted,
    /// changed): not remembered, so a fixed model takes effect.
    #[error("{0}")]
    Model(String),
}

impl From<VerifyError> for LoadError {
    fn from(error: VerifyError) -> Self {
        match error {
            VerifyError::Revoked { .. } => Self::Revoked(error.to_string()),
            VerifyError::Untrusted { .. } => Self::Untrusted(error.to_string()),
            VerifyError::RecordMismatch { .. } => Self::DigestMismatch(error.to_string()),
        }
    }
}

type Slot = Arc<OnceCell<Result<Arc<LoadedPlugin>, LoadError>>>;

/// Loads, keeps and runs plugins.
pub struct PluginHost {
    sandbox: Arc<Sandbox>,
    source: PluginSource,
    watcher: Arc<Watcher>,
    metrics: AxonMetrics,
    loaded: Mutex<HashMap<(PluginName, Version), Slot>>,
    /// Compiled components by module digest: versions that share a module
    /// (say, the same code with other config) compile once.
    components: Mutex<HashMap<Digest, Component>>,
}

impl PluginHost {
    pub fn new(
        sandbox: Arc<Sandbox>,
        source: PluginSource,
        watcher: Arc<Watcher>,
        metrics: AxonMetrics,
    ) -> Self {
        Self {
            sandbox,
            source,
            watcher,
            metrics,
            loaded: Mutex::new(HashMap::new()),
            components: Mutex::new(HashMap::new()),
        }
    }

    /// The sandbox plugins run in.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// The verified registry view this host follows.
    pub fn watcher(&self) -> &Arc<Watcher> {
        &self.watcher
    }

    /// True when `name` at `version` is loaded and ready.
    pub fn is_loaded(&self, name: &PluginName, version: &Version) -> bool {
        self.loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(name.clone(), version.clone()))
            .is_some_and(|slot| matches!(slot.get(), Some(Ok(_))))
    }

    /// Applies a registry view: evicts loaded versions it no longer serves
    /// (revoked, untrusted, gone) and loads the servable ones not loaded yet.
    /// Returns how many loaded and how many failed (failures are logged).
    pub async fn reconcile(&self, catalog: &Catalog) -> (usize, usize) {
        self.evict_unservable(catalog);
        let (mut ok, mut failed) = (0, 0);
        for (name, plugin) in &catalog.plugins {
            for (version, entry) in &plugin.versions {
                if entry.verified.is_err() || self.is_loaded(name, version) {
                    continue;
                }
                match self.get(name, version, None).await {
                    Ok(_) => ok += 1,
                    Err(_) => failed += 1,
                }
            }
        }
        (ok, failed)
    }

    /// Applies a registry view's evictions only (lazy loading).
    pub fn reconcile_evictions(&self, catalog: &Catalog) {
        self.evict_unservable(catalog);
    }

    fn evict_unservable(&self, catalog: &Catalog) {
        let trust = self.watcher.trust().clone();
        let now = SystemTime::now();
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        loaded.retain(|(name, version), slot| {
            let Some(Ok(plugin)) = slot.get() else {
                return true;
            };
            let servable = catalog.version(name, version).is_some_and(|entry| {
                entry
                    .verified
                    .as_ref()
                    .is_ok_and(|v| v.manifest.digest == plugin.manifest.digest)
            });
            if !servable {
                tracing::warn!(plugin = %name, %version, "evicting a version the registry no longer serves");
                self.metrics.load("evicted");
                return false;
            }
            // Its models are held to the trust list in force, as it is.
            if let Some(reason) = plugin.prepared.untrusted_model(&trust, now) {
                tracing::warn!(plugin = %name, %version, "evicting a version whose model is no longer trusted: {reason}");
                self.metrics.load("evicted");
                return false;
            }
            true
        });
        let live: std::collections::HashSet<Digest> = loaded
            .values()
            .filter_map(|slot| match slot.get() {
                Some(Ok(plugin)) => Some(plugin.manifest.digest),
                _ => None,
            })
            .collect();
        drop(loaded);
        self.components
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|digest, _| live.contains(digest));
    }

    /// The loaded plugin `name` at `version`, loading it if needed. With
    /// `governed`, the version must be exactly that module.
    pub async fn get(
        &self,
        name: &PluginName,
        version: &Version,
        governed: Option<&Digest>,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        let slot = self.slot(name, version);
        let plugin = match slot.get() {
            Some(Ok(plugin)) => {
                self.metrics.lookup(true);
                plugin.clone()
            }
            _ => {
                self.metrics.lookup(false);
                let result = slot.get_or_init(|| self.load(name, version)).await.clone();
                match result {
                    Ok(plugin) => plugin,
                    Err(error) => {
                        if !matches!(error, LoadError::Unusable { .. }) {
                            self.forget(name, version, &slot);
                        }
                        return Err(error);
                    }
                }
            }
        };
        if let Some(governed) = governed
            && governed != &plugin.manifest.digest
        {
            tracing::error!(plugin = %name, %version, %governed, registry = %plugin.manifest.digest, "refusing to run another module than the one governed");
            return Err(LoadError::DigestMismatch(format!(
                "plugin `{name}` version `{version}` is {} here, not the {governed} that was governed",
                plugin.manifest.digest
            )));
        }
        Ok(plugin)
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
        self.loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((name.clone(), version.clone()))
            .or_default()
            .clone()
    }

    fn forget(&self, name: &PluginName, version: &Version, slot: &Slot) {
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (name.clone(), version.clone());
        if loaded.get(&key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            loaded.remove(&key);
        }
    }

    async fn load(
        &self,
        name: &PluginName,
        version: &Version,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        let refused = |error: LoadError| {
            tracing::error!(plugin = %name, %version, %error, "plugin refused");
            self.metrics.load("refused");
            error
        };
        let store_error = |error: StoreError| match error {
            StoreError::NotFound(_) => LoadError::NotFound {
                name: name.to_string(),
                version: version.to_string(),
            },
            error @ (StoreError::DigestMismatch { .. } | StoreError::SizeMismatch { .. }) => {
                refused(LoadError::DigestMismatch(format!(
                    "plugin `{name}` version `{version}`: {error}"
                )))
            }
            error => LoadError::StoreUnavailable(error.to_string()),
        };
        let entry = self
            .source
            .entry(name, version)
            .await
            .map_err(store_error)?;
        let verified = verify_entry(self.watcher.trust(), &entry, SystemTime::now())
            .map_err(|e| refused(e.into()))?;
        let manifest = verified.manifest;
        let module = self.source.module(&manifest).await.map_err(store_error)?;

        let digest = manifest.digest;
        let started = Instant::now();
        let known = self
            .components
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&digest)
            .cloned();
        let unusable = |reason: String| LoadError::Unusable {
            name: name.to_string(),
            version: version.to_string(),
            reason,
        };
        let compiled = match known {
            Some(component) => Ok((component, "memory")),
            None => {
                let sandbox = self.sandbox.clone();
                let compiled =
                    tokio::task::spawn_blocking(move || sandbox.compile(&digest, &module))
                        .await
                        .map_err(|e| {
                            LoadError::StoreUnavailable(format!("compilation stopped: {e}"))
                        })?;
                compiled.map(|(component, from_disk)| {
                    self.components
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(digest, component.clone());
                    (component, if from_disk { "disk_cache" } else { "compiled" })
                })
            }
        };
        // Models only for a module that compiled: otherwise its failure is
        // the answer, and nothing is fetched.
        let grant = if compiled.is_err() {
            None
        } else {
            let trust = self.watcher.trust().clone();
            let to_load = self.sandbox.models_to_load(&manifest);
            let mut fetched = Vec::new();
            for pin in &to_load.to_fetch {
                let file = fetch_model(&self.source, pin, &trust)
                    .await
                    .map_err(|e| match e {
                        FetchError::Unavailable(e) => LoadError::StoreUnavailable(e),
                        FetchError::Refused(e) => refused(LoadError::Model(format!(
                            "plugin `{name}` version `{version}` cannot be loaded: {e}"
                        ))),
                    })?;
                fetched.push(file);
            }
            let (sandbox, manifest) = (self.sandbox.clone(), manifest.clone());
            let granted = tokio::task::spawn_blocking(move || {
                sandbox.grant(&manifest, &trust, to_load, fetched)
            })
            .await
            .map_err(|e| LoadError::StoreUnavailable(format!("loading models stopped: {e}")))?;
            Some(granted.map_err(|e| {
                refused(LoadError::Model(format!(
                    "plugin `{name}` version `{version}` cannot be loaded: {e}"
                )))
            })?)
        };
        let prepared = compiled.and_then(|(component, origin)| {
            let prepared = self
                .sandbox
                .prepare(&manifest, &component, grant.flatten())?;
            Ok((prepared, origin))
        });
        match prepared {
            Ok((prepared, origin)) => {
                self.metrics.load(origin);
                tracing::info!(
                    plugin = %name, %version, %digest, publisher = %verified.publisher, origin,
                    load_ms = started.elapsed().as_millis() as u64,
                    "plugin loaded"
                );
                Ok(Arc::new(LoadedPlugin {
                    metrics: self.metrics.for_plugin(name.as_str()),
                    publisher: verified.publisher,
                    manifest,
                    prepared,
                }))
            }
            Err(error) => {
                self.metrics.load("failed");
                tracing::error!(plugin = %name, %version, %error, "plugin cannot be loaded");
                Err(unusable(error.to_string()))
            }
        }
    }
}
