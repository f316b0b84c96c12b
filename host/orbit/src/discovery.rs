//! `GET /v1/plugins`: what the caller could dispatch.
//!
//! Every servable version (verified, unrevoked) is put to governance with
//! the intent left open ([`governance::Decider::discover`]); a version
//! appears if some intent would be allowed, a plugin if one of its versions
//! does, an alias if every version it routes to does. A plugin the caller
//! may not dispatch is absent, exactly as one that does not exist.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::time::SystemTime;

use auth::Authenticated;
use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use governance::{DiscoveryRequest, PluginInfo, PluginNeeds};
use plugin_store::{AliasTarget, CatalogVersion, GpuNeed, VerifiedManifest, Version};
use serde::Serialize;

use crate::dispatch::principal_of;
use crate::server::OrbitState;

/// A servable version as governance sees it.
pub(crate) fn plugin_info(entry: &CatalogVersion, verified: &VerifiedManifest) -> PluginInfo {
    let manifest = &verified.manifest;
    PluginInfo {
        name: manifest.name.to_string(),
        version: manifest.version.clone(),
        publisher: verified.publisher.clone(),
        tags: manifest.tags.clone(),
        labels: entry.labels.clone(),
        needs: needs_of(manifest),
    }
}

/// What `manifest` declares it needs from the host, for policies.
fn needs_of(manifest: &plugin_store::PluginManifest) -> PluginNeeds {
    let inference = manifest.inference.as_ref();
    PluginNeeds {
        capabilities: manifest.capabilities.clone(),
        models: inference
            .map(|i| i.models.keys().map(ToString::to_string).collect())
            .unwrap_or_default(),
        gpu: match inference.map(|i| i.gpu).unwrap_or_default() {
            GpuNeed::None => "none",
            GpuNeed::Preferred => "preferred",
            GpuNeed::Required => "required",
        }
        .to_owned(),
    }
}

/// `GET /v1/plugins` body.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct PluginList {
    plugins: Vec<VisiblePlugin>,
}

/// A plugin the caller may dispatch, with the versions and aliases it may.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct VisiblePlugin {
    #[schema(example = "keywords")]
    pub name: String,
    /// Oldest first.
    versions: Vec<String>,
    /// Each alias whose every target the caller may dispatch.
    aliases: BTreeMap<String, AliasTarget>,
    /// The newest visible version's description.
    pub description: String,
    publisher: String,
    labels: BTreeSet<String>,
    tags: BTreeSet<String>,
}

service_kit::error_responses!(PluginsErrors: EVERY, SIGNED, [RateLimitExceeded]);

/// `GET /v1/plugins`: what the caller could dispatch.
#[utoipa::path(
    get,
    path = "/v1/plugins",
    tag = "dispatch",
    operation_id = "plugins",
    security(("sigv4" = [])),
    responses(
        (status = 200, description = "The plugins the caller may dispatch; one it may not is absent, as one that does not exist.", body = PluginList),
        PluginsErrors,
    ),
)]
pub(crate) async fn plugins(
    State(state): State<OrbitState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    caller: Authenticated,
) -> Json<PluginList> {
    let plugins = visible(&state, peer, &headers, &caller)
        .await
        .into_iter()
        .map(|listed| listed.plugin)
        .collect();
    Json(PluginList { plugins })
}

/// A plugin the caller may dispatch, with what its `live` alias runs when
/// the caller may dispatch every version of it (else `None`).
pub(crate) struct Listed {
    pub plugin: VisiblePlugin,
    pub live: Option<std::sync::Arc<VerifiedManifest>>,
}

/// The plugins `caller` may dispatch, by name.
pub(crate) async fn visible(
    state: &OrbitState,
    peer: SocketAddr,
    headers: &HeaderMap,
    caller: &Authenticated,
) -> Vec<Listed> {
    let catalog = state.catalogue().current();
    let servable: Vec<_> = catalog
        .plugins
        .iter()
        .flat_map(|(name, plugin)| {
            plugin
                .versions
                .values()
                .filter_map(move |v| v.verified.as_ref().ok().map(|m| (name, v, m)))
        })
        .collect();
    let asked: Vec<PluginInfo> = servable
        .iter()
        .map(|(_, entry, verified)| plugin_info(entry, verified))
        .collect();
    let principal = principal_of(caller);
    let visible = state
        .decider()
        .discover(&DiscoveryRequest {
            principal: &principal,
            plugins: &asked,
            source_ip: state.limits().client_ip(peer, headers),
            time: SystemTime::now(),
        })
        .await;
    let shown: HashSet<(&str, &Version)> = servable
        .iter()
        .zip(&visible)
        .filter(|(_, visible)| **visible)
        .map(|((name, entry, _), _)| (name.as_str(), &entry.record.version))
        .collect();

    catalog
        .plugins
        .iter()
        .filter_map(|(name, plugin)| {
            let versions: Vec<_> = plugin
                .versions
                .values()
                .filter(|v| shown.contains(&(name.as_str(), &v.record.version)))
                .filter_map(|v| v.verified.as_ref().ok().map(|m| (v, m)))
                .collect();
            let (newest, manifest) = versions.last()?;
            let is_shown = |version: &Version| shown.contains(&(name.as_str(), version));
            let aliases: BTreeMap<String, AliasTarget> = plugin
                .aliases
                .values()
                .filter(|a| {
                    is_shown(&a.target.version)
                        && a.target
                            .canary
                            .as_ref()
                            .is_none_or(|c| is_shown(&c.version))
                })
                .map(|a| (a.name.clone(), a.target.clone()))
                .collect();
            let live = aliases
                .get(plugin_store::DEFAULT_ALIAS)
                .and_then(|target: &AliasTarget| plugin.versions.get(&target.version))
                .and_then(|v| v.verified.as_ref().ok())
                .cloned();
            let plugin = VisiblePlugin {
                name: name.to_string(),
                versions: versions
                    .iter()
                    .map(|(v, _)| v.record.version.to_string())
                    .collect(),
                aliases,
                description: manifest.manifest.description.clone(),
                publisher: manifest.publisher.clone(),
                labels: newest.labels.clone(),
                tags: manifest.manifest.tags.clone(),
            };
            Some(Listed { plugin, live })
        })
        .collect()
}
