//! Governance as a service: Orbit's decider when decisions are made by the
//! governance Lambda function (`governance/lambda`) rather than in-process.
//!
//! Each decision is one `Invoke` of the function with a request in the
//! versioned wire format ([`governance::wire`]). Any failure (the call, the
//! function, a late or unreadable answer) is a deny with the outcome
//! `unavailable`: nothing runs without an allow.

use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_lambda::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::primitives::Blob;
use governance::{Decider, Decision, DecisionRequest, Outcome, wire};

/// How long after a failed invoke the decider reports itself not ready.
const UNHEALTHY_FOR: Duration = Duration::from_secs(30);

/// Decides by invoking the governance function.
pub struct LambdaDecider {
    client: aws_sdk_lambda::Client,
    function: String,
    timeout: Duration,
    /// When an invoke last failed (cleared by a success).
    failed_at: Mutex<Option<Instant>>,
}

impl LambdaDecider {
    /// A decider that invokes `function` (a name, ARN or alias ARN) through
    /// `sdk`, waiting at most `timeout` for each answer.
    pub fn new(sdk: &SdkConfig, function: &str, timeout: Duration) -> Self {
        Self {
            client: aws_sdk_lambda::Client::new(sdk),
            function: function.to_owned(),
            timeout,
            failed_at: Mutex::new(None),
        }
    }

    /// The function's decision, or why there is none.
    async fn invoke(&self, request: &DecisionRequest<'_>) -> Result<Decision, String> {
        let call = self
            .client
            .invoke()
            .function_name(&self.function)
            .payload(Blob::new(wire::encode_request(request)))
            .send();
        let output = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| {
                format!(
                    "the governance function did not answer within {} ms",
                    self.timeout.as_millis()
                )
            })?
            .map_err(|error| {
                format!(
                    "invoking the governance function failed: {}",
                    reason(&error)
                )
            })?;
        let payload = output.payload.as_ref().map_or(&[][..], Blob::as_ref);
        if let Some(kind) = output.function_error() {
            // The function's own error text stays in the operators' log.
            tracing::error!(
                function = %self.function,
                kind,
                payload = %String::from_utf8_lossy(payload),
                "the governance function failed"
            );
            return Err(format!("the governance function failed ({kind})"));
        }
        wire::decode_response(payload)
    }
}

/// What went wrong with a call: the service's code and message when it
/// answered, else the kind of failure (no endpoint detail reaches a caller).
fn reason<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> String {
    match error {
        SdkError::ServiceError(service) => match (service.err().code(), service.err().message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.to_owned(),
            _ => "the Lambda service refused the call".to_owned(),
        },
        SdkError::TimeoutError(_) => "the call timed out".to_owned(),
        SdkError::DispatchFailure(_) => "the Lambda API could not be reached".to_owned(),
        SdkError::ResponseError(_) => "the Lambda API's answer could not be read".to_owned(),
        _ => "the call could not be made".to_owned(),
    }
}

#[async_trait]
impl Decider for LambdaDecider {
    async fn decide(&self, request: &DecisionRequest<'_>) -> Decision {
        let started = Instant::now();
        let result = self.invoke(request).await;
        let waited_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut failed_at = self
            .failed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(mut decision) => {
                *failed_at = None;
                // What the caller waited for: the invoke, not only the
                // evaluation inside the function.
                decision.decision_time_us = waited_us;
                decision
            }
            Err(error) => {
                *failed_at = Some(Instant::now());
                tracing::error!(function = %self.function, %error, "no decision from the governance function; denying");
                Decision::deny(
                    Outcome::Unavailable,
                    vec![error],
                    (0, String::new()),
                    waited_us,
                )
            }
        }
    }

    /// Not ready for a while after a failed invoke; a success ends it. It
    /// recovers by itself with no traffic, so a load balancer that stops
    /// sending on "not ready" cannot keep it down.
    fn is_ready(&self) -> bool {
        self.failed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none_or(|at| at.elapsed() > UNHEALTHY_FOR)
    }
}
