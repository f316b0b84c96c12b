//! `agentctl model`: models for plugins with the `inference` capability.
//!
//! `add` signs a model file with a publisher key and puts it in a model
//! directory (`<name>/<version>/model.onnx` and `manifest.json`), the
//! directory Axon's `--models` reads. Axon verifies the signature under the
//! trust list and the digest before it loads a model.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use plugin_store::KeyPair;
use plugin_store::model::{ModelSpec, add_to_dir};

#[derive(Subcommand)]
pub(crate) enum ModelCommand {
    /// Sign a model with a publisher key and add it to a model directory,
    /// under the name, version and shapes of its `model.toml`. Versions are
    /// immutable: the same bytes again is a no-op, other bytes fail.
    Add {
        /// The model's `model.toml`.
        #[arg(long)]
        manifest: PathBuf,
        /// The model file (ONNX).
        #[arg(long)]
        model: PathBuf,
        /// The publisher key file. Default: the local stack's dev key.
        #[arg(long)]
        key: Option<PathBuf>,
        /// The model directory. Default: `<data-dir>/models`, the local stack's.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

pub(crate) fn run(data_dir: &Path, command: ModelCommand) -> anyhow::Result<()> {
    match command {
        ModelCommand::Add {
            manifest,
            model,
            key,
            dir,
        } => {
            let text = std::fs::read_to_string(&manifest)
                .with_context(|| format!("reading `{}`", manifest.display()))?;
            let spec = ModelSpec::from_toml(&text)?;
            let bytes =
                std::fs::read(&model).with_context(|| format!("reading `{}`", model.display()))?;
            let key_path = key.unwrap_or_else(|| crate::plugin::dev_publisher_key(data_dir));
            let key = KeyPair::read(&key_path)
                .with_context(|| format!("reading the key `{}`", key_path.display()))?;
            let dir = dir.unwrap_or_else(|| data_dir.join("models"));
            let (manifest, new) = add_to_dir(&dir, spec, &bytes, &key)?;
            println!(
                "{} {} {} ({} bytes, key {}) in `{}`{}",
                if new { "added" } else { "unchanged" },
                manifest.name,
                manifest.version,
                manifest.size,
                manifest.key_id,
                dir.display(),
                if new { "" } else { ": already there" }
            );
            Ok(())
        }
    }
}
