//! `agentctl model`: models for plugins with the `inference` capability.
//!
//! `publish` signs a model file with a publisher key and publishes it to the
//! plugin store (`--plugin-store`: the same blob store and registry as the
//! plugins). Axon fetches a model when a plugin version that pins it loads,
//! and verifies its signature under the trust list and its bytes against the
//! signed digest.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use plugin_store::model::ModelSpec;

use crate::plugin::{actor, dev_publisher_key, read_key, upload_bar};

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
            let source = args
                .store
                .open(&data_dir.join("plugins"))
                .await
                .context("opening the plugin store")?;
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
    }
}
