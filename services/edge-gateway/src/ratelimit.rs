//! Token buckets per subject (per client address for requests without a
//! token), in a bounded cache: idle buckets are forgotten (they would be full
//! again anyway) and the least recently used go first when the cache is full,
//! so a client inventing subjects or addresses cannot grow memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::RateLimitArgs;

/// Whose bucket a request draws from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateKey {
    Subject(http::HeaderValue),
    Address(IpAddr),
}

impl RateKey {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Subject(_) => "subject",
            Self::Address(_) => "address",
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

/// The buckets and their shared settings.
#[derive(Clone)]
pub struct RateLimiter {
    buckets: moka::sync::Cache<RateKey, Arc<Mutex<Bucket>>>,
    per_second: f64,
    burst: f64,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("per_second", &self.per_second)
            .field("burst", &self.burst)
            .field("buckets", &self.buckets.entry_count())
            .finish()
    }
}

impl RateLimiter {
    /// Requests per subject (per address without a token).
    pub fn new(args: &RateLimitArgs) -> Self {
        Self::with_rate(args, args.rate_limit_per_second, args.rate_limit_burst)
    }

    /// Token verifications per client address.
    pub fn for_verifications(args: &RateLimitArgs) -> Self {
        Self::with_rate(args, args.token_verifications_per_second, args.token_verification_burst)
    }

    fn with_rate(args: &RateLimitArgs, per_second: f64, burst: f64) -> Self {
        Self {
            buckets: moka::sync::Cache::builder()
                .max_capacity(args.rate_limit_max_keys)
                .time_to_idle(Duration::from_millis(args.rate_limit_idle_ms.max(1)))
                .build(),
            per_second: per_second.max(f64::MIN_POSITIVE),
            burst: burst.max(1.0),
        }
    }

    /// Takes one token from `key`'s bucket, or says how long until one is there.
    pub fn try_acquire(&self, key: &RateKey) -> Result<(), Duration> {
        self.try_acquire_at(key, Instant::now())
    }

    fn try_acquire_at(&self, key: &RateKey, now: Instant) -> Result<(), Duration> {
        let bucket = self.buckets.get_with_by_ref(key, || {
            Arc::new(Mutex::new(Bucket {
                tokens: self.burst,
                refilled_at: now,
            }))
        });
        let mut bucket = bucket.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let elapsed = now.saturating_duration_since(bucket.refilled_at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.refilled_at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_second))
        }
    }

    /// Buckets currently held (approximate; moka counts lazily).
    pub fn buckets(&self) -> u64 {
        self.buckets.run_pending_tasks();
        self.buckets.entry_count()
    }
}

/// Calls in flight per subject (per address without a token), capped. The map
/// holds only keys with calls in flight, so its size is bounded by the
/// gateway's global in-flight limit, whatever keys clients invent.
#[derive(Debug, Clone)]
pub struct InFlightLimiter {
    counts: Arc<Mutex<HashMap<RateKey, u32>>>,
    max: u32,
}

impl InFlightLimiter {
    pub fn new(args: &RateLimitArgs) -> Self {
        Self {
            counts: Arc::default(),
            max: args.max_in_flight_per_subject.max(1),
        }
    }

    /// A place for one more call of `key`, held until the guard is dropped; `None` when `key` is at its cap.
    pub fn try_enter(&self, key: &RateKey) -> Option<InFlight> {
        let mut counts = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = counts.entry(key.clone()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(InFlight {
            counts: self.counts.clone(),
            key: key.clone(),
        })
    }
}

/// One call in flight; lives with the response body, so a streaming reply counts until it ends.
pub struct InFlight {
    counts: Arc<Mutex<HashMap<RateKey, u32>>>,
    key: RateKey,
}

impl suite_grpc::layers::body::ResponseGuard for InFlight {}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn limiter(per_second: f64, burst: f64, max_keys: u64) -> RateLimiter {
        RateLimiter::new(&RateLimitArgs {
            rate_limit_per_second: per_second,
            rate_limit_burst: burst,
            rate_limit_max_keys: max_keys,
            rate_limit_idle_ms: 60_000,
            ..RateLimitArgs::default()
        })
    }

    fn subject(name: &'static str) -> RateKey {
        RateKey::Subject(http::HeaderValue::from_static(name))
    }

    #[test]
    fn in_flight_is_capped_per_key_and_freed_with_the_guard() {
        let limiter = InFlightLimiter::new(&RateLimitArgs {
            max_in_flight_per_subject: 2,
            ..RateLimitArgs::default()
        });
        let (alice, bob) = (subject("alice"), subject("bob"));
        let first = limiter.try_enter(&alice).unwrap();
        let _second = limiter.try_enter(&alice).unwrap();
        assert!(limiter.try_enter(&alice).is_none(), "alice is at her cap");
        assert!(limiter.try_enter(&bob).is_some(), "bob is not");
        drop(first);
        assert!(limiter.try_enter(&alice).is_some(), "a place freed is free again");
        drop(_second);
        assert!(limiter.counts.lock().unwrap().is_empty(), "keys without calls are forgotten");
    }

    #[test]
    fn burst_then_steady_rate() {
        let limiter = limiter(10.0, 5.0, 100);
        let start = Instant::now();
        let alice = subject("alice");
        for _ in 0..5 {
            assert!(limiter.try_acquire_at(&alice, start).is_ok());
        }
        let wait = limiter.try_acquire_at(&alice, start).unwrap_err();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100), "{wait:?}");
        // Other subjects have their own bucket.
        assert!(limiter.try_acquire_at(&subject("bob"), start).is_ok());
        // 10 per second: one more token every 100 ms.
        assert!(limiter.try_acquire_at(&alice, start + Duration::from_millis(100)).is_ok());
        assert!(limiter.try_acquire_at(&alice, start + Duration::from_millis(150)).is_err());
        // Idle for long: back to the burst, not beyond.
        let later = start + Duration::from_secs(60);
        for _ in 0..5 {
            assert!(limiter.try_acquire_at(&alice, later).is_ok());
        }
        assert!(limiter.try_acquire_at(&alice, later).is_err());
    }

    #[test]
    fn memory_is_bounded() {
        let limiter = limiter(1.0, 1.0, 1_000);
        for index in 0..20_000_u32 {
            let address = IpAddr::from(index.to_be_bytes());
            let _ = limiter.try_acquire(&RateKey::Address(address));
        }
        assert!(limiter.buckets() <= 1_100, "{} buckets", limiter.buckets());
    }
}
