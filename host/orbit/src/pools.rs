//! Axon's pools: the CPU pool every plugin can run on, and a GPU pool for
//! plugins whose signed manifest asks for a GPU. A plugin that requires a
//! GPU goes to the GPU pool or is refused (`503 GPU_UNAVAILABLE`); one that
//! prefers it goes there while the pool is up, and to the CPU pool
//! otherwise; every other plugin goes to the CPU pool.
//!
//! The GPU pool is up while it answers its readiness probe (every second
//! by default) as a GPU pool, and its circuit breaker is not open.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use plugin_store::{GpuNeed, PluginManifest};
use service_kit::{ApiError, CorrelationId, ErrorCode};

use crate::axon_client::{AxonAnswer, AxonClient, NotSent};
use crate::breaker::BreakerState;
use crate::metrics::OrbitMetrics;

pub struct AxonPools {
    cpu: AxonClient,
    gpu: Option<Arc<GpuPool>>,
}

struct GpuPool {
    client: AxonClient,
    /// What the last probe found.
    ready: AtomicBool,
}

impl GpuPool {
    fn up(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.client.breaker_state() != BreakerState::Open
    }
}

impl AxonPools {
    /// The CPU pool, and the GPU pool if there is one; the GPU pool's probe
    /// runs until the pools are dropped.
    pub fn new(
        cpu: AxonClient,
        gpu: Option<AxonClient>,
        probe_every: Duration,
        metrics: OrbitMetrics,
    ) -> Self {
        let gpu = gpu.map(|client| {
            let pool = Arc::new(GpuPool {
                client,
                ready: AtomicBool::new(false),
            });
            spawn_probe(Arc::downgrade(&pool), probe_every, metrics);
            pool
        });
        Self { cpu, gpu }
    }

    /// The CPU pool, which must be up for Orbit to be ready.
    pub fn cpu(&self) -> &AxonClient {
        &self.cpu
    }

    /// Brings the breaker gauges up to date.
    pub fn report(&self) {
        self.cpu.breaker_state();
        if let Some(pool) = &self.gpu {
            pool.client.breaker_state();
        }
    }

    /// The GPU pool's state for `/ready`: `None` without one.
    pub fn gpu_state(&self) -> Option<&'static str> {
        self.gpu
            .as_ref()
            .map(|pool| if pool.up() { "up" } else { "down" })
    }

    /// Runs `manifest`'s version on the pool it needs. A call the GPU pool
    /// never received goes to the CPU pool if the version only prefers a
    /// GPU (it cannot have run); a refused connection also marks the pool
    /// down until the next probe.
    pub async fn reason(
        &self,
        manifest: &PluginManifest,
        correlation_id: &CorrelationId,
        body: bytes::Bytes,
        deadline: Duration,
    ) -> Result<AxonAnswer, ApiError> {
        let need = gpu_need(manifest);
        let gpu = match need {
            GpuNeed::None => None,
            GpuNeed::Preferred | GpuNeed::Required => self.gpu.as_deref().filter(|pool| pool.up()),
        };
        let Some(gpu) = gpu else {
            return match need {
                GpuNeed::Required => Err(self.gpu_unavailable(manifest)),
                GpuNeed::Preferred | GpuNeed::None => {
                    self.cpu.reason(correlation_id, body, deadline).await
                }
            };
        };
        // With the CPU pool to fall back on, a refused connection is not
        // retried on the GPU pool first.
        let fallback = need == GpuNeed::Preferred;
        let failure = match gpu
            .client
            .try_reason(correlation_id, body.clone(), deadline, !fallback)
            .await
        {
            Ok(answer) => return Ok(answer),
            Err(failure) => failure,
        };
        match failure.not_sent {
            None => Err(failure.error),
            Some(why) => {
                if why == NotSent::Unreachable {
                    gpu.ready.store(false, Ordering::Release);
                }
                if fallback {
                    self.cpu.reason(correlation_id, body, deadline).await
                } else {
                    Err(self.gpu_unavailable(manifest))
                }
            }
        }
    }

    fn gpu_unavailable(&self, manifest: &PluginManifest) -> ApiError {
        ApiError::new(
            ErrorCode::GpuUnavailable,
            format!(
                "`{}@{}` requires a GPU and {}; nothing ran, retry later",
                manifest.name,
                manifest.version,
                if self.gpu.is_some() {
                    "the GPU pool is down"
                } else {
                    "this Orbit has no GPU pool (`--gpu-axon-url`)"
                }
            ),
        )
        .retry_after(5)
    }
}

fn gpu_need(manifest: &PluginManifest) -> GpuNeed {
    manifest
        .inference
        .as_ref()
        .map_or(GpuNeed::None, |inference| inference.gpu)
}

/// Probes the GPU pool's `/ready` until the pool is dropped: up when it
/// answers ready as a GPU pool (not `cpu`, which would be a misconfigured
/// URL).
fn spawn_probe(pool: Weak<GpuPool>, every: Duration, metrics: OrbitMetrics) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_up = None;
        loop {
            tick.tick().await;
            let Some(pool) = pool.upgrade() else { break };
            let readiness = pool.client.readiness().await;
            let up = match &readiness {
                Some(ready) if ready.accelerator == "cpu" => {
                    if was_up != Some(false) {
                        tracing::error!(
                            "the GPU pool's Axon runs models on the CPU: check `--gpu-axon-url` and that Axon's `--accelerator cuda`; plugins that require a GPU are refused"
                        );
                    }
                    false
                }
                Some(_) => true,
                None => false,
            };
            pool.ready.store(up, Ordering::Release);
            metrics.pool_up(pool.client.pool(), up);
            if was_up != Some(up) {
                match (up, &readiness) {
                    (true, Some(ready)) => {
                        tracing::info!(accelerator = %ready.accelerator, "the GPU pool is up");
                    }
                    _ => tracing::warn!(
                        "the GPU pool is down: plugins that prefer a GPU run on the CPU pool, those that require one are refused"
                    ),
                }
            }
            was_up = Some(up);
        }
    });
}
