//! How many dispatches each principal has waiting on Axon at once. Rate
//! limits bound how fast a caller starts requests; this bounds how many it
//! holds, so one caller with slow plugins cannot take every Axon slot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::metrics::gauge::Gauge;
use service_kit::{ApiError, ErrorCode};

/// The cap, and who holds how much of it. The map holds only principals
/// with a dispatch in flight, so it is bounded by the cap times callers
/// that are actually waiting, not by everyone who ever called.
pub struct InFlightLimit {
    per_principal: u32,
    held: Mutex<HashMap<Arc<str>, u32>>,
    gauge: Gauge,
}

/// One dispatch in flight; gives its place back when dropped.
pub struct InFlight<'a> {
    limit: &'a InFlightLimit,
    principal: Arc<str>,
}

impl InFlightLimit {
    /// At most `per_principal` dispatches in flight for each principal;
    /// `gauge` counts them all.
    pub fn new(per_principal: u32, gauge: Gauge) -> Self {
        Self {
            per_principal,
            held: Mutex::default(),
            gauge,
        }
    }

    /// A place for one more dispatch of `principal`, or `429
    /// RATE_LIMIT_EXCEEDED` when it already has its cap in flight.
    pub fn enter(&self, principal: &str) -> Result<InFlight<'_>, ApiError> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let (key, count) = match held.get_key_value(principal) {
            Some((key, &count)) => (key.clone(), count),
            None => (Arc::from(principal), 0),
        };
        if count >= self.per_principal {
            return Err(ApiError::new(
                ErrorCode::RateLimitExceeded,
                format!(
                    "`{key}` already has {count} dispatches in flight, the most one principal may have; retry when one has finished"
                ),
            )
            .retry_after(1));
        }
        let principal = key;
        *held.entry(principal.clone()).or_insert(0) += 1;
        self.gauge.inc();
        Ok(InFlight {
            limit: self,
            principal,
        })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut held = self
            .limit
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&*self.principal) {
            *count -= 1;
            if *count == 0 {
                held.remove(&*self.principal);
            }
        }
        self.limit.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_principal_has_its_own_cap_and_places_come_back() {
        let limit = InFlightLimit::new(2, Gauge::default());
        let a1 = limit.enter("a").unwrap();
        let _a2 = limit.enter("a").unwrap();
        let refused = limit.enter("a").err().unwrap();
        assert_eq!(refused.code(), ErrorCode::RateLimitExceeded);
        assert!(
            refused.to_string().contains("2 dispatches in flight"),
            "{refused}"
        );
        // Another principal is not affected.
        let _b = limit.enter("b").unwrap();
        assert_eq!(limit.gauge.get(), 3);
        drop(a1);
        let _a3 = limit.enter("a").unwrap();
        drop(_a3);
        drop(_a2);
        drop(_b);
        assert_eq!(limit.gauge.get(), 0);
        assert!(
            limit.held.lock().unwrap().is_empty(),
            "nothing kept for idle principals"
        );
    }
}
