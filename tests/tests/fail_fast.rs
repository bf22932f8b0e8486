//! Failures surface fast and honestly: the real order-service binary calling real
//! user-service binaries under CreateOrder load, faults injected with signals.
//!
//! - the user service SIGKILLed: the breaker opens within 20 failed calls or
//!   500 ms, every failure is UNAVAILABLE (never INTERNAL), the first call after
//!   the restart succeeds within one probe interval and nothing is refused after;
//! - the user service SIGSTOPped for 10 s: detected within two deadlines, callers
//!   fail fast after that, refusals stop within one probe interval of SIGCONT;
//! - one of three replicas frozen: calls keep succeeding on the other two, none
//!   waits a deadline once the frozen one is ejected, and it serves again once it
//!   thaws;
//! - after each, every OK answer has its row and no failed call left one.
//!
//! Times come from the test's own clock around each call; counts from the
//! answers and from the servers' `/metrics`.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{Call, DevCerts, Load, Server, eventually, free_port_on, get_user_calls, loopback, run_id};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use suite_proto::suite::order::v1 as pb;
use suite_proto::suite::order::v1::order_service_client::OrderServiceClient;
use suite_proto::suite::user::v1::CreateUserRequest;
use suite_proto::suite::user::v1::user_service_client::UserServiceClient;
use suite_testkit::TestDatabase;
use tonic::Code;

/// Calls the load keeps in flight at once.
const CONCURRENCY: usize = 8;
/// The order service's deadline for its call to the user service: the default.
const DEPENDENCY_DEADLINE: Duration = Duration::from_secs(2);
/// The breaker's longest open period in these tests (`--user-service-breaker-open-max-ms`):
/// the longest a probe interval gets.
const OPEN_MAX: Duration = Duration::from_secs(2);
/// Allowance for debug binaries on a machine busy with the rest of the suite;
/// never a measured duration.
const SLACK: Duration = Duration::from_secs(1);
/// What the order service says when its breaker refuses a call.
const REFUSED: &str = "circuit breaker";

/// Whether the order service's breaker refused `call`.
fn refused(call: &Call) -> bool {
    matches!(&call.outcome, Err((_, message)) if message.contains(REFUSED))
}

fn signal(server: &Server, signal: Signal) {
    kill(Pid::from_raw(i32::try_from(server.child.id()).unwrap()), signal).unwrap();
}

/// A user-service replica on `addr`, its log under a directory of its own in `data`.
async fn user_service(addr: SocketAddr, certs: &Arc<DevCerts>, data: &Path, database_url: &str) -> Server {
    let dir = data.join(addr.ip().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    Server::start_service_on(addr, "user-service", certs.clone(), &dir, Some(database_url), &[]).await
}

/// The order service calling the user-service replicas on `ips` at `port`, with
/// the shipped breaker settings but for a shorter longest open period.
async fn order_service(ips: &[Ipv4Addr], port: u16, certs: &Arc<DevCerts>, data: &Path, database_url: &str) -> Server {
    let list = ips.iter().map(|ip| format!("{ip}:{port}")).collect::<Vec<_>>().join(",");
    let open_max = OPEN_MAX.as_millis().to_string();
    Server::start_service(
        "order-service",
        certs.clone(),
        data,
        Some(database_url),
        &["--user-service-addr", &list, "--user-service-breaker-open-max-ms", &open_max],
    )
    .await
}

async fn create_users(replica: &Server, count: usize) -> Vec<String> {
    let mut client = UserServiceClient::new(replica.channel().await);
    let mut ids = Vec::with_capacity(count);
    for index in 0..count {
        let user = client
            .create_user(CreateUserRequest {
                email: format!("fault-{index}-{}@example.com", run_id()),
                display_name: format!("Fault {index}"),
            })
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        ids.push(user.id);
    }
    ids
}

/// Every OK answer has its row, and nothing else is stored for these users:
/// no failed call left an order behind.
async fn assert_rows_match_answers(orders: &Server, users: &[String], calls: &[Call]) {
    let answered: HashSet<&str> = calls.iter().filter_map(|call| call.outcome.as_deref().ok()).collect();
    let mut client = OrderServiceClient::new(orders.channel().await);
    let mut stored = HashSet::new();
    for user in users {
        let mut page_token = String::new();
        loop {
            let page = client
                .list_orders(pb::ListOrdersRequest {
                    user_id: user.clone(),
                    page_size: 1000,
                    page_token,
                })
                .await
                .unwrap()
                .into_inner();
            stored.extend(page.orders.into_iter().map(|order| order.id));
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
    }
    let missing: Vec<_> = answered.iter().filter(|id| !stored.contains(**id)).collect();
    assert!(missing.is_empty(), "OK answers without their row: {missing:?}");
    let extra: Vec<_> = stored.iter().filter(|id| !answered.contains(id.as_str())).collect();
    assert!(extra.is_empty(), "rows no OK answer announced (a failed call left them): {extra:?}");
}

/// No caller ever gets INTERNAL (or any code but `allowed`) for the user service's failure.
fn assert_codes(calls: &[Call], allowed: &[Code]) {
    let wrong: Vec<_> = calls
        .iter()
        .filter(|call| matches!(&call.outcome, Err((code, _)) if !allowed.contains(code)))
        .take(5)
        .collect();
    assert!(wrong.is_empty(), "failures with codes other than {allowed:?}: {wrong:?}");
}

fn summary(calls: &[Call]) -> String {
    let failed = calls.iter().filter(|call| call.failed()).count();
    let refused = calls.iter().filter(|call| refused(call)).count();
    format!("{} calls, {failed} failed, {refused} of them refused by the breaker", calls.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_user_service_is_detected_at_once_and_the_first_answer_after_its_restart_ends_every_refusal() {
    let Some(users_db) = TestDatabase::create().await else { return };
    let Some(orders_db) = TestDatabase::create().await else { return };
    let certs = DevCerts::issue();
    let data = tempfile::tempdir().unwrap();
    let ip = loopback(2);
    let port = free_port_on(&[ip]);
    let addr = SocketAddr::from((ip, port));
    let users_service = user_service(addr, &certs, data.path(), &users_db.url).await;
    let orders = order_service(&[ip], port, &certs, data.path(), &orders_db.url).await;
    let users = create_users(&users_service, 4).await;

    let load = Load::start(orders.channel().await, &users, CONCURRENCY, None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed_at = load.now();
    signal(&users_service, Signal::SIGKILL);
    drop(users_service);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _restarted = user_service(addr, &certs, data.path(), &users_db.url).await;
    let back_at = load.now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = load.finish(true).await;
    eprintln!("{}", summary(&calls));

    assert_codes(&calls, &[Code::Unavailable]);
    let first_refusal = calls.iter().find(|call| refused(call)).expect("the breaker never opened");
    let failed_before: Vec<_> = calls
        .iter()
        .filter(|call| call.failed() && !refused(call) && call.ended <= first_refusal.ended)
        .collect();
    let detected_in = first_refusal.ended.saturating_sub(killed_at);
    eprintln!(
        "detected {detected_in:?} after the kill, {} calls failed before",
        failed_before.len()
    );
    assert!(
        failed_before.len() <= 20 || detected_in <= Duration::from_millis(500),
        "{} calls failed over {detected_in:?} before the breaker opened",
        failed_before.len()
    );

    let first_answer = calls
        .iter()
        .find(|call| call.ended > back_at && call.outcome.is_ok())
        .expect("nothing succeeded after the restart");
    assert!(
        first_answer.ended <= back_at + OPEN_MAX + SLACK,
        "the first success came {:?} after the user service was back",
        first_answer.ended - back_at
    );
    let refused_after: Vec<_> = calls
        .iter()
        .filter(|call| call.started > first_answer.ended && call.failed())
        .take(5)
        .collect();
    assert!(refused_after.is_empty(), "failed after an answered probe: {refused_after:?}");
    assert_rows_match_answers(&orders, &users, &calls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_user_service_is_detected_within_two_deadlines_and_refusals_end_when_it_thaws() {
    let Some(users_db) = TestDatabase::create().await else { return };
    let Some(orders_db) = TestDatabase::create().await else { return };
    let certs = DevCerts::issue();
    let data = tempfile::tempdir().unwrap();
    let ip = loopback(3);
    let port = free_port_on(&[ip]);
    let users_service = user_service(SocketAddr::from((ip, port)), &certs, data.path(), &users_db.url).await;
    let orders = order_service(&[ip], port, &certs, data.path(), &orders_db.url).await;
    let users = create_users(&users_service, 4).await;

    let load = Load::start(orders.channel().await, &users, CONCURRENCY, None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopped_at = load.now();
    signal(&users_service, Signal::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(10)).await;
    signal(&users_service, Signal::SIGCONT);
    let thawed_at = load.now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = load.finish(true).await;
    eprintln!("{}", summary(&calls));

    assert_codes(&calls, &[Code::Unavailable, Code::DeadlineExceeded]);
    let first_refusal = calls.iter().find(|call| refused(call)).expect("the breaker never opened");
    let detected_in = first_refusal.ended.saturating_sub(stopped_at);
    eprintln!("detected {detected_in:?} after SIGSTOP");
    assert!(
        detected_in <= DEPENDENCY_DEADLINE * 2 + SLACK,
        "detected {detected_in:?} after the freeze, more than two deadlines"
    );
    // After detection callers fail fast, but for the probes: one call per open period.
    let failed_after: Vec<_> = calls
        .iter()
        .filter(|call| call.started > first_refusal.ended && call.ended < thawed_at && call.failed())
        .collect();
    let slow: Vec<_> = failed_after
        .iter()
        .filter(|call| call.took() >= Duration::from_millis(500))
        .collect();
    eprintln!(
        "{} failed after detection, {} of them slow (probes)",
        failed_after.len(),
        slow.len()
    );
    assert!(failed_after.len() > 10, "hardly any call after detection: {}", failed_after.len());
    assert!(
        slow.len() <= 5,
        "{} calls after detection waited for the frozen service: {:?}",
        slow.len(),
        &slow[..slow.len().min(5)]
    );
    let last_refusal = calls.iter().rev().find(|call| refused(call)).unwrap();
    assert!(
        last_refusal.ended <= thawed_at + OPEN_MAX + SLACK,
        "still refusing {:?} after SIGCONT",
        last_refusal.ended - thawed_at
    );
    assert!(
        calls.iter().any(|call| call.started > last_refusal.ended && call.outcome.is_ok()),
        "nothing succeeded after the thaw"
    );
    assert_rows_match_answers(&orders, &users, &calls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_frozen_replica_of_three_is_ejected_while_the_others_serve_and_taken_back_when_it_thaws() {
    let Some(users_db) = TestDatabase::create().await else { return };
    let Some(orders_db) = TestDatabase::create().await else { return };
    let certs = DevCerts::issue();
    let data = tempfile::tempdir().unwrap();
    let ips = [loopback(4), loopback(5), loopback(6)];
    let port = free_port_on(&ips);
    let mut replicas = Vec::new();
    for ip in ips {
        replicas.push(user_service(SocketAddr::from((ip, port)), &certs, data.path(), &users_db.url).await);
    }
    let orders = order_service(&ips, port, &certs, data.path(), &orders_db.url).await;
    let users = create_users(&replicas[0], 4).await;

    let load = Load::start(orders.channel().await, &users, CONCURRENCY, None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let frozen = &replicas[1];
    let answered_before = get_user_calls(frozen.admin).await;
    let stopped_at = load.now();
    signal(frozen, Signal::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(6)).await;
    signal(frozen, Signal::SIGCONT);
    let thawed_at = load.now();
    // Beyond the calls that were waiting on it when it froze, which it answers as it thaws.
    let backlog = u64::try_from(CONCURRENCY).unwrap() * 2;
    eventually(
        "the thawed replica answers GetUser calls again",
        Duration::from_secs(20),
        || async { get_user_calls(frozen.admin).await > answered_before + backlog + 20 },
    )
    .await;
    let calls = load.finish(true).await;
    eprintln!("{}", summary(&calls));

    assert!(!calls.iter().any(refused), "the breaker opened for everyone");
    assert_codes(&calls, &[Code::DeadlineExceeded]);
    let failed: Vec<_> = calls.iter().filter(|call| call.failed()).collect();
    assert!(
        failed.len() <= CONCURRENCY + 3,
        "{} calls failed: more than were in flight to the frozen replica before it was ejected",
        failed.len()
    );
    // Ejected once its calls failed: nothing after that waits for it.
    let ejected_at = failed.last().map_or(stopped_at, |call| call.ended);
    let waited: Vec<_> = calls
        .iter()
        .filter(|call| call.started > ejected_at && call.ended < thawed_at && call.took() >= DEPENDENCY_DEADLINE / 2)
        .take(5)
        .collect();
    assert!(waited.is_empty(), "calls waited after the ejection: {waited:?}");
    let served_while_frozen = calls
        .iter()
        .filter(|call| call.started > stopped_at && call.ended < thawed_at && call.outcome.is_ok())
        .count();
    assert!(
        served_while_frozen > 50,
        "only {served_while_frozen} calls succeeded while one replica was frozen"
    );
    assert_rows_match_answers(&orders, &users, &calls).await;
}
