//! `GET /v1/plugins`: what the caller could dispatch.
//!
//! Every servable version (verified, unrevoked) is put to governance with
//! the intent left open ([`governance::Decider::discover`]); a version
//! appears if some intent would be allowed, a plugin if one of its versions
//! does, an alias if every version it routes to does. A plugin the caller
//! may not dispatch is absent, exactly as one that does not exist.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::SystemTime;

use auth::Authenticated;
use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use governance::{DiscoveryRequest, PluginInfo};
use plugin_store::{CatalogVersion, VerifiedManifest, Version};
use serde_json::json;

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
    }
}

pub(crate) async fn plugins(
    State(state): State<OrbitState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    caller: Authenticated,
) -> Json<serde_json::Value> {
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
    let principal = principal_of(&caller);
    let visible = state
        .decider()
        .discover(&DiscoveryRequest {
            principal: &principal,
            plugins: &asked,
            source_ip: state.limits().client_ip(peer, &headers),
            time: SystemTime::now(),
        })
        .await;
    let shown: HashSet<(&str, &Version)> = servable
        .iter()
        .zip(&visible)
        .filter(|(_, visible)| **visible)
        .map(|((name, entry, _), _)| (name.as_str(), &entry.record.version))
        .collect();

    let plugins: Vec<serde_json::Value> = catalog
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
            let aliases: serde_json::Map<String, serde_json::Value> = plugin
                .aliases
                .values()
                .filter(|a| {
                    is_shown(&a.target.version)
                        && a.target.canary.as_ref().is_none_or(|c| is_shown(&c.version))
                })
                .map(|a| (a.name.clone(), json!(a.target)))
                .collect();
            Some(json!({
                "name": name,
                "versions": versions.iter().map(|(v, _)| v.record.version.to_string()).collect::<Vec<_>>(),
                "aliases": aliases,
                "description": manifest.manifest.description,
                "publisher": manifest.publisher,
                "labels": newest.labels,
                "tags": manifest.manifest.tags,
            }))
        })
        .collect();
    Json(json!({ "plugins": plugins }))
}
