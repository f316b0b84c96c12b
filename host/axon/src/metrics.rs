//! Axon's Prometheus metrics. Per-plugin series are resolved once, when the
//! plugin loads, so a request touches only atomics. Plugin labels come from
//! loaded plugins only, never from what a caller typed; requests for plugins
//! that do not load show in `http_requests_total` by status.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use service_kit::metrics::latency_histogram;

use crate::sandbox::RunError;

/// How a request ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values are snake_case on the wire
pub enum Outcome {
    ok,
    invalid_input,
    plugin_error,
    trapped,
    memory_limit,
    resource_limit,
    output_limit,
    timeout,
    overloaded,
}

impl Outcome {
    const ALL: [Outcome; 9] = [
        Outcome::ok,
        Outcome::invalid_input,
        Outcome::plugin_error,
        Outcome::trapped,
        Outcome::memory_limit,
        Outcome::resource_limit,
        Outcome::output_limit,
        Outcome::timeout,
        Outcome::overloaded,
    ];

    /// The outcome of a failed run.
    pub fn of(error: &RunError) -> Self {
        match error {
            RunError::Overloaded { .. } | RunError::ModelBusy(_) => Self::overloaded,
            RunError::InvalidInput(_) => Self::invalid_input,
            RunError::Failed(_) | RunError::InvalidOutput(_) => Self::plugin_error,
            RunError::Timeout { .. } => Self::timeout,
            RunError::MemoryLimit { .. } => Self::memory_limit,
            RunError::ResourceLimit(_) => Self::resource_limit,
            RunError::OutputLimit { .. } => Self::output_limit,
            RunError::Trapped(_) => Self::trapped,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginOutcome {
    plugin: String,
    outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Every metric Axon exports.
#[derive(Clone)]
pub struct AxonMetrics {
    requests: Family<PluginOutcome, Counter>,
    duration: Family<PluginLabel, Histogram>,
    in_flight: Gauge,
    plugin_cache: Family<ResultLabel, Counter>,
    loads: Family<ResultLabel, Counter>,
}

impl AxonMetrics {
    /// Registers Axon's metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            in_flight: Gauge::default(),
            plugin_cache: Family::default(),
            loads: Family::default(),
        };
        registry.register(
            "axon_reason_requests",
            "Reasoning requests by plugin and outcome",
            metrics.requests.clone(),
        );
        registry.register(
            "axon_reason_duration_seconds",
            "Sandbox time (instantiate + call) per request, by plugin",
            metrics.duration.clone(),
        );
        registry.register(
            "axon_instances_in_flight",
            "Sandbox instances running now",
            metrics.in_flight.clone(),
        );
        registry.register(
            "axon_plugin_cache",
            "Plugin lookups answered from the loaded set (hit) or by loading (miss)",
            metrics.plugin_cache.clone(),
        );
        registry.register(
            "axon_plugin_loads",
            "Plugin loads: compiled, from the disk cache, from memory (shared module), or failed",
            metrics.loads.clone(),
        );
        metrics
    }

    /// Series for one loaded plugin.
    pub fn for_plugin(&self, plugin: &str) -> PluginMetrics {
        PluginMetrics {
            outcomes: Outcome::ALL.map(|outcome| {
                self.requests
                    .get_or_create(&PluginOutcome {
                        plugin: plugin.to_owned(),
                        outcome,
                    })
                    .clone()
            }),
            duration: self
                .duration
                .get_or_create(&PluginLabel {
                    plugin: plugin.to_owned(),
                })
                .clone(),
        }
    }

    /// Counts a plugin lookup.
    pub fn lookup(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.plugin_cache
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Counts a plugin load: `compiled`, `disk_cache`, `memory` (a module
    /// another version already compiled) or `failed`.
    pub fn load(&self, result: &'static str) {
        self.loads.get_or_create(&ResultLabel { result }).inc();
    }

    /// Marks an instance running until the guard drops.
    pub fn running(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }
}

/// Decrements the in-flight gauge on drop (also when a request is cancelled).
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One plugin's pre-resolved series.
pub struct PluginMetrics {
    outcomes: [Counter; 9],
    duration: Histogram,
}

impl PluginMetrics {
    /// Records one request.
    pub fn record(&self, outcome: Outcome, seconds: Option<f64>) {
        self.outcomes[outcome as usize].inc();
        if let Some(seconds) = seconds {
            self.duration.observe(seconds);
        }
    }
}
