use service_kit::{ApiError, ErrorCode};

/// Why a request was not authenticated. Every variant is a 401 with its own
/// stable code, except a principal over its replay-cache quota (503: we cannot tell).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "missing `Authorization` header: sign the request with AWS SigV4 (service `execute-api`)"
    )]
    MissingAuthorization,
    #[error("unknown access key `{0}`")]
    UnknownAccessKey(String),
    #[error("{0}")]
    InvalidSignature(String),
    #[error("{0}")]
    SignatureExpired(String),
    #[error("this signature was already used; sign each request anew")]
    Replayed,
    #[error(
        "principal `{0}` has sent too many requests in the last minutes to check them for replays; retry shortly"
    )]
    ReplayCacheFull(String),
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        let code = match &error {
            AuthError::MissingAuthorization => ErrorCode::MissingAuthorization,
            AuthError::UnknownAccessKey(_) => ErrorCode::UnknownAccessKey,
            AuthError::InvalidSignature(_) => ErrorCode::InvalidSignature,
            AuthError::SignatureExpired(_) => ErrorCode::SignatureExpired,
            AuthError::Replayed => ErrorCode::ReplayedRequest,
            AuthError::ReplayCacheFull(_) => {
                return ApiError::new(ErrorCode::ServiceUnavailable, error.to_string())
                    .retry_after(1);
            }
        };
        ApiError::new(code, error.to_string())
    }
}
