//! Calls spread over every replica: the real order-service binary calling several
//! real user-service binaries (one PostgreSQL database between them, as replicas
//! of one Deployment share theirs), each on a loopback address of its own.
//!
//! - a fixed list of three replicas: each serves its share of the GetUser calls;
//! - a DNS name (a headless Service) answered by a DNS server in the test, the
//!   order service run in a mount namespace whose /etc/resolv.conf names that
//!   server: a replica added to the answer gets calls, one removed from it and
//!   stopped costs no call, and a name server that fails keeps the endpoints;
//! - an endpoint presenting another service's identity is refused, at no cost.
//!
//! Every count comes from the servers' own `/metrics` (the harness's RPC duration
//! histogram, per method) and from the order service's answers to the test.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    DevCerts, Load, Server, eventually, free_addr, free_port_on, get_user_calls, in_mount_namespace, loopback, mount_namespaces_work,
};
use suite_proto::suite::user::v1::CreateUserRequest;
use suite_proto::suite::user::v1::user_service_client::UserServiceClient;
use suite_testkit::{DnsMode, DnsServer, TestDatabase};

/// Calls the load keeps in flight at once.
const CONCURRENCY: usize = 16;
/// Bound on every wait for a condition: generous, since four debug binaries
/// share the machine with the rest of the suite; never a measured duration.
const PATIENCE: Duration = Duration::from_secs(20);
/// The order service's re-resolution period in the DNS test.
const RESOLVE_INTERVAL: Duration = Duration::from_millis(300);
/// What "within one re-resolution period" allows beyond the period: a resolution
/// under way, a new connection's TLS handshake, a debug build on a busy machine.
const SLACK: Duration = Duration::from_secs(5);
/// The log line suite-discovery writes when a resolution fails.
const KEPT_ENDPOINTS: &str = "resolving the upstream failed; keeping the endpoints it had";

async fn get_user_calls_of(replicas: &[&Server]) -> Vec<u64> {
    let mut counts = Vec::with_capacity(replicas.len());
    for replica in replicas {
        counts.push(get_user_calls(replica.admin).await);
    }
    counts
}

/// User-service replicas on `ips`, all on `port`, sharing `database_url`, started at once.
/// Each keeps its log under a directory of its own in `data`.
async fn start_replicas(ips: &[Ipv4Addr], port: u16, certs: &Arc<DevCerts>, data: &Path, database_url: &str) -> Vec<Server> {
    let starts: Vec<_> = ips
        .iter()
        .map(|&ip| {
            let (certs, database_url) = (certs.clone(), database_url.to_owned());
            let dir = data.join(ip.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            tokio::spawn(async move {
                Server::start_service_on(SocketAddr::from((ip, port)), "user-service", certs, &dir, Some(&database_url), &[]).await
            })
        })
        .collect();
    let mut replicas = Vec::with_capacity(starts.len());
    for start in starts {
        replicas.push(start.await.unwrap());
    }
    replicas
}

/// One user created through each of `replicas`: every replica must find all of them
/// (one database), whichever one the order service asks.
async fn create_users(replicas: &[Server]) -> Vec<String> {
    let mut ids = Vec::new();
    for (index, replica) in replicas.iter().enumerate() {
        let user = UserServiceClient::new(replica.channel().await)
            .create_user(CreateUserRequest {
                email: format!("scale-{index}-{}@example.com", std::process::id()),
                display_name: format!("Scale {index}"),
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

/// Waits until every replica in `replicas` has answered at least `more` GetUser calls
/// beyond `since` (their counts at some earlier moment).
async fn wait_until_each_serves(what: &str, replicas: &[&Server], since: &[u64], more: u64) {
    eventually(what, PATIENCE, || async {
        let now = get_user_calls_of(replicas).await;
        now.iter().zip(since).all(|(now, before)| *now >= before + more)
    })
    .await;
}

/// Three replicas named by a fixed list (IP literals): over 3,000 CreateOrder calls,
/// each replica answers between 25% and 42% of the order service's GetUser calls
/// (a third each is the ideal; power of two choices is random per call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_spread_over_three_listed_replicas() {
    let Some(users_db) = TestDatabase::create().await else { return };
    let Some(orders_db) = TestDatabase::create().await else { return };
    let certs = DevCerts::issue();
    let data = tempfile::tempdir().unwrap();
    let ips = [loopback(2), loopback(3), loopback(4)];
    let port = free_port_on(&ips);
    let replicas = start_replicas(&ips, port, &certs, data.path(), &users_db.url).await;
    let list = ips.iter().map(|ip| format!("{ip}:{port}")).collect::<Vec<_>>().join(",");
    let orders = Server::start_service(
        "order-service",
        certs.clone(),
        data.path(),
        Some(&orders_db.url),
        &["--user-service-addr", &list],
    )
    .await;
    let users = create_users(&replicas).await;
    let all: Vec<&Server> = replicas.iter().collect();
    let before = get_user_calls_of(&all).await;

    const CALLS: u64 = 3_060;
    let load = Load::start(orders.channel().await, &users, CONCURRENCY, Some(CALLS));
    let succeeded = load.finish_without_failure(false).await;
    assert_eq!(succeeded, CALLS);

    let served: Vec<u64> = get_user_calls_of(&all)
        .await
        .iter()
        .zip(&before)
        .map(|(after, before)| after - before)
        .collect();
    let total: u64 = served.iter().sum();
    assert!(total >= CALLS, "every CreateOrder asks for its user: {served:?}");
    eprintln!("GetUser calls answered by {ips:?}: {served:?}");
    for (ip, count) in ips.iter().zip(&served) {
        let share = f64::from(u32::try_from(*count).unwrap()) / f64::from(u32::try_from(total).unwrap());
        assert!(
            (0.25..=0.42).contains(&share),
            "the replica on {ip} answered {count} of {total} GetUser calls ({:.1}%): {served:?}",
            share * 100.0
        );
    }
}

/// The order service follows a DNS name, as it follows a headless Service in
/// Kubernetes: the test's DNS server answers for `users.scale.test` and the order
/// service, in a mount namespace of its own, has a resolv.conf naming only that
/// server; it re-resolves every 300 ms. Under continuous load, with no failed call:
/// - the three replicas in the first answer all get calls;
/// - a fourth added to the answer gets calls after the next resolutions;
/// - one removed from the answer and stopped at once with SIGTERM costs no call;
/// - the server answering SERVFAIL, then an empty answer, changes nothing: the last
///   good endpoints keep serving, and the order service logs that it kept them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_service_follows_a_dns_name_as_replicas_come_and_go() {
    if let Err(why) = mount_namespaces_work() {
        assert!(!suite_testkit::in_ci(), "CI=true needs mount namespaces for this test: {why}");
        eprintln!("\n*** SKIPPED: {why}; the DNS discovery test ran nothing ***\n");
        return;
    }
    let Some(users_db) = TestDatabase::create().await else { return };
    let Some(orders_db) = TestDatabase::create().await else { return };
    const NAME: &str = "users.scale.test";
    let dns = DnsServer::start_on_loopback().await.unwrap();
    let certs = DevCerts::issue();
    let data = tempfile::tempdir().unwrap();
    let resolv_conf = data.path().join("resolv.conf");
    std::fs::write(&resolv_conf, dns.resolv_conf()).unwrap();

    // Three replicas in the first answer; a fourth started now, answered for later.
    let first = [loopback(2), loopback(3), loopback(4)];
    let fourth = loopback(6);
    let port = free_port_on(&[first[0], first[1], first[2], fourth]);
    let mut replicas = start_replicas(&[first[0], first[1], first[2], fourth], port, &certs, data.path(), &users_db.url).await;
    dns.set(NAME, &first);

    let (grpc, admin) = (free_addr(), free_addr());
    let log = data.path().join("order-service.log");
    let mut command = Server::service_command(grpc, admin, "order-service", &certs, data.path(), Some(&orders_db.url));
    command
        .args(["--log-filter", "warn,suite_discovery=info"])
        .env("USER_SERVICE_ADDR", format!("{NAME}:{port}"))
        .env("RESOLVE_INTERVAL_MS", RESOLVE_INTERVAL.as_millis().to_string());
    let mut command = in_mount_namespace(&command, &resolv_conf);
    command
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::inherit());
    let orders = Server::spawn("order-service", command, grpc, admin, certs.clone()).await;
    let order_log = || std::fs::read_to_string(&log).unwrap_or_default();

    let users = create_users(&replicas[..3]).await;
    let load = Load::start(orders.channel().await, &users, CONCURRENCY, None);

    // The name's three addresses all serve.
    let (first_replicas, fourth_replica) = replicas.split_at_mut(3);
    let fourth_replica = &fourth_replica[0];
    let first_three: Vec<&Server> = first_replicas.iter().collect();
    wait_until_each_serves("each replica in the DNS answer serves calls", &first_three, &[0, 0, 0], 20).await;
    assert_eq!(
        get_user_calls(fourth_replica.admin).await,
        0,
        "a replica not in the answer gets no call"
    );
    load.assert_no_failure("with three replicas");

    // A fourth replica added to the answer: it serves once the name is resolved again.
    let mut four = first.to_vec();
    four.push(fourth);
    dns.set(NAME, &four);
    let added = Instant::now();
    // Every query counted from now on was answered with the new table.
    let queries = dns.queries();
    eventually(
        "the added replica serves calls within one re-resolution period (plus slack)",
        RESOLVE_INTERVAL + SLACK,
        || async { get_user_calls(fourth_replica.admin).await > 0 },
    )
    .await;
    assert!(dns.queries() > queries, "the added replica was found by a new resolution");
    eprintln!(
        "the added replica served its first call {:?} after it entered the answer (re-resolution every {RESOLVE_INTERVAL:?})",
        added.elapsed()
    );
    load.assert_no_failure("after a replica was added");

    // The second replica leaves the answer and is stopped at once, as a pod is.
    let remaining_ips = [first[0], first[2], fourth];
    dns.set(NAME, &remaining_ips);
    let leaving = &mut first_replicas[1];
    leaving.terminate();
    let stopped = tokio::task::block_in_place(|| leaving.child.wait()).unwrap();
    assert!(stopped.success(), "the removed replica drained and exited cleanly: {stopped}");
    let remaining: Vec<&Server> = vec![&first_replicas[0], &first_replicas[2], fourth_replica];
    let counts = get_user_calls_of(&remaining).await;
    wait_until_each_serves("the remaining replicas serve calls after one left", &remaining, &counts, 20).await;
    load.assert_no_failure("while a replica left and stopped");
    // Discovery dropped it (rather than the pool merely setting it aside), and said so.
    let without_removed = format!(
        "{{{}:{port}, {}:{port}, {}:{port}}}",
        remaining_ips[0], remaining_ips[1], remaining_ips[2]
    );
    eventually(
        "the order service logs the endpoints without the removed replica",
        PATIENCE,
        || async {
            order_log()
                .lines()
                .any(|line| line.contains("upstream endpoints changed") && line.contains(&without_removed))
        },
    )
    .await;
    assert!(
        !order_log().contains(KEPT_ENDPOINTS),
        "no resolution failed while the name server answered:\n{}",
        order_log()
    );

    // The name server fails: the endpoints found last keep serving, and the order service says so.
    dns.set_mode(DnsMode::ServFail);
    let queries = dns.queries();
    eventually("the order service meets the failing name server", PATIENCE, || async {
        dns.queries() >= queries + 3
    })
    .await;
    eventually("the order service logs that it kept its three endpoints", PATIENCE, || async {
        order_log()
            .lines()
            .any(|line| line.contains(KEPT_ENDPOINTS) && line.contains(r#""kept_endpoints":3"#))
    })
    .await;
    let counts = get_user_calls_of(&remaining).await;
    wait_until_each_serves("every last known replica serves while DNS fails", &remaining, &counts, 20).await;
    load.assert_no_failure("while the name server answered SERVFAIL");

    // The name server answers with no address at all: the same.
    dns.set(NAME, &[]);
    dns.set_mode(DnsMode::Answer);
    let queries = dns.queries();
    eventually("the order service gets the empty answer", PATIENCE, || async {
        dns.queries() >= queries + 3
    })
    .await;
    let counts = get_user_calls_of(&remaining).await;
    wait_until_each_serves("every last known replica serves after an empty answer", &remaining, &counts, 20).await;

    let succeeded = load.finish_without_failure(true).await;
    let kept_line = order_log()
        .lines()
        .find(|line| line.contains(KEPT_ENDPOINTS))
        .map(str::to_owned)
        .unwrap();
    let kept: serde_json::Value = serde_json::from_str(&kept_line).unwrap();
    assert_eq!(kept["level"], "WARN", "{kept_line}");
    assert_eq!(kept["upstream"], "user-service", "{kept_line}");
    assert!(kept["problem"].as_str().unwrap().contains(NAME), "{kept_line}");
    eprintln!("{succeeded} CreateOrder calls, none failed");
}

/// Among the listed endpoints, one serves with another service's certificate
/// (the order service's dev certificate: a valid chain, the wrong identity). The
/// order service refuses it: it answers no call, and no CreateOrder fails,
/// each attempt that met it going to a true replica instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_with_the_wrong_identity_is_refused_at_no_cost() {
    let Some(users_db) = TestDatabase::create().await else { return };
    let Some(orders_db) = TestDatabase::create().await else { return };
    let certs = DevCerts::issue();
    let data = tempfile::tempdir().unwrap();
    let good = [loopback(2), loopback(3), loopback(4)];
    let impostor_ip = loopback(5);
    let port = free_port_on(&[good[0], good[1], good[2], impostor_ip]);
    let replicas = start_replicas(&good, port, &certs, data.path(), &users_db.url).await;

    // A real user service on the same database, but presenting the order service's certificate.
    let (grpc, admin) = (SocketAddr::from((impostor_ip, port)), free_addr());
    let impostor_dir = data.path().join("impostor");
    std::fs::create_dir_all(&impostor_dir).unwrap();
    let mut command = Server::service_command(grpc, admin, "user-service", &certs, &impostor_dir, Some(&users_db.url));
    command
        .env("TLS_CERT", certs.path("order-service.pem"))
        .env("TLS_KEY", certs.path("order-service-key.pem"))
        .args(["--log-filter", "warn"])
        .stdout(std::fs::File::create(impostor_dir.join("user-service.log")).unwrap());
    let impostor = Server::spawn("user-service", command, grpc, admin, certs.clone()).await;

    let list = [good[0], impostor_ip, good[1], good[2]]
        .iter()
        .map(|ip| format!("{ip}:{port}"))
        .collect::<Vec<_>>()
        .join(",");
    let orders = Server::start_service(
        "order-service",
        certs.clone(),
        data.path(),
        Some(&orders_db.url),
        &["--user-service-addr", &list],
    )
    .await;
    let users = create_users(&replicas).await;
    let load = Load::start(orders.channel().await, &users, CONCURRENCY, None);
    let all: Vec<&Server> = replicas.iter().collect();
    // Long enough for the impostor to be tried more than once (it is set aside for
    // 0.5 s after a refusal, then for 1 s, 2 s ...), each try a refused handshake.
    eventually("the order service tries the impostor more than once", PATIENCE, || async {
        let handshakes = suite_tests::bench::metrics::ServerCounters::scrape(impostor.admin)
            .await
            .unwrap()
            .handshakes;
        handshakes.rejected >= 2
    })
    .await;
    wait_until_each_serves("every true replica serves", &all, &[0, 0, 0], 100).await;
    let succeeded = load.finish_without_failure(true).await;

    let impostor_counters = suite_tests::bench::metrics::ServerCounters::scrape(impostor.admin).await.unwrap();
    assert_eq!(
        impostor_counters.handshakes.accepted, 0,
        "no TLS session with the impostor was completed"
    );
    assert_eq!(get_user_calls(impostor.admin).await, 0, "the impostor answered no call");
    let served: u64 = get_user_calls_of(&all).await.iter().sum();
    assert!(
        served >= succeeded,
        "the true replicas answered every call: {served} for {succeeded}"
    );
}
