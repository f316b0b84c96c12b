//! Orbit's Prometheus metrics (HTTP requests by route and status come from
//! `service_kit::metrics::HttpMetrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use service_kit::metrics::latency_histogram;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AxonCallLabel {
    pool: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShadowLabel {
    result: &'static str,
}

/// Every metric Orbit adds.
#[derive(Clone)]
pub struct OrbitMetrics {
    decisions: Family<OutcomeLabel, Counter>,
    decision_latency: Histogram,
    axon_calls: Family<AxonCallLabel, Counter>,
    axon_latency: Family<PoolLabel, Histogram, fn() -> Histogram>,
    breaker: Family<PoolLabel, Gauge>,
    pool_up: Family<PoolLabel, Gauge>,
    pub(crate) in_flight: Gauge,
    policy_version: Gauge,
    policy_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    policy_stale: Gauge,
    policy_refresh_failures: Counter,
    shadow_version: Gauge,
    shadow_decisions: Family<ShadowLabel, Counter>,
    audit_records: Counter,
    audit_failures: Counter,
}

impl OrbitMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            decisions: Family::default(),
            decision_latency: latency_histogram(),
            axon_calls: Family::default(),
            axon_latency: Family::new_with_constructor(latency_histogram),
            breaker: Family::default(),
            pool_up: Family::default(),
            in_flight: Gauge::default(),
            policy_version: Gauge::default(),
            policy_age: Gauge::default(),
            policy_stale: Gauge::default(),
            policy_refresh_failures: Counter::default(),
            shadow_version: Gauge::default(),
            shadow_decisions: Family::default(),
            audit_records: Counter::default(),
            audit_failures: Counter::default(),
        };
        registry.register(
            "orbit_governance_decisions",
            "Governance decisions by outcome (allowed, forbidden_by_policy, no_permitting_policy, evaluation_error, invalid_request, stale, unavailable)",
            metrics.decisions.clone(),
        );
        registry.register(
            "orbit_governance_decision_seconds",
            "Time to decide, as governance measured it",
            metrics.decision_latency.clone(),
        );
        registry.register(
            "orbit_axon_calls",
            "Calls to Axon by pool (cpu, gpu) and outcome (answered, unreachable, timed_out, rejected, breaker_open)",
            metrics.axon_calls.clone(),
        );
        registry.register(
            "orbit_axon_call_seconds",
            "Latency of calls to each Axon pool that got an answer",
            metrics.axon_latency.clone(),
        );
        registry.register(
            "orbit_axon_breaker_state",
            "Circuit breaker towards each Axon pool: 0 closed, 1 half-open, 2 open",
            metrics.breaker.clone(),
        );
        registry.register(
            "orbit_axon_pool_up",
            "Whether the GPU pool answers its readiness probe as a GPU pool: 1 up, 0 down",
            metrics.pool_up.clone(),
        );
        registry.register(
            "orbit_dispatches_in_flight",
            "Dispatches waiting on Axon now, all principals together",
            metrics.in_flight.clone(),
        );
        registry.register(
            "orbit_policy_version",
            "The policy store version of the policy set in force",
            metrics.policy_version.clone(),
        );
        registry.register(
            "orbit_policy_staleness_seconds",
            "Time since the last successful policy refresh",
            metrics.policy_age.clone(),
        );
        registry.register(
            "orbit_policy_stale",
            "1 while the policy set is past its staleness bound and every dispatch is denied",
            metrics.policy_stale.clone(),
        );
        registry.register(
            "orbit_policy_refresh_failures",
            "Policy refreshes that failed (store unreadable, or a head that does not check out)",
            metrics.policy_refresh_failures.clone(),
        );
        registry.register(
            "orbit_policy_shadow_version",
            "The policy store version decided in shadow beside the set in force (0: none)",
            metrics.shadow_version.clone(),
        );
        registry.register(
            "orbit_policy_shadow_decisions",
            "Requests also decided by the version in shadow, by result: same or different from the set in force",
            metrics.shadow_decisions.clone(),
        );
        registry.register(
            "orbit_audit_records",
            "Decisions recorded in the audit log",
            metrics.audit_records.clone(),
        );
        registry.register(
            "orbit_audit_failures",
            "Decisions refused because their audit record could not be written",
            metrics.audit_failures.clone(),
        );
        metrics
    }

    /// Counts one decision's audit record: written, or not (and refused).
    pub fn audited(&self, written: bool) {
        if written {
            self.audit_records.inc();
        } else {
            self.audit_failures.inc();
        }
    }

    /// Records where the policy set in force stands.
    pub fn policy_status(&self, status: &governance::PolicyStatus) {
        self.policy_version
            .set(i64::try_from(status.version).unwrap_or(i64::MAX));
        self.policy_age.set(status.since_refresh.as_secs_f64());
        self.policy_stale.set(i64::from(status.stale));
        self.shadow_version.set(
            status
                .shadow_version
                .map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX)),
        );
        let counted = self.policy_refresh_failures.get();
        if status.refresh_failures > counted {
            self.policy_refresh_failures
                .inc_by(status.refresh_failures - counted);
        }
    }

    pub fn decision(&self, outcome: &'static str, micros: u64) {
        self.decisions
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
        self.decision_latency.observe(micros as f64 / 1e6);
    }

    /// Counts a decision the version in shadow also made.
    pub fn shadow_decision(&self, differs: bool) {
        let result = if differs { "different" } else { "same" };
        self.shadow_decisions
            .get_or_create(&ShadowLabel { result })
            .inc();
    }

    pub fn axon_call(&self, pool: &'static str, outcome: &'static str, seconds: Option<f64>) {
        self.axon_calls
            .get_or_create(&AxonCallLabel { pool, outcome })
            .inc();
        if let Some(seconds) = seconds {
            self.axon_latency
                .get_or_create(&PoolLabel { pool })
                .observe(seconds);
        }
    }

    /// The breaker towards `pool`: 0 closed, 1 half-open, 2 open.
    pub fn breaker(&self, pool: &'static str, state: i64) {
        self.breaker.get_or_create(&PoolLabel { pool }).set(state);
    }

    /// Whether `pool` is up, as its probe found it.
    pub fn pool_up(&self, pool: &'static str, up: bool) {
        self.pool_up
            .get_or_create(&PoolLabel { pool })
            .set(i64::from(up));
    }
}
