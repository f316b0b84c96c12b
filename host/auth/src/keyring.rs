//! Keyrings: access key id -> secret and the principal it speaks for.
//!
//! The embedded default, [`LocalKeyring`], is a JSON file (mode 0600) created
//! on first run; the AWS deployment reads the same records from Secrets
//! Manager. A principal may hold two active keys at once, so keys rotate with
//! overlap: create the new key, move clients over, revoke the old one.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use rand::RngExt;
use serde::{Deserialize, Serialize};

/// Active keys a principal may hold at once.
pub const MAX_ACTIVE_KEYS_PER_PRINCIPAL: usize = 2;

/// A person or a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    User,
    Service,
}

/// Who a verified request comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The principal's id, e.g. `dev` or `orbit`.
    pub principal: String,
    pub kind: PrincipalKind,
    /// Groups the principal belongs to, for policies.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The tenant the principal belongs to.
    pub tenant: String,
}

/// One access key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub identity: Identity,
    pub created_at: String,
    #[serde(default)]
    pub revoked: bool,
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKey")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("identity", &self.identity)
            .field("created_at", &self.created_at)
            .field("revoked", &self.revoked)
            .finish()
    }
}

/// Finds the active key for an access key id.
pub trait Keyring: Send + Sync {
    /// The key with this id, if it exists and is not revoked.
    fn find(&self, access_key_id: &str) -> Option<Arc<AccessKey>>;
}

/// Why a keyring operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("keyring `{}` is corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "principal `{0}` already has {MAX_ACTIVE_KEYS_PER_PRINCIPAL} active keys; revoke one first"
    )]
    TooManyKeys(String),
    #[error("no active key `{0}`")]
    NoSuchKey(String),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Default, Serialize, Deserialize)]
struct KeyFile {
    keys: Vec<AccessKey>,
}

type KeyIndex = HashMap<String, Arc<AccessKey>>;

/// Keys in a local JSON file, reloaded when the file changes.
pub struct LocalKeyring {
    path: PathBuf,
    /// Only keys of these principals are accepted; `None` accepts all.
    trusted: Option<Vec<String>>,
    index: RwLock<Arc<KeyIndex>>,
    loaded_mtime: Mutex<Option<SystemTime>>,
}

impl LocalKeyring {
    /// Opens the keyring at `path`; a missing file is an empty keyring.
    pub fn open(path: &Path) -> Result<Self, KeyringError> {
        let keyring = Self {
            path: path.to_owned(),
            trusted: None,
            index: RwLock::new(Arc::default()),
            loaded_mtime: Mutex::new(None),
        };
        keyring.reload()?;
        Ok(keyring)
    }

    /// Accepts only keys of the given principals (Axon trusts only Orbit).
    pub fn trusting_only(mut self, principals: Vec<String>) -> Result<Self, KeyringError> {
        self.trusted = Some(principals);
        self.reload()?;
        Ok(self)
    }

    /// Where the keyring lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_file(&self) -> Result<KeyFile, KeyringError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| KeyringError::Corrupt {
                path: self.path.clone(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeyFile::default()),
            Err(source) => Err(KeyringError::Io {
                context: format!("cannot read `{}`", self.path.display()),
                source,
            }),
        }
    }

    fn write_file(&self, file: &KeyFile) -> Result<(), KeyringError> {
        let json =
            serde_json::to_vec_pretty(file).map_err(|e| KeyringError::Invalid(e.to_string()))?;
        crate::credentials::write_private(&self.path, &json).map_err(|source| {
            KeyringError::Io {
                context: format!("cannot write `{}`", self.path.display()),
                source,
            }
        })?;
        self.reload()
    }

    fn mtime(&self) -> Option<SystemTime> {
        std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok()
    }

    /// Re-reads the file.
    pub fn reload(&self) -> Result<(), KeyringError> {
        let mtime = self.mtime();
        let file = self.read_file()?;
        let index: KeyIndex = file
            .keys
            .into_iter()
            .filter(|k| !k.revoked)
            .filter(|k| {
                self.trusted
                    .as_ref()
                    .is_none_or(|trusted| trusted.contains(&k.identity.principal))
            })
            .map(|k| (k.access_key_id.clone(), Arc::new(k)))
            .collect();
        *self.index.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(index);
        *self
            .loaded_mtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = mtime;
        Ok(())
    }

    /// Re-reads the file if it changed since the last read. Returns whether it did.
    pub fn reload_if_changed(&self) -> Result<bool, KeyringError> {
        let current = self.mtime();
        let loaded = *self
            .loaded_mtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if current == loaded {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    /// Every key, revoked ones included.
    pub fn list(&self) -> Result<Vec<AccessKey>, KeyringError> {
        Ok(self.read_file()?.keys)
    }

    /// Creates a new key for `identity`.
    pub fn create_key(&self, identity: Identity) -> Result<AccessKey, KeyringError> {
        validate_identity(&identity)?;
        let mut file = self.read_file()?;
        let active: Vec<&AccessKey> = file
            .keys
            .iter()
            .filter(|k| !k.revoked && k.identity.principal == identity.principal)
            .collect();
        if active.len() >= MAX_ACTIVE_KEYS_PER_PRINCIPAL {
            return Err(KeyringError::TooManyKeys(identity.principal));
        }
        // A principal is one identity whichever key it signs with.
        if let Some(other) = active.iter().find(|k| k.identity != identity) {
            return Err(KeyringError::Invalid(format!(
                "principal `{}` already has an active key as {:?} in tenant `{}` with groups [{}]; \
                 create keys with the same identity, or revoke its keys first",
                identity.principal,
                other.identity.kind,
                other.identity.tenant,
                other.identity.groups.join(", ")
            )));
        }
        let key = AccessKey {
            access_key_id: new_access_key_id(),
            secret_access_key: new_secret(),
            identity,
            created_at: humantime_now(),
            revoked: false,
        };
        file.keys.push(key.clone());
        self.write_file(&file)?;
        Ok(key)
    }

    /// Revokes a key; it stops verifying at once (in this process) or at the
    /// next reload (in others).
    pub fn revoke(&self, access_key_id: &str) -> Result<(), KeyringError> {
        let mut file = self.read_file()?;
        let key = file
            .keys
            .iter_mut()
            .find(|k| k.access_key_id == access_key_id && !k.revoked)
            .ok_or_else(|| KeyringError::NoSuchKey(access_key_id.to_owned()))?;
        key.revoked = true;
        self.write_file(&file)
    }

    /// The newest active key of `principal`.
    pub fn newest_key_of(&self, principal: &str) -> Option<Arc<AccessKey>> {
        self.signing_key_of(principal, std::time::Duration::ZERO)
    }

    /// The key to sign as `principal` with: the newest active key at least
    /// `settle` old, so that a verifier re-reading the keyring on its own
    /// schedule knows it already; the newest key if none is that old yet.
    pub fn signing_key_of(
        &self,
        principal: &str,
        settle: std::time::Duration,
    ) -> Option<Arc<AccessKey>> {
        let index = self
            .index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut keys: Vec<&Arc<AccessKey>> = index
            .values()
            .filter(|k| k.identity.principal == principal)
            .collect();
        // RFC 3339 UTC times sort as text; the key id breaks ties within a second.
        keys.sort_by(|a, b| {
            (&a.created_at, &a.access_key_id).cmp(&(&b.created_at, &b.access_key_id))
        });
        let settled_before = crate::time::format_rfc3339(SystemTime::now() - settle);
        keys.iter()
            .rev()
            .find(|k| k.created_at <= settled_before)
            .or_else(|| keys.last())
            .map(|k| Arc::clone(k))
    }
}

/// Re-reads `keyring` every `every` while it is alive, so keys created or
/// revoked by `agentctl keys` take effect without a restart.
pub fn spawn_reloader(keyring: &Arc<LocalKeyring>, every: std::time::Duration) {
    let weak = Arc::downgrade(keyring);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(keyring) = weak.upgrade() else { break };
            match keyring.reload_if_changed() {
                Ok(true) => tracing::info!(path = %keyring.path().display(), "keyring reloaded"),
                Ok(false) => {}
                Err(error) => {
                    tracing::error!(%error, "cannot reload the keyring; keeping the keys already loaded")
                }
            }
        }
    });
}

impl Keyring for LocalKeyring {
    fn find(&self, access_key_id: &str) -> Option<Arc<AccessKey>> {
        self.index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(access_key_id)
            .cloned()
    }
}

fn validate_identity(identity: &Identity) -> Result<(), KeyringError> {
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    if !name_ok(&identity.principal) {
        return Err(KeyringError::Invalid(format!(
            "principal `{}` must be 1 to 64 letters, digits, `-`, `_` or `.`",
            identity.principal
        )));
    }
    if !name_ok(&identity.tenant) {
        return Err(KeyringError::Invalid(format!(
            "tenant `{}` is not a valid name",
            identity.tenant
        )));
    }
    if let Some(bad) = identity.groups.iter().find(|g| !name_ok(g)) {
        return Err(KeyringError::Invalid(format!(
            "group `{bad}` is not a valid name"
        )));
    }
    Ok(())
}

const KEY_ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn random_string(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

/// `AKAR` and 16 base32 characters: 20 characters, like AWS key ids.
fn new_access_key_id() -> String {
    format!("AKAR{}", random_string(KEY_ID_ALPHABET, 16))
}

/// 40 characters, about 240 bits.
fn new_secret() -> String {
    random_string(SECRET_ALPHABET, 40)
}

fn humantime_now() -> String {
    crate::time::format_rfc3339(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(principal: &str) -> Identity {
        Identity {
            principal: principal.into(),
            kind: PrincipalKind::User,
            groups: vec!["developers".into()],
            tenant: "local".into(),
        }
    }

    #[test]
    fn keys_are_created_found_rotated_and_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = LocalKeyring::open(&dir.path().join("keys.json")).unwrap();
        let first = keyring.create_key(identity("alice")).unwrap();
        assert!(first.access_key_id.starts_with("AKAR") && first.access_key_id.len() == 20);
        assert_eq!(first.secret_access_key.len(), 40);
        assert_eq!(
            keyring
                .find(&first.access_key_id)
                .unwrap()
                .identity
                .principal,
            "alice"
        );

        // Two active keys: rotation with overlap; a third is refused.
        let second = keyring.create_key(identity("alice")).unwrap();
        assert!(keyring.find(&second.access_key_id).is_some());
        assert!(matches!(
            keyring.create_key(identity("alice")),
            Err(KeyringError::TooManyKeys(_))
        ));

        // Another identity under the same principal is refused.
        let mut changed = identity("alice");
        changed.groups.push("admins".into());
        keyring.revoke(&second.access_key_id).unwrap();
        assert!(matches!(
            keyring.create_key(changed),
            Err(KeyringError::Invalid(_))
        ));
        let second = keyring.create_key(identity("alice")).unwrap();

        keyring.revoke(&first.access_key_id).unwrap();
        assert!(keyring.find(&first.access_key_id).is_none());
        assert!(keyring.find(&second.access_key_id).is_some());
        keyring.create_key(identity("alice")).unwrap();

        // Another process (another keyring on the same file) sees the change.
        let other = LocalKeyring::open(keyring.path()).unwrap();
        assert!(other.find(&first.access_key_id).is_none());
        assert_eq!(other.list().unwrap().len(), 4);
    }

    #[test]
    fn signing_prefers_a_key_old_enough_for_verifiers_to_know() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = LocalKeyring::open(&dir.path().join("keys.json")).unwrap();
        let old = keyring.create_key(identity("orbit")).unwrap();
        // Age the first key on disk, as if it were created an hour ago.
        let mut file = keyring.read_file().unwrap();
        file.keys[0].created_at =
            crate::time::format_rfc3339(SystemTime::now() - std::time::Duration::from_secs(3600));
        keyring.write_file(&file).unwrap();
        let new = keyring.create_key(identity("orbit")).unwrap();
        let settle = std::time::Duration::from_secs(30);
        assert_eq!(
            keyring
                .signing_key_of("orbit", settle)
                .unwrap()
                .access_key_id,
            old.access_key_id
        );
        assert_eq!(
            keyring.newest_key_of("orbit").unwrap().access_key_id,
            new.access_key_id
        );
        keyring.revoke(&old.access_key_id).unwrap();
        assert_eq!(
            keyring
                .signing_key_of("orbit", settle)
                .unwrap()
                .access_key_id,
            new.access_key_id
        );
    }

    #[test]
    fn a_restricted_keyring_ignores_other_principals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let keyring = LocalKeyring::open(&path).unwrap();
        let user = keyring.create_key(identity("dev")).unwrap();
        let service = keyring.create_key(identity("orbit")).unwrap();
        let axon_view = LocalKeyring::open(&path)
            .unwrap()
            .trusting_only(vec!["orbit".into()])
            .unwrap();
        assert!(axon_view.find(&user.access_key_id).is_none());
        assert!(axon_view.find(&service.access_key_id).is_some());
    }

    #[test]
    fn invalid_identities_and_secrets_in_debug_output_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = LocalKeyring::open(&dir.path().join("keys.json")).unwrap();
        assert!(keyring.create_key(identity("has space")).is_err());
        let key = keyring.create_key(identity("bob")).unwrap();
        assert!(!format!("{key:?}").contains(&key.secret_access_key));
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let keyring = LocalKeyring::open(&dir.path().join("keys.json")).unwrap();
        keyring.create_key(identity("dev")).unwrap();
        let mode = std::fs::metadata(keyring.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
