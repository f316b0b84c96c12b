//! A JSON body extractor whose rejections use the project's error envelope.
//!
//! Unlike `axum::Json` it does not insist on a `Content-Type` (curl's `-d`
//! sends a form type by default): the body is JSON or it is an error.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorCode};

/// A request body parsed as JSON into `T`.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        ErrorCode::PayloadTooLarge,
                        "request body is larger than this endpoint accepts",
                    )
                } else {
                    ApiError::new(
                        ErrorCode::InvalidRequest,
                        format!("cannot read request body: {}", rejection.body_text()),
                    )
                }
            })?;
        parse(&bytes).map(ApiJson)
    }
}

/// Parses a JSON body, with serde's description of what is wrong and where.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("invalid request body: {e}"),
        )
    })
}
