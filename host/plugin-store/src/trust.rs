//! Who may publish what: the signed trust list, and verification of plugin
//! manifests against it.
//!
//! A root key (its public half configured into Axon and Orbit) signs the trust
//! list. The list names each publisher key: its id, the publisher it belongs
//! to, its validity window, the plugin names it may sign and whether it is
//! revoked. Each list has a serial; a list older than the one in use is refused
//! (no downgrade), and a newer one is taken without a restart, which is how
//! keys rotate (two valid keys overlap) and how a key is revoked.
//!
//! A manifest verifies when its envelope is signed by a key of the list that is
//! not revoked, is inside its window now and when the manifest was made, and may
//! sign this plugin name; and when the manifest names the plugin and version it
//! is registered under (so a valid manifest of one plugin or version cannot be
//! served as another). The verified publisher is the list's, never the
//! manifest's.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use ed25519_dalek::VerifyingKey;
use semver::Version;
use serde::{Deserialize, Serialize};

use crate::manifest::{MANIFEST_TYPE, PluginManifest, PluginName};
use crate::model::{MODEL_MANIFEST_TYPE, ModelManifest};
use crate::signing::{Envelope, KeyId, KeyPair, SignatureError, decode_public};

/// The DSSE payload type of a trust list.
pub const TRUST_LIST_TYPE: &str = "application/vnd.agent-runtime.trust-list.v1+json";

/// Why a manifest or a trust list is not trusted. Every variant means "do not
/// load"; there is no fallback to an unverified module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("no trust list is installed: publish one with `agentctl plugin trust add`")]
    NoTrustList,
    #[error("the trust list is not signed by the configured root key: {0}")]
    BadTrustList(String),
    #[error("trust list serial {offered} is older than serial {current} in use")]
    Downgrade { current: u64, offered: u64 },
    #[error("the manifest is not signed by any key in the trust list")]
    UnknownKey,
    #[error("key `{0}` is revoked")]
    KeyRevoked(KeyId),
    #[error("key `{key}` is not valid at {at} (valid {not_before} to {not_after})")]
    KeyOutOfWindow {
        key: KeyId,
        at: String,
        not_before: String,
        not_after: String,
    },
    #[error("key `{key}` may not sign `{name}`")]
    NameNotAllowed { key: KeyId, name: String },
    #[error("{0}")]
    Signature(SignatureError),
    #[error("the manifest is for `{found}` but is registered as `{registered}`")]
    Mismatch { registered: String, found: String },
}

/// One publisher key as the trust list names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKey {
    pub key_id: KeyId,
    /// Who this key belongs to: the `publisher` governance sees.
    pub publisher: String,
    /// base64 of the 32-byte ed25519 public key.
    pub public_key: String,
    /// RFC 3339 start and end of validity.
    pub not_before: String,
    pub not_after: String,
    /// Plugin names this key may sign: exact names, or a prefix ending in `*`.
    pub plugins: Vec<String>,
    #[serde(default)]
    pub revoked: bool,
}

impl TrustedKey {
    /// True when this key may sign plugin `name`.
    pub fn allows(&self, name: &str) -> bool {
        self.plugins
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == pattern,
            })
    }
}

/// The trust list: the root key's word on which publisher keys count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustList {
    pub serial: u64,
    pub issued_at: String,
    pub keys: Vec<TrustedKey>,
}

impl TrustList {
    /// The list in `envelope`, if the root key signed it.
    pub fn verify(envelope: &Envelope, root: &VerifyingKey) -> Result<Self, TrustError> {
        let payload = envelope
            .verify(TRUST_LIST_TYPE, &KeyId::of(root), root)
            .map_err(|e| TrustError::BadTrustList(e.to_string()))?;
        let list: Self = serde_json::from_slice(&payload)
            .map_err(|e| TrustError::BadTrustList(format!("its payload does not parse: {e}")))?;
        for key in &list.keys {
            let public = decode_public(&key.public_key)
                .map_err(|e| TrustError::BadTrustList(e.to_string()))?;
            if KeyId::of(&public) != key.key_id {
                return Err(TrustError::BadTrustList(format!(
                    "key `{}` does not match its public key",
                    key.key_id
                )));
            }
            parse_time(&key.not_before).and(parse_time(&key.not_after))?;
        }
        Ok(list)
    }

    /// This list signed by `root`.
    pub fn sign(&self, root: &KeyPair) -> Envelope {
        // A list of strings and numbers: encoding cannot fail.
        let payload = serde_json::to_vec(self).unwrap_or_default();
        root.sign(TRUST_LIST_TYPE, &payload)
    }

    pub fn key(&self, id: &KeyId) -> Option<&TrustedKey> {
        self.keys.iter().find(|k| &k.key_id == id)
    }
}

fn parse_time(text: &str) -> Result<SystemTime, TrustError> {
    humantime::parse_rfc3339_weak(text)
        .map_err(|e| TrustError::BadTrustList(format!("time `{text}` is not RFC 3339: {e}")))
}

/// A manifest whose signature verified, with who vouches for it.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedManifest {
    pub manifest: PluginManifest,
    /// The publisher of the key that signed, from the trust list.
    pub publisher: String,
    /// When the signing key's validity ends: the manifest stops verifying then.
    pub key_not_after: SystemTime,
}

struct ActiveKey {
    entry: TrustedKey,
    public: VerifyingKey,
    not_before: SystemTime,
    not_after: SystemTime,
}

struct Active {
    serial: u64,
    keys: HashMap<KeyId, ActiveKey>,
}

/// The trust list in use by one process, and manifest verification under it.
pub struct Trust {
    root: VerifyingKey,
    active: RwLock<Option<Arc<Active>>>,
}

/// What [`Trust::install`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    Unchanged,
    Updated { serial: u64 },
}

impl Trust {
    /// Trusting lists signed by `root`; none installed yet.
    pub fn new(root: VerifyingKey) -> Self {
        Self {
            root,
            active: RwLock::new(None),
        }
    }

    /// The serial of the list in use.
    pub fn serial(&self) -> Option<u64> {
        self.current().map(|a| a.serial)
    }

    fn current(&self) -> Option<Arc<Active>> {
        self.active
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Takes `envelope` as the trust list if the root signed it and it is not
    /// older than the one in use.
    pub fn install(&self, envelope: &Envelope) -> Result<Installed, TrustError> {
        let list = TrustList::verify(envelope, &self.root)?;
        let mut active = self.active.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(current) = active.as_ref() {
            if list.serial < current.serial {
                return Err(TrustError::Downgrade {
                    current: current.serial,
                    offered: list.serial,
                });
            }
            if list.serial == current.serial {
                return Ok(Installed::Unchanged);
            }
        }
        let mut keys = HashMap::new();
        for entry in list.keys {
            keys.insert(
                entry.key_id.clone(),
                ActiveKey {
                    public: decode_public(&entry.public_key).map_err(TrustError::Signature)?,
                    not_before: parse_time(&entry.not_before)?,
                    not_after: parse_time(&entry.not_after)?,
                    entry,
                },
            );
        }
        let serial = list.serial;
        *active = Some(Arc::new(Active { serial, keys }));
        Ok(Installed::Updated { serial })
    }

    /// Verifies the manifest registered as `name` at `version`, at time `now`.
    pub fn verify_manifest(
        &self,
        envelope: &Envelope,
        name: &PluginName,
        version: &Version,
        now: SystemTime,
    ) -> Result<VerifiedManifest, TrustError> {
        let (manifest, publisher, key_not_after) =
            self.verify_signed::<PluginManifest>(envelope, MANIFEST_TYPE, name, version, now)?;
        Ok(VerifiedManifest {
            manifest,
            publisher,
            key_not_after,
        })
    }

    /// Verifies the signed manifest of model `name` at `version`, at `now`,
    /// under the same rules as a plugin's: the key's name patterns cover
    /// model names too.
    pub fn verify_model(
        &self,
        envelope: &Envelope,
        name: &PluginName,
        version: &Version,
        now: SystemTime,
    ) -> Result<VerifiedModel, TrustError> {
        let (manifest, publisher, _) =
            self.verify_signed::<ModelManifest>(envelope, MODEL_MANIFEST_TYPE, name, version, now)?;
        Ok(VerifiedModel {
            manifest,
            publisher,
        })
    }

    /// The payload of `envelope`, of `payload_type`, signed by a trusted,
    /// unrevoked key valid at `now` and when the manifest was made, that may
    /// sign `name`; with the key's publisher and the end of its validity.
    fn verify_signed<M: SignedManifest>(
        &self,
        envelope: &Envelope,
        payload_type: &str,
        name: &PluginName,
        version: &Version,
        now: SystemTime,
    ) -> Result<(M, String, SystemTime), TrustError> {
        let active = self.current().ok_or(TrustError::NoTrustList)?;
        let key = envelope
            .key_ids()
            .find_map(|id| active.keys.get(id))
            .ok_or(TrustError::UnknownKey)?;
        let id = &key.entry.key_id;
        if key.entry.revoked {
            return Err(TrustError::KeyRevoked(id.clone()));
        }
        let payload = envelope
            .verify(payload_type, id, &key.public)
            .map_err(TrustError::Signature)?;
        let manifest: M = serde_json::from_slice(&payload).map_err(|e| {
            TrustError::Signature(SignatureError::Malformed(format!(
                "the manifest does not parse: {e}"
            )))
        })?;
        let (signed_name, signed_version, key_id, created_at) = manifest.identity();
        if signed_name != name || signed_version != version {
            return Err(TrustError::Mismatch {
                registered: format!("{name}@{version}"),
                found: format!("{signed_name}@{signed_version}"),
            });
        }
        if key_id != id {
            return Err(TrustError::Signature(SignatureError::Malformed(
                "the manifest names another key than the one that signed it".into(),
            )));
        }
        let created = humantime::parse_rfc3339_weak(created_at).map_err(|_| {
            TrustError::Signature(SignatureError::Malformed(
                "the manifest's `created_at` is not RFC 3339".into(),
            ))
        })?;
        for at in [now, created] {
            if at < key.not_before || at > key.not_after {
                return Err(TrustError::KeyOutOfWindow {
                    key: id.clone(),
                    at: humantime::format_rfc3339_seconds(at).to_string(),
                    not_before: key.entry.not_before.clone(),
                    not_after: key.entry.not_after.clone(),
                });
            }
        }
        if !key.entry.allows(name.as_str()) {
            return Err(TrustError::NameNotAllowed {
                key: id.clone(),
                name: name.to_string(),
            });
        }
        Ok((manifest, key.entry.publisher.clone(), key.not_after))
    }
}

/// A manifest a publisher signs: what [`Trust`] checks of it.
trait SignedManifest: serde::de::DeserializeOwned {
    /// Name, version, signing key and creation time (RFC 3339).
    fn identity(&self) -> (&PluginName, &Version, &KeyId, &str);
}

impl SignedManifest for PluginManifest {
    fn identity(&self) -> (&PluginName, &Version, &KeyId, &str) {
        (&self.name, &self.version, &self.key_id, &self.created_at)
    }
}

impl SignedManifest for ModelManifest {
    fn identity(&self) -> (&PluginName, &Version, &KeyId, &str) {
        (&self.name, &self.version, &self.key_id, &self.created_at)
    }
}

/// A model manifest whose signature verified, with who vouches for it.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedModel {
    pub manifest: ModelManifest,
    /// The publisher of the key that signed, from the trust list.
    pub publisher: String,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn entry(key: &KeyPair, publisher: &str, plugins: &[&str]) -> TrustedKey {
        let now = SystemTime::now();
        TrustedKey {
            key_id: key.id().clone(),
            publisher: publisher.into(),
            public_key: crate::signing::encode_public(&key.public()),
            not_before: humantime::format_rfc3339_seconds(now - Duration::from_secs(60))
                .to_string(),
            not_after: humantime::format_rfc3339_seconds(now + Duration::from_secs(3600))
                .to_string(),
            plugins: plugins.iter().map(|p| (*p).to_owned()).collect(),
            revoked: false,
        }
    }

    fn list(serial: u64, keys: Vec<TrustedKey>) -> TrustList {
        TrustList {
            serial,
            issued_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            keys,
        }
    }

    #[test]
    fn name_patterns_are_exact_or_prefix() {
        let key = KeyPair::generate().unwrap();
        let e = entry(&key, "acme", &["acme-*", "triage"]);
        assert!(e.allows("acme-parser"));
        assert!(e.allows("triage"));
        assert!(!e.allows("triage2"));
        assert!(!e.allows("keywords"));
    }

    #[test]
    fn only_root_signed_lists_install_and_serials_never_go_back() {
        let root = KeyPair::generate().unwrap();
        let publisher = KeyPair::generate().unwrap();
        let trust = Trust::new(root.public());
        let v2 = list(2, vec![entry(&publisher, "acme", &["*"])]).sign(&root);
        assert_eq!(trust.install(&v2), Ok(Installed::Updated { serial: 2 }));
        assert_eq!(trust.install(&v2), Ok(Installed::Unchanged));
        let v1 = list(1, vec![]).sign(&root);
        assert_eq!(
            trust.install(&v1),
            Err(TrustError::Downgrade {
                current: 2,
                offered: 1
            })
        );
        let forged = list(3, vec![]).sign(&publisher);
        assert!(matches!(
            trust.install(&forged),
            Err(TrustError::BadTrustList(_))
        ));
        assert_eq!(trust.serial(), Some(2));
    }

    #[test]
    fn an_entry_whose_id_does_not_match_its_key_is_refused() {
        let root = KeyPair::generate().unwrap();
        let a = KeyPair::generate().unwrap();
        let b = KeyPair::generate().unwrap();
        let mut e = entry(&a, "acme", &["*"]);
        e.key_id = b.id().clone();
        let trust = Trust::new(root.public());
        assert!(matches!(
            trust.install(&list(1, vec![e]).sign(&root)),
            Err(TrustError::BadTrustList(_))
        ));
    }
}
