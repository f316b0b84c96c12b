//! Compiling policy documents into an evaluable, sliced set.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use cedar_policy::{
    Policy, PolicyId, PolicySet, PrincipalConstraint, ResourceConstraint, Schema, ValidationMode,
    Validator,
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
}

/// The content hash of a set of documents: `sha256:<hex>` over names and texts.
pub(crate) fn hash_documents(documents: &[PolicyDocument]) -> String {
    let mut hasher = Sha256::new();
    for d in documents {
        hasher.update((d.name.len() as u64).to_le_bytes());
        hasher.update(d.name.as_bytes());
        hasher.update((d.text.len() as u64).to_le_bytes());
        hasher.update(d.text.as_bytes());
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

impl CompiledPolicies {
    /// Parses, names, validates (strict) and indexes `documents`.
    pub fn compile(schema: &Schema, documents: &[PolicyDocument]) -> Result<Self, GovernanceError> {
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

        let mut compiled = Self {
            hash: hash_documents(documents),
            count: all.len(),
            full: Arc::new(full),
            global: Vec::new(),
            by_plugin: HashMap::new(),
            by_tenant: HashMap::new(),
            slices: Mutex::new(HashMap::new()),
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

    /// Every policy, unsliced.
    pub fn full(&self) -> Arc<PolicySet> {
        self.full.clone()
    }
}
