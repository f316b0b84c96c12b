//! Versioned policy sets: what governance owners publish and what Orbit polls.
//!
//! A version is immutable once put: its documents, the schema they were
//! validated against, their hash, who put it, when and why. The head names
//! the version in force and moves only by compare-and-set on its revision,
//! so of two concurrent activations exactly one wins and the other is told
//! what moved. Every move is kept in the history (who, when, from, to).
//!
//! Implementations: [`SqlitePolicyStore`] (embedded, one SQLite file) here,
//! `DynamoPolicyStore` (one DynamoDB table) in `aws-stores`. Both pass the
//! same [`contract`] suite.

#[cfg(any(test, feature = "contract-tests"))]
pub mod contract;
mod sqlite;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::policies::{PolicyDocument, hash_set, plugin_actions_of};

pub use sqlite::SqlitePolicyStore;

/// The largest policy set a version may hold, documents together, in bytes:
/// one DynamoDB item carries a version (400 KB at most), and Orbit re-reads
/// a new version whole.
pub const MAX_POLICY_SET_BYTES: usize = 256 * 1024;
/// The longest `put` message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// The most documents a version may hold.
pub const MAX_DOCUMENTS: usize = 256;

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyStoreError {
    /// No such version.
    #[error("policy set version {0} does not exist")]
    NotFound(u64),
    /// The head moved since the caller read it: nothing was changed.
    #[error(
        "the active policy set moved (revision {actual}, expected {expected}): read it again and retry"
    )]
    Conflict { expected: u64, actual: u64 },
    /// The request is not acceptable as it is; says what to fix.
    #[error("{0}")]
    Invalid(String),
    /// A stored item does not read back (edited by hand, or a bug).
    #[error("the policy store holds a corrupt {0}")]
    Corrupt(String),
    /// The store cannot be reached or answered with an error.
    #[error("the policy store is unavailable: {0}")]
    Backend(String),
}

/// A set to store as a new version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPolicySet {
    pub documents: Vec<PolicyDocument>,
    /// The Cedar schema the documents were validated against.
    pub schema: String,
    pub author: String,
    pub message: String,
}

impl NewPolicySet {
    /// The bounds every store enforces: names, sizes, a message.
    pub fn check(&self) -> Result<(), PolicyStoreError> {
        let invalid = |m: String| Err(PolicyStoreError::Invalid(m));
        if self.author.trim().is_empty() {
            return invalid("a policy set needs an author".to_owned());
        }
        if self.message.len() > MAX_MESSAGE_BYTES {
            return invalid(format!(
                "the message is {} bytes; the most is {MAX_MESSAGE_BYTES}",
                self.message.len()
            ));
        }
        if self.documents.len() > MAX_DOCUMENTS {
            return invalid(format!(
                "{} documents; a policy set holds at most {MAX_DOCUMENTS}",
                self.documents.len()
            ));
        }
        let size: usize = self
            .documents
            .iter()
            .map(|d| d.name.len() + d.text.len())
            .sum();
        if size > MAX_POLICY_SET_BYTES {
            return invalid(format!(
                "the policy set is {size} bytes; the most is {MAX_POLICY_SET_BYTES}"
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for document in &self.documents {
            check_document_name(&document.name)?;
            if !names.insert(&document.name) {
                return invalid(format!("the document `{}` is given twice", document.name));
            }
        }
        Ok(())
    }

    /// `sha256:<hex>` of the documents (and of the plugin actions of the
    /// schema, if any): the hash decisions name.
    pub fn hash(&self) -> String {
        hash_set(&self.documents, plugin_actions_of(&self.schema))
    }
}

/// A document name: `<name>.cedar`, of letters, digits, `-`, `_` and `.`.
fn check_document_name(name: &str) -> Result<(), PolicyStoreError> {
    let stem = name.strip_suffix(".cedar").unwrap_or_default();
    let ok = !stem.is_empty()
        && name.len() <= 128
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(PolicyStoreError::Invalid(format!(
            "`{name}` is not a policy document name: use `<name>.cedar` with letters, digits, `-`, `_` or `.`"
        )))
    }
}

/// One stored version, whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySetVersion {
    pub version: u64,
    pub documents: Vec<PolicyDocument>,
    pub schema: String,
    /// `sha256:<hex>` over the documents' names and texts (and the plugin
    /// actions of the schema, if any).
    pub hash: String,
    pub author: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub message: String,
}

impl PolicySetVersion {
    /// The version without its documents, as `list` gives it.
    pub fn info(&self) -> VersionInfo {
        VersionInfo {
            version: self.version,
            hash: self.hash.clone(),
            documents: self.documents.len(),
            author: self.author.clone(),
            created_at: self.created_at.clone(),
            message: self.message.clone(),
        }
    }

    /// Checks the stored hash against the documents: a version edited in the
    /// store, or cut short on the way, is refused.
    pub fn check_hash(&self) -> Result<(), PolicyStoreError> {
        let actual = hash_set(&self.documents, plugin_actions_of(&self.schema));
        if actual == self.hash {
            Ok(())
        } else {
            Err(PolicyStoreError::Corrupt(format!(
                "policy set version {}: its documents hash to {actual}, not the recorded {}",
                self.version, self.hash
            )))
        }
    }
}

/// A version as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: u64,
    pub hash: String,
    /// How many documents it holds.
    pub documents: usize,
    pub author: String,
    pub created_at: String,
    pub message: String,
}

/// The version in force, and the one in shadow if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub version: u64,
    /// The version's hash, copied when it was activated.
    pub hash: String,
    /// Moves with every move of the head (shadow moves included): the
    /// compare-and-set token (1 for the first).
    pub revision: u64,
    /// The version in force before this one, where `rollback` returns.
    pub previous: Option<u64>,
    /// A candidate decided beside the version in force and never enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowHead>,
    /// Who moved the head last, and when.
    pub activated_by: String,
    pub activated_at: String,
}

/// The version in shadow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowHead {
    pub version: u64,
    /// The version's hash, copied when its shadow began.
    pub hash: String,
}

/// Why the head moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActivationKind {
    Activate,
    Rollback,
    /// The defaults (or an imported directory) written when the store was created.
    Seed,
    /// A version put in shadow: decided beside the one in force, never enforced.
    Shadow,
    /// The shadow ended without the version being activated.
    EndShadow,
}

impl ActivationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Activate => "activate",
            Self::Rollback => "rollback",
            Self::Seed => "seed",
            Self::Shadow => "shadow",
            Self::EndShadow => "end-shadow",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Activate,
            Self::Rollback,
            Self::Seed,
            Self::Shadow,
            Self::EndShadow,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

/// One move of the head, as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    /// The head's revision after this move.
    pub revision: u64,
    /// The version activated, or put in shadow, or whose shadow ended.
    pub version: u64,
    /// The version in force before (for a shadow move: the version in
    /// shadow before), if any.
    pub from: Option<u64>,
    pub kind: ActivationKind,
    pub by: String,
    pub at: String,
}

/// A request to move the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activate<'a> {
    pub version: u64,
    /// The head's revision as the caller read it; 0 when it read no head.
    pub expected_revision: u64,
    pub kind: ActivationKind,
    pub actor: &'a str,
}

/// The head after `request` moves `current`, and the history entry of the
/// move: what each kind of move does, for every store. `hash` is that of
/// `request.version`. The store checks the revision and writes both.
///
/// - activate, rollback, seed: `version` is in force, the one it replaces
///   is `previous`; a shadow of `version` ends (it is enforced now), a
///   shadow of another version goes on.
/// - shadow: `version` is decided beside the version in force, which does
///   not change; it replaces any version in shadow.
/// - end-shadow: `version`, which must be in shadow, no longer is.
pub fn next_head(
    current: Option<&Head>,
    request: &Activate<'_>,
    hash: &str,
) -> Result<(Head, Activation), PolicyStoreError> {
    let target = request.version;
    let revision = current.map_or(0, |h| h.revision) + 1;
    let (version, head_hash, previous, shadow, from) = match request.kind {
        ActivationKind::Activate | ActivationKind::Rollback | ActivationKind::Seed => {
            let shadow = current
                .and_then(|h| h.shadow.clone())
                .filter(|s| s.version != target);
            let replaced = current.map(|h| h.version);
            (target, hash.to_owned(), replaced, shadow, replaced)
        }
        ActivationKind::Shadow | ActivationKind::EndShadow => {
            let head = current.ok_or_else(|| {
                PolicyStoreError::Invalid(
                    "no policy set is in force yet: activate one before a shadow".to_owned(),
                )
            })?;
            let in_shadow = head.shadow.as_ref().map(|s| s.version);
            let shadow = if request.kind == ActivationKind::Shadow {
                if target == head.version {
                    return Err(PolicyStoreError::Invalid(format!(
                        "version {target} is the set in force; a shadow runs another version beside it"
                    )));
                }
                Some(ShadowHead {
                    version: target,
                    hash: hash.to_owned(),
                })
            } else if in_shadow == Some(target) {
                None
            } else {
                return Err(PolicyStoreError::Invalid(match in_shadow {
                    Some(other) => format!("version {target} is not in shadow; version {other} is"),
                    None => format!("version {target} is not in shadow; no version is"),
                }));
            };
            (
                head.version,
                head.hash.clone(),
                head.previous,
                shadow,
                in_shadow,
            )
        }
    };
    let at = timestamp_now();
    let head = Head {
        version,
        hash: head_hash,
        revision,
        previous,
        shadow,
        activated_by: request.actor.to_owned(),
        activated_at: at.clone(),
    };
    let activation = Activation {
        revision,
        version: target,
        from,
        kind: request.kind,
        by: request.actor.to_owned(),
        at,
    };
    Ok((head, activation))
}

/// Where policy sets are kept.
#[async_trait]
pub trait PolicyStore: Send + Sync {
    /// Stores `set` as the next version (never activating it).
    async fn put(&self, set: &NewPolicySet) -> Result<PolicySetVersion, PolicyStoreError>;
    /// One version, whole.
    async fn get(&self, version: u64) -> Result<PolicySetVersion, PolicyStoreError>;
    /// Every version, oldest first, without documents.
    async fn list(&self) -> Result<Vec<VersionInfo>, PolicyStoreError>;
    /// The version in force, or `None` in a store never activated.
    async fn head(&self) -> Result<Option<Head>, PolicyStoreError>;
    /// Moves the head as [`next_head`] says, to or about an existing
    /// version, if it is still at `expected_revision`; `Conflict` (and no
    /// change) otherwise.
    async fn activate(&self, request: &Activate<'_>) -> Result<Head, PolicyStoreError>;
    /// Every move of the head, oldest first.
    async fn history(&self) -> Result<Vec<Activation>, PolicyStoreError>;
    /// Which store this is, for operators' messages (never sent to callers).
    fn describe(&self) -> String;
}

/// Seeds a store that was never activated with `set` and activates it.
/// A store that has ever had a head is left alone, so a set an operator
/// emptied stays empty. Returns the version seeded, if it seeded.
pub async fn seed_if_new(
    store: &dyn PolicyStore,
    set: &NewPolicySet,
) -> Result<Option<u64>, PolicyStoreError> {
    if store.head().await?.is_some() {
        return Ok(None);
    }
    let stored = store.put(set).await?;
    match store
        .activate(&Activate {
            version: stored.version,
            expected_revision: 0,
            kind: ActivationKind::Seed,
            actor: &set.author,
        })
        .await
    {
        Ok(_) => Ok(Some(stored.version)),
        // Another process seeded first: its head stands.
        Err(PolicyStoreError::Conflict { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// The current time as RFC 3339 (UTC, seconds).
pub(crate) fn timestamp_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
