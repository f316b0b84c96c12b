//! What can be dispatched: the verified registry view ([`Watcher`]), kept in
//! memory and refreshed, so a dispatch resolves its alias and version without
//! a store call.
//!
//! A request names a plugin, or an intent the intent table routes to a
//! plugin's alias. It names a version (pinned) or an alias (default `live`); a
//! weighted alias picks its canary by a stable hash of the routing key. The
//! resolved version must have verified under the trust list and not be
//! revoked: otherwise the caller hears exactly why (`PLUGIN_UNTRUSTED`,
//! `PLUGIN_REVOKED`), and nothing is governed or run.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use plugin_store::{
    Catalog, CatalogVersion, PluginName, RouteTarget, StoreError, VerifiedManifest, VerifyError,
    Version, Watcher,
};

/// A miss refreshes from the store at most this often (unknown names must not
/// turn into a flood of store reads).
const MISS_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

pub use plugin_store::DEFAULT_ALIAS;

pub struct Catalogue {
    watcher: Arc<Watcher>,
    last_miss_refresh: Mutex<Instant>,
}

/// Which version a request asks for.
#[derive(Debug, Clone, Copy)]
pub enum Selector<'a> {
    Version(&'a Version),
    Alias(&'a str),
}

/// Why a plugin could not be resolved to a servable version.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no plugin `{0}` is published")]
    UnknownPlugin(String),
    #[error("plugin `{name}` has no published version `{version}`")]
    UnknownVersion { name: String, version: String },
    #[error(
        "plugin `{name}` has no alias `{alias}`; name a `version`, or ask an operator to run `agentctl plugin alias set {name} {alias} <version>`"
    )]
    UnknownAlias { name: String, alias: String },
    #[error("{0}")]
    NotServable(VerifyError),
    #[error(
        "no plugin is routed for intent `{0}`: name a `plugin`, or ask an operator to run `agentctl route set {0} <plugin>`"
    )]
    NoRoute(String),
    #[error("the plugin registry is unavailable: {0}")]
    Unavailable(StoreError),
}

/// A resolved, verified, unrevoked version.
pub struct Resolved {
    pub entry: Arc<CatalogVersion>,
    pub verified: Arc<VerifiedManifest>,
    /// The alias it was reached through, if any.
    pub alias: Option<String>,
}

impl Catalogue {
    pub fn new(watcher: Arc<Watcher>) -> Self {
        Self {
            watcher,
            // The first miss may refresh at once.
            last_miss_refresh: Mutex::new(
                Instant::now()
                    .checked_sub(MISS_REFRESH_INTERVAL)
                    .unwrap_or_else(Instant::now),
            ),
        }
    }

    /// Re-reads the registry if it moved.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        self.watcher.refresh().await.map(drop)
    }

    /// The registry view now.
    pub fn current(&self) -> Arc<Catalog> {
        self.watcher.current()
    }

    fn find(
        catalog: &Catalog,
        name: &PluginName,
        selector: Selector<'_>,
        routing_key: &str,
    ) -> Result<Resolved, ResolveError> {
        let plugin = catalog
            .plugins
            .get(name)
            .ok_or_else(|| ResolveError::UnknownPlugin(name.to_string()))?;
        let (version, alias) = match selector {
            Selector::Version(version) => (version, None),
            Selector::Alias(alias) => (
                plugin
                    .route(alias, routing_key)
                    .ok_or_else(|| ResolveError::UnknownAlias {
                        name: name.to_string(),
                        alias: alias.to_owned(),
                    })?,
                Some(alias.to_owned()),
            ),
        };
        let entry = plugin
            .versions
            .get(version)
            .ok_or_else(|| ResolveError::UnknownVersion {
                name: name.to_string(),
                version: version.to_string(),
            })?;
        let verified = entry
            .verified
            .as_ref()
            .map_err(|error| ResolveError::NotServable(error.clone()))?;
        Ok(Resolved {
            verified: verified.clone(),
            entry: entry.clone(),
            alias,
        })
    }

    /// Where the intent table sends `intent`.
    pub async fn route(&self, intent: &str) -> Result<RouteTarget, ResolveError> {
        let find = |catalog: &Catalog| {
            catalog
                .routes
                .get(intent)
                .cloned()
                .ok_or_else(|| ResolveError::NoRoute(intent.to_owned()))
        };
        match find(&self.current()) {
            Err(miss) if self.miss_refresh_due() => {
                self.refresh().await.map_err(ResolveError::Unavailable)?;
                find(&self.current()).map_err(|_| miss)
            }
            other => other,
        }
    }

    /// The version `selector` picks for `routing_key`.
    pub async fn resolve(
        &self,
        name: &PluginName,
        selector: Selector<'_>,
        routing_key: &str,
    ) -> Result<Resolved, ResolveError> {
        match Self::find(&self.current(), name, selector, routing_key) {
            Err(
                miss @ (ResolveError::UnknownPlugin(_)
                | ResolveError::UnknownVersion { .. }
                | ResolveError::UnknownAlias { .. }),
            ) => {
                if !self.miss_refresh_due() {
                    return Err(miss);
                }
                self.refresh().await.map_err(ResolveError::Unavailable)?;
                Self::find(&self.current(), name, selector, routing_key)
            }
            other => other,
        }
    }

    /// Whether a miss may refresh from the store now (at most once per
    /// [`MISS_REFRESH_INTERVAL`]); claims the slot if so.
    fn miss_refresh_due(&self) -> bool {
        let mut last = self
            .last_miss_refresh
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let due = last.elapsed() >= MISS_REFRESH_INTERVAL;
        if due {
            *last = Instant::now();
        }
        due
    }
}
