//! Governance: which principals may run which plugins.
//!
//! Think -> Govern -> Act: Orbit asks [`Decider::decide`] before any plugin
//! runs, and dispatches only on an allow. Policies are Cedar (`cedar-policy`
//! 4), validated in strict mode against [`SCHEMA`] before they are activated.
//!
//! - A decision is a value ([`Decision`]): allowed or not, the ids of the
//!   policies that decided, any evaluation errors, the hash of the policy set
//!   that made it and how long it took. Every error is a deny.
//! - Policies come from a [`PolicySource`] (embedded default: a directory of
//!   `.cedar` files). An invalid set never activates: at start-up it is an
//!   error; on reload the last good set stays. A source that cannot be read
//!   for longer than the staleness bound makes every decision a deny.
//! - Cedar evaluates every policy it is given, so each request is evaluated
//!   against a slice: policies scoped to its plugin (`resource ==
//!   AgentRuntime::Plugin::"name"`), to its tenant (`principal in
//!   AgentRuntime::Tenant::"t"`), and every unscoped one. Scope constraints are
//!   hard, so the slice decides exactly as the whole set would.

mod decision;
mod engine;
mod policies;
mod source;

pub use decision::{Decision, DecisionRequest, Outcome, PluginInfo, Principal, PrincipalKind};
pub use engine::{Decider, Governance, GovernanceConfig, RefreshOutcome};
pub use policies::{CompiledPolicies, PolicyDocument};
pub use source::{LocalPolicyDir, PolicySource};

/// The Cedar schema every policy is validated against.
pub const SCHEMA: &str = include_str!("../schema/agent-runtime.cedarschema");

/// The local stack's default policies: `(file name, text)`.
pub const DEFAULT_POLICIES: &[(&str, &str)] =
    &[("dispatch.cedar", include_str!("../policies/dispatch.cedar"))];

/// Why governance could not load or refresh its policies.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GovernanceError {
    /// The schema does not parse (a bug in this release).
    #[error("the governance schema is invalid: {0}")]
    Schema(String),
    /// The policies do not parse or do not validate; says which and why.
    #[error("invalid policies: {0}")]
    InvalidPolicies(String),
    /// The policy source cannot be read.
    #[error("cannot read policies from {source_name}: {reason}")]
    SourceUnavailable { source_name: String, reason: String },
}
