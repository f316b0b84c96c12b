//! Authentication between every part of agent-runtime: AWS Signature
//! Version 4, as S3-compatible servers do it.
//!
//! - [`sign`] signs outgoing requests with `aws-sigv4` (Orbit -> Axon, the CLI).
//! - [`Verifier`] checks incoming ones by recomputing the canonical request
//!   from what arrived (method, path, query, signed headers, body digest) with
//!   the secret from a [`Keyring`], comparing in constant time, enforcing a
//!   clock-skew window and applying a [`ReplayPolicy`]: a public edge
//!   accepts a valid signature for its window, as AWS does; a
//!   service-to-service hop requires a unique signed header and accepts each
//!   signature once.
//! - [`middleware`] puts the verifier in front of an axum router and hands
//!   the caller's [`Identity`] to handlers: the principal comes only from the
//!   verified signature, never from the body.
//!
//! Standard AWS signers (botocore, the AWS SDKs, awscurl) work as clients:
//! sign for service `execute-api` in the configured region.

pub mod canonical;
pub mod credentials;
mod error;
pub mod keyring;
pub mod middleware;
mod replay;
mod sign;
mod time;
mod verify;

pub use error::AuthError;
pub use keyring::{AccessKey, Identity, Keyring, LocalKeyring, PrincipalKind};
pub use sign::{SigningKey, sign};
pub use verify::{Authenticated, ReplayPolicy, SERVICE_HOP_MAX_SKEW, Verifier, VerifierConfig};

/// The service name clients sign for.
pub const SERVICE: &str = "execute-api";
/// The default signing region.
pub const DEFAULT_REGION: &str = "us-east-1";
/// The header Orbit signs on every call to Axon, unique per attempt: Axon
/// requires it, so each of its signatures can be accepted once.
pub const REQUEST_ID_HEADER: &str = "x-orbit-request-id";
