//! Module blobs in S3, content-addressed:
//!
//! ```text
//! s3://<bucket>/<prefix>sha256/<hex>        module bytes
//! ```
//!
//! An upload is one `PutObject` carrying the object's SHA-256, so S3 refuses
//! bytes damaged on the way. That is a
//! check on transport, not on trust: whatever the bucket hands back is checked
//! again against the signed manifest by `PluginSource` on every fetch (an
//! emulator, or a bucket someone wrote to, does not check checksums).
//!
//! The bucket should have versioning on, so an overwritten blob can be
//! recovered; [`S3BlobStore::check`] warns when it is off.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::operation::put_object::PutObjectError;
use aws_sdk_s3::primitives::{ByteStream, SdkBody};
use aws_sdk_s3::types::{
    BucketLocationConstraint, BucketVersioningStatus, ChecksumAlgorithm, CreateBucketConfiguration,
    VersioningConfiguration,
};
use base64::Engine as _;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use plugin_store::{BlobStore, Digest, Progress, StoreError};
use sha2::{Digest as _, Sha256};

use crate::backend;

/// The body is handed to the HTTP client in pieces of this size, and
/// progress is reported this often.
const CHUNK: usize = 64 << 10;
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// What a fetch reserves before the body arrives.
const INITIAL_CAPACITY: usize = 8 << 20;

/// Module blobs in an S3 bucket.
#[derive(Debug, Clone)]
pub struct S3BlobStore {
    client: Client,
    bucket: String,
    prefix: String,
}

fn checksum(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes))
}

impl S3BlobStore {
    /// Blobs in `bucket` under `prefix`. An endpoint override (an emulator)
    /// gets path-style addressing, which every S3 emulator serves.
    pub fn new(sdk: &aws_config::SdkConfig, bucket: &str, prefix: &str) -> Self {
        let config = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(sdk.endpoint_url().is_some())
            .build();
        Self {
            client: Client::from_conf(config),
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        }
    }

    /// The S3 client, for tests that tamper with the bucket directly.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The object key of `digest`.
    pub fn key(&self, digest: &Digest) -> String {
        format!("{}sha256/{}", self.prefix, digest.hex())
    }

    fn at(&self, digest: &Digest) -> String {
        format!("s3://{}/{}", self.bucket, self.key(digest))
    }

    /// Creates the bucket with versioning on; one that is already ours is
    /// fine. In AWS, infra/ creates it; this is for emulators and set-up by
    /// hand (`agentctl plugin create-store`).
    pub async fn create_bucket(&self) -> Result<(), StoreError> {
        // Outside us-east-1, S3 wants the region named.
        let region = self.client.config().region().map(|r| r.as_ref().to_owned());
        let location = region.filter(|r| r != "us-east-1").map(|r| {
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(r.as_str()))
                .build()
        });
        let created = self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .set_create_bucket_configuration(location)
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_bucket_already_owned_by_you()) => {}
            Err(e) => {
                return Err(backend(
                    format!("cannot create the bucket `{}`", self.bucket),
                    e,
                ));
            }
        }
        self.client
            .put_bucket_versioning()
            .bucket(&self.bucket)
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| {
                backend(
                    format!("cannot turn versioning on for `{}`", self.bucket),
                    e,
                )
            })?;
        Ok(())
    }

    /// Checks the bucket exists and can be reached; warns if versioning is
    /// off, or cannot be read.
    pub async fn check(&self) -> Result<(), StoreError> {
        let unreachable = format!("cannot reach the plugin bucket `{}`", self.bucket);
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| backend(&unreachable, e))?;
        let versioning = self
            .client
            .get_bucket_versioning()
            .bucket(&self.bucket)
            .send()
            .await;
        match versioning {
            Ok(v) if v.status() == Some(&BucketVersioningStatus::Enabled) => {}
            Ok(_) => tracing::warn!(
                bucket = %self.bucket,
                "the plugin bucket has versioning off: an overwritten module cannot be recovered"
            ),
            Err(error) => tracing::warn!(
                bucket = %self.bucket,
                error = %backend("reading its versioning", error),
                "cannot tell whether the plugin bucket has versioning on"
            ),
        }
        Ok(())
    }

    /// One `PutObject` with the whole object's SHA-256, reporting bytes as
    /// the body is sent. A single request is atomic (no parts to clean up)
    /// and takes up to 5 GiB, far beyond any module. With `if_absent`, an
    /// object already at the key is left alone: `Ok(false)`.
    async fn upload(
        &self,
        digest: &Digest,
        bytes: &[u8],
        if_absent: bool,
        progress: Progress<'_>,
    ) -> Result<bool, StoreError> {
        let sent = Arc::new(AtomicU64::new(0));
        let body = {
            let bytes = Bytes::copy_from_slice(bytes);
            let sent = sent.clone();
            // Built anew for each attempt the SDK makes.
            SdkBody::retryable(move || {
                sent.store(0, Ordering::Relaxed);
                SdkBody::from_body_1_x(Counted {
                    bytes: bytes.clone(),
                    offset: 0,
                    sent: sent.clone(),
                })
            })
        };
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(digest))
            .content_length(i64::try_from(bytes.len()).unwrap_or(i64::MAX))
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(checksum(bytes))
            .set_if_none_match(if_absent.then(|| "*".to_owned()))
            .body(ByteStream::new(body))
            .send();
        tokio::pin!(put);
        let mut reported = 0;
        let mut report = || {
            let now = sent.load(Ordering::Relaxed);
            if now > reported {
                progress(now - reported);
                reported = now;
            }
        };
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        let result = loop {
            tokio::select! {
                result = &mut put => break result,
                _ = tick.tick() => report(),
            }
        };
        // 412: the key exists; 409: a racing conditional write to it.
        let present = |e: &SdkError<PutObjectError, HttpResponse>| {
            e.raw_response()
                .is_some_and(|r| matches!(r.status().as_u16(), 409 | 412))
        };
        let written = match result {
            Ok(_) => true,
            Err(e) if if_absent && present(&e) => false,
            Err(e) => return Err(backend(format!("cannot upload {}", self.at(digest)), e)),
        };
        sent.store(bytes.len() as u64, Ordering::Relaxed);
        report();
        Ok(written)
    }
}

/// A request body that counts what the HTTP client has taken from it.
struct Counted {
    bytes: Bytes,
    offset: usize,
    sent: Arc<AtomicU64>,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let end = (self.offset + CHUNK).min(self.bytes.len());
        if self.offset == end {
            return Poll::Ready(None);
        }
        let chunk = self.bytes.slice(self.offset..end);
        self.offset = end;
        self.sent.store(end as u64, Ordering::Relaxed);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.offset == self.bytes.len()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact((self.bytes.len() - self.offset) as u64)
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn put_with_progress(
        &self,
        digest: &Digest,
        bytes: &[u8],
        progress: Progress<'_>,
    ) -> Result<(), StoreError> {
        if self.upload(digest, bytes, true, progress).await? {
            return Ok(());
        }
        // Something is there already: keep it if it is these bytes, replace
        // it if not (a damaged blob is repaired by publishing again; the
        // versioned bucket keeps what it replaced).
        let intact = self.holds(digest, bytes.len() as u64).await;
        if !intact {
            tracing::warn!(at = %self.at(digest), "replacing a stored module that does not match its digest");
            self.upload(digest, bytes, false, &|_| {}).await?;
        }
        Ok(())
    }

    async fn get(&self, digest: &Digest, size: u64) -> Result<Vec<u8>, StoreError> {
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(digest))
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(GetObjectError::NoSuchKey(_)) => {
                    StoreError::NotFound(format!("blob {digest}"))
                }
                _ => backend(format!("cannot fetch {}", self.at(digest)), e),
            })?;
        let length = object.content_length().and_then(|n| u64::try_from(n).ok());
        if let Some(actual) = length.filter(|&n| n > size) {
            return Err(StoreError::SizeMismatch {
                expected: size,
                actual,
            });
        }
        // Read at most one byte past `size`, whatever the length header said.
        let mut body = object.body;
        let mut bytes =
            Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(INITIAL_CAPACITY));
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                StoreError::Backend(format!(
                    "cannot read {}: {}",
                    self.at(digest),
                    crate::causes(&e)
                ))
            })?;
            bytes.extend_from_slice(&chunk);
            if bytes.len() as u64 > size {
                return Err(StoreError::SizeMismatch {
                    expected: size,
                    actual: bytes.len() as u64,
                });
            }
        }
        Ok(bytes)
    }
}
