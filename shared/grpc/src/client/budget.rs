//! A retry budget: retries may add at most `ratio` of the requests made in the
//! last window, plus a small floor so a quiet client can still retry at all.
//! During an outage every first attempt fails, and the budget is what keeps the
//! clients from multiplying the load on the dependency that is trying to recover.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::window::SlidingCounts;

#[derive(Debug)]
pub(crate) struct RetryBudget {
    ratio: f64,
    floor: u64,
    /// (requests, retries) over the window.
    counts: Mutex<SlidingCounts>,
}

impl RetryBudget {
    /// `ratio` of retries to requests, `floor` retries per window whatever the traffic.
    pub fn new(ratio: f64, floor: u64, window: Duration) -> Self {
        Self {
            ratio,
            floor,
            counts: Mutex::new(SlidingCounts::new(window, Instant::now())),
        }
    }

    pub fn record_request(&self, now: Instant) {
        self.lock().add(now, 1, 0);
    }

    /// Takes one retry from the budget if there is one left.
    pub fn try_retry(&self, now: Instant) -> bool {
        let mut counts = self.lock();
        let (requests, retries) = counts.totals(now);
        let allowed = (requests as f64 * self.ratio) as u64 + self.floor;
        if retries < allowed {
            counts.add(now, 0, 1);
            true
        } else {
            false
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlidingCounts> {
        self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_ratio_plus_floor() {
        let budget = RetryBudget::new(0.2, 5, Duration::from_secs(10));
        let now = Instant::now();
        let mut granted = 0;
        for _ in 0..100 {
            budget.record_request(now);
            // An outage: every request would like three retries.
            for _ in 0..3 {
                if budget.try_retry(now) {
                    granted += 1;
                }
            }
        }
        assert_eq!(granted, 20 + 5);
    }

    #[test]
    fn the_budget_refills_as_the_window_moves() {
        let budget = RetryBudget::new(0.0, 2, Duration::from_secs(1));
        let now = Instant::now();
        assert!(budget.try_retry(now));
        assert!(budget.try_retry(now));
        assert!(!budget.try_retry(now));
        assert!(budget.try_retry(now + Duration::from_millis(1_100)));
    }
}
