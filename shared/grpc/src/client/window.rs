//! Counts over a sliding time window, in tenths of the window; the shared
//! bookkeeping of the retry budget and the circuit breaker. Time is passed in,
//! so the arithmetic is tested without sleeping.

use std::time::{Duration, Instant};

const BUCKETS: usize = 10;

/// Two counters (for example successes and failures) over the last `window`.
#[derive(Debug)]
pub(crate) struct SlidingCounts {
    bucket_width: Duration,
    buckets: [(u64, u64); BUCKETS],
    /// Index of the bucket that started at `current_start`.
    current: usize,
    current_start: Instant,
}

impl SlidingCounts {
    pub fn new(window: Duration, now: Instant) -> Self {
        Self {
            bucket_width: (window / BUCKETS as u32).max(Duration::from_millis(1)),
            buckets: [(0, 0); BUCKETS],
            current: 0,
            current_start: now,
        }
    }

    /// Moves the window forward to `now`, emptying the buckets that fell out of it.
    fn advance(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.current_start);
        let steps = elapsed.as_nanos() / self.bucket_width.as_nanos();
        if steps == 0 {
            return;
        }
        if steps >= BUCKETS as u128 {
            self.buckets = [(0, 0); BUCKETS];
            self.current = 0;
            self.current_start = now;
            return;
        }
        let steps = steps as usize;
        for step in 1..=steps {
            self.buckets[(self.current + step) % BUCKETS] = (0, 0);
        }
        self.current = (self.current + steps) % BUCKETS;
        self.current_start += self.bucket_width * steps as u32;
    }

    pub fn add(&mut self, now: Instant, first: u64, second: u64) {
        self.advance(now);
        let bucket = &mut self.buckets[self.current];
        bucket.0 += first;
        bucket.1 += second;
    }

    pub fn totals(&mut self, now: Instant) -> (u64, u64) {
        self.advance(now);
        self.buckets.iter().fold((0, 0), |(a, b), (x, y)| (a + x, b + y))
    }

    pub fn clear(&mut self) {
        self.buckets = [(0, 0); BUCKETS];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_leave_the_window_as_time_passes() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut counts = SlidingCounts::new(Duration::from_secs(1), start);
        counts.add(at(0), 3, 1);
        counts.add(at(550), 1, 0);
        assert_eq!(counts.totals(at(999)), (4, 1));
        assert_eq!(counts.totals(at(1_050)), (1, 0), "the first adds are more than a window old");
        assert_eq!(counts.totals(at(1_650)), (0, 0));
        counts.add(at(5_000), 0, 2);
        assert_eq!(counts.totals(at(5_001)), (0, 2), "a long idle gap starts afresh");
        counts.clear();
        assert_eq!(counts.totals(at(5_002)), (0, 0));
    }
}
