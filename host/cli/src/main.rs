//! `agentctl`: the operator CLI of agent-runtime.
//!
//! - `agentctl up` runs the local stack on embedded defaults;
//! - `agentctl plugin publish|list` manages the embedded plugin store.

mod plugin;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "agentctl",
    version,
    about = "Operate agent-runtime: run the local stack, publish plugins"
)]
struct Cli {
    /// Directory of the local stack's state (plugin store, compile cache).
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
    /// Run the local stack: publish the example plugins, start Axon, send a
    /// sample request, serve until Ctrl-C.
    Up(up::UpArgs),
    /// Manage plugins in the embedded store.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up::run(&cli.data_dir, args).await,
        Command::Plugin(command) => plugin::run(&cli.data_dir, command).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
