//! Correlation ids: accepted from `X-Correlation-ID` or generated, echoed on the
//! response (with a new `X-Request-ID` naming this one request), attached to
//! every log line of the request, and available to
//! handlers and to [`ApiError`](crate::ApiError) through a task-local.

use std::fmt;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::error::{ApiError, Enveloped, ErrorCode, envelope_for_status};

/// The header that carries the correlation id, in both directions.
pub const HEADER: HeaderName = HeaderName::from_static("x-correlation-id");

/// The header that names this one request on the response: unlike the
/// correlation id, which a caller chooses and may reuse, it is always new.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

const MAX_LEN: usize = 128;

tokio::task_local! {
    static CURRENT: CorrelationId;
}

/// The id that ties together a request, its hops and its log lines.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CorrelationId(Arc<str>);

impl CorrelationId {
    /// A new random id (UUID v4).
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string().into())
    }

    /// Accepts a caller's id: 1 to 128 characters of letters, digits, `-`,
    /// `_`, `.` or `:`.
    pub fn parse(value: &str) -> Result<Self, ApiError> {
        let valid = !value.is_empty()
            && value.len() <= MAX_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if valid {
            Ok(Self(value.into()))
        } else {
            Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "`{HEADER}` must be 1 to {MAX_LEN} characters of letters, digits, `-`, `_`, `.` or `:`"
                ),
            ))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn header_value(&self) -> Option<HeaderValue> {
        HeaderValue::from_str(&self.0).ok()
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The correlation id of the request being served on this task, if any.
pub fn current() -> Option<CorrelationId> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Runs `work` as part of the request `id` names, on a task the request
/// handed it to (as an MCP tool call is): its log lines carry the id, and
/// its errors are enveloped with it.
pub async fn within<F: std::future::Future>(id: CorrelationId, work: F) -> F::Output {
    let span = tracing::info_span!("request", correlation_id = %id);
    CURRENT.scope(id, work.instrument(span)).await
}

impl<S: Send + Sync> FromRequestParts<S> for CorrelationId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<CorrelationId>()
            .cloned()
            .ok_or_else(|| ApiError::internal("correlation layer is not installed"))
    }
}

/// Middleware: resolves the id, runs the request inside its scope and span,
/// gives every error response the envelope, and echoes the id.
pub async fn layer(mut request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let (id, rejected) = match request.headers().get(HEADER).map(|v| v.to_str()) {
        None => (CorrelationId::generate(), None),
        Some(Ok(value)) => match CorrelationId::parse(value) {
            Ok(id) => (id, None),
            Err(e) => (CorrelationId::generate(), Some(e)),
        },
        Some(Err(_)) => (
            CorrelationId::generate(),
            Some(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("`{HEADER}` must be visible ASCII"),
            )),
        ),
    };
    request.extensions_mut().insert(id.clone());
    let request_id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!("request", correlation_id = %id, request_id = %request_id, method = %method, path = %path);

    let run = async move {
        let mut response = match rejected {
            Some(error) => error.into_response(),
            None => next.run(request).await,
        };
        let status = response.status();
        if (status.is_client_error() || status.is_server_error())
            && response.extensions().get::<Enveloped>().is_none()
        {
            response = envelope_for_status(status, method.as_str(), &path);
        }
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), "request served");
        }
        response
    };
    let mut response = CURRENT.scope(id.clone(), run.instrument(span)).await;
    if let Some(value) = id.header_value() {
        response.headers_mut().insert(HEADER, value);
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_reasonable_ids_and_rejects_others() {
        assert!(CorrelationId::parse("req-123_a.b:c").is_ok());
        assert!(CorrelationId::parse("").is_err());
        assert!(CorrelationId::parse("has space").is_err());
        assert!(CorrelationId::parse(&"x".repeat(129)).is_err());
        assert!(CorrelationId::parse(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = CorrelationId::generate();
        let b = CorrelationId::generate();
        assert_ne!(a, b);
        assert!(CorrelationId::parse(a.as_str()).is_ok());
    }
}
