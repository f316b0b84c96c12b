//! Governance as a service: Orbit's decider when decisions are made by the
//! governance Lambda function (`governance/lambda`) rather than in-process.
//!
//! Each decision is one `Invoke` of the function with a request in the
//! versioned wire format ([`governance::wire`]). Any failure (the call, the
//! function, a late, unreadable or inconsistent answer) is a deny with the
//! outcome `unavailable`: nothing runs without an allow. What the caller
//! reads names the kind of failure only; the details (ARNs, the function's
//! own error text) go to Orbit's log.

use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_lambda::config::http::HttpResponse;
use aws_sdk_lambda::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::operation::invoke::InvokeError;
use aws_sdk_lambda::primitives::Blob;
use governance::{Decider, Decision, DecisionRequest, DiscoveryRequest, Outcome, wire};

/// Consecutive failed invokes after which the decider reports itself not
/// ready: one throttle or one slow cold start is not an outage.
const UNREADY_AFTER: u32 = 3;
/// How long after the last of those failures it stays not ready.
const UNHEALTHY_FOR: Duration = Duration::from_secs(30);
/// The least the start-up probe waits.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Decides by invoking the governance function.
pub struct LambdaDecider {
    client: aws_sdk_lambda::Client,
    function: String,
    timeout: Duration,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    /// Failed invokes since the last success.
    failures: u32,
    last_failure: Option<Instant>,
}

/// Why there is no decision: what the caller may read, and what only
/// operators do.
#[derive(Debug)]
pub struct InvokeFailure {
    /// The kind of failure, with nothing of the deployment in it.
    pub public: String,
    /// The whole story, for the log.
    pub detail: String,
}

impl InvokeFailure {
    fn same(text: String) -> Self {
        Self {
            public: text.clone(),
            detail: text,
        }
    }
}

impl std::fmt::Display for InvokeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl LambdaDecider {
    /// A decider that invokes `function` (a name, ARN or alias ARN) through
    /// `sdk`, waiting at most `timeout` for each answer.
    pub fn new(sdk: &SdkConfig, function: &str, timeout: Duration) -> Self {
        Self {
            client: aws_sdk_lambda::Client::new(sdk),
            function: function.to_owned(),
            timeout,
            health: Mutex::new(Health::default()),
        }
    }

    /// Checks that the function can be invoked and speaks this wire version,
    /// without deciding anything: a request with no question must come back
    /// as the function's own `invalid_request`. Orbit does this at start-up,
    /// so a wrong name, a missing permission or a bad endpoint stops it
    /// there, as an unreadable policy store does in-process.
    pub async fn probe(&self) -> Result<(), InvokeFailure> {
        let payload = serde_json::json!({ "wire_version": wire::WIRE_VERSION }).to_string();
        // A first invoke may include the function's cold start.
        let wait = self.timeout.max(PROBE_TIMEOUT);
        let answer = self.call(payload.into_bytes(), wait).await?;
        match wire::decode_response(&answer) {
            Err(wire::ResponseError::Refused(error))
                if error.code == wire::WireErrorCode::InvalidRequest =>
            {
                Ok(())
            }
            Ok(_) => Err(InvokeFailure::same(
                "the governance function decided a request with no question".to_owned(),
            )),
            Err(error) => Err(InvokeFailure::same(error.to_string())),
        }
    }

    /// One invoke of the function with `payload`, waiting at most `wait`:
    /// its answer's bytes.
    async fn call(&self, payload: Vec<u8>, wait: Duration) -> Result<Vec<u8>, InvokeFailure> {
        let call = self
            .client
            .invoke()
            .function_name(&self.function)
            .payload(Blob::new(payload))
            .send();
        let output = tokio::time::timeout(wait, call)
            .await
            .map_err(|_| {
                InvokeFailure::same(format!(
                    "the governance function did not answer within {} ms",
                    wait.as_millis()
                ))
            })?
            .map_err(|error| {
                let (public, detail) = reason(&error);
                InvokeFailure {
                    public: format!("invoking the governance function failed: {public}"),
                    detail: format!("invoking the governance function failed: {detail}"),
                }
            })?;
        let payload = output.payload.map(Blob::into_inner).unwrap_or_default();
        if let Some(kind) = output.function_error {
            return Err(InvokeFailure {
                public: format!("the governance function failed ({kind})"),
                detail: format!(
                    "the governance function failed ({kind}): {}",
                    String::from_utf8_lossy(&payload)
                ),
            });
        }
        Ok(payload)
    }

    /// The function's decision, or why there is none.
    async fn invoke(&self, request: &DecisionRequest<'_>) -> Result<Decision, InvokeFailure> {
        let answer = self
            .call(wire::encode_request(request), self.timeout)
            .await?;
        let decision = wire::decode_response(&answer).map_err(|error| InvokeFailure {
            public: "the governance function's answer is not a decision".to_owned(),
            detail: error.to_string(),
        })?;
        // An allow must say why; anything else is not trusted.
        if decision.allowed != (decision.reason == Outcome::Allowed) {
            return Err(InvokeFailure {
                public: "the governance function's answer is not a decision".to_owned(),
                detail: format!(
                    "an answer with allowed {} and reason {}",
                    decision.allowed,
                    decision.reason.as_str()
                ),
            });
        }
        Ok(decision)
    }
}

/// What went wrong with a call, for the caller (the service's error code,
/// or the kind of failure) and for the log (with the service's message,
/// which names ARNs and roles, or its answer, and the causes).
fn reason(error: &SdkError<InvokeError, HttpResponse>) -> (String, String) {
    let public = match error {
        SdkError::ServiceError(service) => service
            .err()
            .code()
            .unwrap_or("the Lambda service refused the call")
            .to_owned(),
        SdkError::TimeoutError(_) => "the call timed out".to_owned(),
        SdkError::DispatchFailure(_) => "the Lambda API could not be reached".to_owned(),
        SdkError::ResponseError(_) => "the Lambda API's answer could not be read".to_owned(),
        _ => "the call could not be made".to_owned(),
    };
    let detail = match error {
        SdkError::ServiceError(service) => match service.err().message() {
            Some(message) => format!("{public}: {message}"),
            None => {
                let raw = service.raw();
                let body = raw.body().bytes().unwrap_or_default();
                let body = String::from_utf8_lossy(&body[..body.len().min(1024)]);
                format!("{public}: HTTP {}: {body}", raw.status())
            }
        },
        other => format!("{public}: {}", crate::causes(other)),
    };
    (public, detail)
}

#[async_trait]
impl Decider for LambdaDecider {
    async fn decide(&self, request: &DecisionRequest<'_>) -> Decision {
        let started = Instant::now();
        let result = self.invoke(request).await;
        let waited_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(mut decision) => {
                if health.failures > 0 {
                    tracing::info!(function = %self.function, after = health.failures, "the governance function answers again");
                }
                *health = Health::default();
                // What the caller waited for: the invoke, not only the
                // evaluation inside the function.
                decision.decision_time_us = waited_us;
                decision
            }
            Err(failure) => {
                health.failures += 1;
                health.last_failure = Some(Instant::now());
                // The first failure of a run says why at `error`; the rest
                // are counted in `orbit_governance_decisions_total`.
                if health.failures == 1 {
                    tracing::error!(function = %self.function, error = %failure, "no decision from the governance function; denying");
                } else {
                    tracing::debug!(function = %self.function, error = %failure, "no decision from the governance function; denying");
                }
                Decision::deny(
                    Outcome::Unavailable,
                    vec![failure.public],
                    (0, String::new()),
                    waited_us,
                )
            }
        }
    }

    /// One invoke per listing; any failure lists nothing (a listing is not
    /// a decision: it does not count against readiness).
    async fn discover(&self, request: &DiscoveryRequest<'_>) -> Vec<bool> {
        let asked = request.plugins.len();
        let answer = match self
            .call(wire::encode_discovery(request), self.timeout)
            .await
        {
            Ok(answer) => wire::decode_visible(&answer, asked).map_err(|e| e.to_string()),
            Err(failure) => Err(failure.to_string()),
        };
        answer.unwrap_or_else(|error| {
            tracing::warn!(function = %self.function, %error, "no discovery answer from the governance function; listing nothing");
            vec![false; asked]
        })
    }

    /// Not ready after several failed invokes in a row, for a while after
    /// the last; a success ends it. It recovers by itself with no traffic,
    /// so a load balancer that stops sending on "not ready" cannot keep it
    /// down.
    fn is_ready(&self) -> bool {
        let health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        health.failures < UNREADY_AFTER
            || health
                .last_failure
                .is_none_or(|at| at.elapsed() > UNHEALTHY_FOR)
    }
}
