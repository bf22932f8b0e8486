//! A circuit breaker per dependency.
//!
//! Closed: calls flow and their outcomes are judged ([`BreakerConfig::judge`]).
//! It opens on whichever trigger fires first:
//! - `consecutive_failures` failures in a row (a dead or frozen dependency,
//!   however many successes came before);
//! - at least `min_requests` calls in the `window`, failing at `failure_ratio` or more;
//! - at least `min_requests` calls in the `window`, `slow_call_ratio` or more of
//!   them taking `slow_call` or longer (a dependency that still answers, late).
//!
//! Open: calls fail at once for `open_for`, doubled each time it opens again
//! without having closed in between, up to `open_for_max`. Then half-open: up
//! to `half_open_probes` calls go through; the first that the dependency
//! answers closes it, a failed one opens it again. Outcomes of calls admitted
//! before the last change of state are ignored: a backlog that fails after
//! the breaker opened, or answers after it closed, says nothing about now.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::Code;

use super::window::SlidingCounts;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    pub window: Duration,
    pub min_requests: u64,
    pub failure_ratio: f64,
    pub consecutive_failures: u32,
    /// A call taking this long or longer is slow ...
    pub slow_call: Duration,
    /// ... and this share of slow calls in the window opens the breaker.
    pub slow_call_ratio: f64,
    pub open_for: Duration,
    pub open_for_max: Duration,
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    /// What the services ship with; README's failure model explains each figure.
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            min_requests: 20,
            failure_ratio: 0.5,
            consecutive_failures: 5,
            slow_call: Duration::from_secs(1),
            slow_call_ratio: 0.5,
            open_for: Duration::from_secs(1),
            open_for_max: Duration::from_secs(10),
            half_open_probes: 1,
        }
    }
}

/// How one call went, as the breaker judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The dependency answered (whatever the answer: "no such user" is an answer).
    Answered { slow: bool },
    /// The dependency is unwell: unavailable, shedding load, or too slow for a
    /// deadline that left it enough time.
    Failed,
    /// Says nothing about the dependency: the caller went away, or gave it less
    /// time than a healthy call may take.
    Silent,
}

impl BreakerConfig {
    /// Judges a call that ended with `code` after `elapsed`, having been allowed
    /// `allowed` (its deadline; `None` for none).
    pub fn judge(&self, code: Code, elapsed: Duration, allowed: Option<Duration>) -> Verdict {
        let slow = elapsed >= self.slow_call;
        // A server ending a call at its deadline may say CANCELLED (tonic's does): it ran out of time.
        let out_of_time = allowed.is_some_and(|allowed| elapsed >= allowed.mul_f64(0.95));
        let code = if code == Code::Cancelled && out_of_time {
            Code::DeadlineExceeded
        } else {
            code
        };
        match code {
            Code::Cancelled => Verdict::Silent,
            // A caller who allows less than a healthy call may take must not be able to
            // open the breaker for everyone by timing out on purpose.
            Code::DeadlineExceeded if allowed.is_some_and(|allowed| allowed < self.slow_call) => Verdict::Silent,
            Code::DeadlineExceeded | Code::Unavailable | Code::ResourceExhausted => Verdict::Failed,
            _ => Verdict::Answered { slow },
        }
    }
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
    HalfOpen { probes_in_flight: u32 },
}

#[derive(Debug)]
pub(crate) struct CircuitBreaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    /// Bumped at every change of state; admissions carry the one they were made in.
    generation: u64,
    /// (answered, failed) while closed.
    outcomes: SlidingCounts,
    /// (fast, slow) while closed.
    speeds: SlidingCounts,
    consecutive_failures: u32,
    /// Times opened since it last closed: each doubles the open period.
    reopenings: u32,
}

/// Leave to make one call; report its outcome with [`CircuitBreaker::record`].
#[derive(Debug)]
pub(crate) struct Admission {
    probe: bool,
    generation: u64,
}

/// A state change, for the caller to log and export.
pub(crate) type Transition = Option<BreakerState>;

impl CircuitBreaker {
    pub fn new(config: BreakerConfig, now: Instant) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                generation: 0,
                outcomes: SlidingCounts::new(config.window, now),
                speeds: SlidingCounts::new(config.window, now),
                consecutive_failures: 0,
                reopenings: 0,
            }),
        }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// Lets a call through, or refuses it while open (or while half-open with every probe out).
    pub fn admit(&self, now: Instant) -> Result<(Admission, Transition), BreakerState> {
        let mut inner = self.lock();
        let mut transition = None;
        if let Phase::Open { until } = inner.phase {
            if now < until {
                return Err(BreakerState::Open);
            }
            inner.change(Phase::HalfOpen { probes_in_flight: 0 });
            transition = Some(BreakerState::HalfOpen);
        }
        let generation = inner.generation;
        match &mut inner.phase {
            Phase::Closed => Ok((Admission { probe: false, generation }, transition)),
            Phase::HalfOpen { probes_in_flight } => {
                if *probes_in_flight >= self.config.half_open_probes {
                    return Err(BreakerState::HalfOpen);
                }
                *probes_in_flight += 1;
                Ok((Admission { probe: true, generation }, transition))
            }
            Phase::Open { .. } => Err(BreakerState::Open),
        }
    }

    /// Records how an admitted call went.
    pub fn record(&self, admission: Admission, verdict: Verdict, now: Instant) -> Transition {
        let mut inner = self.lock();
        if admission.generation != inner.generation {
            return None;
        }
        let config = self.config;
        match (&mut inner.phase, verdict) {
            (_, Verdict::Silent) => {
                inner.release(&admission);
                None
            }
            (Phase::Closed, Verdict::Answered { slow }) => {
                inner.consecutive_failures = 0;
                inner.outcomes.add(now, 1, 0);
                inner.speeds.add(now, u64::from(!slow), u64::from(slow));
                let (fast, slow_calls) = inner.speeds.totals(now);
                let total = fast + slow_calls;
                if slow && total >= config.min_requests && slow_calls as f64 >= config.slow_call_ratio * total as f64 {
                    return Some(inner.open(&config, now));
                }
                None
            }
            (Phase::Closed, Verdict::Failed) => {
                inner.consecutive_failures += 1;
                inner.outcomes.add(now, 0, 1);
                let (answered, failed) = inner.outcomes.totals(now);
                let total = answered + failed;
                let ratio_reached = total >= config.min_requests && failed as f64 >= config.failure_ratio * total as f64;
                if ratio_reached || inner.consecutive_failures >= config.consecutive_failures {
                    return Some(inner.open(&config, now));
                }
                None
            }
            (Phase::HalfOpen { .. }, Verdict::Answered { .. }) => {
                inner.change(Phase::Closed);
                inner.reopenings = 0;
                Some(BreakerState::Closed)
            }
            (Phase::HalfOpen { .. }, Verdict::Failed) => Some(inner.open(&config, now)),
            (Phase::Open { .. }, _) => None,
        }
    }

    /// Releases an admission whose call ended without an outcome (its caller went away).
    pub fn abandon(&self, admission: Admission) {
        let mut inner = self.lock();
        if admission.generation == inner.generation {
            inner.release(&admission);
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

impl Inner {
    fn change(&mut self, phase: Phase) {
        self.phase = phase;
        self.generation += 1;
        self.outcomes.clear();
        self.speeds.clear();
        self.consecutive_failures = 0;
    }

    fn open(&mut self, config: &BreakerConfig, now: Instant) -> BreakerState {
        let open_for = config
            .open_for
            .saturating_mul(1 << self.reopenings.min(16))
            .min(config.open_for_max.max(config.open_for));
        self.reopenings = self.reopenings.saturating_add(1);
        self.change(Phase::Open { until: now + open_for });
        BreakerState::Open
    }

    /// Frees a half-open probe's place.
    fn release(&mut self, admission: &Admission) {
        if let Phase::HalfOpen { probes_in_flight } = &mut self.phase
            && admission.probe
        {
            *probes_in_flight = probes_in_flight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);
    const CONFIG: BreakerConfig = BreakerConfig {
        window: Duration::from_secs(10),
        min_requests: 10,
        failure_ratio: 0.5,
        consecutive_failures: 5,
        slow_call: SECOND,
        slow_call_ratio: 0.5,
        open_for: Duration::from_secs(1),
        open_for_max: Duration::from_secs(4),
        half_open_probes: 2,
    };
    const FAST: Verdict = Verdict::Answered { slow: false };
    const SLOW: Verdict = Verdict::Answered { slow: true };

    fn call(breaker: &CircuitBreaker, verdict: Verdict, now: Instant) -> Result<Transition, BreakerState> {
        let (admission, _) = breaker.admit(now)?;
        Ok(breaker.record(admission, verdict, now))
    }

    fn open(breaker: &CircuitBreaker, now: Instant) {
        for _ in 0..CONFIG.consecutive_failures {
            let _ = call(breaker, Verdict::Failed, now);
        }
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[test]
    fn judges_only_what_the_dependency_did() {
        let judge = |code, elapsed, allowed| CONFIG.judge(code, elapsed, allowed);
        let moment = Duration::from_millis(3);
        assert_eq!(judge(Code::Unavailable, moment, None), Verdict::Failed);
        assert_eq!(judge(Code::ResourceExhausted, moment, None), Verdict::Failed);
        assert_eq!(judge(Code::DeadlineExceeded, SECOND * 5, Some(SECOND * 5)), Verdict::Failed);
        assert_eq!(judge(Code::DeadlineExceeded, SECOND * 2, None), Verdict::Failed);
        assert_eq!(
            judge(Code::DeadlineExceeded, moment, Some(moment)),
            Verdict::Silent,
            "the caller's own short deadline"
        );
        assert_eq!(judge(Code::Cancelled, SECOND * 3, None), Verdict::Silent, "the caller went away");
        assert_eq!(
            judge(Code::Cancelled, SECOND * 2, Some(SECOND * 2)),
            Verdict::Failed,
            "the server's timer at the deadline"
        );
        assert_eq!(judge(Code::Cancelled, SECOND, Some(SECOND * 2)), Verdict::Silent);
        for code in [
            Code::NotFound,
            Code::InvalidArgument,
            Code::PermissionDenied,
            Code::Internal,
            Code::Ok,
        ] {
            assert_eq!(judge(code, moment, None), FAST, "{code:?}");
        }
        assert_eq!(judge(Code::Ok, SECOND, None), SLOW);
    }

    #[test]
    fn opens_on_consecutive_failures_whatever_came_before() {
        let now = Instant::now();
        let breaker = CircuitBreaker::new(CONFIG, now);
        for _ in 0..1000 {
            assert_eq!(call(&breaker, FAST, now), Ok(None));
        }
        for _ in 0..CONFIG.consecutive_failures - 1 {
            assert_eq!(call(&breaker, Verdict::Failed, now), Ok(None));
        }
        assert_eq!(call(&breaker, FAST, now), Ok(None), "an answer breaks the run");
        for _ in 0..CONFIG.consecutive_failures - 1 {
            assert_eq!(call(&breaker, Verdict::Failed, now), Ok(None));
        }
        assert_eq!(call(&breaker, Verdict::Failed, now), Ok(Some(BreakerState::Open)));
        assert_eq!(breaker.admit(now).map(|_| ()), Err(BreakerState::Open));
    }

    #[test]
    fn opens_on_the_failure_ratio_only_past_the_minimum_volume() {
        let now = Instant::now();
        let breaker = CircuitBreaker::new(CONFIG, now);
        // Alternating, so the run of failures never reaches the consecutive trigger.
        for index in 0..9 {
            let verdict = if index % 2 == 0 { Verdict::Failed } else { FAST };
            assert_eq!(call(&breaker, verdict, now), Ok(None), "below the minimum volume");
        }
        assert_eq!(call(&breaker, Verdict::Failed, now), Ok(Some(BreakerState::Open)));
    }

    #[test]
    fn stays_closed_while_failures_are_a_minority_and_calls_are_quick() {
        let now = Instant::now();
        let breaker = CircuitBreaker::new(CONFIG, now);
        for index in 0..300 {
            let verdict = match index % 4 {
                0 => Verdict::Failed,
                1 => SLOW,
                _ => FAST,
            };
            assert_eq!(call(&breaker, verdict, now), Ok(None));
            assert_eq!(call(&breaker, Verdict::Silent, now), Ok(None), "silent outcomes count for nothing");
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn opens_when_most_calls_are_slow() {
        let now = Instant::now();
        let breaker = CircuitBreaker::new(CONFIG, now);
        for _ in 0..5 {
            assert_eq!(call(&breaker, FAST, now), Ok(None));
        }
        for _ in 0..4 {
            assert_eq!(call(&breaker, SLOW, now), Ok(None));
        }
        assert_eq!(call(&breaker, SLOW, now), Ok(Some(BreakerState::Open)));
    }

    #[test]
    fn the_first_answered_probe_closes_it_and_a_failed_one_doubles_the_wait() {
        let start = Instant::now();
        let breaker = CircuitBreaker::new(CONFIG, start);
        open(&breaker, start);
        let later = start + CONFIG.open_for;
        let (first, transition) = breaker.admit(later).unwrap_or_else(|_| panic!("no probe"));
        assert_eq!(transition, Some(BreakerState::HalfOpen));
        let (second, _) = breaker.admit(later).unwrap_or_else(|_| panic!("no second probe"));
        assert_eq!(breaker.admit(later).map(|_| ()), Err(BreakerState::HalfOpen), "every probe is out");
        assert_eq!(breaker.record(first, FAST, later), Some(BreakerState::Closed));
        assert_eq!(
            breaker.record(second, Verdict::Failed, later),
            None,
            "a probe of the half-open period that ended"
        );
        assert_eq!(call(&breaker, FAST, later), Ok(None), "nothing refused once it answered");

        // Each failed probe doubles the open period, up to the maximum.
        open(&breaker, later);
        let mut now = later;
        for open_for in [1, 2, 4, 4] {
            now += Duration::from_secs(open_for);
            assert_eq!(breaker.admit(now - Duration::from_millis(1)).map(|_| ()), Err(BreakerState::Open));
            assert_eq!(call(&breaker, Verdict::Failed, now), Ok(Some(BreakerState::Open)));
        }
        now += CONFIG.open_for_max;
        assert_eq!(call(&breaker, FAST, now), Ok(Some(BreakerState::Closed)));
        // Closed again: the next opening waits the first period again.
        open(&breaker, now);
        assert!(breaker.admit(now + CONFIG.open_for).is_ok());
    }

    #[test]
    fn outcomes_from_before_a_change_of_state_are_ignored() {
        let start = Instant::now();
        let breaker = CircuitBreaker::new(CONFIG, start);
        let backlog: Vec<_> = (0..20)
            .map(|_| breaker.admit(start).unwrap_or_else(|_| panic!("closed")).0)
            .collect();
        open(&breaker, start);
        let later = start + CONFIG.open_for;
        assert_eq!(call(&breaker, FAST, later), Ok(Some(BreakerState::Closed)));
        for admission in backlog {
            assert_eq!(breaker.record(admission, Verdict::Failed, later), None);
        }
        assert_eq!(breaker.state(), BreakerState::Closed, "the old backlog failing does not reopen it");
    }

    #[test]
    fn a_silent_or_abandoned_probe_frees_its_place() {
        let start = Instant::now();
        let breaker = CircuitBreaker::new(
            BreakerConfig {
                half_open_probes: 1,
                ..CONFIG
            },
            start,
        );
        for _ in 0..CONFIG.consecutive_failures {
            let _ = call(&breaker, Verdict::Failed, start);
        }
        let later = start + CONFIG.open_for;
        let (probe, _) = breaker.admit(later).unwrap_or_else(|_| panic!("no probe"));
        assert!(breaker.admit(later).is_err());
        breaker.abandon(probe);
        assert_eq!(call(&breaker, Verdict::Silent, later), Ok(None));
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert_eq!(call(&breaker, FAST, later), Ok(Some(BreakerState::Closed)));
    }
}
