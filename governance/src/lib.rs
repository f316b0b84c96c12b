//! Governance: which principals may run which plugins.
//!
//! Think -> Govern -> Act: Orbit asks [`Decider::decide`] before any plugin
//! runs, and dispatches only on an allow. Policies are Cedar (`cedar-policy`
//! 4), validated in strict mode against [`SCHEMA`] before they are activated.
//!
//! - A decision is a value ([`Decision`]): allowed or not, the ids of the
//!   policies that decided, any evaluation errors, the version and hash of
//!   the policy set that made it and how long it took. Every error is a deny.
//! - Policy sets are versions in a [`PolicyStore`] (embedded: a SQLite file;
//!   AWS: DynamoDB): immutable, with a head that moves by compare-and-set.
//!   [`Governance`] polls the head; a new version is hash-checked and
//!   validated before it is swapped in. A set that fails either never
//!   activates; the last good one serves until it is stale, then every
//!   decision is a deny.
//! - Cedar evaluates every policy it is given, so each request is evaluated
//!   against a slice: policies scoped to its plugin (`resource ==
//!   AgentRuntime::Plugin::"name"`), to its tenant (`principal in
//!   AgentRuntime::Tenant::"t"`), and every unscoped one. Scope constraints are
//!   hard, so the slice decides exactly as the whole set would.

pub mod audit;
pub mod cases;
mod decision;
mod engine;
pub mod inputs;
mod policies;
mod source;
pub mod store;
pub mod wire;

pub use audit::{AuditLog, AuditRecord};
pub use decision::{
    Decision, DecisionRequest, DiscoveryRequest, Outcome, PluginInfo, PluginNeeds, Principal,
    PrincipalKind, ShadowDecision,
};
pub use engine::{Decider, Governance, GovernanceConfig, PolicyStatus, RefreshOutcome};
pub use inputs::{InputMismatch, InputType};
pub use policies::{CompiledPolicies, PolicyDocument, PolicySchema};
pub use source::read_policies;
pub use store::{PolicyStore, PolicyStoreError, SqlitePolicyStore};

/// The Cedar schema every policy is validated against.
pub const SCHEMA: &str = include_str!("../schema/agent-runtime.cedarschema");

/// The local stack's default policies: `(file name, text)`.
pub const DEFAULT_POLICIES: &[(&str, &str)] =
    &[("dispatch.cedar", include_str!("../policies/dispatch.cedar"))];

/// The default policies as documents.
pub fn default_documents() -> Vec<PolicyDocument> {
    DEFAULT_POLICIES
        .iter()
        .map(|(name, text)| PolicyDocument {
            name: (*name).to_owned(),
            text: (*text).to_owned(),
        })
        .collect()
}

/// Strictly validates `documents` against `schema`, as activation will.
pub fn validate(
    documents: &[PolicyDocument],
    schema: &PolicySchema,
) -> Result<CompiledPolicies, GovernanceError> {
    CompiledPolicies::compile(schema, documents)
}

/// Why governance could not load or refresh its policies. Operators read
/// these (logs, `agentctl`); callers never do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GovernanceError {
    /// The schema does not parse (a bug in this release).
    #[error("the governance schema is invalid: {0}")]
    Schema(String),
    /// The policies do not parse or do not validate; says which and why.
    #[error("invalid policies: {0}")]
    InvalidPolicies(String),
    /// The store has never had a set activated.
    #[error(
        "the policy store {0} has no active policy set: put one and activate it (`agentctl policy put DIR -m MESSAGE --activate`)"
    )]
    NoActivePolicySet(String),
    /// The store failed or holds something that does not check out.
    #[error(transparent)]
    Store(#[from] PolicyStoreError),
    /// Policy files cannot be read.
    #[error("cannot read policies: {0}")]
    Unreadable(String),
}
