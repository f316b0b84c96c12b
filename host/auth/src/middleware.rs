//! The verifier as axum middleware: buffers the body (bounded), verifies,
//! and hands [`Authenticated`] to handlers as a request extension.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use service_kit::{ApiError, ErrorCode};

use crate::verify::{Authenticated, Verifier};

/// What the middleware needs.
#[derive(Clone)]
pub struct SigV4 {
    pub verifier: Arc<Verifier>,
    /// Largest body read for verification; larger is `413 PAYLOAD_TOO_LARGE`.
    pub max_body_bytes: usize,
}

/// Middleware: rejects requests without a valid signature (401 with the
/// reason's code) and passes the rest on with their [`Authenticated`].
pub async fn require_sigv4(State(auth): State<SigV4>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, auth.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(error) if too_large(&error) => {
            return ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("request body is larger than {} bytes", auth.max_body_bytes),
            )
            .into_response();
        }
        Err(error) => {
            return ApiError::new(
                ErrorCode::InvalidRequest,
                format!("cannot read the request body: {error}"),
            )
            .into_response();
        }
    };
    match auth.verifier.verify(
        &parts.method,
        &parts.uri,
        &parts.headers,
        &bytes,
        SystemTime::now(),
    ) {
        Ok(authenticated) => {
            tracing::debug!(principal = %authenticated.identity().principal, "request authenticated");
            parts.extensions.insert(authenticated);
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(error) => {
            tracing::info!(%error, "request not authenticated");
            ApiError::from(error).into_response()
        }
    }
}

/// True when reading a body failed because it passed the length limit.
fn too_large(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Authenticated>()
            .cloned()
            .ok_or_else(|| ApiError::internal("the SigV4 layer is not installed on this route"))
    }
}
