//! Orbit's HTTP surface: the router, its state, and the small endpoints.

use std::sync::Arc;

use auth::middleware::{SigV4, require_sigv4};
use axum::extract::{DefaultBodyLimit, State};
use axum::response::Response;
use axum::{Json, Router};
use governance::Decider;
use serde::Serialize;
use serde_json::Value;
use service_kit::metrics::{HttpMetrics, MetricsEndpoint};
use service_kit::{ApiError, ErrorCode};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::breaker::BreakerState;
use crate::catalogue::Catalogue;
use crate::dispatch::{__path_dispatch, dispatch};
use crate::in_flight::InFlightLimit;
use crate::metrics::OrbitMetrics;
use crate::pools::AxonPools;
use crate::rate_limit::{self, RateLimits};

/// Shared state of one Orbit.
#[derive(Clone)]
pub struct OrbitState {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) catalogue: Catalogue,
    pub(crate) decider: Arc<dyn Decider>,
    /// The in-process engine behind `decider`, which Orbit refreshes; `None`
    /// for a remote decider, which refreshes itself.
    pub(crate) local_governance: Option<Arc<governance::Governance>>,
    /// Axon's CPU pool, and its GPU pool if there is one.
    pub(crate) axon: AxonPools,
    /// Every decision is recorded here before it takes effect.
    pub(crate) audit: governance::AuditLog,
    pub(crate) limits: Arc<RateLimits>,
    pub(crate) in_flight: InFlightLimit,
    pub(crate) sigv4: SigV4,
    pub(crate) metrics: OrbitMetrics,
    pub(crate) http_metrics: HttpMetrics,
    pub(crate) endpoint: MetricsEndpoint,
    pub(crate) max_body_bytes: usize,
    /// Plugins' input schemas, compiled once per version.
    pub(crate) inputs: crate::input::InputSchemas,
}

impl OrbitState {
    pub(crate) fn new(inner: Inner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    pub(crate) fn downgrade(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    pub fn catalogue(&self) -> &Catalogue {
        &self.inner.catalogue
    }

    pub fn decider(&self) -> &dyn Decider {
        self.inner.decider.as_ref()
    }

    pub fn axon(&self) -> &AxonPools {
        &self.inner.axon
    }

    pub fn inputs(&self) -> &crate::input::InputSchemas {
        &self.inner.inputs
    }

    pub fn audit(&self) -> &governance::AuditLog {
        &self.inner.audit
    }

    pub(crate) fn limits(&self) -> &RateLimits {
        &self.inner.limits
    }

    pub(crate) fn in_flight(&self) -> &InFlightLimit {
        &self.inner.in_flight
    }

    pub(crate) fn metrics(&self) -> &OrbitMetrics {
        &self.inner.metrics
    }
}

/// The Orbit router with the shared layers. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()` (rate limits and
/// governance need the client address).
pub fn router(state: OrbitState) -> Router {
    let inner = &state.inner;
    // Outermost first when a request arrives: the address limit, SigV4, the
    // principal limit, then the handler.
    let signed = signed_routes()
        .nest_service(
            "/mcp",
            crate::mcp::service(state.clone(), inner.max_body_bytes),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            inner.limits.clone(),
            rate_limit::per_principal,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            inner.sigv4.clone(),
            require_sigv4,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            inner.limits.clone(),
            rate_limit::per_ip,
        ));
    let (router, document) = OpenApiRouter::with_openapi(OrbitApi::openapi())
        .merge(signed)
        .merge(open_routes())
        .split_for_parts();
    let router = router
        .route(
            "/openapi.json",
            service_kit::openapi::route(&finish(document)),
        )
        .layer(DefaultBodyLimit::max(inner.max_body_bytes))
        .with_state(state.clone());
    service_kit::with_common_layers(router, state.inner.http_metrics.clone())
}

/// Orbit's OpenAPI document, as `GET /openapi.json` serves it.
pub fn openapi() -> Value {
    let (_, document) = OpenApiRouter::with_openapi(OrbitApi::openapi())
        .merge(signed_routes())
        .merge(open_routes())
        .split_for_parts();
    finish(document)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Orbit",
        description = "The front door of agent-runtime: `POST /dispatch` authenticates the caller (SigV4), asks governance, and runs the plugin in Axon only after an allow. Errors share one envelope with a stable `error.code`; docs/api.md is the readable version of this document."
    ),
    tags(
        (name = "dispatch", description = "Signed: what callers do."),
        (name = "service", description = "Unsigned: for load balancers, scrapers and tools."),
    )
)]
struct OrbitApi;

/// The routes behind SigV4 and the rate limits.
fn signed_routes() -> OpenApiRouter<OrbitState> {
    OpenApiRouter::new()
        .routes(routes!(dispatch))
        .routes(routes!(dispatch_v1))
        .routes(routes!(crate::discovery::plugins))
}

/// The routes anyone may call.
fn open_routes() -> OpenApiRouter<OrbitState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
}

/// The shared parts, the bodies' rules, and the `X-RateLimit-*` headers
/// every response of a signed route carries.
fn finish(document: utoipa::openapi::OpenApi) -> Value {
    let mut document = service_kit::openapi::finish(
        document,
        service_kit::reasoning::schema_rules(),
        &format!(
            "{} A valid signature is accepted each time it arrives within its 5-minute window, as AWS does.",
            service_kit::openapi::SIGV4_DESCRIPTION
        ),
    );
    service_kit::openapi::add_response_headers(&mut document, true, rate_limit::response_headers());
    document
}

/// `POST /v1/dispatch`: the same operation as `POST /dispatch`.
#[utoipa::path(
    post,
    path = "/v1/dispatch",
    tag = "dispatch",
    operation_id = "dispatch_v1",
    security(("sigv4" = [])),
    request_body(content = service_kit::reasoning::DispatchBody),
    responses(
        (status = 200, description = "The plugin answered.", body = crate::dispatch::DispatchReply),
        crate::dispatch::DispatchErrors,
    ),
)]
async fn dispatch_v1(
    state: State<OrbitState>,
    peer: axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
    caller: auth::Authenticated,
    correlation_id: service_kit::CorrelationId,
    body: service_kit::ApiJson<service_kit::reasoning::DispatchBody>,
) -> Result<Response, ApiError> {
    dispatch(state, peer, headers, caller, correlation_id, body).await
}

service_kit::error_responses!(OpenErrors: EVERY, []);

/// `GET /health`: the process serves.
#[utoipa::path(
    get,
    path = "/health",
    tag = "service",
    operation_id = "health",
    responses(
        (status = 200, description = "Orbit serves.", body = service_kit::Health),
        OpenErrors,
    ),
)]
async fn health() -> Json<service_kit::Health> {
    service_kit::health("orbit")
}

/// `GET /ready` body.
#[derive(Serialize, utoipa::ToSchema)]
struct Ready {
    #[schema(value_type = String, example = "ready")]
    status: &'static str,
    #[schema(value_type = String, example = "ready")]
    governance: &'static str,
    #[schema(value_type = String, example = "ready")]
    audit: &'static str,
    #[schema(value_type = String, example = "ready")]
    axon: &'static str,
    /// The GPU pool, if Orbit has one: `up` or `down`. Orbit is ready
    /// without it: only plugins that require a GPU need it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "up")]
    gpu_pool: Option<&'static str>,
}

service_kit::error_responses!(ReadyErrors: EVERY, [ServiceUnavailable]);

/// `GET /ready`: governance, the audit log and Axon all answer, and the
/// breaker to Axon is not open.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "service",
    operation_id = "ready",
    responses(
        (status = 200, description = "Orbit can serve dispatches.", body = Ready),
        ReadyErrors,
    ),
)]
async fn ready(State(state): State<OrbitState>) -> Result<Json<Ready>, ApiError> {
    let governance = state.decider().is_ready();
    let audit = state.audit().is_healthy();
    let axon = state.axon().cpu().ready().await;
    let breaker = state.axon().cpu().breaker_state();
    if governance && audit && axon && breaker != BreakerState::Open {
        Ok(Json(Ready {
            status: "ready",
            governance: "ready",
            audit: "ready",
            axon: "ready",
            gpu_pool: state.axon().gpu_state(),
        }))
    } else {
        Err(ApiError::new(
            ErrorCode::ServiceUnavailable,
            format!(
                "orbit is not ready: governance {}, audit {}, axon {}, breaker {breaker:?}",
                if governance { "ready" } else { "not ready" },
                if audit { "ready" } else { "failing" },
                if axon { "ready" } else { "unavailable" },
            ),
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
async fn metrics(State(state): State<OrbitState>) -> Response {
    state.axon().report();
    state.inner.endpoint.response()
}
