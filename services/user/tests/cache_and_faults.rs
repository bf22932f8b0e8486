//! The read-through cache on Redis and in-process, and how the service degrades
//! when Redis or PostgreSQL fails: requests keep succeeding from the database
//! when the cache dies, and fail fast with UNAVAILABLE (health NOT_SERVING)
//! when the database does.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{AppSettings, TestApp, TestDb, spawn_app_with};
use sea_orm::{ConnectionTrait, Database};
use suite_cache::CacheConfig;
use suite_proto::suite::user::v1 as pb;
use suite_testkit::{FaultProxy, ProxyMode};
use tonic::Code;

/// The cache a test runs against. Redis is shared between tests, which is safe
/// because every test's user ids are new.
async fn cache_config(redis: bool) -> Option<CacheConfig> {
    let redis_url = if redis { Some(suite_testkit::redis_url().await?) } else { None };
    Some(CacheConfig {
        redis_url,
        ..CacheConfig::default()
    })
}

macro_rules! cache_suite {
    ($($name:ident),* $(,)?) => {
        mod memory { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let cache = super::cache_config(false).await.unwrap();
                super::$name(cache).await;
            }
        )* }
        mod redis { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(cache) = super::cache_config(true).await else { return };
                super::$name(cache).await;
            }
        )* }
    };
}

cache_suite!(
    reads_are_served_from_the_cache_until_a_write_invalidates,
    entries_expire_after_the_ttl
);

/// Changes a row behind the service's back, so a stale answer proves a cache hit.
async fn rename_directly(db: &TestDb, id: &str, display_name: &str) {
    let connection = Database::connect(db.url("user")).await.unwrap();
    let statement = sea_orm::Statement::from_sql_and_values(
        connection.get_database_backend(),
        match connection.get_database_backend() {
            sea_orm::DbBackend::Postgres => "UPDATE users SET display_name = $1 WHERE id = $2",
            _ => "UPDATE users SET display_name = ? WHERE id = ?",
        },
        [display_name.into(), uuid::Uuid::parse_str(id).unwrap().into()],
    );
    assert_eq!(connection.execute(statement).await.unwrap().rows_affected(), 1);
}

async fn app_with_cache(db: &TestDb, cache: CacheConfig) -> TestApp {
    spawn_app_with(AppSettings {
        cache,
        ..AppSettings::new(db.config())
    })
    .await
}

async fn reads_are_served_from_the_cache_until_a_write_invalidates(cache: CacheConfig) {
    let db = TestDb::sqlite();
    let app = app_with_cache(&db, cache).await;
    let user = app.create("hit@example.com", "Original").await;
    assert_eq!(app.get(&user.id).await.unwrap().display_name, "Original"); // miss, fills the cache
    rename_directly(&db, &user.id, "Changed behind the cache").await;
    assert_eq!(
        app.get(&user.id).await.unwrap().display_name,
        "Original",
        "second read is a cache hit"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("cache_lookups_total{") && l.contains(r#"result="hit""#)),
        "{metrics}"
    );

    let update = pb::UpdateUserRequest {
        id: user.id.clone(),
        version: 1,
        email: Some("hit2@example.com".into()),
        display_name: None,
    };
    app.client.clone().update_user(update).await.unwrap();
    let after_update = app.get(&user.id).await.unwrap();
    assert_eq!(
        (
            after_update.email.as_str(),
            after_update.display_name.as_str(),
            after_update.version
        ),
        ("hit2@example.com", "Changed behind the cache", 2)
    );

    app.client
        .clone()
        .delete_user(pb::DeleteUserRequest {
            id: user.id.clone(),
            version: None,
        })
        .await
        .unwrap();
    assert_eq!(
        app.get(&user.id).await.unwrap_err().code(),
        Code::NotFound,
        "delete invalidated the entry"
    );
}

async fn entries_expire_after_the_ttl(cache: CacheConfig) {
    let db = TestDb::sqlite();
    let app = app_with_cache(
        &db,
        CacheConfig {
            ttl_secs: 1,
            ttl_jitter_percent: 0,
            ..cache
        },
    )
    .await;
    let user = app.create("ttl@example.com", "Before").await;
    app.get(&user.id).await.unwrap();
    rename_directly(&db, &user.id, "After").await;
    assert_eq!(app.get(&user.id).await.unwrap().display_name, "Before");
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert_eq!(app.get(&user.id).await.unwrap().display_name, "After", "the entry expired");
}

/// Redis dies mid-test (connections cut and refused), then hangs (connections
/// accepted, never answered): every request still succeeds from the database,
/// within bounded time, and writes still invalidate once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_failures_fall_back_to_the_database() {
    let Some(redis_url) = suite_testkit::redis_url().await else {
        return;
    };
    let redis_addr = redis_url.trim_start_matches("redis://").parse().unwrap();
    let proxy = FaultProxy::start(redis_addr).await;
    let db = TestDb::sqlite();
    let cache = CacheConfig {
        redis_url: Some(format!("redis://{}", proxy.addr())),
        redis_backoff_ms: 200,
        ..CacheConfig::default()
    };
    let app = app_with_cache(&db, cache).await;
    let user = app.create("redis@example.com", "Cached").await;
    app.get(&user.id).await.unwrap();

    for mode in [ProxyMode::Refuse, ProxyMode::Blackhole] {
        proxy.set_mode(mode);
        for round in 0..20 {
            let started = Instant::now();
            let name = format!("{mode:?} {round}");
            let current = app.get(&user.id).await.unwrap();
            let update = pb::UpdateUserRequest {
                id: user.id.clone(),
                version: current.version,
                display_name: Some(name.clone()),
                email: None,
            };
            app.client.clone().update_user(update).await.unwrap();
            assert_eq!(
                app.get(&user.id).await.unwrap().display_name,
                name,
                "reads see the write with Redis {mode:?}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "Redis {mode:?} slowed a round to {:?}",
                started.elapsed()
            );
        }
    }
    let metrics = app.metrics().await;
    assert!(
        metrics.lines().any(|l| l.starts_with("cache_errors_total{") && !l.ends_with(" 0")),
        "errors counted: {metrics}"
    );

    proxy.set_mode(ProxyMode::Forward);
    tokio::time::sleep(Duration::from_millis(300)).await; // past the read back-off
    let current = app.get(&user.id).await.unwrap();
    let update = pb::UpdateUserRequest {
        id: user.id.clone(),
        version: current.version,
        display_name: Some("Recovered".into()),
        email: None,
    };
    app.client.clone().update_user(update).await.unwrap();
    assert_eq!(app.get(&user.id).await.unwrap().display_name, "Recovered");
}

/// A Redis URL nobody listens on from the start: the service starts and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_at_start_is_not_fatal() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let db = TestDb::sqlite();
    let app = app_with_cache(
        &db,
        CacheConfig {
            redis_url: Some(format!("redis://{closed}")),
            ..CacheConfig::default()
        },
    )
    .await;
    let user = app.create("nored@example.com", "No Redis").await;
    assert_eq!(app.get(&user.id).await.unwrap(), user);
}

/// PostgreSQL goes away: health turns NOT_SERVING, reads that need the database
/// fail fast with UNAVAILABLE, and everything recovers when it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_is_unavailable_and_not_serving_then_recovers() {
    let Some(db) = suite_testkit::TestDatabase::create().await else {
        return;
    };
    let proxy = FaultProxy::start(db.server_addr()).await;
    let mut settings = AppSettings::new(suite_db::DatabaseConfig::postgres(db.url_via(proxy.addr())));
    settings.database.acquire_timeout_ms = 500;
    settings.database.connect_timeout_ms = 500;
    let app = spawn_app_with(settings).await;
    let user = app.create("pg@example.com", "PG").await;

    proxy.set_mode(ProxyMode::Refuse);
    app.wait_for_health(tonic_health::ServingStatus::NotServing).await;
    assert_eq!(
        app.health("liveness").await,
        tonic_health::ServingStatus::Serving,
        "liveness ignores dependencies"
    );
    let started = Instant::now();
    let status = app.get(&uuid::Uuid::now_v7().to_string()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(!status.message().contains("127.0.0.1"), "no internal detail leaks: {status:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let create = app
        .client
        .clone()
        .create_user(pb::CreateUserRequest {
            email: "lost@example.com".into(),
            display_name: "L".into(),
        })
        .await;
    assert_eq!(create.unwrap_err().code(), Code::Unavailable);

    proxy.set_mode(ProxyMode::Forward);
    app.wait_until_serving().await;
    assert_eq!(app.get(&user.id).await.unwrap(), user);
    let emails: Vec<String> = app.list_all(10).await.into_iter().map(|u| u.email).collect();
    assert_eq!(emails, ["pg@example.com"], "the failed create left nothing behind");
}

/// With one request slot, a request stuck on a slow database holds it and the
/// next is shed at once with RESOURCE_EXHAUSTED rather than queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_beyond_the_concurrency_limit_is_shed() {
    let Some(db) = suite_testkit::TestDatabase::create().await else {
        return;
    };
    let proxy = FaultProxy::start(db.server_addr()).await;
    let mut settings = AppSettings::new(suite_db::DatabaseConfig::postgres(db.url_via(proxy.addr())));
    settings.server.max_concurrent_requests = 1;
    let app = spawn_app_with(settings).await;
    let user = app.create("slow@example.com", "Slow").await;

    proxy.set_mode(ProxyMode::Delay(Duration::from_millis(100)));
    let slow = {
        let app_client = app.client.clone();
        let id = user.id.clone();
        tokio::spawn(async move { app_client.clone().get_user(pb::GetUserRequest { id }).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = Instant::now();
    let shed = app.get(&user.id).await.unwrap_err();
    assert_eq!(shed.code(), Code::ResourceExhausted, "{shed:?}");
    assert!(started.elapsed() < Duration::from_millis(300), "shedding is immediate, not queued");
    assert_eq!(
        slow.await.unwrap().unwrap().into_inner().user.unwrap(),
        user,
        "the slow request completed"
    );
}

/// ListUsers (always the database) with `timeout` as its deadline: the status and how long it took.
async fn list_within(app: &TestApp, timeout: Duration) -> (Result<(), tonic::Status>, Duration) {
    let mut request = tonic::Request::new(pb::ListUsersRequest {
        page_size: 10,
        page_token: String::new(),
    });
    request.set_timeout(timeout);
    let started = Instant::now();
    let result = app.client.clone().list_users(request).await.map(drop);
    (result, started.elapsed())
}

/// Once the database is known unreachable, calls that need it fail in
/// milliseconds instead of waiting the pool's acquire timeout each, readiness
/// follows within a second (at the shipped readiness interval), calls succeed
/// again within a second of its return, and a database that accepts
/// connections but never answers holds a call no longer than its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_fails_calls_in_milliseconds_and_recovery_takes_under_a_second() {
    let Some(db) = suite_testkit::TestDatabase::create().await else {
        return;
    };
    let proxy = FaultProxy::start(db.server_addr()).await;
    let mut settings = AppSettings::new(suite_db::DatabaseConfig::postgres(db.url_via(proxy.addr())));
    settings.server.readiness_interval_ms = 500;
    let app = spawn_app_with(settings).await;
    app.create("gate@example.com", "Gate").await;

    proxy.set_mode(ProxyMode::Refuse);
    let cut_at = Instant::now();
    // Detection: the first calls (and readiness pings) find the database gone.
    for _ in 0..suite_db::FAILURES_TO_CLOSE {
        let (result, _) = list_within(&app, Duration::from_secs(5)).await;
        assert_eq!(result.unwrap_err().code(), Code::Unavailable);
    }
    for _ in 0..50 {
        let (result, took) = list_within(&app, Duration::from_secs(5)).await;
        let status = result.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(took < Duration::from_millis(100), "a call after detection took {took:?}");
    }
    app.wait_for_health(tonic_health::ServingStatus::NotServing).await;
    let not_serving_after = cut_at.elapsed();
    eprintln!("NOT_SERVING {not_serving_after:?} after the cut");

    proxy.set_mode(ProxyMode::Forward);
    let back_at = Instant::now();
    let recovered_in = loop {
        let (result, _) = list_within(&app, Duration::from_secs(5)).await;
        if result.is_ok() {
            break back_at.elapsed();
        }
        assert!(back_at.elapsed() < Duration::from_secs(5), "no recovery: {result:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    eprintln!("calls succeed {recovered_in:?} after the database returned");
    assert!(recovered_in < Duration::from_secs(1), "recovery took {recovered_in:?}");
    app.wait_until_serving().await;

    // Accepted and never answered: the call ends at its deadline, not the pool's timeouts.
    proxy.set_mode(ProxyMode::Blackhole);
    let (result, took) = list_within(&app, Duration::from_millis(800)).await;
    let status = result.unwrap_err();
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled | Code::Unavailable),
        "{status:?}"
    );
    assert!(took < Duration::from_millis(1_500), "a call with an 800 ms deadline took {took:?}");
    app.wait_for_health(tonic_health::ServingStatus::NotServing).await;
    proxy.set_mode(ProxyMode::Forward);
    app.wait_until_serving().await;
}
