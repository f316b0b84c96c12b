//! Per-plugin limits: what a plugin asks for, checked against the host's
//! maxima once at load time, so a request never negotiates.

use std::time::Duration;

use plugin_store::RequestedLimits;

const MIB: u64 = 1 << 20;
const KIB: usize = 1 << 10;

/// The limits one request of a plugin runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory the instance may grow to, in bytes.
    pub memory_bytes: u64,
    /// Wall-clock time for instantiate + call.
    pub deadline: Duration,
    /// Bytes of output JSON plus notes.
    pub output_bytes: usize,
    /// Instances of the plugin at once.
    pub max_concurrency: u32,
}

/// The host's defaults (for what a plugin leaves unset) and maxima (what no
/// plugin may exceed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitPolicy {
    pub defaults: Limits,
    pub maxima: Limits,
}

impl Default for LimitPolicy {
    /// Defaults: 64 MiB, 1 s, 1 MiB of output, 64 at once. Maxima: 256 MiB,
    /// 30 s, 16 MiB of output, 256 at once.
    fn default() -> Self {
        Self {
            defaults: Limits {
                memory_bytes: 64 * MIB,
                deadline: Duration::from_secs(1),
                output_bytes: 1024 * KIB,
                max_concurrency: 64,
            },
            maxima: Limits {
                memory_bytes: 256 * MIB,
                deadline: Duration::from_secs(30),
                output_bytes: 16 * 1024 * KIB,
                max_concurrency: 256,
            },
        }
    }
}

impl LimitPolicy {
    /// The limits for a plugin that asks for `requested`, or why it cannot have them.
    pub fn resolve(&self, requested: &RequestedLimits) -> Result<Limits, String> {
        let d = &self.defaults;
        let max = &self.maxima;
        let limits = Limits {
            memory_bytes: requested
                .memory_mib
                .map_or(d.memory_bytes, |m| u64::from(m) * MIB),
            deadline: requested
                .deadline_ms
                .map_or(d.deadline, |ms| Duration::from_millis(u64::from(ms))),
            output_bytes: requested
                .output_kib
                .map_or(d.output_bytes, |k| k as usize * KIB),
            max_concurrency: requested.max_concurrency.unwrap_or(d.max_concurrency),
        };
        let checks = [
            (
                limits.memory_bytes > max.memory_bytes,
                "memory",
                limits.memory_bytes / MIB,
                max.memory_bytes / MIB,
                "MiB",
            ),
            (
                limits.deadline > max.deadline,
                "deadline",
                limits.deadline.as_millis() as u64,
                max.deadline.as_millis() as u64,
                "ms",
            ),
            (
                limits.output_bytes > max.output_bytes,
                "output",
                (limits.output_bytes / KIB) as u64,
                (max.output_bytes / KIB) as u64,
                "KiB",
            ),
            (
                limits.max_concurrency > max.max_concurrency,
                "concurrency",
                u64::from(limits.max_concurrency),
                u64::from(max.max_concurrency),
                "instances",
            ),
        ];
        for (exceeded, what, asked, allowed, unit) in checks {
            if exceeded {
                return Err(format!(
                    "the plugin asks for {asked} {unit} of {what}; this host allows at most {allowed} {unit}"
                ));
            }
        }
        let zero = limits.memory_bytes == 0
            || limits.deadline.is_zero()
            || limits.output_bytes == 0
            || limits.max_concurrency == 0;
        if zero {
            return Err("plugin limits must be greater than zero".into());
        }
        Ok(limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_limits_take_the_defaults() {
        let policy = LimitPolicy::default();
        assert_eq!(
            policy.resolve(&RequestedLimits::default()).unwrap(),
            policy.defaults
        );
    }

    #[test]
    fn requested_limits_within_maxima_are_granted() {
        let limits = LimitPolicy::default()
            .resolve(&RequestedLimits {
                memory_mib: Some(16),
                deadline_ms: Some(250),
                output_kib: Some(8),
                max_concurrency: Some(2),
            })
            .unwrap();
        assert_eq!(limits.memory_bytes, 16 * MIB);
        assert_eq!(limits.deadline, Duration::from_millis(250));
        assert_eq!(limits.output_bytes, 8 * KIB);
        assert_eq!(limits.max_concurrency, 2);
    }

    #[test]
    fn limits_above_maxima_or_zero_are_refused_with_the_reason() {
        let policy = LimitPolicy::default();
        let err = policy
            .resolve(&RequestedLimits {
                memory_mib: Some(1024),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(
            err,
            "the plugin asks for 1024 MiB of memory; this host allows at most 256 MiB"
        );
        let err = policy
            .resolve(&RequestedLimits {
                deadline_ms: Some(0),
                ..Default::default()
            })
            .unwrap_err();
        assert!(err.contains("greater than zero"), "{err}");
    }
}
