//! The one error envelope of the project.
//!
//! Every error any service returns has the same shape:
//!
//! ```json
//! {"error": {"code": "PLUGIN_TIMEOUT", "message": "..."}, "correlation_id": "...", "timestamp": "..."}
//! ```
//!
//! `code` is stable (clients branch on it); `message` is for people and says
//! what to fix. Internals (paths, Rust types, backtraces) never reach it.

use std::any::Any;
use std::fmt;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::correlation;

/// Stable error codes, shared by every service. Each has one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The request is malformed: bad JSON, a missing or invalid field.
    InvalidRequest,
    /// The input breaks the plugin's declared input schema (the `path`
    /// member says where); nothing was decided or run.
    InvalidInput,
    /// The request body is larger than the endpoint accepts.
    PayloadTooLarge,
    /// No `Authorization` header: the request is not signed.
    MissingAuthorization,
    /// The signing key is not known (or was revoked).
    UnknownAccessKey,
    /// The signature does not verify, or the signed request is malformed.
    InvalidSignature,
    /// The request was signed too long ago (or in the future).
    SignatureExpired,
    /// The same signature was already accepted once.
    ReplayedRequest,
    /// Governance denied the request.
    GovernanceDenied,
    /// The policy set in force went without a successful refresh past its
    /// staleness bound: every request is denied until one succeeds.
    GovernanceStale,
    /// The remote decider (the governance Lambda function) could not be
    /// asked, failed or did not answer in time: nothing ran.
    GovernanceUnavailable,
    /// Too many requests from this principal or address.
    RateLimitExceeded,
    /// No such route.
    NotFound,
    /// The route exists but not for this method.
    MethodNotAllowed,
    /// No such plugin, or no such version of it.
    PluginNotFound,
    /// The version is revoked: it never runs again.
    PluginRevoked,
    /// The version's signature does not verify under the trust list (unknown,
    /// revoked, expired or not-allowed key, or a manifest of another plugin or
    /// version): it is never loaded.
    PluginUntrusted,
    /// The module bytes are not the ones its signed manifest (or governance)
    /// names: tampering or corruption. It is never run.
    PluginDigestMismatch,
    /// The plugin rejected the input: the caller must change it.
    PluginInvalidInput,
    /// The plugin reported that it could not answer, or answered with
    /// something that is not valid JSON.
    PluginError,
    /// The plugin trapped: a panic, an abort, a stack overflow.
    PluginTrapped,
    /// The plugin tried to use more memory than its limit.
    PluginMemoryLimit,
    /// The plugin held more host resources (WASI handles) than a request may.
    PluginResourceLimit,
    /// The plugin's answer was larger than its output limit.
    PluginOutputLimit,
    /// The plugin ran past its deadline.
    PluginTimeout,
    /// Every sandbox slot (or the plugin's share of them) is busy: retry later.
    Overloaded,
    /// The plugin requires a GPU and the GPU pool is down (or there is
    /// none): retry later.
    GpuUnavailable,
    /// A dependency is down or the service is not ready: retry later.
    ServiceUnavailable,
    /// A fault on our side; the correlation id finds it in the logs.
    InternalError,
}

impl ErrorCode {
    /// The HTTP status that goes with this code.
    pub fn status(self) -> StatusCode {
        match self {
            Self::InvalidRequest | Self::InvalidInput => StatusCode::BAD_REQUEST,
            Self::MissingAuthorization
            | Self::UnknownAccessKey
            | Self::InvalidSignature
            | Self::SignatureExpired
            | Self::ReplayedRequest => StatusCode::UNAUTHORIZED,
            Self::GovernanceDenied => StatusCode::FORBIDDEN,
            Self::RateLimitExceeded => StatusCode::TOO_MANY_REQUESTS,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound | Self::PluginNotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PluginInvalidInput => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PluginRevoked => StatusCode::GONE,
            Self::PluginUntrusted | Self::PluginDigestMismatch => StatusCode::BAD_GATEWAY,
            Self::PluginError
            | Self::PluginTrapped
            | Self::PluginMemoryLimit
            | Self::PluginResourceLimit
            | Self::PluginOutputLimit => StatusCode::BAD_GATEWAY,
            Self::PluginTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Overloaded
            | Self::GpuUnavailable
            | Self::ServiceUnavailable
            | Self::GovernanceStale
            | Self::GovernanceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The code as it appears on the wire, e.g. `PLUGIN_TIMEOUT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "INVALID_REQUEST",
            Self::InvalidInput => "INVALID_INPUT",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::MissingAuthorization => "MISSING_AUTHORIZATION",
            Self::UnknownAccessKey => "UNKNOWN_ACCESS_KEY",
            Self::InvalidSignature => "INVALID_SIGNATURE",
            Self::SignatureExpired => "SIGNATURE_EXPIRED",
            Self::ReplayedRequest => "REPLAYED_REQUEST",
            Self::GovernanceDenied => "GOVERNANCE_DENIED",
            Self::GovernanceStale => "GOVERNANCE_STALE",
            Self::GovernanceUnavailable => "GOVERNANCE_UNAVAILABLE",
            Self::RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            Self::NotFound => "NOT_FOUND",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::PluginNotFound => "PLUGIN_NOT_FOUND",
            Self::PluginInvalidInput => "PLUGIN_INVALID_INPUT",
            Self::PluginRevoked => "PLUGIN_REVOKED",
            Self::PluginUntrusted => "PLUGIN_UNTRUSTED",
            Self::PluginDigestMismatch => "PLUGIN_DIGEST_MISMATCH",
            Self::PluginError => "PLUGIN_ERROR",
            Self::PluginTrapped => "PLUGIN_TRAPPED",
            Self::PluginMemoryLimit => "PLUGIN_MEMORY_LIMIT",
            Self::PluginResourceLimit => "PLUGIN_RESOURCE_LIMIT",
            Self::PluginOutputLimit => "PLUGIN_OUTPUT_LIMIT",
            Self::PluginTimeout => "PLUGIN_TIMEOUT",
            Self::Overloaded => "OVERLOADED",
            Self::GpuUnavailable => "GPU_UNAVAILABLE",
            Self::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            Self::InternalError => "INTERNAL_ERROR",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error on its way to the client: a code, a message that says what to fix,
/// and for retryable codes how long to wait.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    retry_after_secs: Option<u64>,
    details: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    /// An error with `code` and a message for the client.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_secs: None,
            details: serde_json::Map::new(),
        }
    }

    /// Adds a top-level member to the envelope next to `error` (for example
    /// the governance decision behind a `GOVERNANCE_DENIED`).
    pub fn with_detail(mut self, key: &str, value: impl serde::Serialize) -> Self {
        let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        self.details.insert(key.to_owned(), value);
        self
    }

    /// An internal fault. The detail goes to the log with the correlation id;
    /// the client gets a generic message.
    pub fn internal(detail: impl fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            ErrorCode::InternalError,
            "internal error; quote the correlation id when reporting it",
        )
    }

    /// Adds a `Retry-After` header of `secs` seconds.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The client-facing message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// How long the client should wait before retrying, when it should.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after_secs
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// The wire form of an error, for clients that parse it (Orbit parses Axon's).
/// Some errors add members next to `error`: a denial its `status`,
/// `reason`, `plugin` and `governance`; `INVALID_INPUT` the `path` of the
/// part of the input that breaks the plugin's schema.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
    /// The request's correlation id: it finds the request in the logs.
    pub correlation_id: String,
    /// When the error was answered (RFC 3339, UTC).
    pub timestamp: String,
    /// Members some errors add (see [`ApiError::with_detail`]).
    #[serde(flatten)]
    #[schema(ignore)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// The `error` member of [`ErrorEnvelope`].
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable: clients branch on it.
    pub code: ErrorCode,
    /// For people: what went wrong and what to fix.
    pub message: String,
}

/// Marks a response whose body is already an [`ErrorEnvelope`].
#[derive(Clone, Copy)]
pub(crate) struct Enveloped;

/// Keeps an error response's body as the service wrote it, instead of the
/// envelope the shared layers give bare errors: for a protocol with error
/// bodies of its own (MCP's JSON-RPC errors say what to fix).
pub fn keep_error_body(mut response: Response) -> Response {
    response.extensions_mut().insert(Enveloped);
    response
}

impl ApiError {
    /// The error as its envelope, for the request `correlation_id` names.
    pub fn into_envelope(self, correlation_id: String) -> ErrorEnvelope {
        ErrorEnvelope {
            error: ErrorBody {
                code: self.code,
                message: self.message,
            },
            correlation_id,
            timestamp: crate::timestamp(),
            details: self.details,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, retry_after_secs) = (self.code, self.retry_after_secs);
        let envelope = self.into_envelope(
            correlation::current()
                .map(|id| id.to_string())
                .unwrap_or_default(),
        );
        let mut response = (code.status(), axum::Json(envelope)).into_response();
        if let Some(secs) = retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response.extensions_mut().insert(Enveloped);
        response
    }
}

/// The envelope for an error response some layer produced without one (an
/// unknown route, a wrong method), chosen by its status.
pub(crate) fn envelope_for_status(status: StatusCode, method: &str, path: &str) -> Response {
    let error = match status {
        StatusCode::NOT_FOUND => ApiError::new(
            ErrorCode::NotFound,
            format!("no route for `{method} {path}`"),
        ),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("`{path}` does not accept `{method}`"),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::PayloadTooLarge, "request body is too large")
        }
        s if s.is_server_error() => ApiError::internal(format!("bare {s} from `{method} {path}`")),
        s => ApiError::new(
            ErrorCode::InvalidRequest,
            s.canonical_reason().unwrap_or("bad request").to_lowercase(),
        ),
    };
    let mut response = error.into_response();
    // Keep the original status: the code's own status may differ (e.g. 415).
    *response.status_mut() = status;
    response
}

/// Turns a panic in a handler into an `INTERNAL_ERROR` envelope, never a bare 500.
pub(crate) fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    ApiError::internal(format!("handler panicked: {detail}")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialise_as_their_wire_names() {
        for code in [
            ErrorCode::InvalidRequest,
            ErrorCode::PluginMemoryLimit,
            ErrorCode::PluginResourceLimit,
            ErrorCode::ReplayedRequest,
            ErrorCode::RateLimitExceeded,
            ErrorCode::Overloaded,
            ErrorCode::InternalError,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
    }

    #[test]
    fn retryable_errors_carry_retry_after() {
        let response = ApiError::new(ErrorCode::Overloaded, "busy")
            .retry_after(1)
            .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
