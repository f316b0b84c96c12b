//! The question governance answers and the answer, as values.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::SystemTime;

use semver::Version;
use serde::{Deserialize, Serialize};

/// A person or a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    User,
    Service,
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub id: String,
    pub kind: PrincipalKind,
    pub groups: Vec<String>,
    pub tenant: String,
}

/// The plugin version asked for, split by who vouches for what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInfo {
    pub name: String,
    /// Pre-release and build parts included: policies see them.
    pub version: Version,
    /// The verified publisher: the owner of the signing key, per the trust list.
    pub publisher: String,
    /// The publisher's own descriptive tags: claims, not grants.
    pub tags: BTreeSet<String>,
    /// Operator labels from the registry (`approved`, `experimental`, ...).
    pub labels: BTreeSet<String>,
    /// What the version needs from the host, from its signed manifest.
    #[serde(default)]
    pub needs: PluginNeeds,
}

/// What a plugin version needs from the host, as its signed manifest
/// declares it: policies restrict capabilities, models and the GPU with it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PluginNeeds {
    /// Capabilities it declares (`inference`).
    #[serde(default)]
    pub capabilities: BTreeSet<String>,
    /// The names of the models it runs.
    #[serde(default)]
    pub models: BTreeSet<String>,
    /// `none`, `preferred` or `required`.
    #[serde(default = "no_gpu")]
    pub gpu: String,
}

impl Default for PluginNeeds {
    /// Nothing: no capability, no model, no GPU.
    fn default() -> Self {
        Self {
            capabilities: BTreeSet::new(),
            models: BTreeSet::new(),
            gpu: no_gpu(),
        }
    }
}

fn no_gpu() -> String {
    "none".to_owned()
}

/// One `dispatch` question.
#[derive(Debug, Clone)]
pub struct DecisionRequest<'a> {
    pub principal: &'a Principal,
    pub plugin: &'a PluginInfo,
    /// The caller's intent, as sent.
    pub intent: &'a str,
    /// The client's address.
    pub source_ip: IpAddr,
    pub time: SystemTime,
    /// The request's input as policies see it (`context.input` of the
    /// plugin's own action): projected by [`crate::InputType::project`] onto
    /// the plugin's input schema. `None` for a plugin without one.
    pub input: Option<&'a serde_json::Value>,
}

/// One discovery question: which of these plugin versions could the
/// principal dispatch, with some intent? (`GET /v1/plugins` lists those.)
#[derive(Debug, Clone)]
pub struct DiscoveryRequest<'a> {
    pub principal: &'a Principal,
    pub plugins: &'a [PluginInfo],
    /// The client's address.
    pub source_ip: IpAddr,
    pub time: SystemTime,
}

/// Why a decision came out as it did: a stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A permit matched and no forbid did.
    Allowed,
    /// A forbid matched.
    ForbiddenByPolicy,
    /// Nothing permits the request (the default).
    NoPermittingPolicy,
    /// A policy failed to evaluate: a deny whatever else matched (an erroring
    /// forbid must not let a permit through).
    EvaluationError,
    /// The request does not fit the schema (a bug, or unexpected input).
    InvalidRequest,
    /// The set in force has gone without a successful refresh past the
    /// staleness bound (the store unreadable, or its head naming a set that
    /// does not validate): every request is denied until one succeeds.
    Stale,
    /// A remote decider (the Lambda function) could not be asked, failed or
    /// did not answer in time: a deny, as every failure is.
    Unavailable,
}

impl Outcome {
    /// The code as it appears on the wire and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::ForbiddenByPolicy => "forbidden_by_policy",
            Self::NoPermittingPolicy => "no_permitting_policy",
            Self::EvaluationError => "evaluation_error",
            Self::InvalidRequest => "invalid_request",
            Self::Stale => "stale",
            Self::Unavailable => "unavailable",
        }
    }
}

/// An answer. Every path that is not an explicit allow is a deny.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub allowed: bool,
    pub reason: Outcome,
    /// Ids of the policies that decided (the permits for an allow, the
    /// forbids for a deny; for an evaluation error, those that evaluated).
    pub policies: Vec<String>,
    /// Evaluation errors, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// The store version of the policy set that decided (0 for a set given
    /// directly, as `policy test` does).
    pub policy_version: u64,
    /// Hash of the policy set that decided.
    pub policy_set: String,
    pub decision_time_us: u64,
    /// What the version in shadow decided, while one runs: recorded in the
    /// audit trail, never enforced, never shown to the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowDecision>,
}

/// A candidate policy set's decision on a live request
/// (`agentctl policy activate --shadow`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowDecision {
    pub policy_version: u64,
    pub policy_set: String,
    pub allowed: bool,
    pub reason: Outcome,
    pub policies: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// True when it would have decided otherwise than the set in force
    /// ([`Decision::same_verdict`]).
    pub differs: bool,
}

impl Decision {
    /// A deny for `reason` with no deciding policy, made by the set
    /// `(version, hash)` (or, for a decider that could not be asked, none).
    pub fn deny(
        reason: Outcome,
        errors: Vec<String>,
        (policy_version, policy_set): (u64, String),
        decision_time_us: u64,
    ) -> Self {
        Self {
            allowed: false,
            reason,
            policies: Vec::new(),
            errors,
            policy_version,
            policy_set,
            decision_time_us,
            shadow: None,
        }
    }

    /// Whether `other` decides this request the same way: the same outcome,
    /// by the same policies. What replays and shadows count as a change.
    pub fn same_verdict(&self, other: &Decision) -> bool {
        (self.allowed, self.reason, &self.policies)
            == (other.allowed, other.reason, &other.policies)
    }

    /// One line for people: why this was decided.
    pub fn explain(&self) -> String {
        match self.reason {
            Outcome::Allowed => format!("allowed by {}", self.policies.join(", ")),
            Outcome::ForbiddenByPolicy => {
                format!("forbidden by policy {}", self.policies.join(", "))
            }
            Outcome::NoPermittingPolicy => "no policy permits this request".to_owned(),
            Outcome::EvaluationError => {
                format!("policy evaluation failed: {}", self.errors.join("; "))
            }
            Outcome::InvalidRequest => format!(
                "the request does not fit the policy schema: {}",
                self.errors.join("; ")
            ),
            Outcome::Stale => {
                format!("governance is stale: {}", self.errors.join("; "))
            }
            Outcome::Unavailable => {
                format!("governance is unavailable: {}", self.errors.join("; "))
            }
        }
    }
}
