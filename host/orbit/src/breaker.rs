//! A circuit breaker for calls to Axon.
//!
//! Closed: calls go through; `threshold` consecutive failures open it. Open:
//! calls fail at once (503 with `Retry-After`) for `open_for`. Then one call
//! is let through as a probe (half-open): success closes the breaker, failure
//! opens it again. Only transport failures count (Axon unreachable or not
//! answering), never a plugin's own error.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// The breaker's state, for metrics and `/ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    /// 0 closed, 1 half-open, 2 open: the gauge value.
    pub fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }
}

pub struct Breaker {
    state: Mutex<State>,
    threshold: u32,
    open_for: Duration,
}

/// Permission to make one call. Report how it went; dropping it unreported
/// (the caller went away mid-call) counts as neither success nor failure,
/// except for a probe, which then frees the half-open slot.
pub struct Admission<'a> {
    breaker: &'a Breaker,
    probe: bool,
    reported: bool,
}

impl Admission<'_> {
    /// The call reached Axon and Axon answered.
    pub fn succeeded(mut self) {
        self.reported = true;
        *self.breaker.lock() = State::Closed { failures: 0 };
    }

    /// Axon could not be reached or did not answer.
    pub fn failed(mut self) {
        self.reported = true;
        let mut state = self.breaker.lock();
        *state = match *state {
            State::Closed { failures } if failures + 1 < self.breaker.threshold => State::Closed {
                failures: failures + 1,
            },
            _ => {
                tracing::warn!(
                    open_for_ms = self.breaker.open_for.as_millis() as u64,
                    "axon circuit breaker opened"
                );
                State::Open {
                    until: Instant::now() + self.breaker.open_for,
                }
            }
        };
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            let mut state = self.breaker.lock();
            if *state == (State::HalfOpen { probing: true }) {
                *state = State::HalfOpen { probing: false };
            }
        }
    }
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            state: Mutex::new(State::Closed { failures: 0 }),
            threshold: threshold.max(1),
            open_for,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets a call through, or says how long to wait.
    pub fn admit(&self) -> Result<Admission<'_>, Duration> {
        let mut state = self.lock();
        let probe = match *state {
            State::Closed { .. } => false,
            State::Open { until } => {
                let now = Instant::now();
                if now < until {
                    return Err(until - now);
                }
                *state = State::HalfOpen { probing: true };
                true
            }
            State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                true
            }
            State::HalfOpen { probing: true } => return Err(self.open_for),
        };
        Ok(Admission {
            breaker: self,
            probe,
            reported: false,
        })
    }

    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if Instant::now() < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_then_probes_and_closes() {
        let breaker = Breaker::new(3, Duration::from_millis(30));
        breaker.admit().unwrap().failed();
        breaker.admit().unwrap().succeeded(); // a success resets the count
        for _ in 0..3 {
            breaker.admit().unwrap().failed();
        }
        assert_eq!(breaker.state(), BreakerState::Open);
        let wait = breaker.admit().err().unwrap();
        assert!(wait <= Duration::from_millis(30));

        std::thread::sleep(Duration::from_millis(40));
        let probe = breaker.admit().unwrap();
        // Only one probe at a time.
        assert!(breaker.admit().is_err());
        probe.failed();
        assert_eq!(breaker.state(), BreakerState::Open);

        std::thread::sleep(Duration::from_millis(40));
        breaker.admit().unwrap().succeeded();
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.admit().is_ok());
    }

    #[test]
    fn an_abandoned_probe_frees_the_slot() {
        let breaker = Breaker::new(1, Duration::from_millis(10));
        breaker.admit().unwrap().failed();
        std::thread::sleep(Duration::from_millis(20));
        drop(breaker.admit().unwrap());
        assert!(breaker.admit().is_ok());
    }
}
