//! Orbit's HTTP surface: the router, its state, and the small endpoints.

use std::sync::Arc;

use auth::middleware::{SigV4, require_sigv4};
use axum::extract::{DefaultBodyLimit, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use governance::Decider;
use serde_json::json;
use service_kit::metrics::{HttpMetrics, MetricsEndpoint};
use service_kit::{ApiError, ErrorCode};

use crate::axon_client::AxonClient;
use crate::breaker::BreakerState;
use crate::catalogue::Catalogue;
use crate::dispatch::dispatch;
use crate::in_flight::InFlightLimit;
use crate::metrics::OrbitMetrics;
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
    pub(crate) axon: AxonClient,
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

    pub fn axon(&self) -> &AxonClient {
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
    let signed = Router::new()
        .route("/dispatch", post(dispatch))
        .route("/v1/dispatch", post(dispatch))
        .route("/v1/plugins", get(crate::discovery::plugins))
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
    let router = signed
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(inner.max_body_bytes))
        .with_state(state.clone());
    service_kit::with_common_layers(router, state.inner.http_metrics.clone())
}

async fn health() -> Json<serde_json::Value> {
    service_kit::health("orbit")
}

async fn ready(State(state): State<OrbitState>) -> Result<Json<serde_json::Value>, ApiError> {
    let governance = state.decider().is_ready();
    let audit = state.audit().is_healthy();
    let axon = state.axon().ready().await;
    let breaker = state.axon().breaker_state();
    if governance && audit && axon && breaker != BreakerState::Open {
        Ok(Json(
            json!({ "status": "ready", "governance": "ready", "audit": "ready", "axon": "ready" }),
        ))
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

async fn metrics(State(state): State<OrbitState>) -> Response {
    state.axon().breaker_state();
    state.inner.endpoint.response()
}
