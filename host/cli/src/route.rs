//! `agentctl route`: the intent table. A request that names an intent and no
//! plugin (how the earlier system's clients call `/dispatch`) goes to the
//! plugin alias its intent is routed to. Routes live in the registry beside
//! aliases: each change is one conditional write with its history entry, and
//! Orbit picks it up without a restart.

use std::path::Path;

use anyhow::Context;
use clap::Subcommand;
use plugin_store::{RouteTarget, admin};

/// `agentctl route`: which store, and what to do in it.
#[derive(clap::Args)]
pub(crate) struct RouteArgs {
    #[command(flatten)]
    store: aws_stores::PluginStoreArgs,
    #[command(subcommand)]
    command: RouteCommand,
}

#[derive(Subcommand)]
pub(crate) enum RouteCommand {
    /// Route an intent to `PLUGIN` (its alias `live`) or `PLUGIN@ALIAS`; the
    /// plugin must have that alias.
    Set { intent: String, target: String },
    /// The intent table, one route per line.
    List,
    /// Remove the route of an intent: requests that name it and no plugin
    /// are refused from then on.
    Rm { intent: String },
    /// Every change of the intent table: who, when, from, to.
    History,
}

pub(crate) async fn run(data_dir: &Path, args: RouteArgs) -> anyhow::Result<()> {
    let source = args
        .store
        .open(&data_dir.join("plugins"))
        .await
        .context("opening the plugin store")?;
    let registry = &**source.registry();
    let actor = crate::plugin::actor();
    match args.command {
        RouteCommand::Set { intent, target } => {
            let target: RouteTarget = target.parse()?;
            let route = admin::set_route(registry, &intent, target, &actor).await?;
            println!(
                "route {} -> {} (revision {})",
                route.intent, route.target, route.revision
            );
        }
        RouteCommand::List => {
            for route in registry.snapshot().await?.routes {
                println!(
                    "{:<32} {:<32} revision {:<4} {} {}",
                    route.intent, route.target, route.revision, route.updated_at, route.updated_by
                );
            }
        }
        RouteCommand::Rm { intent } => {
            admin::remove_route(registry, &intent, &actor).await?;
            println!("route {intent} removed");
        }
        RouteCommand::History => {
            for h in registry.route_history().await? {
                println!(
                    "{}  {:<12} {:<24} {} -> {}",
                    h.at,
                    h.actor,
                    h.action,
                    h.from.as_deref().unwrap_or("-"),
                    h.to.as_deref().unwrap_or("-")
                );
            }
        }
    }
    Ok(())
}
