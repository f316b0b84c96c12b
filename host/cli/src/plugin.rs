//! `agentctl plugin`: publish and list plugins in the embedded store.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use plugin_store::PublishSpec;

#[derive(Subcommand)]
pub(crate) enum PluginCommand {
    /// Publish a component under the name, version, config and limits of its
    /// `plugin.toml`. Versions are immutable.
    Publish {
        /// The plugin's `plugin.toml`.
        #[arg(long)]
        manifest: PathBuf,
        /// The component, built with `cargo build --release --target wasm32-wasip2`.
        #[arg(long)]
        module: PathBuf,
    },
    /// List published plugin versions.
    List,
}

pub(crate) async fn run(data_dir: &Path, command: PluginCommand) -> anyhow::Result<()> {
    let source = axon::local_source(&data_dir.join("plugins")).await?;
    match command {
        PluginCommand::Publish { manifest, module } => {
            let text = std::fs::read_to_string(&manifest)
                .with_context(|| format!("reading `{}`", manifest.display()))?;
            let spec = PublishSpec::from_toml(&text)
                .with_context(|| format!("in `{}`", manifest.display()))?;
            let bytes = std::fs::read(&module)
                .with_context(|| format!("reading `{}`", module.display()))?;
            let published = source.publish(&bytes, spec).await?;
            println!(
                "published {} {} ({}, {} bytes)",
                published.name, published.version, published.digest, published.size
            );
        }
        PluginCommand::List => {
            let manifests = source.list().await?;
            if manifests.is_empty() {
                println!("no plugins published in `{}`", data_dir.display());
            }
            for m in manifests {
                let tags: Vec<&str> = m.tags.iter().map(String::as_str).collect();
                println!(
                    "{:<20} {:<10} {}  [{}]",
                    m.name,
                    m.version,
                    m.digest,
                    tags.join(", ")
                );
            }
        }
    }
    Ok(())
}
