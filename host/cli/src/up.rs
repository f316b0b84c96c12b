//! `agentctl up`: the local stack on embedded defaults, from a fresh clone.
//!
//! Publishes the example plugins (compiled by the build) into the embedded
//! store, starts Axon on loopback, proves it with a sample request, prints
//! what to try next, and serves until Ctrl-C. `--check` stops after the
//! sample request instead: a smoke test of the whole start-up.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, bail};
use clap::Args;
use plugin_store::{PluginSource, PublishSpec, StoreError};
use service_kit::telemetry::{self, LogFormat};

#[derive(Args)]
pub(crate) struct UpArgs {
    /// Where Axon listens.
    #[arg(long, default_value = "127.0.0.1:8081")]
    axon_listen: SocketAddr,
    /// Start, send the sample request, and exit (non-zero if anything failed).
    #[arg(long)]
    check: bool,
    /// Log format: `text` or `json`.
    #[arg(long, default_value = "text")]
    log_format: LogFormat,
}

pub(crate) async fn run(data_dir: &Path, args: UpArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format, "info,wasmtime=warn,cranelift=warn");
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating `{}`", data_dir.display()))?;

    let config = axon::AxonConfig::local(data_dir.to_owned(), args.axon_listen);
    let source = axon::local_source(&config.plugin_dir()).await?;
    publish_examples(&source).await?;

    let state = axon::build(&config, source)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "binding Axon to {}; is another stack running? pass --axon-listen",
                config.listen
            )
        })?;
    let axon_addr = listener.local_addr().context("reading Axon's address")?;
    axon::start(&config, &state).await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(axon::serve(listener, state, async {
        let _ = stopped.await;
    }));

    let check = sample_request(axon_addr).await;
    match &check {
        Ok(answer) => {
            println!("\nagent-runtime is up (data in `{}`)", data_dir.display());
            println!("  axon  http://{axon_addr}");
            println!("\nsample: keywords -> {answer}");
            println!("\ntry it:");
            println!(
                "  curl -s http://{axon_addr}/v1/reason -d '{{\"plugin\":\"keywords\",\"version\":\"1.0.0\",\"request\":{{\"intent\":\"extract\",\"input\":{{\"text\":\"the quick brown fox jumps over the lazy fox\",\"top\":2}}}}}}'"
            );
            println!("  curl -s http://{axon_addr}/v1/plugins");
        }
        Err(e) => eprintln!("the sample request failed: {e:#}"),
    }

    if !args.check && check.is_ok() {
        println!("\nCtrl-C stops the stack.");
        service_kit::shutdown_signal().await;
        println!("stopping");
    }
    let _ = stop.send(());
    server.await.context("waiting for Axon to stop")??;
    check.map(drop)
}

/// Publishes every example; an unchanged one is a no-op.
async fn publish_examples(source: &PluginSource) -> anyhow::Result<()> {
    for example in plugin_artifacts::EXAMPLES {
        let Some(manifest) = example.manifest_text() else {
            continue;
        };
        let spec = PublishSpec::from_toml(&manifest.context("reading an example's plugin.toml")?)?;
        let module = example
            .bytes()
            .with_context(|| format!("reading the compiled `{}` plugin", example.name))?;
        match source.publish(&module, spec).await {
            Ok(m) => {
                tracing::info!(plugin = %m.name, version = %m.version, digest = %m.digest, "example published")
            }
            Err(e @ StoreError::AlreadyPublished { .. }) => {
                tracing::warn!(
                    "{e}; the stack serves the published one (bump the version in plugin.toml to publish a change)"
                )
            }
            Err(e) => return Err(e).context("publishing the examples"),
        }
    }
    Ok(())
}

/// Sends one `keywords` request and returns its output.
async fn sample_request(axon: SocketAddr) -> anyhow::Result<serde_json::Value> {
    let body = serde_json::json!({
        "plugin": "keywords",
        "version": "1.0.0",
        "request": {
            "intent": "extract",
            "input": { "text": "Axon runs each plugin in a fresh sandbox. A fresh sandbox per request keeps every plugin honest.", "top": 3 },
        },
    });
    let response = reqwest::Client::new()
        .post(format!("http://{axon}/v1/reason"))
        .json(&body)
        .send()
        .await
        .context("sending the sample request")?;
    let status = response.status();
    let reply: serde_json::Value = response.json().await.context("reading the sample reply")?;
    if !status.is_success() {
        bail!("Axon answered {status}: {reply}");
    }
    Ok(reply["output"].clone())
}
