//! The stores on AWS, and the one place that chooses between them and the
//! embedded defaults.
//!
//! - [`S3BlobStore`]: module blobs in a (versioned) S3 bucket, content-addressed
//!   by sha256, uploaded with SHA-256 checksums that S3 checks.
//! - [`DynamoRegistry`]: the plugin registry in one DynamoDB table, every write
//!   one conditional transaction.
//! - [`DynamoPolicyStore`]: governance's versioned policy sets in one
//!   DynamoDB table, the head moved by a conditional transaction.
//! - [`LambdaDecider`]: Orbit's decider when the governance Lambda function
//!   decides ([`GovernanceArgs`] picks it).
//! - [`PluginStoreArgs`]: the flags Axon, Orbit and `agentctl` share to pick
//!   `local` (a directory and a SQLite file) or `aws`.
//!
//! Only this crate links the AWS SDKs: `plugin-store` defines the traits and
//! the embedded implementations, and everything that only uses the traits
//! stays free of them.

mod config;
mod dynamodb;
mod item;
mod lambda;
mod policies;
mod s3;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{
    GovernanceArgs, GovernanceMode, PluginStoreArgs, PolicyStoreArgs, StoreKind, sdk_config,
};
pub use dynamodb::DynamoRegistry;
pub use lambda::LambdaDecider;
pub use policies::DynamoPolicyStore;
pub use s3::S3BlobStore;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use plugin_store::StoreError;

/// A failed AWS call as a [`StoreError`]: the service's own code and message
/// when it answered (`ResourceNotFoundException: Requested resource not
/// found`), else the chain of causes (`dispatch failure: io error:
/// connection refused`). The SDK's `Display` alone says only "service
/// error", and its `Debug` carries the whole raw response.
fn backend<E, R>(what: impl std::fmt::Display, error: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let reason = match &error {
        SdkError::ServiceError(service) => match (service.err().code(), service.err().message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.to_owned(),
            _ => causes(service.err()),
        },
        other => causes(other),
    };
    StoreError::Backend(format!("{what}: {reason}"))
}

/// An error and its sources, joined by `: `.
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
