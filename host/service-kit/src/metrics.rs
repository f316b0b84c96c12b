//! Prometheus metrics: the registry every service renders at `GET /metrics`,
//! and the HTTP metrics every service records (requests by route and status,
//! latency by route).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::ApiError;

/// Latency buckets from 25 us to about 13 s, doubling: plugin calls span
/// microseconds (a trivial plugin) to seconds (a deadline).
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_025, 2.0, 20)
}

/// A histogram with [`latency_buckets`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// A finished registry, rendered on every scrape.
#[derive(Clone)]
pub struct MetricsEndpoint {
    registry: Arc<Registry>,
}

impl MetricsEndpoint {
    /// Freezes `registry`: register every metric before calling this.
    pub fn new(registry: Registry) -> Self {
        Self {
            registry: Arc::new(registry),
        }
    }

    /// The metrics in the OpenMetrics text format.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    /// The `GET /metrics` response.
    pub fn response(&self) -> Response {
        match self.render() {
            Ok(text) => {
                let mut response = text.into_response();
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                response
            }
            Err(e) => ApiError::internal(format!("cannot encode metrics: {e}")).into_response(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: String,
}

/// Requests by route and status, and latency by route.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: Family<RouteStatus, Counter>,
    latency: Family<Route, Histogram>,
}

impl HttpMetrics {
    /// Registers `http_requests_total` and `http_request_duration_seconds`.
    pub fn register(registry: &mut Registry) -> Self {
        let requests = Family::<RouteStatus, Counter>::default();
        let latency = Family::<Route, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        Self { requests, latency }
    }
}

/// Middleware: records every request in [`HttpMetrics`]. Routes are the
/// matched patterns (`/v1/reason`), never raw paths, to bound cardinality.
pub async fn track(State(metrics): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics
        .latency
        .get_or_create(&Route {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&RouteStatus {
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
