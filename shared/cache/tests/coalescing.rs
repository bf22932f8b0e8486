//! Concurrent misses on one key share one load, on Redis and in-process.

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use suite_cache::{Cache, CacheConfig, CacheMetrics, Cacheable};

#[derive(Debug, Clone, PartialEq)]
struct Value(u64);

impl Cacheable for Value {
    fn to_bytes(&self) -> Vec<u8> {
        self.0.to_le_bytes().to_vec()
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(Self(u64::from_le_bytes(bytes.try_into().ok()?)))
    }
}

async fn concurrent_misses_share_one_load(config: CacheConfig) {
    let namespace = format!("test:coalescing:{}", uuid::Uuid::new_v4());
    let cache = Arc::new(Cache::<Value>::new(&config, namespace, CacheMetrics::default()).unwrap());
    let loads = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..32)
        .map(|_| {
            let (cache, loads) = (cache.clone(), loads.clone());
            tokio::spawn(async move {
                cache
                    .get_or_load("key", || async {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok::<_, Infallible>(Some(Value(42)))
                    })
                    .await
            })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap().unwrap(), Some(Value(42)));
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1, "32 concurrent misses caused one load");

    let again = cache
        .get_or_load("key", || async { Ok::<_, Infallible>(Some(Value(0))) })
        .await
        .unwrap();
    assert_eq!(again, Some(Value(42)), "later reads hit the cache");

    cache.invalidate("key").await;
    let reloaded = cache
        .get_or_load("key", || async { Ok::<_, Infallible>(Some(Value(7))) })
        .await
        .unwrap();
    assert_eq!(reloaded, Some(Value(7)), "invalidation forces a fresh load");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_concurrent_misses_share_one_load() {
    concurrent_misses_share_one_load(CacheConfig::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_concurrent_misses_share_one_load() {
    let Some(redis_url) = suite_testkit::redis_url().await else {
        return;
    };
    concurrent_misses_share_one_load(CacheConfig {
        redis_url: Some(redis_url),
        ..CacheConfig::default()
    })
    .await;
}

/// A load that fails is not cached, and the next caller tries again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_loads_are_not_cached() {
    let cache = Cache::<Value>::new(&CacheConfig::default(), "test:failures", CacheMetrics::default()).unwrap();
    let failed = cache
        .get_or_load("key", || async { Err::<Option<Value>, _>("database down") })
        .await;
    assert_eq!(failed, Err("database down"));
    let loaded = cache.get_or_load("key", || async { Ok::<_, &str>(Some(Value(1))) }).await;
    assert_eq!(loaded, Ok(Some(Value(1))));
}
