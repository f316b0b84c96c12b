//! Where plugins live, who vouches for them, and how Axon and Orbit get them.
//!
//! - A [`BlobStore`] holds module bytes addressed by their sha256 digest
//!   (embedded: a local directory; AWS: an S3 bucket).
//! - A [`Registry`] holds each version's signed manifest, operator labels,
//!   revocations, aliases, the history of every change and the trust list
//!   (embedded: a SQLite file; AWS: DynamoDB).
//! - [`signing`] is ed25519 in DSSE envelopes; [`trust`] is the root-signed
//!   list of publisher keys and manifest verification under it.
//! - [`PluginSource`] publishes (sign, blob, register) and fetches with the
//!   digest checked; [`Watcher`] keeps the verified in-memory [`Catalog`]
//!   Orbit resolves from and Axon evicts and preloads from.

pub mod admin;
pub mod catalog;
pub mod component;
#[cfg(any(test, feature = "contract-tests"))]
pub mod contract;
mod error;
pub mod input;
mod local;
mod manifest;
pub mod model;
pub mod registry;
pub mod signing;
mod source;
mod sqlite;
pub mod trust;

pub use catalog::{Catalog, CatalogPlugin, CatalogVersion, Watcher};
pub use error::StoreError;
pub use input::{InputSchema, InputViolation};
pub use local::LocalBlobStore;
pub use manifest::{
    CAPABILITIES, Digest, GpuNeed, INFERENCE, InferenceNeed, MANIFEST_TYPE, PluginManifest,
    PluginName, PluginRef, PublishSpec, RequestedLimits,
};
pub use registry::{
    Alias, AliasMove, AliasTarget, Canary, DEFAULT_ALIAS, HistoryEntry, Registered, Registry,
    Route, RouteTarget, Snapshot, VersionEntry, VersionRecord,
};
pub use semver::Version;
pub use signing::{Envelope, KeyId, KeyPair};
pub use source::{
    BlobStore, PluginSource, Progress, Published, PublishedModel, VerifyError, verify_entry,
};
pub use sqlite::SqliteRegistry;
pub use trust::{Trust, TrustError, TrustList, TrustedKey, VerifiedManifest, VerifiedModel};
