//! Axon's HTTP API: `POST /v1/reason`, `GET /v1/plugins`, `/health`, `/ready`,
//! `/metrics`. Errors use the project envelope ([`service_kit::ApiError`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use auth::middleware::{SigV4, require_sigv4};
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use plugin_store::{Digest, PluginName, PluginRef, Version};
use serde::Serialize;
use serde_json::value::RawValue;
use service_kit::metrics::{HttpMetrics, MetricsEndpoint};
use service_kit::reasoning::ReasonBody;
use service_kit::{ApiError, ApiJson, CorrelationId, ErrorCode};

use crate::plugins::{LoadError, PluginHost};
use crate::sandbox::{Invocation, RunError, RunStats};

/// Shared state of the Axon service.
#[derive(Clone)]
pub struct AxonState {
    inner: Arc<Inner>,
}

struct Inner {
    plugins: PluginHost,
    /// SigV4 verification; `None` only with `--insecure-no-auth`.
    auth: Option<SigV4>,
    http_metrics: HttpMetrics,
    metrics: MetricsEndpoint,
    ready: AtomicBool,
    max_body_bytes: usize,
}

impl AxonState {
    pub fn new(
        plugins: PluginHost,
        auth: Option<SigV4>,
        http_metrics: HttpMetrics,
        metrics: MetricsEndpoint,
        max_body_bytes: usize,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                plugins,
                auth,
                http_metrics,
                metrics,
                ready: AtomicBool::new(false),
                max_body_bytes,
            }),
        }
    }

    /// The plugins this Axon serves.
    pub fn plugins(&self) -> &PluginHost {
        &self.inner.plugins
    }

    /// A handle that does not keep the state alive (for background tasks).
    pub(crate) fn downgrade(&self) -> WeakAxonState {
        WeakAxonState(Arc::downgrade(&self.inner))
    }

    /// Marks Axon ready (or not) for `/ready`.
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::Release);
    }
}

/// [`AxonState`] without ownership.
pub(crate) struct WeakAxonState(std::sync::Weak<Inner>);

impl WeakAxonState {
    pub(crate) fn upgrade(&self) -> Option<AxonState> {
        self.0.upgrade().map(|inner| AxonState { inner })
    }
}

/// The Axon router with the shared layers.
pub fn router(state: AxonState) -> Router {
    let http_metrics = state.inner.http_metrics.clone();
    let max_body = state.inner.max_body_bytes;
    let mut api = Router::new()
        .route("/v1/reason", post(reason))
        .route("/v1/plugins", get(plugins));
    if let Some(sigv4) = &state.inner.auth {
        api = api.route_layer(axum::middleware::from_fn_with_state(
            sigv4.clone(),
            require_sigv4,
        ));
    }
    let router = api
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state);
    service_kit::with_common_layers(router, http_metrics)
}

/// `POST /v1/reason` success body.
#[derive(Serialize)]
struct ReasonReply<'a> {
    output: &'a RawValue,
    confidence: Option<f64>,
    notes: &'a [String],
    plugin: PluginRef,
    correlation_id: &'a str,
    timestamp: String,
    stats: RunStats,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message)
}

async fn reason(
    State(state): State<AxonState>,
    correlation_id: CorrelationId,
    ApiJson(body): ApiJson<ReasonBody>,
) -> Result<Response, ApiError> {
    let name: PluginName = body
        .plugin
        .parse()
        .map_err(|e| invalid(format!("`plugin`: {e}")))?;
    let version: Version = body.version.parse().map_err(|e| {
        invalid(format!(
            "`version` must be a semantic version such as `1.0.0`: {e}"
        ))
    })?;
    let digest: Digest = body
        .digest
        .parse()
        .map_err(|e| invalid(format!("`digest`: {e}")))?;
    service_kit::reasoning::check_fields("request.", &body.request.intent, &body.request.context)?;

    let plugins = state.plugins();
    let plugin = plugins
        .get(&name, &version, Some(&digest))
        .await
        .map_err(load_error)?;
    let invocation = Invocation {
        correlation_id: correlation_id.as_str().into(),
        intent: body.request.intent,
        input: body.request.input.get().to_owned(),
        context: body.request.context.into_iter().collect(),
    };
    let answer = plugins
        .run(&plugin, invocation)
        .await
        .map_err(|e| run_error(&name, e))?;
    let reply = ReasonReply {
        output: &answer.output,
        confidence: answer.confidence,
        notes: &answer.notes,
        plugin: plugin.manifest.reference(),
        correlation_id: correlation_id.as_str(),
        timestamp: service_kit::timestamp(),
        stats: answer.stats,
    };
    Ok(Json(reply).into_response())
}

fn load_error(error: LoadError) -> ApiError {
    match error {
        LoadError::NotFound { .. } => ApiError::new(ErrorCode::PluginNotFound, error.to_string()),
        LoadError::Revoked(_) => ApiError::new(ErrorCode::PluginRevoked, error.to_string()),
        LoadError::Untrusted(_) => ApiError::new(ErrorCode::PluginUntrusted, error.to_string()),
        LoadError::DigestMismatch(_) => {
            ApiError::new(ErrorCode::PluginDigestMismatch, error.to_string())
        }
        LoadError::Unusable { .. } => ApiError::new(ErrorCode::PluginError, error.to_string()),
        LoadError::StoreUnavailable(_) => {
            ApiError::new(ErrorCode::ServiceUnavailable, error.to_string()).retry_after(1)
        }
    }
}

/// The API error for a failed run; every plugin failure has its own code.
pub fn run_error(plugin: &PluginName, error: RunError) -> ApiError {
    let code = match &error {
        RunError::Overloaded { .. } => ErrorCode::Overloaded,
        RunError::InvalidInput(_) => ErrorCode::PluginInvalidInput,
        RunError::Failed(_) | RunError::InvalidOutput(_) => ErrorCode::PluginError,
        RunError::Timeout { .. } => ErrorCode::PluginTimeout,
        RunError::MemoryLimit { .. } => ErrorCode::PluginMemoryLimit,
        RunError::ResourceLimit(_) => ErrorCode::PluginResourceLimit,
        RunError::OutputLimit { .. } => ErrorCode::PluginOutputLimit,
        RunError::Trapped(_) => ErrorCode::PluginTrapped,
    };
    let api = ApiError::new(code, format!("plugin `{plugin}`: {error}"));
    if code == ErrorCode::Overloaded {
        api.retry_after(1)
    } else {
        api
    }
}

#[derive(Serialize)]
struct PluginEntry {
    name: String,
    version: String,
    digest: Digest,
    /// `ready` (verified and loaded), `verified` (not loaded yet), or why it
    /// is not served: `revoked`, `untrusted`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    publisher: Option<String>,
    labels: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// Every registered version as this Axon sees it (from its registry view).
async fn plugins(State(state): State<AxonState>) -> Json<serde_json::Value> {
    let host = state.plugins();
    let catalog = host.watcher().current();
    let mut entries = Vec::new();
    for (name, plugin) in &catalog.plugins {
        for (version, entry) in &plugin.versions {
            let (status, publisher, description, reason) = match &entry.verified {
                Ok(v) => (
                    if host.is_loaded(name, version) {
                        "ready"
                    } else {
                        "verified"
                    },
                    Some(v.publisher.clone()),
                    Some(v.manifest.description.clone()),
                    None,
                ),
                Err(e @ plugin_store::VerifyError::Revoked { .. }) => {
                    ("revoked", None, None, Some(e.to_string()))
                }
                Err(e) => ("untrusted", None, None, Some(e.to_string())),
            };
            entries.push(PluginEntry {
                name: name.to_string(),
                version: version.to_string(),
                digest: entry.record.digest,
                status,
                publisher,
                labels: entry.labels.iter().cloned().collect(),
                description,
                reason,
            });
        }
    }
    Json(
        serde_json::json!({ "plugins": entries, "registry_generation": catalog.generation, "trust_serial": catalog.trust_serial }),
    )
}

async fn health() -> Json<serde_json::Value> {
    service_kit::health("axon")
}

async fn ready(State(state): State<AxonState>) -> Result<Json<serde_json::Value>, ApiError> {
    if state.inner.ready.load(Ordering::Acquire) {
        Ok(Json(serde_json::json!({
            "status": "ready",
            "instances_in_flight": state.plugins().sandbox().in_flight(),
        })))
    } else {
        Err(ApiError::new(
            ErrorCode::ServiceUnavailable,
            "axon is still loading plugins",
        )
        .retry_after(1))
    }
}

async fn metrics(State(state): State<AxonState>) -> Response {
    state.inner.metrics.response()
}
