//! Orbit: the front door of agent-runtime.
//!
//! `POST /dispatch` authenticates the caller (SigV4 with keys Orbit issued),
//! applies rate limits, resolves the plugin version, asks governance, and
//! only after an allow signs its own request to Axon and returns the answer
//! with the decision that allowed it (Think -> Govern -> Act).
//!
//! ```text
//! per-address limit -> SigV4 -> per-principal limit -> dispatch
//!     dispatch: resolve alias -> verified version (catalogue) -> decide (governance)
//!               -> call Axon with the governed digest (signed, breaker)
//! ```

pub mod axon_client;
pub mod breaker;
pub mod catalogue;
pub mod client;
pub mod config;
pub mod discovery;
pub mod dispatch;
pub mod in_flight;
pub mod input;
pub mod mcp;
pub mod metrics;
pub mod pools;
pub mod rate_limit;
pub mod server;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use governance::{AuditLog, Decider, Governance, GovernanceConfig, PolicyStore};
use plugin_store::PluginSource;
use prometheus_client::registry::Registry;
use service_kit::front_door::FrontDoor;
use service_kit::metrics::{HttpMetrics, MetricsEndpoint};
use tokio::net::TcpListener;

pub use config::OrbitConfig;
pub use server::{OrbitState, router};

/// Who decides for Orbit.
pub enum Governor {
    /// Orbit itself, over the policy sets of this store (refreshed by Orbit).
    InProcess(Arc<dyn PolicyStore>),
    /// A decider elsewhere (the governance Lambda function), which keeps its
    /// policies fresh itself.
    Remote(Arc<dyn Decider>),
}

/// Builds Orbit: the keyring under `data_dir`, the plugin registry of
/// `source`, decisions by `governor`. In-process, a store with no active
/// set, or an active set that does not validate, is an error: Orbit does not
/// start without a valid policy set.
pub async fn build(
    config: &OrbitConfig,
    source: PluginSource,
    governor: Governor,
) -> anyhow::Result<OrbitState> {
    let audit = AuditLog::open(config.audit_path().as_deref()).context("opening the audit log")?;
    build_with_audit(config, source, governor, audit).await
}

/// [`build`], recording decisions in `audit` (the load benchmark measures
/// what auditing costs with [`AuditLog::discard`]).
pub async fn build_with_audit(
    config: &OrbitConfig,
    source: PluginSource,
    governor: Governor,
    audit: AuditLog,
) -> anyhow::Result<OrbitState> {
    let keyring = Arc::new(
        auth::LocalKeyring::open(&config.keyring_path()).with_context(|| {
            format!("opening the keyring `{}`", config.keyring_path().display())
        })?,
    );
    let (decider, local_governance): (Arc<dyn Decider>, _) = match governor {
        Governor::InProcess(policies) => {
            let governance = Arc::new(
                Governance::load(
                    policies,
                    GovernanceConfig {
                        max_staleness: Duration::from_secs(config.policy_max_staleness_secs),
                        ..GovernanceConfig::default()
                    },
                )
                .await
                .context("loading the active policy set")?,
            );
            (governance.clone(), Some(governance))
        }
        Governor::Remote(decider) => (decider, None),
    };
    let watcher =
        plugin_store::Watcher::trusting_root_file(source.registry().clone(), &config.trust_root())
            .await
            .context("reading the trust root and the plugin registry")?;
    let catalogue = catalogue::Catalogue::new(Arc::new(watcher));

    let mut registry = Registry::default();
    let http_metrics = HttpMetrics::register(&mut registry);
    let metrics = metrics::OrbitMetrics::register(&mut registry);
    let client = |gpu| {
        config
            .axon_client(gpu)
            .map(|c| axon_client::AxonClient::new(c, keyring.clone(), metrics.clone()))
            .transpose()
    };
    let cpu = client(false)?.context("the CPU pool's client")?;
    let probe_every = Duration::from_millis(config.gpu_probe_ms.max(1));
    let axon = pools::AxonPools::new(cpu, client(true)?, probe_every, metrics.clone());
    let max_body_bytes = config.max_body_kib as usize * 1024;
    let verifier = auth::Verifier::new(
        auth::VerifierConfig {
            region: config.region.clone(),
            // The public edge accepts a valid signature for its window, as
            // AWS does, so standard clients' retries work (docs/security.md).
            replay: auth::ReplayPolicy::Window,
            ..auth::VerifierConfig::default()
        },
        keyring.clone(),
    );
    if let Some(governance) = &local_governance {
        metrics.policy_status(&governance.status());
    }
    let state = OrbitState::new(server::Inner {
        inputs: Default::default(),
        catalogue,
        decider,
        local_governance,
        axon,
        audit,
        limits: Arc::new(rate_limit::RateLimits::new(
            config.principal_rate(),
            config.ip_rate(),
            config.trust_forwarded_for,
        )),
        in_flight: in_flight::InFlightLimit::new(
            config.max_in_flight_per_principal,
            metrics.in_flight.clone(),
        ),
        sigv4: auth::middleware::SigV4 {
            verifier: Arc::new(verifier),
            max_body_bytes,
        },
        metrics,
        http_metrics,
        endpoint: MetricsEndpoint::new(registry),
        max_body_bytes,
    });
    auth::keyring::spawn_reloader(&keyring, Duration::from_secs(config.refresh_secs));
    spawn_refresher(&state, Duration::from_secs(config.refresh_secs));
    Ok(state)
}

/// Re-reads policies and the plugin list, and prunes idle rate-limit keys,
/// until the state is dropped.
fn spawn_refresher(state: &OrbitState, every: Duration) {
    let weak = state.downgrade();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(inner) = weak.upgrade() else { break };
            if let Err(error) = inner.catalogue.refresh().await {
                tracing::warn!(%error, "cannot refresh the plugin list; keeping the last one");
            }
            inner.limits.prune();
            if let Some(governance) = inner.local_governance.clone() {
                // Failures are logged by governance, and counted here.
                let _ = governance.refresh().await;
                inner.metrics.policy_status(&governance.status());
            }
        }
    });
}

/// Serves Orbit on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: OrbitState,
    door: FrontDoor,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener
        .local_addr()
        .context("reading the listen address")?;
    tracing::info!(%addr, "orbit listening");
    let audit = state.audit().clone();
    service_kit::front_door::serve(listener, router(state), door, shutdown).await;
    // The requests taken have been answered (or cut off at the shutdown
    // grace, refused as the log closes): sync the file, and say where the
    // chain ends.
    if let Some(end) = audit.close().await {
        tracing::info!(seq = end.seq, hash = %end.hash, "audit log closed");
    }
    Ok(())
}
