//! Axon: the wasmtime host that runs reasoning plugins.
//!
//! A request names a plugin version, the module digest Orbit governed, and
//! the caller's input. Axon verifies the version (signature under the trust
//! list, revocation, module digest: [`plugins`]), compiles it once, and runs
//! the request in a fresh sandbox with the plugin's limits ([`sandbox`]). Everything a plugin can reach is what the
//! WIT contract offers: logging, its configuration, and WASI built to deny.
//!
//! ```text
//! POST /v1/reason -> server -> plugins (load once per version) -> sandbox (fresh Store per request)
//! ```

pub mod config;
pub mod inference;
pub mod metrics;
pub mod plugins;
pub mod sandbox;
pub mod server;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use plugin_store::PluginSource;
use prometheus_client::registry::Registry;
use service_kit::front_door::FrontDoor;
use service_kit::metrics::{HttpMetrics, MetricsEndpoint};
use tokio::net::TcpListener;

pub use config::AxonConfig;
pub use server::{AxonState, router};

/// How often the keyring file is checked for changes.
const KEYRING_RELOAD: std::time::Duration = std::time::Duration::from_secs(2);

/// Builds Axon's state: sandbox, plugin host and metrics. Not ready yet:
/// call [`start`] or [`AxonState::set_ready`].
pub async fn build(config: &AxonConfig, source: PluginSource) -> anyhow::Result<AxonState> {
    let sandbox = sandbox::Sandbox::new(&config.sandbox())?;
    let mut registry = Registry::default();
    let http_metrics = HttpMetrics::register(&mut registry);
    let axon_metrics = metrics::AxonMetrics::register(&mut registry);
    if let Some(inference) = sandbox.inference_metrics() {
        inference.register(&mut registry);
    }
    let watcher =
        plugin_store::Watcher::trusting_root_file(source.registry().clone(), &config.trust_root())
            .await
            .context("reading the trust root and the plugin registry")?;
    let watcher = Arc::new(watcher);
    let plugins = plugins::PluginHost::new(Arc::new(sandbox), source, watcher, axon_metrics);
    let max_body_bytes = config.max_body_kib as usize * 1024;
    let auth = if config.insecure_no_auth {
        tracing::warn!("SigV4 is off: anyone who can connect can run plugins");
        None
    } else {
        let keyring = auth::LocalKeyring::open(&config.keyring_path())
            .and_then(|k| k.trusting_only(config.trusted_callers.clone()))
            .with_context(|| {
                format!("opening the keyring `{}`", config.keyring_path().display())
            })?;
        let keyring = Arc::new(keyring);
        if tokio::runtime::Handle::try_current().is_ok() {
            auth::keyring::spawn_reloader(&keyring, KEYRING_RELOAD);
        }
        let verifier = auth::Verifier::new(
            auth::VerifierConfig {
                region: config.region.clone(),
                // Only Orbit calls Axon, and it signs a unique request id
                // just before sending: each signature is accepted once,
                // within a short window.
                replay: auth::ReplayPolicy::once_per_request_id(),
                max_skew: auth::SERVICE_HOP_MAX_SKEW,
                ..auth::VerifierConfig::default()
            },
            keyring,
        );
        Some(auth::middleware::SigV4 {
            verifier: Arc::new(verifier),
            max_body_bytes,
        })
    };
    Ok(AxonState::new(
        plugins,
        auth,
        http_metrics,
        MetricsEndpoint::new(registry),
        max_body_bytes,
    ))
}

/// Preloads plugins (unless lazy), marks the state ready, and follows the
/// registry from then on: every `config.refresh_ms`, a changed view evicts
/// what is no longer served and (unless lazy) preloads what is new, and
/// models no loaded version holds any more are unloaded.
pub async fn start(config: &AxonConfig, state: &AxonState) -> anyhow::Result<()> {
    let host = state.plugins();
    if !config.lazy_load {
        let (loaded, failed) = host.reconcile(&host.watcher().current()).await;
        tracing::info!(loaded, failed, "plugins preloaded");
    }
    state.set_ready(true);
    let weak = state.downgrade();
    let every = std::time::Duration::from_millis(config.refresh_ms);
    let lazy = config.lazy_load;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(state) = weak.upgrade() else { break };
            let host = state.plugins();
            match host.watcher().refresh().await {
                Ok(Some(catalog)) if lazy => host.reconcile_evictions(&catalog),
                Ok(Some(catalog)) => {
                    let (loaded, failed) = host.reconcile(&catalog).await;
                    if loaded + failed > 0 {
                        tracing::info!(
                            loaded,
                            failed,
                            generation = catalog.generation,
                            "registry changed"
                        );
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, "cannot refresh the plugin registry; keeping the last view")
                }
            }
            // Also when the view is the same: the last request using an
            // evicted version may have ended since.
            host.sandbox().unload_unused_models();
        }
    });
    Ok(())
}

/// Serves Axon on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: AxonState,
    door: FrontDoor,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener
        .local_addr()
        .context("reading the listen address")?;
    tracing::info!(%addr, "axon listening");
    service_kit::front_door::serve(listener, router(state), door, shutdown).await;
    Ok(())
}
