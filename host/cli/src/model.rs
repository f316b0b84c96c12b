//! `agentctl model`: models for plugins with the `inference` capability.
//!
//! `publish` signs a model file with a publisher key and publishes it to the
//! plugin store (`--plugin-store`: the same blob store and registry as the
//! plugins). Axon fetches a model when a plugin version that pins it loads,
//! and verifies its signature under the trust list and its bytes against the
//! signed digest. `list` and `describe` show what is published, verified
//! under the trust list, and which plugin versions pin each model.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, bail};
use clap::Subcommand;
use plugin_store::model::ModelSpec;
use plugin_store::{Digest, InferenceNeed, PluginName, PluginSource, Version, verify_entry};

use crate::plugin::{actor, dev_publisher_key, parse_name, read_key, trust, upload_bar};

/// `agentctl model`: which store, and what to do in it.
#[derive(clap::Args)]
pub(crate) struct ModelArgs {
    #[command(flatten)]
    store: aws_stores::PluginStoreArgs,
    #[command(subcommand)]
    command: ModelCommand,
}

#[derive(Subcommand)]
pub(crate) enum ModelCommand {
    /// Sign a model with a publisher key and publish it under the name,
    /// version and shapes of its `model.toml`. Versions are immutable: the
    /// same bytes again is a no-op, other bytes fail.
    Publish {
        /// The model's `model.toml`.
        #[arg(long)]
        manifest: PathBuf,
        /// The model file (ONNX).
        #[arg(long)]
        model: PathBuf,
        /// The publisher key file. Default: the local stack's dev key.
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// List published model versions with their verified publisher and state.
    List,
    /// Show one model's versions (or one version) in full, with the plugin
    /// versions that pin each.
    Describe {
        /// `name` or `name@version`.
        model: String,
    },
    /// Show a model's publications, oldest first.
    History { name: String },
}

pub(crate) async fn run(data_dir: &Path, args: ModelArgs) -> anyhow::Result<()> {
    match args.command {
        ModelCommand::Publish {
            manifest,
            model,
            key,
        } => {
            let text = std::fs::read_to_string(&manifest)
                .with_context(|| format!("reading `{}`", manifest.display()))?;
            let spec = ModelSpec::from_toml(&text)
                .with_context(|| format!("in `{}`", manifest.display()))?;
            let bytes =
                std::fs::read(&model).with_context(|| format!("reading `{}`", model.display()))?;
            let key = read_key(&key.unwrap_or_else(|| dev_publisher_key(data_dir)))?;
            let source = open(data_dir, &args.store).await?;
            let bar = upload_bar(bytes.len() as u64);
            let published = source
                .publish_model(&bytes, spec, &key, &actor(), &|n| bar.inc(n))
                .await
                .with_context(|| format!("publishing `{}`", model.display()))?;
            bar.finish_and_clear();
            let m = &published.manifest;
            println!(
                "{} model {} {} ({}, {} bytes, key {})",
                if published.new {
                    "published"
                } else {
                    "unchanged"
                },
                m.name,
                m.version,
                m.digest,
                m.size,
                m.key_id
            );
            Ok(())
        }
        ModelCommand::List => {
            let source = open(data_dir, &args.store).await?;
            let trust = trust(data_dir, &source).await?;
            let records = source.registry().models().await?;
            if records.is_empty() {
                println!("no models published yet");
            }
            let now = SystemTime::now();
            for record in &records {
                let (state, publisher) = match trust.verify_model(
                    &record.envelope,
                    &record.name,
                    &record.version,
                    now,
                ) {
                    Ok(v) => ("ok".to_owned(), v.publisher),
                    Err(e) => (e.to_string(), "-".to_owned()),
                };
                println!(
                    "{:<20} {:<12} {:<16} {}  {}",
                    record.name, record.version, publisher, record.digest, state
                );
            }
            Ok(())
        }
        ModelCommand::Describe { model } => {
            let source = open(data_dir, &args.store).await?;
            describe(data_dir, &source, &model).await
        }
        ModelCommand::History { name } => {
            let source = open(data_dir, &args.store).await?;
            let name = parse_name(&name)?;
            let history = source.registry().model_history(&name).await?;
            if history.is_empty() {
                bail!("model `{name}` has no history: it was never published");
            }
            for h in history {
                println!(
                    "{}  {:<12} {:<16} {}",
                    h.at,
                    h.actor,
                    h.action,
                    h.to.as_deref().unwrap_or("-")
                );
            }
            Ok(())
        }
    }
}

async fn open(
    data_dir: &Path,
    store: &aws_stores::PluginStoreArgs,
) -> anyhow::Result<PluginSource> {
    store
        .open(&data_dir.join("plugins"))
        .await
        .context("opening the plugin store")
}

/// Every version of `which` (`name` or `name@version`), as JSON: its record,
/// its verified manifest (or why it is not servable), and the plugin
/// versions whose signed manifests pin it.
async fn describe(data_dir: &Path, source: &PluginSource, which: &str) -> anyhow::Result<()> {
    let (name, version) = match which.split_once('@') {
        Some((name, version)) => (parse_name(name)?, Some(version.parse::<Version>()?)),
        None => (parse_name(which)?, None),
    };
    let trust = trust(data_dir, source).await?;
    let now = SystemTime::now();
    let records = source.registry().models().await?;
    let plugins = source.registry().snapshot().await?.versions;
    let mut found = false;
    for record in records
        .iter()
        .filter(|r| r.name == name && version.as_ref().is_none_or(|v| &r.version == v))
    {
        found = true;
        let verified = trust.verify_model(&record.envelope, &record.name, &record.version, now);
        // Pins hold the signed digest, as Axon compares them.
        let digest = verified
            .as_ref()
            .map_or(record.digest, |v| v.manifest.digest);
        let pinned_by: Vec<String> = plugins
            .iter()
            .filter_map(|entry| verify_entry(&trust, entry, now).ok())
            .filter(|v| {
                v.manifest
                    .inference
                    .as_ref()
                    .is_some_and(|need| pins(need, &name, &record.version, &digest))
            })
            .map(|v| format!("{}@{}", v.manifest.name, v.manifest.version))
            .collect();
        let mut doc = serde_json::json!({
            "name": record.name,
            "version": record.version.to_string(),
            "digest": record.digest,
            "published_at": record.published_at,
            "published_by": record.published_by,
            "pinned_by": pinned_by,
        });
        match verified {
            Ok(v) => {
                if v.manifest.digest != record.digest {
                    // As Axon refuses it.
                    doc["not_servable"] = serde_json::json!(
                        "the registry's digest differs from the signed manifest's: the registry record was altered"
                    );
                }
                doc["verified_publisher"] = serde_json::json!(v.publisher);
                doc["manifest"] = serde_json::to_value(&v.manifest)?;
            }
            Err(e) => doc["not_servable"] = serde_json::json!(e.to_string()),
        }
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    if !found {
        bail!("no model `{which}` is published: publish it with `agentctl model publish`");
    }
    Ok(())
}

/// Whether a plugin version that needs `need` pins model `name` at
/// `version` with the bytes of `digest`, as Axon would load it: that
/// version, and those bytes where the plugin pins a digest (manifests from
/// before models were pinned by digest do not).
fn pins(need: &InferenceNeed, name: &PluginName, version: &Version, digest: &Digest) -> bool {
    need.models.get(name) == Some(version) && need.digests.get(name).is_none_or(|d| d == digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_is_pinned_by_its_version_and_the_digest_pinned_with_it() {
        let name: PluginName = "support-intent".parse().unwrap();
        let (v1, v2) = (Version::new(1, 0, 0), Version::new(1, 1, 0));
        let (these, other) = (Digest::of(b"these bytes"), Digest::of(b"other bytes"));
        let mut need = InferenceNeed {
            models: [(name.clone(), v1.clone())].into(),
            gpu: Default::default(),
            digests: Default::default(),
        };
        // No digest pinned (published before digests were): any bytes.
        assert!(pins(&need, &name, &v1, &other));
        assert!(!pins(&need, &name, &v2, &these));
        need.digests.insert(name.clone(), these);
        assert!(pins(&need, &name, &v1, &these));
        assert!(!pins(&need, &name, &v1, &other));
        let elsewhere: PluginName = "bench-medium".parse().unwrap();
        assert!(!pins(&need, &elsewhere, &v1, &these));
    }
}
