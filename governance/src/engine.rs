//! The decision engine: the active policy set, refreshes, and decisions.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, Request, RestrictedExpression, Schema,
};

use crate::GovernanceError;
use crate::decision::{
    Decision, DecisionRequest, DiscoveryRequest, Outcome, PluginInfo, Principal, PrincipalKind,
    ShadowDecision,
};
use crate::policies::{CompiledPolicies, PolicyDocument, PolicySchema};
use crate::store::{Head, PolicySetVersion, PolicyStore};

/// Asks whether a request may proceed. Orbit holds one: in-process
/// [`Governance`] locally, a Lambda client in AWS; both decide identically.
#[async_trait]
pub trait Decider: Send + Sync {
    /// Decides one request. Never fails: every problem is a deny.
    async fn decide(&self, request: &DecisionRequest<'_>) -> Decision;
    /// For discovery: which of `request.plugins` the principal could
    /// dispatch with some intent, one answer per plugin. Never fails: every
    /// problem hides the plugin.
    async fn discover(&self, request: &DiscoveryRequest<'_>) -> Vec<bool>;
    /// True when a policy set is active and fresh.
    fn is_ready(&self) -> bool;
}

/// Settings of the engine.
#[derive(Debug, Clone)]
pub struct GovernanceConfig {
    /// How long the last good set may serve without a successful refresh
    /// (the store unreadable, or its head naming a set that does not
    /// validate); after that every decision is a `stale` deny. Default 5
    /// minutes.
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
    /// The head names the active set already.
    Unchanged,
    /// A new set is active.
    Activated {
        version: u64,
        hash: String,
        policies: usize,
    },
    /// The set in force stays; the version in shadow changed (`None`: the
    /// shadow ended).
    Shadow { version: Option<u64> },
}

/// Where the policy set in force stands, for metrics and readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyStatus {
    /// The store version in force (0 for a set given directly).
    pub version: u64,
    pub hash: String,
    pub policies: usize,
    /// Time since the last successful refresh (or load).
    pub since_refresh: Duration,
    /// True past the staleness bound: every decision is denied.
    pub stale: bool,
    /// Failed refreshes since start-up.
    pub refresh_failures: u64,
    /// The version decided in shadow, if one is.
    pub shadow_version: Option<u64>,
}

struct Active {
    policies: Arc<CompiledPolicies>,
    version: u64,
    /// When a refresh last confirmed this set is the head. Only a successful
    /// refresh moves it: a failed one must not hide that the set is aging.
    confirmed: Instant,
    /// A candidate decided beside this set and never enforced.
    shadow: Option<Shadow>,
}

#[derive(Clone)]
struct Shadow {
    policies: Arc<CompiledPolicies>,
    version: u64,
}

/// Cedar governance over a policy store.
pub struct Governance {
    /// `None` for a set given directly (`policy test`, replays): nothing to refresh.
    store: Option<Arc<dyn PolicyStore>>,
    config: GovernanceConfig,
    active: RwLock<Active>,
    refresh_failures: AtomicU64,
    authorizer: Authorizer,
    types: EntityTypes,
    inputs: InputCache,
    action_type: EntityTypeName,
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
    /// The plugin's own action, used when the set in force declares it.
    plugin_action: EntityUid,
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
        &plugin.needs,
    )
        .hash(&mut hasher);
    hasher.finish()
}

fn string_set(strings: &BTreeSet<String>) -> RestrictedExpression {
    RestrictedExpression::new_set(
        strings
            .iter()
            .cloned()
            .map(RestrictedExpression::new_string),
    )
}

fn uid(type_name: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(type_name.clone(), EntityId::new(id))
}

impl Governance {
    /// Loads the set the store's head names: hash-checked and strictly
    /// validated. A store with no head, an unreadable store or a set that
    /// does not validate is an error: governance never starts open.
    pub async fn load(
        store: Arc<dyn PolicyStore>,
        config: GovernanceConfig,
    ) -> Result<Self, GovernanceError> {
        let head = store
            .head()
            .await?
            .ok_or_else(|| GovernanceError::NoActivePolicySet(store.describe()))?;
        let set = store.get(head.version).await?;
        let policies = compile_version(&set, &head.hash)?;
        tracing::info!(policy_version = set.version, policy_set = policies.hash(), policies = policies.len(), store = %store.describe(), "policies active");
        let governance = Self::new(Some(store.clone()), config, policies, set.version)?;
        let shadow = governance.load_shadow(store.as_ref(), &head).await;
        governance
            .active
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .shadow = shadow;
        Ok(governance)
    }

    /// The set the head has in shadow, if any. One that cannot be read or
    /// does not validate is logged and left out: a shadow never enforces,
    /// so it never stops governance either. Later refreshes try it again.
    async fn load_shadow(&self, store: &dyn PolicyStore, head: &Head) -> Option<Shadow> {
        let wanted = head.shadow.as_ref()?;
        let loaded = match store.get(wanted.version).await {
            Ok(set) => compile_version(&set, &wanted.hash),
            Err(error) => Err(error.into()),
        };
        match loaded {
            Ok(policies) => {
                tracing::info!(
                    shadow_version = wanted.version,
                    policy_set = policies.hash(),
                    policies = policies.len(),
                    "policy set in shadow: decided beside the set in force, never enforced"
                );
                Some(Shadow {
                    policies: Arc::new(policies),
                    version: wanted.version,
                })
            }
            Err(error) => {
                tracing::error!(shadow_version = wanted.version, %error, "cannot decide in shadow with this version; the set in force is unaffected");
                None
            }
        }
    }

    /// Governance over a fixed set of documents (strictly validated), with no
    /// store behind it: to test or replay a candidate set.
    pub fn of_documents(
        documents: &[PolicyDocument],
        config: GovernanceConfig,
    ) -> Result<Self, GovernanceError> {
        Self::of_set(documents, &PolicySchema::base()?, config)
    }

    /// Governance over a fixed set validated against `schema` (with the
    /// plugin actions of the registry's input schemas, say), no store.
    pub fn of_set(
        documents: &[PolicyDocument],
        schema: &PolicySchema,
        config: GovernanceConfig,
    ) -> Result<Self, GovernanceError> {
        let policies = CompiledPolicies::compile(schema, documents)?;
        Self::new(None, config, policies, 0)
    }

    fn new(
        store: Option<Arc<dyn PolicyStore>>,
        config: GovernanceConfig,
        policies: CompiledPolicies,
        version: u64,
    ) -> Result<Self, GovernanceError> {
        let types = EntityTypes::parse()?;
        let action_type = EntityTypeName::from_str("AgentRuntime::Action")
            .map_err(|e| GovernanceError::Schema(e.to_string()))?;
        let action = uid(&action_type, "dispatch");
        Ok(Self {
            store,
            config,
            active: RwLock::new(Active {
                policies: Arc::new(policies),
                version,
                confirmed: Instant::now(),
                shadow: None,
            }),
            refresh_failures: AtomicU64::new(0),
            authorizer: Authorizer::new(),
            types,
            inputs: InputCache::default(),
            action_type,
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

    /// The store version of the active set (0 when given directly).
    pub fn active_version(&self) -> u64 {
        self.active
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .version
    }

    /// Polls the store's head. A new version is fetched, hash-checked,
    /// strictly validated and swapped in atomically. Any failure keeps the
    /// last good set and is counted; only a success restarts the staleness
    /// clock.
    pub async fn refresh(&self) -> Result<RefreshOutcome, GovernanceError> {
        let Some(store) = &self.store else {
            return Ok(RefreshOutcome::Unchanged);
        };
        let result = self.refresh_from(store.as_ref()).await;
        match &result {
            Ok(_) => {
                self.active
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .confirmed = Instant::now();
            }
            Err(error) => {
                self.refresh_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, "policy refresh failed; the last good set stays active until it is stale");
            }
        }
        result
    }

    async fn refresh_from(
        &self,
        store: &dyn PolicyStore,
    ) -> Result<RefreshOutcome, GovernanceError> {
        let head = store
            .head()
            .await?
            .ok_or_else(|| GovernanceError::NoActivePolicySet(store.describe()))?;
        let (version, hash, shadow) = {
            let active = self.active.read().unwrap_or_else(PoisonError::into_inner);
            let shadow = active
                .shadow
                .as_ref()
                .map(|s| (s.version, s.policies.hash().to_owned()));
            (active.version, active.policies.hash().to_owned(), shadow)
        };
        let wanted_shadow = head.shadow.as_ref().map(|s| (s.version, s.hash.clone()));
        let same_active = head.version == version && head.hash == hash;
        if same_active && wanted_shadow == shadow {
            return Ok(RefreshOutcome::Unchanged);
        }
        // The set in force first: a failure here keeps everything as it was.
        let activated = if same_active {
            None
        } else {
            let set = store.get(head.version).await?;
            Some((compile_version(&set, &head.hash)?, set.version))
        };
        let new_shadow = if wanted_shadow == shadow {
            None
        } else {
            Some(self.load_shadow(store, &head).await)
        };
        let mut active = self.active.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(new_shadow) = new_shadow {
            if new_shadow.is_none() && head.shadow.is_none() {
                tracing::info!("the shadow ended");
            }
            active.shadow = new_shadow;
        }
        let Some((policies, version)) = activated else {
            return Ok(RefreshOutcome::Shadow {
                version: active.shadow.as_ref().map(|s| s.version),
            });
        };
        let count = policies.len();
        let hash = policies.hash().to_owned();
        tracing::info!(policy_version = version, policy_set = %hash, policies = count, "new policy set active");
        active.policies = Arc::new(policies);
        active.version = version;
        Ok(RefreshOutcome::Activated {
            version,
            hash,
            policies: count,
        })
    }

    /// The set in force, its age and the refresh failures so far.
    pub fn status(&self) -> PolicyStatus {
        let active = self.active.read().unwrap_or_else(PoisonError::into_inner);
        let since_refresh = active.confirmed.elapsed();
        PolicyStatus {
            version: active.version,
            hash: active.policies.hash().to_owned(),
            policies: active.policies.len(),
            since_refresh,
            stale: self.store.is_some() && since_refresh > self.config.max_staleness,
            refresh_failures: self.refresh_failures.load(Ordering::Relaxed),
            shadow_version: active.shadow.as_ref().map(|s| s.version),
        }
    }

    fn stale_for(&self) -> Option<Duration> {
        self.store.as_ref()?;
        let elapsed = self
            .active
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .confirmed
            .elapsed();
        (elapsed > self.config.max_staleness).then_some(elapsed)
    }

    /// Decides one request synchronously (and, while a version is in
    /// shadow, decides it again with that version, for the record only).
    pub fn decide_now(&self, request: &DecisionRequest<'_>) -> Decision {
        let started = Instant::now();
        let (policies, version, shadow) = {
            let active = self.active.read().unwrap_or_else(PoisonError::into_inner);
            (
                active.policies.clone(),
                active.version,
                active.shadow.clone(),
            )
        };
        let elapsed_us = || started.elapsed().as_micros() as u64;
        if let Some(stale) = self.stale_for() {
            // Goes to the caller: no store name or path, only the facts.
            return Decision::deny(
                Outcome::Stale,
                vec![format!(
                    "the policy set in force has not been refreshed for {} s (the limit is {} s)",
                    stale.as_secs(),
                    self.config.max_staleness.as_secs()
                )],
                (version, policies.hash().to_owned()),
                elapsed_us(),
            );
        }
        let mut decision = self.evaluate(&policies, version, request);
        if let Some(shadow) = shadow {
            let candidate = self.evaluate(&shadow.policies, shadow.version, request);
            decision.shadow = Some(ShadowDecision {
                differs: !candidate.same_verdict(&decision),
                policy_version: candidate.policy_version,
                policy_set: candidate.policy_set,
                allowed: candidate.allowed,
                reason: candidate.reason,
                policies: candidate.policies,
                errors: candidate.errors,
            });
        }
        decision.decision_time_us = elapsed_us();
        decision
    }

    /// `request` decided by `policies` (store version `version`); the time
    /// taken is the caller's to fill in.
    fn evaluate(
        &self,
        policies: &CompiledPolicies,
        version: u64,
        request: &DecisionRequest<'_>,
    ) -> Decision {
        let tenant = &request.principal.tenant;
        let set = if self.config.slice {
            policies.slice(&request.plugin.name, tenant)
        } else {
            Ok(policies.full())
        };
        let evaluated = set.map_err(|e| e.to_string()).and_then(|slice| {
            let entities = self.cached_entities(request)?;
            let (action, context) = if policies.has_plugin_action(&request.plugin.name) {
                let input = match request.input {
                    Some(input) => crate::inputs::to_cedar(input)?,
                    None => RestrictedExpression::new_record([]).map_err(|e| e.to_string())?,
                };
                let context = self
                    .cached_context(request)?
                    .merge([("input".to_owned(), input)])
                    .map_err(|e| e.to_string())?;
                (entities.plugin_action.clone(), context)
            } else {
                (self.action.clone(), self.cached_context(request)?)
            };
            let cedar_request = Request::new(
                entities.principal_uid.clone(),
                action,
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
                    (version, policies.hash().to_owned()),
                    0,
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
            policy_version: version,
            policy_set: policies.hash().to_owned(),
            decision_time_us: 0,
            shadow: None,
        }
    }

    /// Which of `request.plugins` the principal could dispatch with some
    /// intent: each is decided by Cedar's partial evaluation with the intent
    /// unknown. A definite deny, or a policy that fails to evaluate whatever
    /// the intent (every dispatch would be an `evaluation_error`), hides it;
    /// a definite allow shows it. When the answer depends on the intent, the
    /// residual policies can only compare it with the strings they hold, so
    /// each of those strings and one that is none of them are decided in
    /// full: shown if any is allowed. A residual with `like` matches
    /// patterns this cannot enumerate, and shows the plugin. Stale
    /// governance shows nothing, as it allows nothing.
    pub fn discover_now(&self, request: &DiscoveryRequest<'_>) -> Vec<bool> {
        let hidden = vec![false; request.plugins.len()];
        if self.stale_for().is_some() {
            return hidden;
        }
        let policies = self.active();
        let second = epoch_second(request.time);
        let context = match self.context_of(None, request.source_ip, second, None) {
            Ok(context) => context,
            Err(error) => {
                tracing::error!(%error, "cannot build the discovery context; listing nothing");
                return hidden;
            }
        };
        request
            .plugins
            .iter()
            .map(|plugin| {
                let asked = DecisionRequest {
                    principal: request.principal,
                    plugin,
                    intent: "",
                    source_ip: request.source_ip,
                    time: request.time,
                    input: None,
                };
                self.could_allow(&policies, &asked, &context, second)
                    .unwrap_or_else(|error| {
                        tracing::warn!(%error, plugin = %plugin.name, "cannot decide discovery; hiding the plugin");
                        false
                    })
            })
            .collect()
    }

    fn could_allow(
        &self,
        policies: &CompiledPolicies,
        request: &DecisionRequest<'_>,
        context: &Context,
        second: u64,
    ) -> Result<bool, String> {
        let slice = if self.config.slice {
            policies
                .slice(&request.plugin.name, &request.principal.tenant)
                .map_err(|e| e.to_string())?
        } else {
            policies.full()
        };
        let entities = self.cached_entities(request)?;
        let plugin_action = policies.has_plugin_action(&request.plugin.name);
        let (action, context) = if plugin_action {
            // The input unknown too: any input the schema admits.
            let input = RestrictedExpression::new_unknown("input");
            let context = self.context_of(None, request.source_ip, second, Some(input))?;
            (entities.plugin_action.clone(), context)
        } else {
            (self.action.clone(), context.clone())
        };
        let cedar_request = Request::new(
            entities.principal_uid.clone(),
            action,
            entities.resource_uid.clone(),
            context,
            None,
        )
        .map_err(|e| e.to_string())?;
        let response =
            self.authorizer
                .is_authorized_partial(&cedar_request, &slice, &entities.entities);
        if response.definitely_errored().next().is_some() {
            return Ok(false);
        }
        if let Some(decision) = response.decision() {
            return Ok(decision == CedarDecision::Allow);
        }
        // It depends on the intent: try every intent the residuals tell apart.
        let mut intents = BTreeSet::new();
        for residual in response.all_residuals() {
            let Ok(json) = residual.to_json() else {
                return Ok(true);
            };
            // A condition on the input: which inputs pass is the schema's
            // and the policies' business, not enumerable here: listed.
            if !string_literals(&json, &mut intents) || mentions_unknown(&json, "input") {
                return Ok(true);
            }
        }
        let longest = intents.iter().map(String::len).max().unwrap_or(0);
        intents.insert("~".repeat(longest + 1));
        Ok(intents.iter().any(|intent| {
            let asked = DecisionRequest { intent, ..*request };
            self.evaluate(policies, 0, &asked).allowed
        }))
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
            plugin_action: uid(&self.action_type, &request.plugin.name),
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
        let second = epoch_second(request.time);
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
            ("labels".to_owned(), string_set(&plugin.labels)),
            (
                "capabilities".to_owned(),
                string_set(&plugin.needs.capabilities),
            ),
            ("models".to_owned(), string_set(&plugin.needs.models)),
            (
                "gpu".to_owned(),
                RestrictedExpression::new_string(plugin.needs.gpu.clone()),
            ),
        ]);
        entities.push(
            Entity::new(resource.clone(), plugin_attrs, HashSet::new())
                .map_err(|e| e.to_string())?,
        );
        if schema.is_none() && plugin.name != "dispatch" {
            // The plugin's own action, a member of `dispatch`, so that
            // `action in Action::"dispatch"` matches it. (With a schema,
            // Cedar takes action entities from the schema.)
            let dispatch = self.action.clone();
            entities.push(Entity::new_no_attrs(
                uid(&self.action_type, &plugin.name),
                HashSet::from([dispatch.clone()]),
            ));
            entities.push(Entity::new_no_attrs(dispatch, HashSet::new()));
        }
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
        let context = self.context_of(Some(request.intent), request.source_ip, second, None)?;
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

    /// A context at `second` from `source_ip`, with `intent`, or with the
    /// intent unknown (discovery's partial evaluation), and the plugin's
    /// `input` for a plugin with an action of its own.
    fn context_of(
        &self,
        intent: Option<&str>,
        source_ip: IpAddr,
        second: u64,
        input: Option<RestrictedExpression>,
    ) -> Result<Context, String> {
        let time =
            humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(second));
        let intent = match intent {
            Some(intent) => RestrictedExpression::new_string(intent.to_owned()),
            None => RestrictedExpression::new_unknown("intent"),
        };
        let pairs = [
            ("intent".to_owned(), intent),
            (
                "source_ip".to_owned(),
                RestrictedExpression::new_ip(source_ip.to_string()),
            ),
            (
                "time".to_owned(),
                RestrictedExpression::new_datetime(time.to_string()),
            ),
        ];
        let input = input.map(|input| ("input".to_owned(), input));
        Context::from_pairs(pairs.into_iter().chain(input)).map_err(|e| e.to_string())
    }
}

/// Collects the string literals of a policy in Cedar's JSON form into
/// `into`; false if it holds a `like`, whose patterns match strings that are
/// not literals.
fn string_literals(json: &serde_json::Value, into: &mut BTreeSet<String>) -> bool {
    match json {
        serde_json::Value::Object(fields) => fields.iter().all(|(key, value)| {
            if key == "like" {
                return false;
            }
            if let (true, serde_json::Value::String(literal)) = (key == "Value", value) {
                into.insert(literal.clone());
                return true;
            }
            string_literals(value, into)
        }),
        serde_json::Value::Array(items) => items.iter().all(|item| string_literals(item, into)),
        _ => true,
    }
}

/// Whether a policy in Cedar's JSON form uses the unknown `name`.
fn mentions_unknown(json: &serde_json::Value, name: &str) -> bool {
    match json {
        serde_json::Value::Object(fields) => fields.iter().any(|(key, value)| {
            (key == "unknown" && value.to_string().contains(&format!("\"{name}\"")))
                || mentions_unknown(value, name)
        }),
        serde_json::Value::Array(items) => items.iter().any(|item| mentions_unknown(item, name)),
        _ => false,
    }
}

/// Seconds since the epoch (0 before it).
fn epoch_second(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A stored version as an active set: its documents must hash to what the
/// version and the head record, and validate strictly against this
/// release's schema with the plugin actions the version was put with.
fn compile_version(
    set: &PolicySetVersion,
    head_hash: &str,
) -> Result<CompiledPolicies, GovernanceError> {
    let schema = PolicySchema::of_stored(&set.schema)?;
    set.check_hash()?;
    if set.hash != head_hash {
        return Err(GovernanceError::Store(
            crate::store::PolicyStoreError::Corrupt(format!(
                "head: it records {head_hash} for version {}, which holds {}",
                set.version, set.hash
            )),
        ));
    }
    CompiledPolicies::compile(&schema, &set.documents).map_err(|error| match error {
        GovernanceError::InvalidPolicies(reason) => GovernanceError::InvalidPolicies(format!(
            "policy set version {}: {reason}",
            set.version
        )),
        other => other,
    })
}

#[async_trait]
impl Decider for Governance {
    async fn decide(&self, request: &DecisionRequest<'_>) -> Decision {
        self.decide_now(request)
    }

    async fn discover(&self, request: &DiscoveryRequest<'_>) -> Vec<bool> {
        self.discover_now(request)
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

    /// Decisions skip schema checks for speed: the requests and entities they
    /// build must conform to the schema.
    #[test]
    fn requests_and_entities_conform_to_the_schema() {
        let governance = Governance::of_documents(
            &[PolicyDocument {
                name: "p.cedar".into(),
                text: "permit(principal, action, resource);".into(),
            }],
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
                needs: Default::default(),
            };
            let request = DecisionRequest {
                principal: &principal,
                plugin: &plugin,
                intent: "extract",
                source_ip: IpAddr::V6(Ipv6Addr::LOCALHOST),
                time: SystemTime::now(),
                input: None,
            };
            let base = PolicySchema::base().unwrap();
            let schema = Some(base.schema());
            let entities = governance.entities(&request, schema);
            assert!(entities.is_ok(), "{:?}", entities.err());
            let context = governance.context(&request, 1_700_000_000, schema);
            assert!(context.is_ok(), "{:?}", context.err());
        }
    }
}
