//! Calls to Axon: signed with Orbit's own key, pooled connections, a
//! deadline, retries only for requests that never reached Axon, and a
//! circuit breaker.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use auth::{LocalKeyring, SigningKey};
use plugin_store::PluginRef;
use rand::RngExt;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::value::RawValue;
use service_kit::error::ErrorEnvelope;
use service_kit::{ApiError, CorrelationId, ErrorCode};

use crate::breaker::{Breaker, BreakerState};
use crate::metrics::OrbitMetrics;

/// A new Orbit key is used once it is this old, so that Axon (which re-reads
/// the keyring every 2 s) knows it: rotation causes no 401s between hops.
const KEY_SETTLE: Duration = Duration::from_secs(10);
/// First retry delay; doubled per attempt, with up to 100% jitter.
const RETRY_BASE: Duration = Duration::from_millis(25);

/// How Orbit reaches Axon.
#[derive(Debug, Clone)]
pub struct AxonClientConfig {
    /// e.g. `http://127.0.0.1:8081`.
    pub base_url: String,
    /// The pool it serves, for metrics and messages: `cpu` or `gpu`.
    pub pool: &'static str,
    /// The principal whose key signs the calls (`orbit`).
    pub principal: String,
    pub region: String,
    /// Retries of calls that never reached Axon (connection refused or reset
    /// before sending).
    pub retries: u32,
    pub breaker_failures: u32,
    pub breaker_open_for: Duration,
    /// Time allowed on top of a plugin's own deadline (Axon enforces the
    /// deadline from when the plugin starts): the hop, and a first load that
    /// compiles the version while the request waits.
    pub load_wait: Duration,
    /// The largest answer read from Axon; a larger one is the plugin's fault
    /// (`PLUGIN_OUTPUT_LIMIT`) and is not read further.
    pub max_reply_bytes: usize,
}

/// A plugin's answer as Axon returns it.
#[derive(Debug, Deserialize)]
pub struct AxonAnswer {
    pub output: Box<RawValue>,
    #[serde(default)]
    pub confidence: Option<f64>,
    #[serde(default)]
    pub notes: Vec<String>,
    pub plugin: PluginRef,
}

/// Why a call to Axon failed, and whether it was ever sent.
#[derive(Debug)]
pub struct CallFailure {
    pub error: ApiError,
    /// Set when Axon never saw the request: it did not run.
    pub not_sent: Option<NotSent>,
}

/// Why a call was never sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotSent {
    /// The circuit breaker refused it.
    BreakerOpen,
    /// The connection was refused or could not be made.
    Unreachable,
}

impl CallFailure {
    fn not_sent(why: NotSent, error: ApiError) -> Self {
        Self {
            error,
            not_sent: Some(why),
        }
    }
}

impl From<ApiError> for CallFailure {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            not_sent: None,
        }
    }
}

/// The part of Axon's `/ready` body Orbit reads.
#[derive(Debug, Deserialize)]
pub struct AxonReady {
    /// Where that Axon runs models: `cpu`, `cuda` or `simulated-cuda`.
    #[serde(default = "cpu")]
    pub accelerator: String,
}

fn cpu() -> String {
    "cpu".into()
}

pub struct AxonClient {
    http: reqwest::Client,
    /// Parsed once: parsing a URL per request (host normalisation included)
    /// showed in profiles.
    reason_url: reqwest::Url,
    ready_url: reqwest::Url,
    keyring: Arc<LocalKeyring>,
    config: AxonClientConfig,
    breaker: Breaker,
    metrics: OrbitMetrics,
}

fn unavailable(message: impl Into<String>, retry_after: Duration) -> ApiError {
    ApiError::new(ErrorCode::ServiceUnavailable, message).retry_after(retry_after.as_secs().max(1))
}

impl AxonClient {
    pub fn new(
        config: AxonClientConfig,
        keyring: Arc<LocalKeyring>,
        metrics: OrbitMetrics,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            // Below Axon's idle timeout (10 s by default), so Orbit never
            // sends on a connection Axon is about to close.
            .pool_idle_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .build()?;
        let base = config.base_url.trim_end_matches('/').to_owned();
        let parse = |path: &str| {
            reqwest::Url::parse(&format!("{base}{path}"))
                .map_err(|e| anyhow::anyhow!("axon URL `{}` is not a URL: {e}", config.base_url))
        };
        Ok(Self {
            http,
            reason_url: parse("/v1/reason")?,
            ready_url: parse("/ready")?,
            keyring,
            breaker: Breaker::new(config.breaker_failures, config.breaker_open_for),
            config,
            metrics,
        })
    }

    pub fn breaker_state(&self) -> BreakerState {
        let state = self.breaker.state();
        self.metrics.breaker(self.config.pool, state.gauge());
        state
    }

    fn signing_key(&self) -> Result<SigningKey, ApiError> {
        let key = self.keyring.signing_key_of(&self.config.principal, KEY_SETTLE).ok_or_else(|| {
            tracing::error!(principal = %self.config.principal, "orbit has no key to sign calls to axon");
            unavailable("orbit cannot sign calls to axon: it has no key (see the runbook)", Duration::from_secs(5))
        })?;
        Ok(SigningKey {
            access_key_id: key.access_key_id.clone(),
            secret_access_key: key.secret_access_key.clone(),
            region: self.config.region.clone(),
        })
    }

    /// `POST /v1/reason` with `body`; `deadline` is the plugin's own.
    pub async fn reason(
        &self,
        correlation_id: &CorrelationId,
        body: bytes::Bytes,
        deadline: Duration,
    ) -> Result<AxonAnswer, ApiError> {
        self.try_reason(correlation_id, body, deadline, true)
            .await
            .map_err(|failure| failure.error)
    }

    /// As [`Self::reason`], saying whether a failed call was never sent
    /// (the breaker was open, or Axon could not be reached), so that it can
    /// go to another pool without running twice. Without `retry_unsent`,
    /// a refused connection is not retried here: the caller has somewhere
    /// else to send it.
    pub async fn try_reason(
        &self,
        correlation_id: &CorrelationId,
        body: bytes::Bytes,
        deadline: Duration,
        retry_unsent: bool,
    ) -> Result<AxonAnswer, CallFailure> {
        let retries = if retry_unsent { self.config.retries } else { 0 };
        let admission = match self.breaker.admit() {
            Ok(admission) => admission,
            Err(wait) => {
                self.metrics
                    .axon_call(self.config.pool, "breaker_open", None);
                self.breaker_state();
                return Err(CallFailure::not_sent(
                    NotSent::BreakerOpen,
                    unavailable("axon is unavailable (circuit open); retry shortly", wait),
                ));
            }
        };
        let key = self.signing_key()?;
        let started = Instant::now();
        let mut attempt = 0;
        let response = loop {
            // A fresh request id per attempt: Axon accepts each signature
            // once, and requires this header to be signed.
            let request_id = uuid::Uuid::new_v4().to_string();
            let headers = [
                ("content-type", "application/json"),
                ("x-correlation-id", correlation_id.as_str()),
                (auth::REQUEST_ID_HEADER, request_id.as_str()),
            ];
            let signed = auth::sign(
                &key,
                "POST",
                self.reason_url.as_str(),
                &headers,
                &body,
                SystemTime::now(),
            )
            .map_err(ApiError::internal)?;
            let mut request = self.http.post(self.reason_url.clone()).body(body.clone());
            for (name, value) in headers {
                request = request.header(name, value);
            }
            for (name, value) in signed {
                request = request.header(name, value);
            }
            match tokio::time::timeout(deadline + self.config.load_wait, request.send()).await {
                Ok(Ok(response)) => break response,
                Ok(Err(error)) if error.is_connect() && attempt < retries => {
                    attempt += 1;
                    let backoff = RETRY_BASE * 2u32.pow(attempt - 1);
                    let jitter = backoff.mul_f64(rand::rng().random_range(0.0..1.0));
                    tracing::debug!(%error, attempt, "axon unreachable; retrying");
                    tokio::time::sleep(backoff + jitter).await;
                }
                Ok(Err(error)) => {
                    admission.failed();
                    self.breaker_state();
                    self.metrics
                        .axon_call(self.config.pool, "unreachable", None);
                    tracing::warn!(%error, pool = self.config.pool, "axon is unreachable");
                    let failure =
                        unavailable("axon is unreachable; retry shortly", Duration::from_secs(1));
                    return Err(if error.is_connect() {
                        CallFailure::not_sent(NotSent::Unreachable, failure)
                    } else {
                        failure.into()
                    });
                }
                Err(_elapsed) => {
                    admission.failed();
                    self.breaker_state();
                    self.metrics.axon_call(self.config.pool, "timed_out", None);
                    tracing::warn!("axon did not answer in time");
                    return Err(
                        unavailable("axon did not answer in time", Duration::from_secs(1)).into(),
                    );
                }
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let bytes = match read_bounded(response, self.config.max_reply_bytes).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                admission.succeeded();
                self.breaker_state();
                self.metrics.axon_call(
                    self.config.pool,
                    "rejected",
                    Some(started.elapsed().as_secs_f64()),
                );
                return Err(ApiError::new(
                    ErrorCode::PluginOutputLimit,
                    format!(
                        "the plugin's answer is larger than the {} bytes orbit accepts from axon",
                        self.config.max_reply_bytes
                    ),
                )
                .into());
            }
            Err(error) => {
                admission.failed();
                self.breaker_state();
                self.metrics
                    .axon_call(self.config.pool, "unreachable", None);
                tracing::warn!(%error, "axon's answer was cut off");
                return Err(unavailable(
                    "axon's answer was cut off; retry",
                    Duration::from_secs(1),
                )
                .into());
            }
        };
        admission.succeeded();
        self.breaker_state();
        self.metrics.axon_call(
            self.config.pool,
            if status.is_success() {
                "answered"
            } else {
                "rejected"
            },
            Some(started.elapsed().as_secs_f64()),
        );
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::internal(format!("axon answered 200 with an unreadable body: {e}")).into()
            });
        }
        let envelope: ErrorEnvelope = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::internal(format!(
                "axon answered {status} without an error envelope: {e}"
            ))
        })?;
        if status == StatusCode::UNAUTHORIZED {
            tracing::error!(code = %envelope.error.code, message = %envelope.error.message, "axon refused orbit's signature");
            return Err(unavailable(
                "orbit cannot authenticate to axon (check that both use the same keyring)",
                Duration::from_secs(5),
            )
            .into());
        }
        let error = ApiError::new(envelope.error.code, envelope.error.message);
        Err(match retry_after {
            Some(secs) => error.retry_after(secs),
            None => error,
        }
        .into())
    }

    /// Whether Axon answers `/ready` now.
    pub async fn ready(&self) -> bool {
        self.readiness().await.is_some()
    }

    /// Axon's `/ready` body when it answers ready, body and all, within a
    /// second.
    pub async fn readiness(&self) -> Option<AxonReady> {
        let answer = async {
            let response = self.http.get(self.ready_url.clone()).send().await.ok()?;
            if !response.status().is_success() {
                return None;
            }
            let body = read_bounded(response, 64 * 1024).await.ok()??;
            serde_json::from_slice(&body).ok()
        };
        tokio::time::timeout(Duration::from_secs(1), answer)
            .await
            .ok()
            .flatten()
    }

    /// The pool this client serves.
    pub fn pool(&self) -> &'static str {
        self.config.pool
    }
}

/// The body of `response`, or `None` once it passes `limit` bytes (the rest
/// is not read).
async fn read_bounded(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}
