//! The decision engine: the active policy set, refreshes, and decisions.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, Request, RestrictedExpression, Schema,
};

use crate::GovernanceError;
use crate::decision::{Decision, DecisionRequest, Outcome, PrincipalKind};
use crate::policies::{CompiledPolicies, hash_documents};
use crate::source::PolicySource;

/// Asks whether a request may proceed. Orbit holds one: in-process
/// [`Governance`] locally, a Lambda client in AWS; both decide identically.
#[async_trait]
pub trait Decider: Send + Sync {
    /// Decides one request. Never fails: every problem is a deny.
    async fn decide(&self, request: &DecisionRequest<'_>) -> Decision;
    /// True when a policy set is active and fresh.
    fn is_ready(&self) -> bool;
}

/// Settings of the engine.
#[derive(Debug, Clone)]
pub struct GovernanceConfig {
    /// How long the last good set may serve while the source cannot be read;
    /// after that every decision is a deny. Default 5 minutes.
    pub max_staleness: Duration,
    /// Evaluate each request against its slice of the set (default). Off
    /// evaluates every policy, to measure slicing or to check it.
    pub slice: bool,
}

impl Default for GovernanceConfig {
    fn default() -> Self {
        Self {
            max_staleness: Duration::from_secs(300),
            slice: true,
        }
    }
}

/// What a refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The source holds the active set already.
    Unchanged,
    /// A new set is active.
    Activated { hash: String, policies: usize },
}

struct Active {
    policies: Arc<CompiledPolicies>,
    /// When the source was last read successfully.
    last_read: Instant,
}

/// Cedar governance over a policy source.
pub struct Governance {
    schema: Schema,
    source: Arc<dyn PolicySource>,
    config: GovernanceConfig,
    active: RwLock<Active>,
    authorizer: Authorizer,
    action: EntityUid,
}

fn uid(type_name: &str, id: &str) -> Result<EntityUid, String> {
    let type_name = EntityTypeName::from_str(type_name).map_err(|e| e.to_string())?;
    Ok(EntityUid::from_type_name_and_id(
        type_name,
        EntityId::new(id),
    ))
}

impl Governance {
    /// Loads and validates the source's policies. An invalid set, or a source
    /// that cannot be read, is an error: governance never starts open.
    pub fn load(
        source: Arc<dyn PolicySource>,
        config: GovernanceConfig,
    ) -> Result<Self, GovernanceError> {
        let (schema, _warnings) = Schema::from_cedarschema_str(crate::SCHEMA)
            .map_err(|e| GovernanceError::Schema(e.to_string()))?;
        let documents = source.load()?;
        let policies = CompiledPolicies::compile(&schema, &documents)?;
        tracing::info!(policy_set = policies.hash(), policies = policies.len(), source = %source.describe(), "policies active");
        let action = uid("AgentRuntime::Action", "dispatch").map_err(GovernanceError::Schema)?;
        Ok(Self {
            schema,
            source,
            config,
            active: RwLock::new(Active {
                policies: Arc::new(policies),
                last_read: Instant::now(),
            }),
            authorizer: Authorizer::new(),
            action,
        })
    }

    /// The active set.
    pub fn active(&self) -> Arc<CompiledPolicies> {
        self.active
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .policies
            .clone()
    }

    /// Re-reads the source. A changed, valid set becomes active; an invalid
    /// one is refused and the last good set stays; an unreadable source leaves
    /// the set as is and starts the staleness clock.
    pub fn refresh(&self) -> Result<RefreshOutcome, GovernanceError> {
        let documents = self.source.load()?;
        let hash = hash_documents(&documents);
        let unchanged = self.active().hash() == hash;
        let result = if unchanged {
            Ok(RefreshOutcome::Unchanged)
        } else {
            match CompiledPolicies::compile(&self.schema, &documents) {
                Ok(policies) => {
                    let count = policies.len();
                    tracing::info!(policy_set = %hash, policies = count, "new policy set active");
                    self.active
                        .write()
                        .unwrap_or_else(PoisonError::into_inner)
                        .policies = Arc::new(policies);
                    Ok(RefreshOutcome::Activated {
                        hash,
                        policies: count,
                    })
                }
                Err(error) => {
                    tracing::error!(%error, "refused an invalid policy set; the last good set stays active");
                    Err(error)
                }
            }
        };
        // The source answered: the active set is current (or deliberately kept).
        self.active
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .last_read = Instant::now();
        result
    }

    fn stale_for(&self) -> Option<Duration> {
        let elapsed = self
            .active
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .last_read
            .elapsed();
        (elapsed > self.config.max_staleness).then_some(elapsed)
    }

    /// Decides one request synchronously.
    pub fn decide_now(&self, request: &DecisionRequest<'_>) -> Decision {
        let started = Instant::now();
        let policies = self.active();
        let elapsed_us = || started.elapsed().as_micros() as u64;
        if let Some(stale) = self.stale_for() {
            return Decision::deny(
                Outcome::Unavailable,
                vec![format!(
                    "the policy source {} has not been readable for {} s",
                    self.source.describe(),
                    stale.as_secs()
                )],
                policies.hash().to_owned(),
                elapsed_us(),
            );
        }
        let tenant = &request.principal.tenant;
        let set = if self.config.slice {
            policies.slice(&request.plugin.name, tenant)
        } else {
            Ok(policies.full())
        };
        let evaluated = set.map_err(|e| e.to_string()).and_then(|slice| {
            let (cedar_request, entities) = self.to_cedar(request)?;
            Ok(self
                .authorizer
                .is_authorized(&cedar_request, &slice, &entities))
        });
        let response = match evaluated {
            Ok(response) => response,
            Err(error) => {
                return Decision::deny(
                    Outcome::InvalidRequest,
                    vec![error],
                    policies.hash().to_owned(),
                    elapsed_us(),
                );
            }
        };
        let decided_by: Vec<String> = response
            .diagnostics()
            .reason()
            .map(ToString::to_string)
            .collect();
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(ToString::to_string)
            .collect();
        let allowed = response.decision() == CedarDecision::Allow;
        let reason = if allowed {
            Outcome::Allowed
        } else if !decided_by.is_empty() {
            Outcome::ForbiddenByPolicy
        } else if !errors.is_empty() {
            Outcome::EvaluationError
        } else {
            Outcome::NoPermittingPolicy
        };
        Decision {
            allowed,
            reason,
            policies: decided_by,
            errors,
            policy_set: policies.hash().to_owned(),
            decision_time_us: elapsed_us(),
        }
    }

    /// The Cedar request and entities for a decision request.
    fn to_cedar(&self, request: &DecisionRequest<'_>) -> Result<(Request, Entities), String> {
        let p = request.principal;
        let principal_type = match p.kind {
            PrincipalKind::User => "AgentRuntime::User",
            PrincipalKind::Service => "AgentRuntime::Service",
        };
        let principal = uid(principal_type, &p.id)?;
        let tenant = uid("AgentRuntime::Tenant", &p.tenant)?;
        let mut parents: HashSet<EntityUid> = HashSet::with_capacity(p.groups.len() + 1);
        let mut entities = Vec::with_capacity(p.groups.len() + 3);
        for group in &p.groups {
            let group = uid("AgentRuntime::Group", group)?;
            entities.push(Entity::new_no_attrs(group.clone(), HashSet::new()));
            parents.insert(group);
        }
        parents.insert(tenant.clone());
        entities.push(Entity::new_no_attrs(tenant, HashSet::new()));
        let principal_attrs = HashMap::from([(
            "tenant".to_owned(),
            RestrictedExpression::new_string(p.tenant.clone()),
        )]);
        entities.push(
            Entity::new(principal.clone(), principal_attrs, parents).map_err(|e| e.to_string())?,
        );

        let plugin = request.plugin;
        let resource = uid("AgentRuntime::Plugin", &plugin.name)?;
        let long = |n: u64| RestrictedExpression::new_long(i64::try_from(n).unwrap_or(i64::MAX));
        let version = RestrictedExpression::new_record([
            ("major".to_owned(), long(plugin.version.major)),
            ("minor".to_owned(), long(plugin.version.minor)),
            ("patch".to_owned(), long(plugin.version.patch)),
        ])
        .map_err(|e| e.to_string())?;
        let plugin_attrs = HashMap::from([
            (
                "name".to_owned(),
                RestrictedExpression::new_string(plugin.name.clone()),
            ),
            ("version".to_owned(), version),
            (
                "publisher".to_owned(),
                RestrictedExpression::new_string(plugin.publisher.clone()),
            ),
            (
                "tags".to_owned(),
                RestrictedExpression::new_set(
                    plugin
                        .tags
                        .iter()
                        .cloned()
                        .map(RestrictedExpression::new_string),
                ),
            ),
        ]);
        entities.push(
            Entity::new(resource.clone(), plugin_attrs, HashSet::new())
                .map_err(|e| e.to_string())?,
        );

        let time = humantime::format_rfc3339_millis(request.time).to_string();
        let context = Context::from_pairs([
            (
                "intent".to_owned(),
                RestrictedExpression::new_string(request.intent.to_owned()),
            ),
            (
                "source_ip".to_owned(),
                RestrictedExpression::new_ip(request.source_ip.to_string()),
            ),
            ("time".to_owned(), RestrictedExpression::new_datetime(time)),
        ])
        .map_err(|e| e.to_string())?;
        let entities =
            Entities::from_entities(entities, Some(&self.schema)).map_err(|e| e.to_string())?;
        let cedar_request = Request::new(
            principal,
            self.action.clone(),
            resource,
            context,
            Some(&self.schema),
        )
        .map_err(|e| e.to_string())?;
        Ok((cedar_request, entities))
    }
}

#[async_trait]
impl Decider for Governance {
    async fn decide(&self, request: &DecisionRequest<'_>) -> Decision {
        self.decide_now(request)
    }

    fn is_ready(&self) -> bool {
        self.stale_for().is_none()
    }
}
