//! A circuit breaker per dependency.
//!
//! Closed: calls flow and outcomes are counted over a sliding window. When at
//! least `min_requests` calls in the window failed at a ratio of at least
//! `failure_ratio`, it opens. Open: calls fail at once, for `open_for`. Then
//! half-open: up to `half_open_probes` calls go through; as many successes
//! close it, any failure opens it again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::window::SlidingCounts;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    pub window: Duration,
    pub min_requests: u64,
    pub failure_ratio: f64,
    pub open_for: Duration,
    pub half_open_probes: u32,
}

/// The breaker's state, as exported in the `client_circuit_state` gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { probes_in_flight: u32, successes: u32 },
}

#[derive(Debug)]
pub(crate) struct CircuitBreaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    /// (successes, failures) while closed.
    outcomes: SlidingCounts,
}

/// Leave to make one call; report its outcome with [`CircuitBreaker::record`].
#[derive(Debug)]
pub(crate) struct Admission {
    probe: bool,
}

/// A state change, for the caller to log and export.
pub(crate) type Transition = Option<BreakerState>;

impl CircuitBreaker {
    pub fn new(config: BreakerConfig, now: Instant) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                outcomes: SlidingCounts::new(config.window, now),
            }),
        }
    }

    /// Lets a call through, or refuses it while open (or while half-open with every probe taken).
    pub fn admit(&self, now: Instant) -> Result<(Admission, Transition), BreakerState> {
        let mut inner = self.lock();
        let mut transition = None;
        if let Phase::Open { until } = inner.phase {
            if now < until {
                return Err(BreakerState::Open);
            }
            inner.phase = Phase::HalfOpen {
                probes_in_flight: 0,
                successes: 0,
            };
            transition = Some(BreakerState::HalfOpen);
        }
        match &mut inner.phase {
            Phase::Closed => Ok((Admission { probe: false }, transition)),
            Phase::HalfOpen {
                probes_in_flight,
                successes,
            } => {
                if *probes_in_flight + *successes >= self.config.half_open_probes {
                    return Err(BreakerState::HalfOpen);
                }
                *probes_in_flight += 1;
                Ok((Admission { probe: true }, transition))
            }
            Phase::Open { .. } => Err(BreakerState::Open),
        }
    }

    /// Records how an admitted call went; `failure` means the dependency misbehaved.
    pub fn record(&self, admission: Admission, failure: bool, now: Instant) -> Transition {
        let mut inner = self.lock();
        let config = self.config;
        match &mut inner.phase {
            Phase::Closed => {
                inner.outcomes.add(now, u64::from(!failure), u64::from(failure));
                let (successes, failures) = inner.outcomes.totals(now);
                let total = successes + failures;
                if failure && total >= config.min_requests && failures as f64 >= config.failure_ratio * total as f64 {
                    inner.phase = Phase::Open {
                        until: now + config.open_for,
                    };
                    return Some(BreakerState::Open);
                }
                None
            }
            Phase::HalfOpen {
                probes_in_flight,
                successes,
            } if admission.probe => {
                *probes_in_flight = probes_in_flight.saturating_sub(1);
                if failure {
                    inner.phase = Phase::Open {
                        until: now + config.open_for,
                    };
                    return Some(BreakerState::Open);
                }
                *successes += 1;
                if *successes >= config.half_open_probes {
                    inner.phase = Phase::Closed;
                    inner.outcomes.clear();
                    return Some(BreakerState::Closed);
                }
                None
            }
            // An outcome from before the state changed says nothing about now.
            Phase::HalfOpen { .. } | Phase::Open { .. } => None,
        }
    }

    /// Releases an admission whose call ended without an outcome (its caller went away).
    pub fn abandon(&self, admission: Admission) {
        if let Phase::HalfOpen { probes_in_flight, .. } = &mut self.lock().phase
            && admission.probe
        {
            *probes_in_flight = probes_in_flight.saturating_sub(1);
        }
    }

    pub fn state(&self) -> BreakerState {
        match self.lock().phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: BreakerConfig = BreakerConfig {
        window: Duration::from_secs(10),
        min_requests: 10,
        failure_ratio: 0.5,
        open_for: Duration::from_secs(5),
        half_open_probes: 2,
    };

    fn call(breaker: &CircuitBreaker, failure: bool, now: Instant) -> Result<Transition, BreakerState> {
        let (admission, _) = breaker.admit(now)?;
        Ok(breaker.record(admission, failure, now))
    }

    #[test]
    fn opens_on_the_failure_ratio_only_past_the_minimum_volume() {
        let now = Instant::now();
        let breaker = CircuitBreaker::new(CONFIG, now);
        for _ in 0..9 {
            assert_eq!(call(&breaker, true, now), Ok(None), "nine failures are below the minimum volume");
        }
        assert_eq!(call(&breaker, true, now), Ok(Some(BreakerState::Open)));
        assert_eq!(breaker.admit(now).map(|_| ()), Err(BreakerState::Open));
    }

    #[test]
    fn stays_closed_while_failures_are_a_minority() {
        let now = Instant::now();
        let breaker = CircuitBreaker::new(CONFIG, now);
        for index in 0..100 {
            assert_eq!(call(&breaker, index % 3 == 0, now), Ok(None));
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_probes_close_it_or_open_it_again() {
        let start = Instant::now();
        let breaker = CircuitBreaker::new(CONFIG, start);
        for _ in 0..10 {
            let _ = call(&breaker, true, start);
        }
        let later = start + CONFIG.open_for;
        // Two probes admitted, a third refused while they are out.
        let (first, transition) = breaker.admit(later).unwrap_or_else(|_| panic!("no probe"));
        assert_eq!(transition, Some(BreakerState::HalfOpen));
        let (second, _) = breaker.admit(later).unwrap_or_else(|_| panic!("no second probe"));
        assert_eq!(breaker.admit(later).map(|_| ()), Err(BreakerState::HalfOpen));
        assert_eq!(breaker.record(first, false, later), None);
        assert_eq!(breaker.record(second, false, later), Some(BreakerState::Closed));

        for _ in 0..10 {
            let _ = call(&breaker, true, later);
        }
        let again = later + CONFIG.open_for;
        assert_eq!(
            call(&breaker, true, again),
            Ok(Some(BreakerState::Open)),
            "a failed probe reopens it"
        );
        assert_eq!(breaker.admit(again).map(|_| ()), Err(BreakerState::Open));
    }
}
