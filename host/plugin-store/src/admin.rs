//! Operator actions on the registry, shared by `agentctl` and the local stack:
//! editing the trust list, moving and rolling back aliases, labelling and
//! revoking versions. Each validates first, then makes one conditional write,
//! and says what to do when it loses a race.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use semver::Version;

use crate::error::StoreError;
use crate::manifest::PluginName;
use crate::registry::{
    Alias, AliasMove, AliasTarget, Registry, Route, RouteChange, RouteTarget, check_alias_name,
    check_intent, check_label,
};
use crate::signing::{KeyPair, SignatureError, decode_public, encode_public};
use crate::trust::{TrustList, TrustedKey};

/// How often a read-modify-write retries after losing to another writer.
const RETRIES: usize = 5;

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

fn signature_error(e: SignatureError) -> StoreError {
    StoreError::Invalid(e.to_string())
}

/// Reads a root public key file: base64 of the 32-byte ed25519 key.
pub fn read_public_key(path: &Path) -> Result<ed25519_dalek::VerifyingKey, StoreError> {
    let text = std::fs::read_to_string(path)
        .map_err(StoreError::io(format!("cannot read `{}`", path.display())))?;
    decode_public(&text).map_err(|e| StoreError::Invalid(format!("`{}`: {e}", path.display())))
}

/// The trust list stored in `registry`, verified under `root`'s public key;
/// `None` if there is none yet.
pub async fn current_trust_list(
    registry: &dyn Registry,
    root: &ed25519_dalek::VerifyingKey,
) -> Result<Option<TrustList>, StoreError> {
    let Some(envelope) = registry.snapshot().await?.trust_list else {
        return Ok(None);
    };
    TrustList::verify(&envelope, root)
        .map(Some)
        .map_err(|e| StoreError::Invalid(format!("the stored trust list: {e}")))
}

/// Applies `edit` to the stored trust list (an empty one if none) and stores
/// the result under the next serial, signed by `root`. Retries if another
/// operator wrote in between.
pub async fn edit_trust_list(
    registry: &dyn Registry,
    root: &KeyPair,
    edit: impl Fn(&mut Vec<TrustedKey>) -> Result<(), StoreError>,
) -> Result<TrustList, StoreError> {
    for _ in 0..RETRIES {
        let current = current_trust_list(registry, &root.public()).await?;
        let (serial, mut keys) = current.map_or((0, Vec::new()), |l| (l.serial, l.keys));
        edit(&mut keys)?;
        let list = TrustList {
            serial: serial + 1,
            issued_at: rfc3339(SystemTime::now()),
            keys,
        };
        match registry.put_trust_list(list.serial, &list.sign(root)).await {
            Ok(()) => return Ok(list),
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict(
        "the trust list keeps changing under this edit; try again".into(),
    ))
}

/// A trust-list entry for `key`, valid from now for `valid_for`.
pub fn trusted_key(
    key: &ed25519_dalek::VerifyingKey,
    publisher: &str,
    plugins: Vec<String>,
    valid_for: Duration,
) -> Result<TrustedKey, StoreError> {
    if publisher.is_empty() || plugins.is_empty() {
        return Err(StoreError::Invalid(
            "a trusted key needs a publisher and at least one plugin pattern (`*` for any)".into(),
        ));
    }
    let now = SystemTime::now();
    Ok(TrustedKey {
        key_id: crate::signing::KeyId::of(key),
        publisher: publisher.to_owned(),
        public_key: encode_public(key),
        // A little slack for clocks a few minutes apart.
        not_before: rfc3339(now - Duration::from_secs(300)),
        not_after: rfc3339(now + valid_for),
        plugins,
        revoked: false,
    })
}

/// The local stack's keys: a root key, a dev publisher key, and a trust list
/// that names the publisher key for every plugin.
pub struct DevTrust {
    pub root: KeyPair,
    pub publisher: KeyPair,
    /// The root's public key file Axon and Orbit are configured with.
    pub root_public: PathBuf,
}

/// The publisher the local stack's dev key belongs to.
pub const DEV_PUBLISHER: &str = "agent-runtime";

/// Creates (once) the local stack's keys under `dir` and makes sure the
/// stored trust list names the dev publisher key.
pub async fn ensure_dev_trust(dir: &Path, registry: &dyn Registry) -> Result<DevTrust, StoreError> {
    let key = |file: &str| -> Result<KeyPair, StoreError> {
        let path = dir.join(file);
        if path.exists() {
            KeyPair::read(&path).map_err(signature_error)
        } else {
            let key = KeyPair::generate().map_err(signature_error)?;
            key.write(&path).map_err(signature_error)?;
            tracing::info!(key_id = %key.id(), path = %path.display(), "key created");
            Ok(key)
        }
    };
    let root = key("root.key")?;
    let publisher = key("dev-publisher.key")?;
    let root_public = dir.join("root.pub");
    std::fs::write(&root_public, encode_public(&root.public())).map_err(StoreError::io(
        format!("cannot write `{}`", root_public.display()),
    ))?;
    let listed = current_trust_list(registry, &root.public())
        .await?
        .and_then(|l| l.key(publisher.id()).cloned())
        .is_some_and(|k| {
            !k.revoked
                && humantime::parse_rfc3339_weak(&k.not_after)
                    .is_ok_and(|end| end > SystemTime::now() + Duration::from_secs(86_400))
        });
    if !listed {
        let entry = trusted_key(
            &publisher.public(),
            DEV_PUBLISHER,
            vec!["*".into()],
            Duration::from_secs(365 * 86_400),
        )?;
        let list = edit_trust_list(registry, &root, |keys| {
            keys.retain(|k| k.key_id != entry.key_id);
            keys.push(entry.clone());
            Ok(())
        })
        .await?;
        tracing::info!(serial = list.serial, key_id = %publisher.id(), "dev publisher key trusted");
    }
    Ok(DevTrust {
        root,
        publisher,
        root_public,
    })
}

async fn alias_of(
    registry: &dyn Registry,
    plugin: &PluginName,
    name: &str,
) -> Result<Option<Alias>, StoreError> {
    Ok(registry
        .snapshot()
        .await?
        .aliases
        .into_iter()
        .find(|a| &a.plugin == plugin && a.name == name))
}

async fn check_servable(
    registry: &dyn Registry,
    plugin: &PluginName,
    version: &Version,
) -> Result<(), StoreError> {
    let entry = registry.version(plugin, version).await?;
    if entry.revoked {
        return Err(StoreError::Invalid(format!(
            "plugin `{plugin}` version `{version}` is revoked; an alias cannot point at it"
        )));
    }
    Ok(())
}

/// Points `alias` of `plugin` at `target` (both versions must be published
/// and not revoked). Returns the alias as stored.
pub async fn set_alias(
    registry: &dyn Registry,
    plugin: &PluginName,
    alias: &str,
    target: AliasTarget,
    actor: &str,
) -> Result<Alias, StoreError> {
    check_alias_name(alias)?;
    target.validate()?;
    check_servable(registry, plugin, &target.version).await?;
    if let Some(canary) = &target.canary {
        check_servable(registry, plugin, &canary.version).await?;
    }
    for _ in 0..RETRIES {
        let current = alias_of(registry, plugin, alias).await?;
        let change = AliasMove {
            plugin: plugin.clone(),
            name: alias.to_owned(),
            target: target.clone(),
            previous: current.as_ref().map(|a| a.target.clone()),
            expected_revision: current.as_ref().map_or(0, |a| a.revision),
            actor: actor.to_owned(),
        };
        match registry.move_alias(&change).await {
            Err(StoreError::Conflict(_)) => continue,
            result => return result,
        }
    }
    Err(StoreError::Conflict(format!(
        "alias `{alias}` keeps moving under this change; try again"
    )))
}

/// Returns `alias` to where it pointed before its last move. Fails, rather
/// than guessing, if it moved meanwhile.
pub async fn rollback_alias(
    registry: &dyn Registry,
    plugin: &PluginName,
    alias: &str,
    actor: &str,
) -> Result<Alias, StoreError> {
    let current = alias_of(registry, plugin, alias)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("alias `{alias}` of plugin `{plugin}`")))?;
    let previous = current.previous.clone().ok_or_else(|| {
        StoreError::Invalid(format!(
            "alias `{alias}` of `{plugin}` has never moved: there is nothing to roll back to"
        ))
    })?;
    check_servable(registry, plugin, &previous.version).await?;
    registry
        .move_alias(&AliasMove {
            plugin: plugin.clone(),
            name: alias.to_owned(),
            target: previous,
            previous: Some(current.target),
            expected_revision: current.revision,
            actor: actor.to_owned(),
        })
        .await
}

/// Routes `intent` to `target`, whose plugin must have that alias (so a typo
/// is caught here, not by the first caller). Returns the route as stored.
pub async fn set_route(
    registry: &dyn Registry,
    intent: &str,
    target: RouteTarget,
    actor: &str,
) -> Result<Route, StoreError> {
    check_intent(intent)?;
    for _ in 0..RETRIES {
        let snapshot = registry.snapshot().await?;
        if !snapshot
            .aliases
            .iter()
            .any(|a| a.plugin == target.plugin && a.name == target.alias)
        {
            return Err(StoreError::Invalid(format!(
                "plugin `{}` has no alias `{}`: publish it and `agentctl plugin alias set {} {} <version>` first",
                target.plugin, target.alias, target.plugin, target.alias
            )));
        }
        let change = RouteChange {
            intent: intent.to_owned(),
            target: Some(target.clone()),
            expected_revision: route_revision(&snapshot, intent),
            actor: actor.to_owned(),
        };
        match registry.change_route(&change).await {
            Err(StoreError::Conflict(_)) => continue,
            Ok(Some(route)) => return Ok(route),
            Ok(None) => {
                return Err(StoreError::Backend(format!(
                    "the route of `{intent}` was not stored"
                )));
            }
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict(format!(
        "the route of `{intent}` keeps changing under this change; try again"
    )))
}

/// Removes the route of `intent`; requests that name it and no plugin are
/// refused from then on.
pub async fn remove_route(
    registry: &dyn Registry,
    intent: &str,
    actor: &str,
) -> Result<(), StoreError> {
    for _ in 0..RETRIES {
        let snapshot = registry.snapshot().await?;
        let change = RouteChange {
            intent: intent.to_owned(),
            target: None,
            expected_revision: route_revision(&snapshot, intent),
            actor: actor.to_owned(),
        };
        match registry.change_route(&change).await {
            Err(StoreError::Conflict(_)) => continue,
            result => return result.map(drop),
        }
    }
    Err(StoreError::Conflict(format!(
        "the route of `{intent}` keeps changing under this change; try again"
    )))
}

fn route_revision(snapshot: &crate::registry::Snapshot, intent: &str) -> u64 {
    snapshot
        .routes
        .iter()
        .find(|r| r.intent == intent)
        .map_or(0, |r| r.revision)
}

/// Replaces a version's operator labels.
pub async fn set_labels(
    registry: &dyn Registry,
    plugin: &PluginName,
    version: &Version,
    labels: &BTreeSet<String>,
    actor: &str,
) -> Result<(), StoreError> {
    for label in labels {
        check_label(label)?;
    }
    registry.set_labels(plugin, version, labels, actor).await
}
