//! The registry: what is published (signed manifests), what operators say
//! about it (labels, revocations, aliases), the history of every change, and
//! the trust list. Behind a trait with two implementations: an embedded
//! SQLite file ([`crate::SqliteRegistry`]) and DynamoDB (AWS).
//!
//! Every write that must not be lost to a concurrent one is a single atomic
//! conditional write: a version is inserted only if absent, an alias moves
//! only from the revision the writer read, a trust list only replaces an older
//! serial. Readers (Orbit, Axon) poll [`Registry::generation`], a counter every
//! write bumps, and read a whole [`Snapshot`] only when it moved.

use std::collections::BTreeSet;

use async_trait::async_trait;
use semver::Version;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::manifest::{Digest, PluginManifest, PluginName};
use crate::model::ModelManifest;
use crate::signing::{Envelope, KeyPair};

/// One published version as stored: the signed manifest envelope, plus the
/// fields the store indexes by (taken from the manifest at publication and
/// checked again against it by every reader after verification).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRecord {
    pub name: PluginName,
    pub version: Version,
    pub digest: Digest,
    pub envelope: Envelope,
    /// RFC 3339 time it was registered, and by whom.
    pub published_at: String,
    pub published_by: String,
}

impl VersionRecord {
    /// The record of `manifest` signed by `key` (the key it names), registered
    /// by `actor`.
    pub fn signed(manifest: &PluginManifest, key: &KeyPair, actor: &str) -> Self {
        Self {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            digest: manifest.digest,
            envelope: manifest.sign(key),
            published_at: manifest.created_at.clone(),
            published_by: actor.to_owned(),
        }
    }

    /// The record of model `manifest` signed by `key`, registered by `actor`.
    pub fn signed_model(manifest: &ModelManifest, key: &KeyPair, actor: &str) -> Self {
        Self {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            digest: manifest.digest,
            envelope: manifest.sign(key),
            published_at: manifest.created_at.clone(),
            published_by: actor.to_owned(),
        }
    }
}

/// A version with what operators have said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionEntry {
    pub record: VersionRecord,
    /// Operator labels (`approved`, `experimental`, ...): what policies key on.
    pub labels: BTreeSet<String>,
    pub revoked: bool,
}

/// What registering a version did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// The version is new.
    New,
    /// The same module was already registered under this version: nothing
    /// changed (the stored record is kept, with its original signature).
    Unchanged(Box<VersionRecord>),
}

/// Where an alias sends traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AliasTarget {
    #[schema(value_type = String)]
    pub version: Version,
    /// A second version taking `weight` percent of routing keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Canary {
    #[schema(value_type = String)]
    pub version: Version,
    /// 1 to 99.
    pub weight: u8,
}

impl AliasTarget {
    /// Checks the weight is 1 to 99 and the canary differs from the target.
    pub fn validate(&self) -> Result<(), StoreError> {
        if let Some(canary) = &self.canary {
            if !(1..=99).contains(&canary.weight) {
                return Err(StoreError::Invalid(format!(
                    "canary weight {} is out of range: use 1 to 99 (percent of routing keys)",
                    canary.weight
                )));
            }
            if canary.version == self.version {
                return Err(StoreError::Invalid(format!(
                    "the canary `{}` is the alias's own target",
                    canary.version
                )));
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for AliasTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.version)?;
        if let Some(c) = &self.canary {
            write!(f, " + {} at {}%", c.version, c.weight)?;
        }
        Ok(())
    }
}

/// An alias of a plugin (`live`, `canary`, anything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub plugin: PluginName,
    pub name: String,
    pub target: AliasTarget,
    /// Where it pointed before the last move: what `rollback` returns to.
    pub previous: Option<AliasTarget>,
    /// Bumped by every move; a move names the revision it read.
    pub revision: u64,
    pub updated_by: String,
    pub updated_at: String,
}

/// A move of an alias, conditional on the revision the writer read
/// (0: the alias must not exist yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasMove {
    pub plugin: PluginName,
    pub name: String,
    pub target: AliasTarget,
    pub previous: Option<AliasTarget>,
    pub expected_revision: u64,
    pub actor: String,
}

impl AliasMove {
    /// The alias this move makes of the one at `revision`, as of now.
    pub fn applied(&self, revision: u64) -> Alias {
        Alias {
            plugin: self.plugin.clone(),
            name: self.name.clone(),
            target: self.target.clone(),
            previous: self.previous.clone(),
            revision: revision + 1,
            updated_by: self.actor.clone(),
            updated_at: timestamp_now(),
        }
    }
}

/// Where an intent goes when a request names no plugin: an alias of a
/// plugin (`live` unless said otherwise). Written `plugin@alias`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteTarget {
    pub plugin: PluginName,
    pub alias: String,
}

impl std::fmt::Display for RouteTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.plugin, self.alias)
    }
}

impl std::str::FromStr for RouteTarget {
    type Err = StoreError;

    /// `plugin` (alias `live`) or `plugin@alias`.
    fn from_str(text: &str) -> Result<Self, StoreError> {
        let (plugin, alias) = text.split_once('@').unwrap_or((text, DEFAULT_ALIAS));
        check_alias_name(alias)?;
        Ok(Self {
            plugin: plugin.parse()?,
            alias: alias.to_owned(),
        })
    }
}

/// The alias a request, or a route, that names none goes to.
pub const DEFAULT_ALIAS: &str = "live";

/// An entry of the intent table: requests that name this intent and no
/// plugin go to `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub intent: String,
    pub target: RouteTarget,
    /// Bumped by every change; a change names the revision it read.
    pub revision: u64,
    pub updated_by: String,
    pub updated_at: String,
}

/// A change of one route, conditional on the revision the writer read (0:
/// the intent must have no route). `target: None` removes the route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteChange {
    pub intent: String,
    pub target: Option<RouteTarget>,
    pub expected_revision: u64,
    pub actor: String,
}

impl RouteChange {
    /// The route this change makes of the one at `revision`, as of now;
    /// `None` for a removal.
    pub fn applied(&self, revision: u64) -> Option<Route> {
        self.target.as_ref().map(|target| Route {
            intent: self.intent.clone(),
            target: target.clone(),
            revision: revision + 1,
            updated_by: self.actor.clone(),
            updated_at: timestamp_now(),
        })
    }

    /// The action its history entry records.
    pub fn history_action(&self) -> String {
        format!("route {}", self.intent)
    }
}

/// The history subject of the intent table: no plugin name starts with `#`.
pub const ROUTES_SUBJECT: &str = "#routes";

/// The history subject of model `name`: `#` is in no plugin's name, so a
/// model may share a plugin's name.
pub fn model_subject(name: &PluginName) -> String {
    format!("model#{name}")
}

/// One recorded change: who, when, what, from, to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// The plugin changed, or [`ROUTES_SUBJECT`] for the intent table.
    pub subject: String,
    pub at: String,
    pub actor: String,
    /// `publish`, `alias <name>`, `labels <version>`, `revoke`, `route <intent>`.
    pub action: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// Everything a reader needs, read at one point in time.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub generation: u64,
    pub versions: Vec<VersionEntry>,
    pub aliases: Vec<Alias>,
    pub routes: Vec<Route>,
    pub trust_list: Option<Envelope>,
}

/// A version as a backend stores it: text fields, parsed back (and checked)
/// by [`StoredVersion::into_entry`]. Shared by every backend so a row reads
/// the same wherever it was kept.
#[derive(Debug, Clone)]
pub struct StoredVersion {
    pub name: String,
    pub version: String,
    pub digest: String,
    /// The DSSE envelope as JSON.
    pub envelope: String,
    pub published_at: String,
    pub published_by: String,
    /// The labels as a JSON array.
    pub labels: String,
    pub revoked: bool,
}

impl StoredVersion {
    /// The fields of `record`, not yet labelled or revoked.
    pub fn of(record: &VersionRecord) -> Self {
        Self {
            name: record.name.to_string(),
            version: record.version.to_string(),
            digest: record.digest.to_string(),
            envelope: record.envelope.to_json(),
            published_at: record.published_at.clone(),
            published_by: record.published_by.clone(),
            labels: "[]".to_owned(),
            revoked: false,
        }
    }

    /// Parses the fields back; a field that does not parse is
    /// [`StoreError::Corrupt`].
    pub fn into_entry(self) -> Result<VersionEntry, StoreError> {
        let what = format!("registry entry `{}@{}`", self.name, self.version);
        let bad = |reason: String| corrupt(what.clone(), reason);
        Ok(VersionEntry {
            record: VersionRecord {
                name: self
                    .name
                    .parse()
                    .map_err(|e: StoreError| bad(e.to_string()))?,
                version: self.version.parse().map_err(|e| bad(format!("{e}")))?,
                digest: self
                    .digest
                    .parse()
                    .map_err(|e: StoreError| bad(e.to_string()))?,
                envelope: Envelope::from_json(&self.envelope).map_err(|e| bad(e.to_string()))?,
                published_at: self.published_at,
                published_by: self.published_by,
            },
            labels: serde_json::from_str(&self.labels).map_err(|e| bad(e.to_string()))?,
            revoked: self.revoked,
        })
    }
}

/// An alias as a backend stores it; see [`StoredVersion`].
#[derive(Debug, Clone)]
pub struct StoredAlias {
    pub plugin: String,
    pub name: String,
    /// The [`AliasTarget`] as JSON, and the previous one.
    pub target: String,
    pub previous: Option<String>,
    pub revision: u64,
    pub updated_by: String,
    pub updated_at: String,
}

impl StoredAlias {
    /// The fields of `alias`.
    pub fn of(alias: &Alias) -> Result<Self, StoreError> {
        Ok(Self {
            plugin: alias.plugin.to_string(),
            name: alias.name.clone(),
            target: to_json(&alias.target)?,
            previous: alias.previous.as_ref().map(to_json).transpose()?,
            revision: alias.revision,
            updated_by: alias.updated_by.clone(),
            updated_at: alias.updated_at.clone(),
        })
    }
}

impl StoredAlias {
    /// Parses the fields back; see [`StoredVersion::into_entry`].
    pub fn into_alias(self) -> Result<Alias, StoreError> {
        let bad = |reason: String| {
            corrupt(
                format!("alias `{}` of `{}`", self.name, self.plugin),
                reason,
            )
        };
        let target: AliasTarget =
            serde_json::from_str(&self.target).map_err(|e| bad(e.to_string()))?;
        let previous = self
            .previous
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Alias {
            plugin: self
                .plugin
                .parse()
                .map_err(|e: StoreError| bad(e.to_string()))?,
            name: self.name,
            target,
            previous,
            revision: self.revision,
            updated_by: self.updated_by,
            updated_at: self.updated_at,
        })
    }
}

pub(crate) fn corrupt(what: impl Into<String>, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what: what.into(),
        reason: reason.to_string(),
    }
}

/// Values as the JSON text backends store (targets, labels).
pub fn to_json<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Invalid(e.to_string()))
}

/// The errors every backend answers alike.
pub mod refusal {
    use crate::error::StoreError;
    use crate::manifest::PluginName;
    use semver::Version;

    /// No such version.
    pub fn no_version(name: &PluginName, version: &Version) -> StoreError {
        StoreError::NotFound(format!("plugin `{name}` version `{version}`"))
    }

    /// No such model version.
    pub fn no_model(name: &PluginName, version: &Version) -> StoreError {
        StoreError::NotFound(format!("model `{name}` version `{version}`"))
    }

    /// An alias moved since the writer read revision `expected`.
    pub fn alias_moved(plugin: &PluginName, alias: &str, now: u64, expected: u64) -> StoreError {
        StoreError::Conflict(format!(
            "alias `{alias}` of `{plugin}` moved meanwhile (revision {now}, expected {expected}); read it again"
        ))
    }

    /// No route for an intent.
    pub fn no_route(intent: &str) -> StoreError {
        StoreError::NotFound(format!("a route for intent `{intent}`"))
    }

    /// A route changed since the writer read revision `expected`.
    pub fn route_moved(intent: &str, now: u64, expected: u64) -> StoreError {
        StoreError::Conflict(format!(
            "the route of intent `{intent}` changed meanwhile (revision {now}, expected {expected}); read it again"
        ))
    }

    /// The stored trust list is not older than `serial`.
    pub fn trust_not_newer(serial: u64) -> StoreError {
        StoreError::Conflict(format!(
            "the stored trust list is already at serial {serial} or newer; read it again"
        ))
    }

    /// Serials are kept below `i64::MAX` on every backend (SQLite's integers
    /// are signed).
    pub fn check_serial(serial: u64) -> Result<i64, StoreError> {
        i64::try_from(serial)
            .map_err(|_| StoreError::Invalid(format!("trust list serial {serial} is too large")))
    }
}

/// Now, as the RFC 3339 text every backend records.
pub fn timestamp_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// An alias name: 1 to 64 lowercase letters, digits or `-`.
pub fn check_alias_name(name: &str) -> Result<(), StoreError> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "alias `{name}` is invalid: use 1 to 64 lowercase letters, digits or `-`"
        )))
    }
}

/// An intent the intent table can route: 1 to 128 letters, digits, `_`,
/// `-`, `.` or `:` (the earlier system's intents are `call_reasoning` and the
/// like).
pub fn check_intent(intent: &str) -> Result<(), StoreError> {
    let valid = (1..=128).contains(&intent.len())
        && intent
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "intent `{intent}` cannot be routed: use 1 to 128 letters, digits, `_`, `-`, `.` or `:`"
        )))
    }
}

/// A label: 1 to 64 characters of letters, digits, `-`, `_`, `.` or `:`.
pub fn check_label(label: &str) -> Result<(), StoreError> {
    let valid = (1..=64).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "label `{label}` is invalid: use 1 to 64 letters, digits, `-`, `_`, `.` or `:`"
        )))
    }
}

/// Versions, aliases, labels, revocations, history and the trust list.
#[async_trait]
pub trait Registry: Send + Sync {
    /// Registers a version, in one atomic conditional write: absent, it is
    /// inserted; present with the same digest, nothing changes; present with
    /// another digest, [`StoreError::AlreadyPublished`].
    async fn register(&self, record: &VersionRecord) -> Result<Registered, StoreError>;

    /// One version.
    async fn version(
        &self,
        name: &PluginName,
        version: &Version,
    ) -> Result<VersionEntry, StoreError>;

    /// Registers a model version as [`register`](Self::register) does a
    /// plugin's, in the models' own namespace, recorded in the history of
    /// [`model_subject`]. Models are not in the [`Snapshot`]: Axon reads
    /// the ones a plugin version pins when it loads that version.
    async fn register_model(&self, record: &VersionRecord) -> Result<Registered, StoreError>;

    /// One model version.
    async fn model(
        &self,
        name: &PluginName,
        version: &Version,
    ) -> Result<VersionRecord, StoreError>;

    /// Every model version, by name, then version.
    async fn models(&self) -> Result<Vec<VersionRecord>, StoreError>;

    /// Model `name`'s history (its publications), oldest first.
    async fn model_history(&self, name: &PluginName) -> Result<Vec<HistoryEntry>, StoreError>;

    /// A counter that every write moves; equal values mean nothing changed.
    async fn generation(&self) -> Result<u64, StoreError>;

    /// Every version, alias and the trust list, at one point in time.
    async fn snapshot(&self) -> Result<Snapshot, StoreError>;

    /// Moves (or creates) an alias if its revision is still the one the
    /// writer read, recording the move in the history in the same write.
    /// Another writer first: [`StoreError::Conflict`].
    async fn move_alias(&self, change: &AliasMove) -> Result<Alias, StoreError>;

    /// Replaces the labels of a version.
    async fn set_labels(
        &self,
        name: &PluginName,
        version: &Version,
        labels: &BTreeSet<String>,
        actor: &str,
    ) -> Result<(), StoreError>;

    /// Revokes a version for good.
    async fn revoke(
        &self,
        name: &PluginName,
        version: &Version,
        actor: &str,
        reason: &str,
    ) -> Result<(), StoreError>;

    /// The recorded changes of a plugin, oldest first.
    async fn history(&self, name: &PluginName) -> Result<Vec<HistoryEntry>, StoreError>;

    /// Sets or (`target: None`) removes the route of an intent if its
    /// revision is still the one the writer read, recording the change in
    /// the intent table's history in the same write. Another writer first:
    /// [`StoreError::Conflict`]. Returns the route as stored (`None` once
    /// removed).
    async fn change_route(&self, change: &RouteChange) -> Result<Option<Route>, StoreError>;

    /// The recorded changes of the intent table, oldest first.
    async fn route_history(&self) -> Result<Vec<HistoryEntry>, StoreError>;

    /// Installs a signed trust list if `serial` is newer than the stored one
    /// (checked and written atomically); an older or equal serial is
    /// [`StoreError::Conflict`]. The caller verified the signature.
    async fn put_trust_list(&self, serial: u64, envelope: &Envelope) -> Result<(), StoreError>;
}
