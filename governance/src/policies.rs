//! Compiling policy documents into an evaluable, sliced set.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use cedar_policy::{
    ActionConstraint, Policy, PolicyId, PolicySet, PrincipalConstraint, ResourceConstraint, Schema,
    SchemaFragment, ValidationMode, Validator,
};
use sha2::{Digest, Sha256};

use crate::GovernanceError;

/// One file of policies.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicyDocument {
    /// File name, e.g. `dispatch.cedar`: policies without an `@id` are named
    /// after it (`dispatch.cedar#2`).
    pub name: String,
    pub text: String,
}

/// Slices kept per (plugin, tenant); past this many the cache starts over.
const MAX_CACHED_SLICES: usize = 4096;

const PLUGIN_TYPE: &str = "AgentRuntime::Plugin";
const TENANT_TYPE: &str = "AgentRuntime::Tenant";

/// A validated policy set, indexed for slicing.
pub struct CompiledPolicies {
    hash: String,
    count: usize,
    full: Arc<PolicySet>,
    global: Vec<Policy>,
    by_plugin: HashMap<String, Vec<Policy>>,
    by_tenant: HashMap<String, Vec<Policy>>,
    slices: Mutex<HashMap<(String, String), Arc<PolicySet>>>,
    /// Plugins with an action of their own in the schema this set was
    /// validated against (their input schemas; see [`crate::inputs`]).
    plugin_actions: HashSet<String>,
}

/// The content hash of a set: `sha256:<hex>` over the documents' names and
/// texts and, where plugins have actions of their own, the generated part of
/// the schema (it decides too). A set without them hashes as it always did.
pub(crate) fn hash_set(documents: &[PolicyDocument], plugin_actions: &str) -> String {
    let mut hasher = Sha256::new();
    for d in documents {
        hasher.update((d.name.len() as u64).to_le_bytes());
        hasher.update(d.name.as_bytes());
        hasher.update((d.text.len() as u64).to_le_bytes());
        hasher.update(d.text.as_bytes());
    }
    if !plugin_actions.is_empty() {
        hasher.update(b"\0plugin-actions");
        hasher.update((plugin_actions.len() as u64).to_le_bytes());
        hasher.update(plugin_actions.as_bytes());
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// The schema a set is validated and decided against: this release's
/// [`crate::SCHEMA`] and, after it, the actions generated from the plugins'
/// input schemas ([`crate::inputs::plugin_actions_fragment`]). A version
/// stores it as one text, the base first.
#[derive(Clone)]
pub struct PolicySchema {
    schema: Schema,
    plugin_actions: String,
}

impl PolicySchema {
    /// This release's schema, no plugin actions.
    pub fn base() -> Result<Self, GovernanceError> {
        Self::with_plugin_actions("")
    }

    /// This release's schema and `fragment` (empty: none).
    pub fn with_plugin_actions(fragment: &str) -> Result<Self, GovernanceError> {
        let parse = |text: &str| {
            SchemaFragment::from_cedarschema_str(text)
                .map(|(fragment, _warnings)| fragment)
                .map_err(|e| GovernanceError::Schema(e.to_string()))
        };
        let mut fragments = vec![parse(crate::SCHEMA)?];
        if !fragment.trim().is_empty() {
            fragments.push(parse(fragment)?);
        }
        let schema = Schema::from_schema_fragments(fragments)
            .map_err(|e| GovernanceError::Schema(e.to_string()))?;
        Ok(Self {
            schema,
            plugin_actions: fragment.to_owned(),
        })
    }

    /// The schema a version stored. One stored by a release with another
    /// base schema is read as this release's, without plugin actions: a
    /// set is always validated against the schema the engine builds
    /// requests for.
    pub fn of_stored(text: &str) -> Result<Self, GovernanceError> {
        Self::with_plugin_actions(plugin_actions_of(text))
    }

    /// The text a version stores.
    pub fn text(&self) -> String {
        format!("{}{}", crate::SCHEMA, self.plugin_actions)
    }

    /// The generated part ("" when no plugin has an action of its own).
    pub fn plugin_actions(&self) -> &str {
        &self.plugin_actions
    }

    /// The parsed schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }
}

/// The generated part of a stored schema text.
pub(crate) fn plugin_actions_of(stored: &str) -> &str {
    stored.strip_prefix(crate::SCHEMA).unwrap_or("")
}

impl CompiledPolicies {
    /// Parses, names, validates (strict) and indexes `documents`.
    pub fn compile(
        policy_schema: &PolicySchema,
        documents: &[PolicyDocument],
    ) -> Result<Self, GovernanceError> {
        let schema = policy_schema.schema();
        let mut all = Vec::new();
        let mut seen_ids = HashSet::new();
        for document in documents {
            let parsed: PolicySet = document.text.parse().map_err(|e| {
                GovernanceError::InvalidPolicies(format!("`{}`: {e}", document.name))
            })?;
            if parsed.templates().next().is_some() {
                return Err(GovernanceError::InvalidPolicies(format!(
                    "`{}`: policy templates are not supported",
                    document.name
                )));
            }
            for (index, policy) in parsed.policies().enumerate() {
                let id = policy
                    .annotation("id")
                    .map_or_else(|| format!("{}#{index}", document.name), str::to_owned);
                if !seen_ids.insert(id.clone()) {
                    return Err(GovernanceError::InvalidPolicies(format!(
                        "`{}`: policy id `{id}` is used twice",
                        document.name
                    )));
                }
                all.push(policy.new_id(PolicyId::new(id)));
            }
        }
        let full = PolicySet::from_policies(all.iter().cloned())
            .map_err(|e| GovernanceError::InvalidPolicies(e.to_string()))?;
        let validation = Validator::new(schema.clone()).validate(&full, ValidationMode::Strict);
        if !validation.validation_passed() {
            let errors: Vec<String> = validation
                .validation_errors()
                .map(|e| format!("policy `{}`: {e}", e.policy_id()))
                .collect();
            return Err(GovernanceError::InvalidPolicies(errors.join("; ")));
        }
        let plugin_actions: HashSet<String> = schema
            .actions()
            .map(|action| action.id().unescaped().to_owned())
            .filter(|id| id != "dispatch")
            .collect();
        if !plugin_actions.is_empty() {
            refuse_dispatch_alone(&all, &plugin_actions)?;
        }

        let mut compiled = Self {
            hash: hash_set(documents, policy_schema.plugin_actions()),
            count: all.len(),
            full: Arc::new(full),
            global: Vec::new(),
            by_plugin: HashMap::new(),
            by_tenant: HashMap::new(),
            slices: Mutex::new(HashMap::new()),
            plugin_actions,
        };
        for policy in all {
            let plugin = match policy.resource_constraint() {
                ResourceConstraint::Eq(uid) if uid.type_name().to_string() == PLUGIN_TYPE => {
                    Some(uid.id().unescaped().to_owned())
                }
                _ => None,
            };
            let tenant = match policy.principal_constraint() {
                PrincipalConstraint::In(uid) | PrincipalConstraint::IsIn(_, uid)
                    if uid.type_name().to_string() == TENANT_TYPE =>
                {
                    Some(uid.id().unescaped().to_owned())
                }
                _ => None,
            };
            match (plugin, tenant) {
                (Some(plugin), _) => compiled.by_plugin.entry(plugin).or_default().push(policy),
                (None, Some(tenant)) => compiled.by_tenant.entry(tenant).or_default().push(policy),
                (None, None) => compiled.global.push(policy),
            }
        }
        Ok(compiled)
    }

    /// `sha256:<hex>` of the documents this set was compiled from.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Number of policies in the set.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the set has no policies (so everything is denied).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The policies that can apply to `plugin` for a principal of `tenant`.
    pub fn slice(&self, plugin: &str, tenant: &str) -> Result<Arc<PolicySet>, GovernanceError> {
        let mut slices = self.slices.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slice) = slices.get(&(plugin.to_owned(), tenant.to_owned())) {
            return Ok(slice.clone());
        }
        let policies = self
            .global
            .iter()
            .chain(self.by_plugin.get(plugin).into_iter().flatten())
            .chain(self.by_tenant.get(tenant).into_iter().flatten())
            .cloned();
        let slice = Arc::new(
            PolicySet::from_policies(policies)
                .map_err(|e| GovernanceError::InvalidPolicies(e.to_string()))?,
        );
        if slices.len() >= MAX_CACHED_SLICES {
            slices.clear();
        }
        slices.insert((plugin.to_owned(), tenant.to_owned()), slice.clone());
        Ok(slice)
    }

    /// Whether `plugin` is decided with its own action (and its input).
    pub fn has_plugin_action(&self, plugin: &str) -> bool {
        self.plugin_actions.contains(plugin)
    }

    /// Every policy, unsliced.
    pub fn full(&self) -> Arc<PolicySet> {
        self.full.clone()
    }
}

/// Once plugins have actions of their own, `action == Action::"dispatch"`
/// no longer matches their requests: a forbid scoped so would silently stop
/// applying to them. Refused, naming the fix.
fn refuse_dispatch_alone(
    policies: &[Policy],
    plugin_actions: &HashSet<String>,
) -> Result<(), GovernanceError> {
    let mut named: Vec<&str> = plugin_actions.iter().map(String::as_str).collect();
    named.sort_unstable();
    for policy in policies {
        if let ActionConstraint::Eq(uid) = policy.action_constraint()
            && uid.id().unescaped() == "dispatch"
        {
            return Err(GovernanceError::InvalidPolicies(format!(
                "policy `{}`: `action == AgentRuntime::Action::\"dispatch\"` does not match the plugins \
                 with an action of their own ({}); write `action in AgentRuntime::Action::\"dispatch\"` \
                 to cover every plugin",
                policy.id(),
                named.join(", ")
            )));
        }
    }
    Ok(())
}
