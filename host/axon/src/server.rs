//! Axon's HTTP API: `POST /v1/reason`, `GET /v1/plugins`, `/health`, `/ready`,
//! `/metrics`. Errors use the project envelope ([`service_kit::ApiError`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use auth::middleware::{SigV4, require_sigv4};
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use plugin_store::{Digest, PluginName, PluginRef, Version};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use service_kit::metrics::{HttpMetrics, MetricsEndpoint};
use service_kit::reasoning::ReasonBody;
use service_kit::{ApiError, ApiJson, CorrelationId, ErrorCode};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
    let mut api = signed_routes();
    if let Some(sigv4) = &state.inner.auth {
        api = api.route_layer(axum::middleware::from_fn_with_state(
            sigv4.clone(),
            require_sigv4,
        ));
    }
    let (router, document) = OpenApiRouter::with_openapi(AxonApi::openapi())
        .merge(api)
        .merge(open_routes())
        .split_for_parts();
    let router = router
        .route(
            "/openapi.json",
            service_kit::openapi::route(&finish(document)),
        )
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state);
    service_kit::with_common_layers(router, http_metrics)
}

/// Axon's OpenAPI document, as `GET /openapi.json` serves it.
pub fn openapi() -> Value {
    let (_, document) = OpenApiRouter::<AxonState>::with_openapi(AxonApi::openapi())
        .merge(signed_routes())
        .merge(open_routes())
        .split_for_parts();
    finish(document)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Axon",
        description = "The sandbox host of agent-runtime: runs one plugin version per request in a fresh WebAssembly sandbox. Only Orbit calls it (SigV4 with Orbit's key), with the digest governance approved. Errors share one envelope with a stable `error.code`; docs/api.md is the readable version of this document."
    ),
    tags(
        (name = "reason", description = "Signed by Orbit."),
        (name = "service", description = "Unsigned: for load balancers, scrapers and tools."),
    )
)]
struct AxonApi;

/// The routes behind SigV4 (Orbit's key).
fn signed_routes() -> OpenApiRouter<AxonState> {
    OpenApiRouter::new()
        .routes(routes!(reason))
        .routes(routes!(plugins))
}

/// The routes anyone may call.
fn open_routes() -> OpenApiRouter<AxonState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
}

fn finish(document: utoipa::openapi::OpenApi) -> Value {
    service_kit::openapi::finish(
        document,
        service_kit::reasoning::schema_rules(),
        &format!(
            "{} Only the principals `--trusted-callers` names may sign (Orbit's). Each request must also sign an `{}` header with a value of its own: a signature is accepted once, within 30 s.",
            service_kit::openapi::SIGV4_DESCRIPTION,
            auth::REQUEST_ID_HEADER,
        ),
    )
}

/// `POST /v1/reason` success body.
#[derive(Serialize, utoipa::ToSchema)]
struct ReasonReply<'a> {
    /// What the plugin answered: any JSON.
    #[schema(value_type = serde_json::Value)]
    output: &'a RawValue,
    confidence: Option<f64>,
    #[schema(value_type = Vec<String>)]
    notes: &'a [String],
    plugin: PluginRef,
    #[schema(value_type = String)]
    correlation_id: &'a str,
    /// RFC 3339, UTC.
    timestamp: String,
    stats: RunStats,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message)
}

service_kit::error_responses!(ReasonErrors: EVERY, SIGNED, PLUGIN_RUN, [ReplayedRequest]);

/// `POST /v1/reason`: run exactly this version (and digest) of a plugin.
#[utoipa::path(
    post,
    path = "/v1/reason",
    tag = "reason",
    operation_id = "reason",
    security(("sigv4" = [])),
    request_body(content = ReasonBody),
    responses(
        (status = 200, description = "The plugin answered.", body = ReasonReply),
        ReasonErrors,
    ),
)]
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
        LoadError::Unusable { .. } | LoadError::Model(_) => {
            ApiError::new(ErrorCode::PluginError, error.to_string())
        }
        LoadError::StoreUnavailable(_) => {
            ApiError::new(ErrorCode::ServiceUnavailable, error.to_string()).retry_after(1)
        }
    }
}

/// The API error for a failed run; every plugin failure has its own code.
pub fn run_error(plugin: &PluginName, error: RunError) -> ApiError {
    let code = match &error {
        RunError::Overloaded { .. } | RunError::ModelBusy(_) => ErrorCode::Overloaded,
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

#[derive(Serialize, utoipa::ToSchema)]
struct PluginEntry {
    name: String,
    version: String,
    #[schema(value_type = String)]
    digest: Digest,
    /// `ready` (verified and loaded), `verified` (not loaded yet), or why it
    /// is not served: `revoked`, `untrusted`.
    #[schema(value_type = String)]
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    publisher: Option<String>,
    labels: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// `GET /v1/plugins` body.
#[derive(Serialize, utoipa::ToSchema)]
struct PluginList {
    plugins: Vec<PluginEntry>,
    /// The registry generation this view is of.
    registry_generation: u64,
    /// The serial of the trust list in force (none without a trust list).
    trust_serial: Option<u64>,
}

service_kit::error_responses!(PluginsErrors: EVERY, SIGNED, [ReplayedRequest]);

/// `GET /v1/plugins`: every registered version as this Axon sees it (from
/// its registry view).
#[utoipa::path(
    get,
    path = "/v1/plugins",
    tag = "reason",
    operation_id = "plugins",
    security(("sigv4" = [])),
    responses(
        (status = 200, description = "Every registered version and whether it is served.", body = PluginList),
        PluginsErrors,
    ),
)]
async fn plugins(State(state): State<AxonState>) -> Json<PluginList> {
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
    Json(PluginList {
        plugins: entries,
        registry_generation: catalog.generation,
        trust_serial: catalog.trust_serial,
    })
}

service_kit::error_responses!(OpenErrors: EVERY, []);

/// `GET /health`: the process serves.
#[utoipa::path(
    get,
    path = "/health",
    tag = "service",
    operation_id = "health",
    responses(
        (status = 200, description = "Axon serves.", body = service_kit::Health),
        OpenErrors,
    ),
)]
async fn health() -> Json<service_kit::Health> {
    service_kit::health("axon")
}

/// `GET /ready` body.
#[derive(Serialize, utoipa::ToSchema)]
struct Ready {
    #[schema(value_type = String, example = "ready")]
    status: &'static str,
    /// Sandboxes running a request now.
    instances_in_flight: usize,
    /// Where this Axon runs models: `cpu` (the CPU pool), `cuda` or
    /// `simulated-cuda` (the GPU pool).
    #[schema(value_type = String, example = "cpu")]
    accelerator: &'static str,
}

service_kit::error_responses!(ReadyErrors: EVERY, [ServiceUnavailable]);

/// `GET /ready`: the plugins in force are loaded.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "service",
    operation_id = "ready",
    responses(
        (status = 200, description = "Axon can serve requests.", body = Ready),
        ReadyErrors,
    ),
)]
async fn ready(State(state): State<AxonState>) -> Result<Json<Ready>, ApiError> {
    if state.inner.ready.load(Ordering::Acquire) {
        Ok(Json(Ready {
            status: "ready",
            instances_in_flight: state.plugins().sandbox().in_flight(),
            accelerator: state.plugins().sandbox().accelerator().as_str(),
        }))
    } else {
        Err(ApiError::new(
            ErrorCode::ServiceUnavailable,
            "axon is still loading plugins",
        )
        .retry_after(1))
    }
}

/// `GET /metrics`: Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    operation_id = "metrics",
    responses(
        (status = 200, description = "The metrics, in the OpenMetrics text format.", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String),
        OpenErrors,
    ),
)]
async fn metrics(State(state): State<AxonState>) -> Response {
    state.inner.metrics.response()
}
