//! What every agent-runtime HTTP service shares, so that Orbit and Axon answer
//! the same way: one error envelope with stable codes ([`error`]), correlation
//! ids on every request and log line ([`correlation`]), JSON telemetry
//! ([`telemetry`]), Prometheus metrics ([`metrics`]), the front door every
//! service listens through ([`front_door`]) and graceful shutdown.

pub mod correlation;
pub mod error;
pub mod front_door;
pub mod json;
pub mod metrics;
pub mod openapi;
pub mod reasoning;
pub mod reply;
pub mod telemetry;

pub use correlation::CorrelationId;
pub use error::{ApiError, ErrorCode};
pub use json::ApiJson;

use axum::Router;

/// Wraps a service's router with the layers every service shares, outermost
/// first: correlation ids and the error envelope, HTTP metrics, panic
/// catching (inside the other two, so a panic's `500` carries the request's
/// correlation id and is counted).
pub fn with_common_layers(router: Router, http_metrics: metrics::HttpMetrics) -> Router {
    router
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            error::panic_response,
        ))
        .layer(axum::middleware::from_fn_with_state(
            http_metrics,
            metrics::track,
        ))
        .layer(axum::middleware::from_fn(correlation::layer))
}

/// `GET /health`: the process serves. The body is the one the earlier
/// system's load balancers and clients read, with the version of this build.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `healthy`: a process that cannot answer does not answer.
    #[schema(value_type = String, example = "healthy")]
    pub status: &'static str,
    #[schema(value_type = String, example = "orbit")]
    pub service: &'static str,
    /// RFC 3339, UTC.
    pub timestamp: String,
    #[schema(value_type = String, example = "0.1.0")]
    pub version: &'static str,
}

/// The [`Health`] of `service`.
pub fn health(service: &'static str) -> axum::Json<Health> {
    axum::Json(Health {
        status: "healthy",
        service,
        timestamp: timestamp(),
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// The current time as RFC 3339 UTC with milliseconds, as used in responses.
pub fn timestamp() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panic_is_an_internal_error_envelope_with_the_correlation_id() {
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = metrics::HttpMetrics::register(&mut registry);
        async fn boom() -> &'static str {
            panic!("boom")
        }
        let app = with_common_layers(
            Router::new().route("/boom", axum::routing::get(boom)),
            metrics,
        );
        let request = axum::http::Request::get("/boom")
            .header(correlation::HEADER, "panic-test-1")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(
            response.status(),
            axum::http::StatusCode::INTERNAL_SERVER_ERROR
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "INTERNAL_ERROR");
        assert_eq!(body["correlation_id"], "panic-test-1", "{body}");
    }
}
