//! The Redis hot path, against a private `redis-server` (never the shared one):
//! a cache hit is one `GET` and nothing else (no `PING`/`UNWATCH` to take a
//! pooled connection), and a connection that a Redis restart broke is replaced
//! by the call that finds it broken, which still succeeds from Redis.

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus_client::registry::Registry;
use suite_cache::{Cache, CacheConfig, CacheMetrics, Cacheable};
use suite_testkit::RedisServer;

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

struct Subject {
    cache: Arc<Cache<Value>>,
    registry: Registry,
    loads: Arc<AtomicUsize>,
}

impl Subject {
    fn new(server: &RedisServer) -> Self {
        let mut registry = Registry::default();
        let metrics = CacheMetrics::register(&mut registry);
        let config = CacheConfig {
            redis_url: Some(server.url()),
            // Generous: these tests are about which commands run, not how fast.
            redis_timeout_ms: 2_000,
            ..CacheConfig::default()
        };
        Self {
            cache: Arc::new(Cache::new(&config, "test:hot-path", metrics).unwrap()),
            registry,
            loads: Arc::new(AtomicUsize::new(0)),
        }
    }

    async fn get(&self, key: &str) -> Value {
        let loads = self.loads.clone();
        self.cache
            .get_or_load(key, || async move {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Infallible>(Some(Value(7)))
            })
            .await
            .unwrap()
            .unwrap()
    }

    fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }

    /// The `cache_errors_total` and `cache_lookups_total` lines.
    fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text
    }

    fn assert_no_errors(&self, context: &str) {
        let metrics = self.metrics();
        assert!(
            !metrics.lines().any(|line| line.starts_with("cache_errors_total{")),
            "{context}: a cache call failed:\n{metrics}"
        );
    }
}

/// Calls of each command that must not run per request, and of GET.
async fn calls(server: &RedisServer) -> [u64; 3] {
    [
        server.command_calls("get").await,
        server.command_calls("ping").await,
        server.command_calls("unwatch").await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_hit_is_one_get_and_no_ping() {
    let Some(server) = RedisServer::start().await else { return };
    let subject = Subject::new(&server);
    assert_eq!(subject.get("key").await, Value(7)); // miss: GET, load, SET
    let before = calls(&server).await;

    let callers: Vec<_> = (0..16)
        .map(|_| {
            let cache = subject.cache.clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    let value = cache
                        .get_or_load("key", || async { Ok::<_, Infallible>(Some(Value(0))) })
                        .await
                        .unwrap();
                    assert_eq!(value, Some(Value(7)), "a hit");
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }

    let after = calls(&server).await;
    let [gets, pings, unwatches] = [0, 1, 2].map(|i| after[i] - before[i]);
    assert_eq!(
        (gets, pings, unwatches),
        (400, 0, 0),
        "400 hits: one GET each, and no PING or UNWATCH to take a connection"
    );
    assert_eq!(subject.loads(), 1);
    subject.assert_no_errors("hits");
}

/// Redis restarts (empty) between calls, again and again: each time the next
/// call finds its connection closed, takes a new one and is served by Redis
/// (a miss that refills it, then hits): no call fails, no error is counted,
/// and reads are not paused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_between_calls_fails_no_call() {
    let Some(mut server) = RedisServer::start().await else { return };
    let subject = Subject::new(&server);
    // Fill every shared connection, so each round meets broken ones.
    for _ in 0..8 {
        assert_eq!(subject.get("key").await, Value(7));
    }
    assert_eq!(subject.loads(), 1);

    for round in 1..=3 {
        server.restart().await;
        assert_eq!(server.command(&["DBSIZE"]).await.unwrap(), "0", "restarted empty");
        for _ in 0..8 {
            assert_eq!(subject.get("key").await, Value(7));
        }
        subject.assert_no_errors(&format!("restart {round}"));
        assert_eq!(
            subject.loads(),
            1 + round,
            "round {round}: one miss refilled the new Redis, the rest were hits"
        );
        assert_eq!(server.command(&["DBSIZE"]).await.unwrap(), "1", "the entry is back in Redis");
        assert_eq!(server.command_calls("get").await, 8, "round {round}: every call read Redis");
    }
}

/// Calls keep coming while Redis is killed and started again: every one
/// succeeds (from the database while Redis is down), and once Redis is back the
/// cache fills it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_during_a_restart_all_succeed() {
    let Some(mut server) = RedisServer::start().await else { return };
    let mut registry = Registry::default();
    let config = CacheConfig {
        redis_url: Some(server.url()),
        redis_backoff_ms: 50,
        ..CacheConfig::default()
    };
    let cache = Arc::new(Cache::<Value>::new(&config, "test:restart", CacheMetrics::register(&mut registry)).unwrap());
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (cache, running) = (cache.clone(), running.clone());
            tokio::spawn(async move {
                let mut calls = 0_u64;
                while running.load(Ordering::SeqCst) {
                    let value = cache.get_or_load("key", || async { Ok::<_, &str>(Some(Value(3))) }).await;
                    assert_eq!(value, Ok(Some(Value(3))));
                    calls += 1;
                    tokio::task::yield_now().await;
                }
                calls
            })
        })
        .collect();

    server.stop();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    server.restart().await;
    // Until the cache has refilled the restarted Redis (bounded only so a bug fails the test).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server.command(&["DBSIZE"]).await.unwrap() != "1" {
        assert!(std::time::Instant::now() < deadline, "the cache never refilled the restarted Redis");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    running.store(false, Ordering::SeqCst);
    let mut total = 0;
    for caller in callers {
        total += caller.await.unwrap();
    }
    assert!(total > 0);
}
