//! Redis restarts under the user service (a private `redis-server`, never the
//! shared one): no call fails, neither those made while Redis is down (served
//! by the database) nor the first one after it is back, which finds its
//! connection closed, takes a new one and is served by Redis.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{AppSettings, TestApp, TestDb, spawn_app_with};
use suite_cache::CacheConfig;
use suite_testkit::RedisServer;

async fn app_on(db: &TestDb, server: &RedisServer) -> TestApp {
    spawn_app_with(AppSettings {
        cache: CacheConfig {
            redis_url: Some(server.url()),
            redis_backoff_ms: 50,
            ..CacheConfig::default()
        },
        ..AppSettings::new(db.config())
    })
    .await
}

fn assert_no_cache_errors(metrics: &str, context: &str) {
    assert!(
        !metrics.lines().any(|line| line.starts_with("cache_errors_total{")),
        "{context}: a Redis call failed:\n{metrics}"
    );
}

/// Redis restarts (empty) between two reads: the next read is served by the new
/// Redis (a miss that refills it), with no Redis error, and the one after is a hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_between_calls_fails_no_call() {
    let Some(mut server) = RedisServer::start().await else { return };
    let db = TestDb::sqlite();
    let app = app_on(&db, &server).await;
    let user = app.create("restart@example.com", "Restart").await;
    for _ in 0..4 {
        assert_eq!(app.get(&user.id).await.unwrap(), user); // a miss, then hits
    }
    for round in 1..=2 {
        server.restart().await;
        let pings = server.command_calls("ping").await; // RedisServer's own, waiting for start-up
        for _ in 0..4 {
            assert_eq!(app.get(&user.id).await.unwrap(), user);
        }
        assert_no_cache_errors(&app.metrics().await, &format!("restart {round}"));
        assert_eq!(server.command_calls("get").await, 4, "every read went to the new Redis");
        assert_eq!(server.command_calls("set").await, 1, "the first refilled it");
        assert_eq!(server.command_calls("ping").await, pings, "no PING to take a connection");
    }
}

/// Reads keep coming while Redis is killed and started again: every call
/// succeeds, and once Redis is back the service fills it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_while_redis_restarts_all_succeed() {
    let Some(mut server) = RedisServer::start().await else { return };
    let db = TestDb::sqlite();
    let app = Arc::new(app_on(&db, &server).await);
    let user = app.create("outage@example.com", "Outage").await;
    let running = Arc::new(AtomicBool::new(true));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (app, running, user) = (app.clone(), running.clone(), user.clone());
            tokio::spawn(async move {
                let mut calls = 0_u64;
                while running.load(Ordering::SeqCst) {
                    assert_eq!(app.get(&user.id).await.unwrap(), user);
                    calls += 1;
                }
                calls
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(100)).await;
    server.stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.restart().await;
    // Bounded only so that a cache which never returns to Redis fails the test.
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.command(&["DBSIZE"]).await.unwrap() != "1" {
        assert!(Instant::now() < deadline, "the service never refilled the restarted Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gets_back = server.command_calls("get").await;
    while server.command_calls("get").await <= gets_back {
        assert!(Instant::now() < deadline, "reads never returned to the restarted Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.store(false, Ordering::SeqCst);
    let mut calls = 0;
    for reader in readers {
        calls += reader.await.unwrap();
    }
    assert!(calls > 0);
}
