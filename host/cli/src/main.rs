//! `agentctl`: the operator CLI of agent-runtime.
//!
//! - `agentctl up` runs the whole local stack on embedded defaults;
//! - `agentctl dispatch` sends a signed `/dispatch`;
//! - `agentctl keys create|list|revoke` manages access keys;
//! - `agentctl plugin ...` runs the signed supply chain: keys, trust list,
//!   publish, labels, aliases, rollback, history, revocation;
//! - `agentctl policy ...` validates, tests, diffs, stores and activates
//!   governance policy sets;
//! - `agentctl audit verify` checks the hash chain of the audit file.

mod audit;
mod dispatch;
mod keys;
mod mcp;
mod model;
mod plugin;
mod policy;
mod route;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A faster allocator than the system one for many small, short-lived
/// allocations per request (measured: see docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "agentctl",
    version,
    about = "Operate agent-runtime: run the local stack, dispatch, manage keys, plugins and policies"
)]
struct Cli {
    /// Directory of the local stack's state (keys, policies, plugins, caches).
    #[arg(
        long,
        global = true,
        env = "AGENT_RUNTIME_DATA_DIR",
        default_value = ".agent-runtime"
    )]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole local stack: keys, default policies and example plugins
    /// on first run; governance, Orbit and Axon on loopback; until Ctrl-C.
    Up(up::UpArgs),
    /// Send a signed `/dispatch` to Orbit and print the answer.
    Dispatch(dispatch::DispatchArgs),
    /// Serve MCP on stdio for a desktop agent, forwarding each message to
    /// Orbit's `/mcp` signed with a profile's keys.
    Mcp(mcp::McpArgs),
    /// Manage access keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Publish, sign, trust, label, alias, roll back and revoke plugins.
    Plugin(plugin::PluginArgs),
    /// Publish models, for plugins with inference.
    Model(model::ModelArgs),
    /// Route intents to plugins, for requests that name no plugin.
    Route(route::RouteArgs),
    /// Validate, test, diff, store, activate and roll back policy sets.
    Policy(policy::PolicyArgs),
    /// Check the audit trail of governance decisions.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up::run(&cli.data_dir, args).await,
        Command::Dispatch(args) => dispatch::run(&cli.data_dir, args).await,
        Command::Mcp(args) => mcp::run(&cli.data_dir, args).await,
        Command::Keys(command) => keys::run(&cli.data_dir, command),
        Command::Plugin(command) => plugin::run(&cli.data_dir, command).await,
        Command::Model(args) => model::run(&cli.data_dir, args).await,
        Command::Route(command) => route::run(&cli.data_dir, command).await,
        Command::Policy(command) => policy::run(&cli.data_dir, command).await,
        Command::Audit(command) => audit::run(&cli.data_dir, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
