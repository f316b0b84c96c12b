//! The stores on AWS, and the one place that chooses between them and the
//! embedded defaults.
//!
//! - [`S3BlobStore`]: module blobs in a (versioned) S3 bucket, content-addressed
//!   by sha256, uploaded with SHA-256 checksums that S3 checks.
//! - [`DynamoRegistry`]: the plugin registry in one DynamoDB table, every write
//!   one conditional transaction.
//! - [`PluginStoreArgs`]: the flags Axon, Orbit and `agentctl` share to pick
//!   `local` (a directory and a SQLite file) or `aws`.
//!
//! Only this crate links the AWS SDKs: `plugin-store` defines the traits and
//! the embedded implementations, and everything that only uses the traits
//! stays free of them.

mod config;
mod dynamodb;
mod s3;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{PluginStoreArgs, StoreKind, sdk_config};
pub use dynamodb::DynamoRegistry;
pub use s3::S3BlobStore;

use aws_sdk_dynamodb::error::DisplayErrorContext;
use plugin_store::StoreError;

/// A failed AWS call as a [`StoreError`], with the whole error chain (the
/// SDK's own `Display` says only "service error").
fn backend(what: impl std::fmt::Display, error: impl std::error::Error) -> StoreError {
    StoreError::Backend(format!("{what}: {}", DisplayErrorContext(error)))
}
