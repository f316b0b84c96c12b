//! `agentctl plugin`: the signed supply chain from the operator's side.
//!
//! Keys and trust (`keygen`, `trust add|revoke|list`), publishing (`publish`,
//! signed with a publisher key), inspection (`list`, `describe`, `history`),
//! and rollout (`label`, `alias set`, `rollback`, `revoke`). Every change is
//! one conditional write to the registry, recorded with who made it; Orbit
//! and Axon pick it up without a restart (within the refresh bounds in
//! docs/runbook.md).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use plugin_store::{
    AliasTarget, Canary, KeyPair, PluginName, PluginSource, PublishSpec, Trust, Version, admin,
    signing, verify_entry,
};

/// `agentctl plugin`: which store, and what to do in it.
#[derive(clap::Args)]
pub(crate) struct PluginArgs {
    #[command(flatten)]
    store: aws_stores::PluginStoreArgs,
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Subcommand)]
pub(crate) enum PluginCommand {
    /// Create an ed25519 key pair (a publisher key, or a root key) in a new
    /// file readable only by you; prints its id and public key.
    Keygen {
        /// Where to write the private key file (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Create the S3 bucket (versioned) and DynamoDB table of
    /// `--plugin-store aws` where they are missing. The embedded store needs
    /// no set-up.
    CreateStore,
    /// Manage the signed trust list of publisher keys.
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Sign a component with a publisher key and publish it under the name,
    /// version, config and limits of its `plugin.toml`. Versions are
    /// immutable: the same bytes again is a no-op, other bytes fail.
    Publish {
        /// The plugin's `plugin.toml`.
        #[arg(long)]
        manifest: PathBuf,
        /// The component, built with `cargo build --release --target wasm32-wasip2`.
        #[arg(long)]
        module: PathBuf,
        /// The publisher key file. Default: the local stack's dev key.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Also point this alias at the new version (e.g. `live`).
        #[arg(long)]
        alias: Option<String>,
    },
    /// List published versions with their verified publisher, labels and state.
    List,
    /// Show one plugin (every version and alias) or one version in full.
    Describe {
        /// `name` or `name@version`.
        plugin: String,
    },
    /// Replace the operator labels of a version (`approved`, `experimental`, ...).
    Label {
        name: String,
        version: Version,
        /// The labels, comma-separated; empty clears them.
        #[arg(value_delimiter = ',')]
        labels: Vec<String>,
    },
    /// Point aliases at versions.
    #[command(subcommand)]
    Alias(AliasCommand),
    /// Return an alias to where it pointed before its last move.
    Rollback { name: String, alias: String },
    /// Every recorded change of a plugin: who, when, what, from, to.
    History { name: String },
    /// Revoke a version for good: Orbit stops routing to it and Axon evicts it.
    Revoke {
        name: String,
        version: Version,
        /// Why, for the history.
        #[arg(long, default_value = "revoked by an operator")]
        reason: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum TrustCommand {
    /// Trust a publisher key (or renew it): signs a new trust list with the root key.
    Add {
        /// The publisher's key file, or a file holding just its base64 public key.
        #[arg(long)]
        key: PathBuf,
        /// Who the key belongs to: the `publisher` governance sees.
        #[arg(long)]
        publisher: String,
        /// Plugin names it may sign, comma-separated; a trailing `*` is a prefix.
        #[arg(long, value_delimiter = ',', default_value = "*")]
        plugins: Vec<String>,
        /// How long it is valid from now, e.g. `90d`, `1y`.
        #[arg(long, default_value = "365d")]
        valid_for: humantime::Duration,
        /// The root key file. Default: the local stack's.
        #[arg(long)]
        root_key: Option<PathBuf>,
    },
    /// Revoke a publisher key: every version it signed stops verifying.
    Revoke {
        key_id: String,
        #[arg(long)]
        root_key: Option<PathBuf>,
    },
    /// Show the trust list in use (verified under the trust root).
    List,
}

#[derive(Subcommand)]
pub(crate) enum AliasCommand {
    /// Point `alias` at `version`, optionally sending `--weight` percent of
    /// routing keys to a `--canary` version.
    Set {
        name: String,
        alias: String,
        version: Version,
        #[arg(long, requires = "weight")]
        canary: Option<Version>,
        /// Percent of routing keys (1 to 99) the canary takes.
        #[arg(long, requires = "canary")]
        weight: Option<u8>,
    },
}

/// Who operator changes are recorded as.
pub(crate) fn actor() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "operator".to_owned())
}

fn trust_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("trust")
}

/// The local stack's dev publisher key file.
pub(crate) fn dev_publisher_key(data_dir: &Path) -> PathBuf {
    trust_dir(data_dir).join("dev-publisher.key")
}

pub(crate) fn read_key(path: &Path) -> anyhow::Result<KeyPair> {
    KeyPair::read(path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The trust in force, as Orbit and Axon of this data directory see it.
pub(crate) async fn trust(data_dir: &Path, source: &PluginSource) -> anyhow::Result<Trust> {
    let root = admin::read_public_key(&trust_dir(data_dir).join("root.pub"))
        .context("reading the trust root; run `agentctl up` once to create the local one")?;
    let trust = Trust::new(root);
    if let Some(envelope) = source.registry().snapshot().await?.trust_list {
        trust.install(&envelope)?;
    }
    Ok(trust)
}

/// A progress bar for an upload of `len` bytes, on stderr when it is a
/// terminal (hidden otherwise, so scripts and logs get only the result).
pub(crate) fn upload_bar(len: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "uploading [{bar:32}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

pub(crate) fn parse_name(name: &str) -> anyhow::Result<PluginName> {
    Ok(name.parse()?)
}

pub(crate) async fn run(data_dir: &Path, args: PluginArgs) -> anyhow::Result<()> {
    // The two commands that need no open store.
    match &args.command {
        PluginCommand::Keygen { out } => {
            let key = KeyPair::generate()?;
            key.write(out)?;
            println!("key id      {}", key.id());
            println!("public key  {}", signing::encode_public(&key.public()));
            println!("written to  {} (keep it private)", out.display());
            return Ok(());
        }
        PluginCommand::CreateStore => {
            if args.store.plugin_store == aws_stores::StoreKind::Local {
                println!("the embedded store needs no set-up: it is created on first use");
            } else {
                args.store.create_aws().await?;
                println!(
                    "bucket `{}` (versioned) and table `{}` are ready",
                    args.store.plugin_bucket.as_deref().unwrap_or_default(),
                    args.store.registry_table.as_deref().unwrap_or_default()
                );
            }
            return Ok(());
        }
        _ => {}
    }
    let source = args
        .store
        .open(&data_dir.join("plugins"))
        .await
        .context("opening the plugin store")?;
    let registry = &**source.registry();
    match args.command {
        PluginCommand::Keygen { .. } | PluginCommand::CreateStore => {}
        PluginCommand::Trust(command) => run_trust(data_dir, &source, command).await?,
        PluginCommand::Publish {
            manifest,
            module,
            key,
            alias,
        } => {
            let text = std::fs::read_to_string(&manifest)
                .with_context(|| format!("reading `{}`", manifest.display()))?;
            let spec = PublishSpec::from_toml(&text)
                .with_context(|| format!("in `{}`", manifest.display()))?;
            let bytes = std::fs::read(&module)
                .with_context(|| format!("reading `{}`", module.display()))?;
            let key_path = key.unwrap_or_else(|| dev_publisher_key(data_dir));
            let key = read_key(&key_path)?;
            let bar = upload_bar(bytes.len() as u64);
            let published = source
                .publish_with_progress(&bytes, spec, &key, &actor(), &|n| bar.inc(n))
                .await
                .with_context(|| format!("publishing `{}`", module.display()))?;
            bar.finish_and_clear();
            let m = &published.manifest;
            println!(
                "{} {} {} ({}, {} bytes, {}, key {})",
                if published.new {
                    "published"
                } else {
                    "unchanged"
                },
                m.name,
                m.version,
                m.digest,
                m.size,
                m.world,
                m.key_id
            );
            if let Some(alias) = alias {
                let target = AliasTarget {
                    version: m.version.clone(),
                    canary: None,
                };
                let moved = admin::set_alias(registry, &m.name, &alias, target, &actor()).await?;
                println!("alias {} -> {}", moved.name, moved.target);
            }
        }
        PluginCommand::List => {
            let trust = trust(data_dir, &source).await?;
            let snapshot = registry.snapshot().await?;
            if snapshot.versions.is_empty() {
                println!("no plugins published yet");
            }
            let now = std::time::SystemTime::now();
            for entry in &snapshot.versions {
                let (state, publisher) = match verify_entry(&trust, entry, now) {
                    Ok(v) => ("ok".to_owned(), v.publisher),
                    Err(e) => (e.to_string(), "-".to_owned()),
                };
                let labels: Vec<&str> = entry.labels.iter().map(String::as_str).collect();
                println!(
                    "{:<20} {:<12} {:<16} [{}]  {}  {}",
                    entry.record.name,
                    entry.record.version,
                    publisher,
                    labels.join(", "),
                    entry.record.digest,
                    state
                );
            }
            for alias in &snapshot.aliases {
                println!("alias {}:{} -> {}", alias.plugin, alias.name, alias.target);
            }
        }
        PluginCommand::Describe { plugin } => describe(data_dir, &source, &plugin).await?,
        PluginCommand::Label {
            name,
            version,
            labels,
        } => {
            let name = parse_name(&name)?;
            let labels: BTreeSet<String> = labels.into_iter().filter(|l| !l.is_empty()).collect();
            admin::set_labels(registry, &name, &version, &labels, &actor()).await?;
            println!(
                "{name} {version} labels: [{}]",
                labels.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        PluginCommand::Alias(AliasCommand::Set {
            name,
            alias,
            version,
            canary,
            weight,
        }) => {
            let name = parse_name(&name)?;
            let target = AliasTarget {
                version,
                canary: canary
                    .zip(weight)
                    .map(|(version, weight)| Canary { version, weight }),
            };
            let moved = admin::set_alias(registry, &name, &alias, target, &actor()).await?;
            println!(
                "alias {}:{} -> {} (revision {})",
                name, moved.name, moved.target, moved.revision
            );
        }
        PluginCommand::Rollback { name, alias } => {
            let name = parse_name(&name)?;
            let moved = admin::rollback_alias(registry, &name, &alias, &actor()).await?;
            println!(
                "alias {}:{} rolled back to {}",
                name, moved.name, moved.target
            );
        }
        PluginCommand::History { name } => {
            let name = parse_name(&name)?;
            for h in registry.history(&name).await? {
                println!(
                    "{}  {:<12} {:<16} {} -> {}",
                    h.at,
                    h.actor,
                    h.action,
                    h.from.as_deref().unwrap_or("-"),
                    h.to.as_deref().unwrap_or("-")
                );
            }
        }
        PluginCommand::Revoke {
            name,
            version,
            reason,
        } => {
            let name = parse_name(&name)?;
            registry.revoke(&name, &version, &actor(), &reason).await?;
            println!("revoked {name} {version}");
        }
    }
    Ok(())
}

async fn run_trust(
    data_dir: &Path,
    source: &PluginSource,
    command: TrustCommand,
) -> anyhow::Result<()> {
    let registry = &**source.registry();
    let root_key = |path: Option<PathBuf>| {
        read_key(&path.unwrap_or_else(|| trust_dir(data_dir).join("root.key")))
    };
    match command {
        TrustCommand::Add {
            key,
            publisher,
            plugins,
            valid_for,
            root_key: root_path,
        } => {
            let root = root_key(root_path)?;
            let public = match KeyPair::read(&key) {
                Ok(pair) => pair.public(),
                Err(_) => {
                    let text = std::fs::read_to_string(&key)
                        .with_context(|| format!("reading `{}`", key.display()))?;
                    signing::decode_public(&text)
                        .map_err(|e| anyhow::anyhow!("`{}`: {e}", key.display()))?
                }
            };
            let entry =
                admin::trusted_key(&public, &publisher, plugins, Duration::from(valid_for))?;
            let list = admin::edit_trust_list(registry, &root, |keys| {
                keys.retain(|k| k.key_id != entry.key_id);
                keys.push(entry.clone());
                Ok(())
            })
            .await?;
            println!(
                "trust list serial {}: key {} trusted for `{}` until {}",
                list.serial, entry.key_id, entry.publisher, entry.not_after
            );
        }
        TrustCommand::Revoke {
            key_id,
            root_key: root_path,
        } => {
            let root = root_key(root_path)?;
            let list = admin::edit_trust_list(registry, &root, |keys| {
                let key = keys
                    .iter_mut()
                    .find(|k| k.key_id.as_str() == key_id)
                    .ok_or_else(|| {
                        plugin_store::StoreError::NotFound(format!(
                            "key `{key_id}` in the trust list"
                        ))
                    })?;
                key.revoked = true;
                Ok(())
            })
            .await?;
            println!("trust list serial {}: key {key_id} revoked", list.serial);
        }
        TrustCommand::List => {
            let root = admin::read_public_key(&trust_dir(data_dir).join("root.pub"))?;
            let Some(list) = admin::current_trust_list(registry, &root).await? else {
                bail!("no trust list is stored yet: add a key with `agentctl plugin trust add`");
            };
            println!(
                "trust list serial {} issued {}",
                list.serial, list.issued_at
            );
            for k in list.keys {
                println!(
                    "{}  {:<16} {} to {}  plugins [{}]{}",
                    k.key_id,
                    k.publisher,
                    k.not_before,
                    k.not_after,
                    k.plugins.join(", "),
                    if k.revoked { "  REVOKED" } else { "" }
                );
            }
        }
    }
    Ok(())
}

async fn describe(data_dir: &Path, source: &PluginSource, which: &str) -> anyhow::Result<()> {
    let (name, version) = match which.split_once('@') {
        Some((name, version)) => (parse_name(name)?, Some(version.parse::<Version>()?)),
        None => (parse_name(which)?, None),
    };
    let trust = trust(data_dir, source).await?;
    let snapshot = source.registry().snapshot().await?;
    let now = std::time::SystemTime::now();
    let mut found = false;
    for entry in snapshot.versions.iter().filter(|e| {
        e.record.name == name && version.as_ref().is_none_or(|v| &e.record.version == v)
    }) {
        found = true;
        let verified = verify_entry(&trust, entry, now);
        let mut doc = serde_json::json!({
            "name": entry.record.name,
            "version": entry.record.version.to_string(),
            "digest": entry.record.digest,
            "labels": entry.labels,
            "revoked": entry.revoked,
            "published_at": entry.record.published_at,
            "published_by": entry.record.published_by,
        });
        match verified {
            Ok(v) => {
                doc["verified_publisher"] = serde_json::json!(v.publisher);
                doc["manifest"] = serde_json::to_value(&v.manifest)?;
            }
            Err(e) => doc["not_servable"] = serde_json::json!(e.to_string()),
        }
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    for alias in snapshot.aliases.iter().filter(|a| a.plugin == name) {
        println!(
            "alias {} -> {} (revision {}, by {} at {}{})",
            alias.name,
            alias.target,
            alias.revision,
            alias.updated_by,
            alias.updated_at,
            alias
                .previous
                .as_ref()
                .map(|p| format!(", previously {p}"))
                .unwrap_or_default()
        );
    }
    for route in snapshot.routes.iter().filter(|r| r.target.plugin == name) {
        println!(
            "route {} -> {} (revision {}, by {} at {})",
            route.intent, route.target, route.revision, route.updated_by, route.updated_at
        );
    }
    if !found {
        bail!("no plugin `{which}` is published");
    }
    Ok(())
}
