//! The verified, in-memory view of the registry that Orbit resolves and
//! governs from and Axon evicts and preloads from: one truth, kept fresh by
//! polling.
//!
//! [`Watcher::refresh`] reads the registry's generation and rebuilds the view
//! only when it moved (or when a key's validity window may have closed, or
//! once a minute): it installs a newer trust list, then verifies every
//! version's manifest under it. A version that does not verify stays in the
//! view with its reason, so a caller hears `PLUGIN_UNTRUSTED` or
//! `PLUGIN_REVOKED`, not "not found".

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use semver::Version;
use sha2::{Digest as _, Sha256};

use crate::error::StoreError;
use crate::manifest::PluginName;
use crate::registry::{Alias, Registry, RouteTarget, VersionRecord};
use crate::source::{VerifyError, verify_entry};
use crate::trust::{Installed, Trust, VerifiedManifest};

/// The view is rebuilt at least this often, so key windows that open or close
/// take effect even when nothing else changes.
const MAX_VIEW_AGE: Duration = Duration::from_secs(60);

/// One version as the view holds it.
#[derive(Debug, Clone)]
pub struct CatalogVersion {
    pub record: VersionRecord,
    pub labels: BTreeSet<String>,
    /// The verified manifest, or why it cannot be served.
    pub verified: Result<Arc<VerifiedManifest>, VerifyError>,
}

/// A plugin's versions (oldest first) and aliases.
#[derive(Debug, Clone, Default)]
pub struct CatalogPlugin {
    pub versions: BTreeMap<Version, Arc<CatalogVersion>>,
    pub aliases: BTreeMap<String, Alias>,
}

impl CatalogPlugin {
    /// The version `alias` sends `routing_key` to: its canary for the
    /// canary's share of keys (a stable hash, so one key stays on one
    /// version), its target otherwise.
    pub fn route(&self, alias: &str, routing_key: &str) -> Option<&Version> {
        let alias = self.aliases.get(alias)?;
        Some(match &alias.target.canary {
            Some(canary) if bucket(&alias.plugin, &alias.name, routing_key) < canary.weight => {
                &canary.version
            }
            _ => &alias.target.version,
        })
    }
}

/// `routing_key`'s bucket, 0 to 99, for `plugin`'s `alias`.
fn bucket(plugin: &PluginName, alias: &str, routing_key: &str) -> u8 {
    let mut hasher = Sha256::new();
    for part in [plugin.as_str(), alias, routing_key] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    let hash = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    (u64::from_le_bytes(first) % 100) as u8
}

/// The whole view at one registry generation.
#[derive(Debug, Default)]
pub struct Catalog {
    pub generation: u64,
    pub trust_serial: Option<u64>,
    pub plugins: BTreeMap<PluginName, CatalogPlugin>,
    /// The intent table: where a request that names no plugin goes.
    pub routes: BTreeMap<String, RouteTarget>,
    /// The earliest end of validity of a key some version verified under.
    valid_until: Option<SystemTime>,
}

impl Catalog {
    pub fn version(&self, name: &PluginName, version: &Version) -> Option<&Arc<CatalogVersion>> {
        self.plugins.get(name)?.versions.get(version)
    }
}

/// Keeps a [`Catalog`] fresh from a registry, verifying under a [`Trust`].
pub struct Watcher {
    registry: Arc<dyn Registry>,
    trust: Arc<Trust>,
    current: RwLock<Arc<Catalog>>,
    built_at: Mutex<Option<Instant>>,
}

impl Watcher {
    /// A watcher with its first view read.
    pub async fn new(registry: Arc<dyn Registry>, trust: Arc<Trust>) -> Result<Self, StoreError> {
        let watcher = Self {
            registry,
            trust,
            current: RwLock::new(Arc::default()),
            built_at: Mutex::new(None),
        };
        watcher.refresh().await?;
        Ok(watcher)
    }

    /// A watcher of `registry` trusting lists signed by the root key whose
    /// public half is in the file `root_public` (what Axon and Orbit are
    /// configured with).
    pub async fn trusting_root_file(
        registry: Arc<dyn Registry>,
        root_public: &std::path::Path,
    ) -> Result<Self, StoreError> {
        let root = crate::admin::read_public_key(root_public)?;
        Self::new(registry, Arc::new(Trust::new(root))).await
    }

    pub fn trust(&self) -> &Arc<Trust> {
        &self.trust
    }

    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.registry
    }

    /// The view now.
    pub fn current(&self) -> Arc<Catalog> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Rebuilds the view if the registry moved (or the view is old). Returns
    /// the new view when it was rebuilt.
    pub async fn refresh(&self) -> Result<Option<Arc<Catalog>>, StoreError> {
        let current = self.current();
        let generation = self.registry.generation().await?;
        let old = self
            .built_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none_or(|at| at.elapsed() >= MAX_VIEW_AGE);
        let window_closed = current
            .valid_until
            .is_some_and(|until| SystemTime::now() > until);
        if generation == current.generation && !old && !window_closed {
            return Ok(None);
        }
        let snapshot = self.registry.snapshot().await?;
        if let Some(envelope) = &snapshot.trust_list {
            match self.trust.install(envelope) {
                Ok(Installed::Updated { serial }) => {
                    tracing::info!(serial, "trust list installed")
                }
                Ok(Installed::Unchanged) => {}
                Err(error) => {
                    tracing::error!(%error, "refusing the stored trust list; keeping the one in use")
                }
            }
        }
        let now = SystemTime::now();
        let mut catalog = Catalog {
            generation: snapshot.generation,
            trust_serial: self.trust.serial(),
            ..Catalog::default()
        };
        for entry in snapshot.versions {
            let verified = verify_entry(&self.trust, &entry, now).map(Arc::new);
            if let Ok(v) = &verified {
                catalog.valid_until = Some(
                    catalog
                        .valid_until
                        .map_or(v.key_not_after, |u| u.min(v.key_not_after)),
                );
            }
            catalog
                .plugins
                .entry(entry.record.name.clone())
                .or_default()
                .versions
                .insert(
                    entry.record.version.clone(),
                    Arc::new(CatalogVersion {
                        record: entry.record,
                        labels: entry.labels,
                        verified,
                    }),
                );
        }
        for alias in snapshot.aliases {
            catalog
                .plugins
                .entry(alias.plugin.clone())
                .or_default()
                .aliases
                .insert(alias.name.clone(), alias);
        }
        catalog.routes = snapshot
            .routes
            .into_iter()
            .map(|r| (r.intent, r.target))
            .collect();
        let catalog = Arc::new(catalog);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = catalog.clone();
        *self.built_at.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        Ok(Some(catalog))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{AliasTarget, Canary};

    fn plugin_with_canary(weight: u8) -> CatalogPlugin {
        let alias = Alias {
            plugin: "p".parse().unwrap(),
            name: "live".into(),
            target: AliasTarget {
                version: Version::new(1, 0, 0),
                canary: Some(Canary {
                    version: Version::new(2, 0, 0),
                    weight,
                }),
            },
            previous: None,
            revision: 1,
            updated_by: "t".into(),
            updated_at: String::new(),
        };
        CatalogPlugin {
            versions: BTreeMap::new(),
            aliases: BTreeMap::from([("live".to_owned(), alias)]),
        }
    }

    #[test]
    fn a_canary_takes_its_weight_of_routing_keys_within_statistical_bounds() {
        for weight in [1u8, 10, 50, 90] {
            let plugin = plugin_with_canary(weight);
            let n = 10_000u32;
            let canary = (0..n)
                .filter(|i| {
                    plugin.route("live", &format!("session-{i}")) == Some(&Version::new(2, 0, 0))
                })
                .count() as f64;
            // Binomial: mean n*p, standard deviation sqrt(n*p*(1-p)); allow
            // 5 standard deviations (a false failure about once in 3.5 million).
            let p = f64::from(weight) / 100.0;
            let mean = f64::from(n) * p;
            let sd = (f64::from(n) * p * (1.0 - p)).sqrt();
            assert!(
                (canary - mean).abs() <= 5.0 * sd,
                "weight {weight}: {canary} of {n} went to the canary"
            );
        }
    }

    #[test]
    fn one_routing_key_always_gets_the_same_version() {
        let plugin = plugin_with_canary(50);
        let first = plugin.route("live", "session-42").cloned();
        for _ in 0..1000 {
            assert_eq!(plugin.route("live", "session-42").cloned(), first);
        }
        assert_eq!(plugin.route("nope", "session-42"), None);
    }
}
