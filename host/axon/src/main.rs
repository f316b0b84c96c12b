//! The Axon binary: parse flags, set up logging, serve.

use anyhow::Context;
use clap::Parser;
use service_kit::telemetry::{self, LogFormat};

/// A faster allocator than the system one for many small, short-lived
/// allocations per request (measured: see docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "axon",
    version,
    about = "Runs reasoning plugins, each request in a fresh WebAssembly sandbox"
)]
struct Cli {
    #[command(flatten)]
    config: axon::AxonConfig,
    /// Log format: `json` or `text`.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // wasmtime-wasi-nn logs every failed call of a plugin at error level;
    // the plugin gets the error, and a broken bound is the request's code.
    telemetry::init(cli.log_format, "info,wasmtime_wasi_nn=off");
    let config = cli.config;
    let source = config
        .store
        .open(&config.plugin_dir())
        .await
        .context("opening the plugin store")?;
    let state = axon::build(&config, source).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    axon::start(&config, &state).await?;
    let door = config.front_door();
    service_kit::front_door::raise_open_files_limit(&door);
    axon::serve(listener, state, door, service_kit::shutdown_signal()).await
}
