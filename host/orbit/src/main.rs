//! The Orbit binary: parse flags, set up logging, serve.

use anyhow::Context;
use clap::Parser;
use service_kit::telemetry::{self, LogFormat};

/// A faster allocator than the system one for many small, short-lived
/// allocations per request (measured: see docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "orbit",
    version,
    about = "The /dispatch front door: SigV4, rate limits, governance, then Axon"
)]
struct Cli {
    #[command(flatten)]
    config: orbit::OrbitConfig,
    /// Log format: `json` or `text`.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(cli.log_format, "info");
    let source = cli
        .config
        .store
        .open(&cli.config.plugin_dir())
        .await
        .context("opening the plugin store")?;
    let governor = cli.config.open_governance().await?;
    let state = orbit::build(&cli.config, source, governor).await?;
    let listener = tokio::net::TcpListener::bind(cli.config.listen)
        .await
        .with_context(|| format!("binding {}", cli.config.listen))?;
    let door = cli.config.front_door();
    service_kit::front_door::raise_open_files_limit(&door);
    orbit::serve(listener, state, door, service_kit::shutdown_signal()).await
}
