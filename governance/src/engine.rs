//! The decision engine: the active policy set, refreshes, and decisions.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, Request, RestrictedExpression, Schema,
};

use crate::GovernanceError;
use crate::decision::{Decision, DecisionRequest, Outcome, PluginInfo, Principal, PrincipalKind};
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
    types: EntityTypes,
    inputs: InputCache,
    action: EntityUid,
}

/// The schema's entity types, parsed once (parsing a name runs Cedar's parser).
struct EntityTypes {
    user: EntityTypeName,
    service: EntityTypeName,
    tenant: EntityTypeName,
    group: EntityTypeName,
    plugin: EntityTypeName,
}

impl EntityTypes {
    fn parse() -> Result<Self, GovernanceError> {
        let parse = |name: &str| {
            EntityTypeName::from_str(name).map_err(|e| GovernanceError::Schema(e.to_string()))
        };
        Ok(Self {
            user: parse("AgentRuntime::User")?,
            service: parse("AgentRuntime::Service")?,
            tenant: parse("AgentRuntime::Tenant")?,
            group: parse("AgentRuntime::Group")?,
            plugin: parse("AgentRuntime::Plugin")?,
        })
    }
}

/// What a decision is computed from, besides the policies, cached: building
/// Cedar entities and evaluating the context (Cedar parses the `ip` and
/// `datetime` extension names on every call) cost more than deciding.
/// Entities depend only on the principal and the plugin; the context only on
/// the intent, the client address and the time to the second.
#[derive(Default)]
struct InputCache {
    entities: Mutex<HashMap<u64, Arc<CachedEntities>>>,
    contexts: Mutex<ContextsOfSecond>,
}

/// The contexts evaluated during one second, by intent and client address.
type ContextsOfSecond = (u64, HashMap<(String, IpAddr), Context>);

struct CachedEntities {
    principal: Principal,
    plugin: PluginInfo,
    principal_uid: EntityUid,
    resource_uid: EntityUid,
    entities: Entities,
}

/// Entries kept per cache; past this many it starts over.
const MAX_CACHED_INPUTS: usize = 4096;

fn inputs_key(principal: &Principal, plugin: &PluginInfo) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    (
        &principal.id,
        principal.kind,
        &principal.groups,
        &principal.tenant,
    )
        .hash(&mut hasher);
    (
        &plugin.name,
        &plugin.version,
        &plugin.publisher,
        &plugin.tags,
        &plugin.labels,
    )
        .hash(&mut hasher);
    hasher.finish()
}

fn uid(type_name: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(type_name.clone(), EntityId::new(id))
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
        let types = EntityTypes::parse()?;
        let action_type = EntityTypeName::from_str("AgentRuntime::Action")
            .map_err(|e| GovernanceError::Schema(e.to_string()))?;
        let action = uid(&action_type, "dispatch");
        Ok(Self {
            schema,
            source,
            config,
            active: RwLock::new(Active {
                policies: Arc::new(policies),
                last_read: Instant::now(),
            }),
            authorizer: Authorizer::new(),
            types,
            inputs: InputCache::default(),
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
            let entities = self.cached_entities(request)?;
            let context = self.cached_context(request)?;
            let cedar_request = Request::new(
                entities.principal_uid.clone(),
                self.action.clone(),
                entities.resource_uid.clone(),
                context,
                None,
            )
            .map_err(|e| e.to_string())?;
            Ok(self
                .authorizer
                .is_authorized(&cedar_request, &slice, &entities.entities))
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
        // Cedar skips a policy that fails to evaluate, so an erroring forbid
        // would let a permit through: any error is a deny here.
        let allowed = response.decision() == CedarDecision::Allow && errors.is_empty();
        let reason = if allowed {
            Outcome::Allowed
        } else if !errors.is_empty() {
            Outcome::EvaluationError
        } else if !decided_by.is_empty() {
            Outcome::ForbiddenByPolicy
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

    /// The entities of `request`, built once per principal and plugin.
    fn cached_entities(
        &self,
        request: &DecisionRequest<'_>,
    ) -> Result<Arc<CachedEntities>, String> {
        let key = inputs_key(request.principal, request.plugin);
        let mut cache = self
            .inputs
            .entities
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(hit) = cache.get(&key)
            && hit.principal == *request.principal
            && hit.plugin == *request.plugin
        {
            return Ok(hit.clone());
        }
        let (principal_uid, resource_uid, entities) = self.entities(request, None)?;
        let built = Arc::new(CachedEntities {
            principal: request.principal.clone(),
            plugin: request.plugin.clone(),
            principal_uid,
            resource_uid,
            entities,
        });
        if cache.len() >= MAX_CACHED_INPUTS {
            cache.clear();
        }
        cache.insert(key, built.clone());
        Ok(built)
    }

    /// The context of `request`, evaluated once per intent and address each second.
    fn cached_context(&self, request: &DecisionRequest<'_>) -> Result<Context, String> {
        let second = request
            .time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut guard = self
            .inputs
            .contexts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (cached_second, contexts) = &mut *guard;
        if *cached_second != second {
            *cached_second = second;
            contexts.clear();
        }
        let key = (request.intent.to_owned(), request.source_ip);
        if let Some(context) = contexts.get(&key) {
            return Ok(context.clone());
        }
        let context = self.context(request, second, None)?;
        if contexts.len() < MAX_CACHED_INPUTS {
            contexts.insert(key, context.clone());
        }
        Ok(context)
    }

    /// The principal and resource ids and the entities of `request`. With a
    /// schema, the entities are checked against it (the tests do; decisions
    /// do not, the entities being built here by typed code).
    fn entities(
        &self,
        request: &DecisionRequest<'_>,
        schema: Option<&Schema>,
    ) -> Result<(EntityUid, EntityUid, Entities), String> {
        let t = &self.types;
        let p = request.principal;
        let principal_type = match p.kind {
            PrincipalKind::User => &t.user,
            PrincipalKind::Service => &t.service,
        };
        let principal = uid(principal_type, &p.id);
        let tenant = uid(&t.tenant, &p.tenant);
        let mut parents: HashSet<EntityUid> = HashSet::with_capacity(p.groups.len() + 1);
        let mut entities = Vec::with_capacity(p.groups.len() + 3);
        for group in &p.groups {
            let group = uid(&t.group, group);
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
        let resource = uid(&t.plugin, &plugin.name);
        let long = |n: u64| RestrictedExpression::new_long(i64::try_from(n).unwrap_or(i64::MAX));
        let version = RestrictedExpression::new_record([
            ("major".to_owned(), long(plugin.version.major)),
            ("minor".to_owned(), long(plugin.version.minor)),
            ("patch".to_owned(), long(plugin.version.patch)),
            (
                "pre".to_owned(),
                RestrictedExpression::new_string(plugin.version.pre.to_string()),
            ),
            (
                "build".to_owned(),
                RestrictedExpression::new_string(plugin.version.build.to_string()),
            ),
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
            (
                "labels".to_owned(),
                RestrictedExpression::new_set(
                    plugin
                        .labels
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
        let entities = Entities::from_entities(entities, schema).map_err(|e| e.to_string())?;
        Ok((principal, resource, entities))
    }

    /// The context of `request`, its time at `second`.
    fn context(
        &self,
        request: &DecisionRequest<'_>,
        second: u64,
        schema: Option<&Schema>,
    ) -> Result<Context, String> {
        let time =
            humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(second));
        let context = Context::from_pairs([
            (
                "intent".to_owned(),
                RestrictedExpression::new_string(request.intent.to_owned()),
            ),
            (
                "source_ip".to_owned(),
                RestrictedExpression::new_ip(request.source_ip.to_string()),
            ),
            (
                "time".to_owned(),
                RestrictedExpression::new_datetime(time.to_string()),
            ),
        ])
        .map_err(|e| e.to_string())?;
        if let Some(schema) = schema {
            // Checks the context's types against the action's.
            let (principal, resource, _) = self.entities(request, None)?;
            Request::new(
                principal,
                self.action.clone(),
                resource,
                context.clone(),
                Some(schema),
            )
            .map_err(|e| e.to_string())?;
        }
        Ok(context)
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::{IpAddr, Ipv6Addr};
    use std::time::SystemTime;

    use super::*;
    use crate::decision::{PluginInfo, Principal};
    use crate::source::LocalPolicyDir;

    /// Decisions skip schema checks for speed: the requests and entities they
    /// build must conform to the schema.
    #[test]
    fn requests_and_entities_conform_to_the_schema() {
        let dir =
            std::env::temp_dir().join(format!("governance-conformance-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("p.cedar"), "permit(principal, action, resource);").unwrap();
        let governance = Governance::load(
            Arc::new(LocalPolicyDir::new(&dir)),
            GovernanceConfig::default(),
        )
        .unwrap();
        for (kind, groups) in [
            (PrincipalKind::User, vec![]),
            (PrincipalKind::Service, vec!["a".to_owned(), "b".to_owned()]),
        ] {
            let principal = Principal {
                id: "p-1".into(),
                kind,
                groups,
                tenant: "t".into(),
            };
            let plugin = PluginInfo {
                name: "keywords".into(),
                version: semver::Version::new(3, 2, 1),
                publisher: "me".into(),
                tags: BTreeSet::from(["x".to_owned()]),
                labels: BTreeSet::from(["y".to_owned()]),
            };
            let request = DecisionRequest {
                principal: &principal,
                plugin: &plugin,
                intent: "extract",
                source_ip: IpAddr::V6(Ipv6Addr::LOCALHOST),
                time: SystemTime::now(),
            };
            let schema = Some(&governance.schema);
            let entities = governance.entities(&request, schema);
            assert!(entities.is_ok(), "{:?}", entities.err());
            let context = governance.context(&request, 1_700_000_000, schema);
            assert!(context.is_ok(), "{:?}", context.err());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
