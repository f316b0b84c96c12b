//! `agentctl up`: the whole stack on embedded defaults, from a fresh clone.
//!
//! On first run it creates the keyring (a `dev` user and Orbit's service
//! key), writes the dev credentials as AWS profile `agent-runtime`, seeds the
//! default policies and publishes the example plugins (compiled by the
//! build). Then it starts Axon and Orbit (governance in-process) on loopback,
//! proves the path with a signed sample dispatch, prints what to try, and
//! serves until Ctrl-C. `--check` stops after the samples: a smoke test.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, bail};
use auth::keyring::Identity;
use auth::{LocalKeyring, PrincipalKind};
use clap::Args;
use governance::LocalPolicyDir;
use plugin_store::{PluginSource, PublishSpec, StoreError};
use service_kit::telemetry::{self, LogFormat};

/// The AWS profile `up` writes the dev credentials under.
pub(crate) const PROFILE: &str = "agent-runtime";

#[derive(Args)]
pub(crate) struct UpArgs {
    /// Where Orbit listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    orbit_listen: SocketAddr,
    /// Where Axon listens.
    #[arg(long, default_value = "127.0.0.1:8081")]
    axon_listen: SocketAddr,
    /// Start, send the sample dispatches, and exit (non-zero if they did not
    /// come out as expected).
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
    prepare_keys(data_dir)?;
    if LocalPolicyDir::seed(&data_dir.join("policies"), governance::DEFAULT_POLICIES)
        .context("writing the default policies")?
    {
        tracing::info!(dir = %data_dir.join("policies").display(), "default policies written");
    }

    let axon_config = axon::AxonConfig::local(data_dir.to_owned(), args.axon_listen);
    let source = axon::local_source(&axon_config.plugin_dir()).await?;
    publish_examples(&source).await?;
    let axon_state = axon::build(&axon_config, source)?;
    let axon_listener = bind(axon_config.listen, "Axon", "--axon-listen").await?;
    let axon_addr = axon_listener
        .local_addr()
        .context("reading Axon's address")?;
    axon::start(&axon_config, &axon_state).await?;

    let orbit_config = orbit::OrbitConfig::local(
        data_dir.to_owned(),
        args.orbit_listen,
        format!("http://{axon_addr}"),
    );
    let orbit_state = orbit::build(&orbit_config).await?;
    let orbit_listener = bind(orbit_config.listen, "Orbit", "--orbit-listen").await?;
    let orbit_addr = orbit_listener
        .local_addr()
        .context("reading Orbit's address")?;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let axon_server = tokio::spawn(axon::serve(
        axon_listener,
        axon_state,
        until_stopped(stopped.clone()),
    ));
    let orbit_server = tokio::spawn(orbit::serve(
        orbit_listener,
        orbit_state,
        until_stopped(stopped),
    ));

    let credentials = data_dir.join("credentials");
    let samples = samples(orbit_addr, &credentials).await;
    match &samples {
        Ok(lines) => {
            println!("\nagent-runtime is up (state in `{}`)", data_dir.display());
            println!("  orbit  http://{orbit_addr}   (POST /dispatch, SigV4)");
            println!("  axon   http://{axon_addr}   (accepts only Orbit's signature)");
            println!();
            for line in lines {
                println!("{line}");
            }
            print_examples(orbit_addr, data_dir);
        }
        Err(e) => eprintln!("the sample dispatch failed: {e:#}"),
    }

    if !args.check && samples.is_ok() {
        println!("\nCtrl-C stops the stack.");
        service_kit::shutdown_signal().await;
        println!("stopping");
    }
    let _ = stop.send(true);
    orbit_server.await.context("waiting for Orbit to stop")??;
    axon_server.await.context("waiting for Axon to stop")??;
    samples.map(drop)
}

async fn bind(addr: SocketAddr, what: &str, flag: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {what} to {addr}; is another stack running? pass {flag}"))
}

/// Creates the dev user's and Orbit's keys if missing, and writes the dev
/// credentials to `<data>/credentials` as profile `agent-runtime`.
fn prepare_keys(data_dir: &Path) -> anyhow::Result<()> {
    let keyring = LocalKeyring::open(&data_dir.join("keys.json"))?;
    let ensure = |principal: &str, kind: PrincipalKind, groups: &[&str]| -> anyhow::Result<()> {
        if keyring.newest_key_of(principal).is_none() {
            keyring.create_key(Identity {
                principal: principal.to_owned(),
                kind,
                groups: groups.iter().map(|g| (*g).to_owned()).collect(),
                tenant: "local".to_owned(),
            })?;
            tracing::info!(principal, "access key created");
        }
        Ok(())
    };
    ensure("dev", PrincipalKind::User, &["developers"])?;
    ensure("orbit", PrincipalKind::Service, &["services"])?;
    let dev = keyring
        .newest_key_of("dev")
        .context("the dev key vanished from the keyring")?;
    let path = data_dir.join("credentials");
    auth::credentials::write_profile(&path, PROFILE, &dev.access_key_id, &dev.secret_access_key)
        .with_context(|| format!("writing `{}`", path.display()))?;
    Ok(())
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

/// Two signed dispatches as the dev user: `keywords` (allowed) and `triage`
/// (experimental: denied unless in group `beta`).
async fn samples(orbit: SocketAddr, credentials: &Path) -> anyhow::Result<Vec<String>> {
    let client = crate::dispatch::client_from_profile(
        &format!("http://{orbit}"),
        credentials,
        PROFILE,
        auth::DEFAULT_REGION,
    )?;
    let allowed = client
        .dispatch(&serde_json::json!({
            "plugin": "keywords",
            "intent": "extract",
            "input": { "text": "Axon runs each plugin in a fresh sandbox. A fresh sandbox per request keeps every plugin honest.", "top": 3 },
        }))
        .await
        .map_err(anyhow::Error::msg)?;
    if !allowed.status.is_success() {
        bail!(
            "dispatching `keywords` gave {}: {}",
            allowed.status,
            allowed.body
        );
    }
    let denied = client
        .dispatch(&serde_json::json!({
            "plugin": "triage",
            "intent": "classify",
            "input": { "subject": "refund please" },
        }))
        .await
        .map_err(anyhow::Error::msg)?;
    if denied.status != reqwest::StatusCode::FORBIDDEN {
        bail!(
            "dispatching `triage` as `dev` should be denied, got {}: {}",
            denied.status,
            denied.body
        );
    }
    Ok(vec![
        format!(
            "sample: keywords -> {}  (allowed by {})",
            allowed.body["output"], allowed.body["governance"]["policies"]
        ),
        format!(
            "sample: triage   -> 403 {}  ({})",
            denied.body["error"]["code"], denied.body["governance"]["policies"]
        ),
    ])
}

fn print_examples(orbit: SocketAddr, data_dir: &Path) {
    let data = data_dir.display();
    println!("\ntry it:");
    println!(
        "  cargo run -q -p agentctl -- --data-dir {data} dispatch keywords --orbit http://{orbit} --input '{{\"text\": \"the quick brown fox jumps over the lazy fox\", \"top\": 2}}'"
    );
    println!(
        "  AWS_SHARED_CREDENTIALS_FILE={data}/credentials awscurl --profile {PROFILE} --service execute-api --region us-east-1 \\\n      -X POST -d '{{\"plugin\":\"keywords\",\"intent\":\"extract\",\"input\":{{\"text\":\"a b b\"}}}}' http://{orbit}/dispatch"
    );
    println!(
        "  cargo run -q -p agentctl -- --data-dir {data} keys create --principal bea --groups developers,beta --profile bea"
    );
    println!(
        "  cargo run -q -p agentctl -- --data-dir {data} dispatch triage --profile bea --orbit http://{orbit} --input '{{\"subject\": \"site down, urgent\"}}'"
    );
}
