//! The client stack against a real gRPC server whose behaviour each test
//! scripts: a `grpc.health.v1.Health` implementation that fails, stalls or
//! records what it received.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use suite_grpc::client::{BreakerConfig, BreakerState, ClientMetrics, Deadline, Dependency, DependencyConfig, Idempotency};
use tokio::sync::{Mutex, Semaphore};
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// How the scripted server answers.
#[derive(Default)]
struct Script {
    calls: AtomicU64,
    failing: AtomicBool,
    /// When set, each call waits for a permit before answering.
    gate: Option<Arc<Semaphore>>,
    delay: Option<Duration>,
    timeouts_seen: Mutex<Vec<String>>,
}

#[derive(Clone)]
struct Scripted(Arc<Script>);

#[tonic::async_trait]
impl Health for Scripted {
    async fn check(&self, request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        let script = &self.0;
        script.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(timeout) = request.metadata().get("grpc-timeout") {
            script.timeouts_seen.lock().await.push(timeout.to_str().unwrap().to_owned());
        }
        if let Some(gate) = &script.gate {
            gate.acquire().await.unwrap().forget();
        }
        if let Some(delay) = script.delay {
            tokio::time::sleep(delay).await;
        }
        if script.failing.load(Ordering::SeqCst) {
            return Err(Status::unavailable("scripted outage"));
        }
        Ok(Response::new(HealthCheckResponse { status: 1 }))
    }

    type WatchStream = Pin<Box<dyn futures::Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(&self, _request: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("not scripted"))
    }
}

async fn serve(script: Script) -> (SocketAddr, Arc<Script>) {
    let script = Arc::new(script);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = HealthServer::new(Scripted(script.clone()));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, script)
}

fn dependency(addr: SocketAddr, config: DependencyConfig) -> (Dependency, Registry) {
    let mut registry = Registry::default();
    let metrics = ClientMetrics::register(&mut registry);
    let pool = suite_grpc::client::channel_pool(
        "scripted",
        &addr.into(),
        Duration::from_secs(30),
        suite_grpc::client::Dial::Plaintext,
        &metrics,
    )
    .unwrap();
    (Dependency::new("scripted", pool, config, &metrics), registry)
}

/// A breaker that never opens, for tests about something else.
fn lenient_breaker() -> BreakerConfig {
    BreakerConfig {
        min_requests: u64::MAX,
        consecutive_failures: u32::MAX,
        ..DependencyConfig::default().breaker
    }
}

async fn check(dependency: &Dependency, deadline: Deadline, idempotency: Idempotency) -> Result<(), Status> {
    dependency
        .call(deadline, idempotency, |attempt| async move {
            let mut client = HealthClient::new(attempt.channel.clone());
            client.check(attempt.request(HealthCheckRequest::default())).await.map(|_| ())
        })
        .await
}

fn seconds(n: u64) -> Deadline {
    Deadline::after(Duration::from_secs(n))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stay_within_the_budget_against_a_dependency_that_always_fails() {
    let (addr, script) = serve(Script {
        failing: AtomicBool::new(true),
        ..Script::default()
    })
    .await;
    let config = DependencyConfig {
        max_attempts: 3,
        backoff_base: Duration::from_millis(1),
        backoff_max: Duration::from_millis(2),
        retry_budget_ratio: 0.1,
        retry_budget_floor: 5,
        breaker: lenient_breaker(),
        ..DependencyConfig::default()
    };
    let (dependency, _registry) = dependency(addr, config);
    let calls = 200;
    for _ in 0..calls {
        let status = check(&dependency, seconds(5), Idempotency::Idempotent).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
    }
    let attempts = script.calls.load(Ordering::SeqCst);
    // Without the budget, three attempts per call would be 600.
    let bound = calls + calls / 10 + 5;
    assert!(attempts > calls, "no call was retried at all ({attempts})");
    assert!(
        attempts <= bound,
        "{attempts} attempts for {calls} calls exceeds the budget's bound {bound}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_never_retried() {
    let (addr, script) = serve(Script {
        failing: AtomicBool::new(true),
        ..Script::default()
    })
    .await;
    let config = DependencyConfig {
        breaker: lenient_breaker(),
        ..DependencyConfig::default()
    };
    let (dependency, _registry) = dependency(addr, config);
    for _ in 0..10 {
        check(&dependency, seconds(5), Idempotency::NotIdempotent).await.unwrap_err();
    }
    assert_eq!(script.calls.load(Ordering::SeqCst), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_fails_fast_then_closes_after_recovery() {
    let (addr, script) = serve(Script {
        failing: AtomicBool::new(true),
        ..Script::default()
    })
    .await;
    let config = DependencyConfig {
        max_attempts: 1,
        breaker: BreakerConfig {
            open_for: Duration::from_millis(300),
            ..DependencyConfig::default().breaker
        },
        ..DependencyConfig::default()
    };
    let (dependency, registry) = dependency(addr, config);
    for _ in 0..5 {
        check(&dependency, seconds(5), Idempotency::Idempotent).await.unwrap_err();
    }
    assert_eq!(dependency.circuit_state(), BreakerState::Open);
    let reached = script.calls.load(Ordering::SeqCst);

    let started = Instant::now();
    for _ in 0..100 {
        let status = check(&dependency, seconds(5), Idempotency::Idempotent).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("circuit breaker is open"), "{status:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "failing fast took {:?}",
        started.elapsed()
    );
    assert_eq!(script.calls.load(Ordering::SeqCst), reached, "an open breaker sends nothing");

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains(r#"client_circuit_state{dependency="scripted"} 1"#), "{text}");
    assert!(
        text.contains(r#"client_rejected_calls_total{dependency="scripted",reason="circuit_open"} 100"#),
        "{text}"
    );

    script.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(350)).await;
    check(&dependency, seconds(5), Idempotency::Idempotent).await.unwrap();
    assert_eq!(
        dependency.circuit_state(),
        BreakerState::Closed,
        "the first answered probe closes it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_retry_returns_what_the_dependency_said() {
    let (addr, _script) = serve(Script {
        failing: AtomicBool::new(true),
        ..Script::default()
    })
    .await;
    let config = DependencyConfig {
        max_attempts: 3,
        backoff_base: Duration::from_millis(1),
        breaker: BreakerConfig {
            consecutive_failures: 1,
            ..lenient_breaker()
        },
        ..DependencyConfig::default()
    };
    let (dependency, _registry) = dependency(addr, config);
    let status = check(&dependency, seconds(5), Idempotency::Idempotent).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().starts_with("scripted outage (not retried:") && status.message().contains("circuit breaker is open"),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_dependency_opens_the_breaker_but_short_deadlines_of_callers_do_not() {
    let (addr, script) = serve(Script {
        delay: Some(Duration::from_secs(30)),
        ..Script::default()
    })
    .await;
    let config = DependencyConfig {
        max_attempts: 1,
        breaker: BreakerConfig {
            slow_call: Duration::from_millis(200),
            ..DependencyConfig::default().breaker
        },
        ..DependencyConfig::default()
    };
    let (dependency, _registry) = dependency(addr, config);
    // Callers who give it less than a healthy call may take: their deadlines are their own.
    for _ in 0..50 {
        let status = check(&dependency, Deadline::after(Duration::from_millis(20)), Idempotency::Idempotent)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded);
    }
    assert_eq!(dependency.circuit_state(), BreakerState::Closed);
    // Callers who gave it enough: five in a row, all at once, open it.
    let callers: Vec<_> = (0..5)
        .map(|_| {
            let dependency = dependency.clone();
            tokio::spawn(async move { check(&dependency, Deadline::after(Duration::from_millis(300)), Idempotency::Idempotent).await })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap().unwrap_err().code(), Code::DeadlineExceeded);
    }
    assert_eq!(dependency.circuit_state(), BreakerState::Open);
    let reached = script.calls.load(Ordering::SeqCst);
    let started = Instant::now();
    let status = check(&dependency, seconds(5), Idempotency::Idempotent).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(started.elapsed() < Duration::from_millis(100), "{:?}", started.elapsed());
    assert_eq!(script.calls.load(Ordering::SeqCst), reached);
}

/// A server that takes each connection and, once the client has sent
/// something (the call is on its way), resets it: a process dying mid-call.
async fn resetting_server() -> (SocketAddr, Arc<AtomicU64>) {
    use tokio::io::AsyncReadExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicU64::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let mut received = 0;
                // The preface and SETTINGS (33 bytes with tonic's) and then the call's HEADERS.
                while received < 60 {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => received += read,
                    }
                }
                socket.set_zero_linger().unwrap();
                drop(socket);
            });
        }
    });
    (addr, connections)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_mid_call_is_unavailable_and_retried_only_when_idempotent() {
    let (addr, connections) = resetting_server().await;
    let config = DependencyConfig {
        max_attempts: 3,
        backoff_base: Duration::from_millis(1),
        breaker: lenient_breaker(),
        ..DependencyConfig::default()
    };
    let (dependency, _registry) = dependency(addr, config);
    let status = check(&dependency, seconds(5), Idempotency::Idempotent).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(connections.load(Ordering::SeqCst) >= 2, "the idempotent call was not retried");

    let before = connections.load(Ordering::SeqCst);
    let status = check(&dependency, seconds(5), Idempotency::NotIdempotent).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        connections.load(Ordering::SeqCst),
        before + 1,
        "a call that may have been processed is not sent twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_bulkhead_fails_extra_calls_at_once() {
    let gate = Arc::new(Semaphore::new(0));
    let (addr, script) = serve(Script {
        gate: Some(gate.clone()),
        ..Script::default()
    })
    .await;
    let (dependency, _registry) = dependency(
        addr,
        DependencyConfig {
            max_concurrent_calls: 4,
            ..DependencyConfig::default()
        },
    );
    let held: Vec<_> = (0..4)
        .map(|_| {
            let dependency = dependency.clone();
            tokio::spawn(async move { check(&dependency, seconds(10), Idempotency::Idempotent).await })
        })
        .collect();
    while script.calls.load(Ordering::SeqCst) < 4 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    for _ in 0..1_000 {
        let status = check(&dependency, seconds(10), Idempotency::NotIdempotent).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "rejections took {:?}",
        started.elapsed()
    );
    assert_eq!(
        script.calls.load(Ordering::SeqCst),
        4,
        "nothing beyond the bulkhead reached the server"
    );
    gate.add_permits(4);
    for call in held {
        call.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_dependency_costs_the_callers_deadline_and_sees_a_shorter_one() {
    let (addr, script) = serve(Script {
        delay: Some(Duration::from_secs(5)),
        ..Script::default()
    })
    .await;
    let (dependency, _registry) = dependency(addr, DependencyConfig::default());
    let started = Instant::now();
    let status = check(&dependency, Deadline::after(Duration::from_millis(300)), Idempotency::Idempotent)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        took < Duration::from_secs(2),
        "the caller waited {took:?}, far past its 300 ms deadline"
    );
    let seen = script.timeouts_seen.lock().await.clone();
    assert_eq!(seen.len(), 1, "a timed-out attempt is not retried: {seen:?}");
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert("grpc-timeout", seen[0].parse().unwrap());
    let sent = Deadline::of_request(&metadata, Duration::from_secs(60)).remaining();
    assert!(
        sent < Duration::from_millis(300),
        "the outgoing grpc-timeout {} is not below the caller's 300 ms",
        seen[0]
    );
}
