//! Where plugins live, and how Axon gets them.
//!
//! Two stores, as in the AWS deployment:
//! - a [`BlobStore`] holds module bytes addressed by their sha256 digest
//!   (embedded: a local directory; AWS: an S3 bucket);
//! - a [`Registry`] holds one immutable [`PluginManifest`] per plugin version
//!   (embedded: a local directory of JSON files; AWS: DynamoDB).
//!
//! [`PluginSource`] joins them: it publishes (blob first, then manifest) and
//! fetches with the digest checked, so bytes that do not match their manifest
//! never reach the compiler.

mod error;
mod local;
mod manifest;
mod source;

pub use error::StoreError;
pub use local::{LocalBlobStore, LocalRegistry};
pub use manifest::{
    Digest, PluginManifest, PluginName, PluginRef, PublishSpec, RequestedLimits, WORLD,
};
pub use semver::Version;
pub use source::{BlobStore, PluginSource, Registry};
