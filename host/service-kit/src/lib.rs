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
pub mod reasoning;
pub mod telemetry;

pub use correlation::CorrelationId;
pub use error::{ApiError, ErrorCode};
pub use json::ApiJson;

use axum::Router;

/// Wraps a service's router with the layers every service shares, outermost
/// first: panic catching, correlation ids and the error envelope, HTTP metrics.
pub fn with_common_layers(router: Router, http_metrics: metrics::HttpMetrics) -> Router {
    router
        .layer(axum::middleware::from_fn_with_state(
            http_metrics,
            metrics::track,
        ))
        .layer(axum::middleware::from_fn(correlation::layer))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            error::panic_response,
        ))
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
