//! The governance function: in-process governance ([`governance::Governance`])
//! behind the Lambda invoke API, so Orbit in AWS can ask a service that the
//! governance owners deploy, scale and restrict on their own.
//!
//! - Cold start: the SDK client is built and the active set loaded,
//!   hash-checked and strictly validated once. No valid set, no function.
//! - Each invocation is one [`governance::wire`] request. Lambda freezes an
//!   instance between invocations, so the policy store's head is polled
//!   from an invocation, at most once every `--refresh-secs`, in the
//!   background: a decision never waits for DynamoDB or for compiling a new
//!   set (a refresh frozen with the instance goes on at its next
//!   invocation). The staleness rules are in-process governance's own (a
//!   failed refresh keeps the last good set until it is stale, then every
//!   decision is a `stale` deny).
//! - Every answer is a [`WireResponse`]: a decision, or an error that says
//!   what was wrong with the request.

#[cfg(feature = "testing")]
pub mod testing;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_stores::DynamoPolicyStore;
use governance::wire::{self, Answer, Question, WireResponse};
use governance::{Governance, GovernanceConfig, GovernanceError};

/// The function's settings, from its environment (Lambda passes no
/// arguments) or flags.
#[derive(Debug, Clone, clap::Args)]
pub struct FunctionConfig {
    /// The DynamoDB table holding policy sets (`agentctl policy
    /// create-store --policy-store aws`). The SDK's `AWS_ENDPOINT_URL` points
    /// it at an emulator.
    #[arg(long, env = "AGENT_RUNTIME_POLICY_TABLE")]
    pub policy_table: String,
    /// Poll the store's head at most this often, in seconds (on an
    /// invocation: a frozen instance polls nothing).
    #[arg(long, env = "AGENT_RUNTIME_POLICY_REFRESH_SECS", default_value_t = 2)]
    pub refresh_secs: u64,
    /// How long the last good set serves without a successful refresh; then
    /// every decision is a `stale` deny. In seconds.
    #[arg(
        long,
        env = "AGENT_RUNTIME_POLICY_MAX_STALENESS_SECS",
        default_value_t = 300
    )]
    pub policy_max_staleness_secs: u64,
}

/// The function's state between invocations.
pub struct DecisionFunction {
    governance: Arc<Governance>,
    refresh_every: Duration,
    refreshed: Mutex<Instant>,
    /// A refresh is under way: one at a time.
    refreshing: Arc<AtomicBool>,
}

impl DecisionFunction {
    /// The cold start: the store's client, and the active set loaded.
    pub async fn start(config: &FunctionConfig) -> Result<Self, GovernanceError> {
        let sdk = aws_stores::sdk_config(None).await;
        let store = Arc::new(DynamoPolicyStore::new(&sdk, &config.policy_table));
        let governance = Governance::load(
            store,
            GovernanceConfig {
                max_staleness: Duration::from_secs(config.policy_max_staleness_secs),
                ..GovernanceConfig::default()
            },
        )
        .await?;
        Ok(Self {
            governance: Arc::new(governance),
            refresh_every: Duration::from_secs(config.refresh_secs),
            refreshed: Mutex::new(Instant::now()),
            refreshing: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Answers one invocation.
    pub async fn handle(&self, payload: &serde_json::Value) -> WireResponse {
        self.refresh_if_due();
        let answer = wire::decode_request(payload).and_then(|question| match question {
            Question::Decide(asked) => Ok(Answer::Decision(
                self.governance.decide_now(&asked.request()?),
            )),
            Question::Discover(asked) => Ok(Answer::Visible(
                self.governance.discover_now(&asked.request()?),
            )),
        });
        wire::respond(answer.unwrap_or_else(Answer::Error))
    }

    /// Starts polling the head in the background when the last poll is
    /// older than the refresh period and none is under way. Failures are
    /// logged and counted by governance; decisions meanwhile are made by the
    /// last good set (or are `stale`).
    fn refresh_if_due(&self) {
        {
            let mut refreshed = self
                .refreshed
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if refreshed.elapsed() < self.refresh_every || self.refreshing.load(Ordering::Acquire) {
                return;
            }
            *refreshed = Instant::now();
            self.refreshing.store(true, Ordering::Release);
        }
        let (governance, refreshing) = (self.governance.clone(), self.refreshing.clone());
        tokio::spawn(async move {
            let _ = governance.refresh().await;
            refreshing.store(false, Ordering::Release);
        });
    }
}
