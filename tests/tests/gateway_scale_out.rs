//! The real `edge-gateway` binary in front of several replicas of each service,
//! every one a real binary on a loopback address of its own (127.0.0.2, .3, ...),
//! the user replicas sharing one PostgreSQL database and the order replicas
//! another, as a Deployment's pods share theirs; the routes file lists each
//! upstream's replicas.
//!
//! - calls spread: over ~3,000 calls through the gateway, each replica of each
//!   upstream answers between a quarter and 42% of its upstream's calls;
//! - drain: a user replica stopped with SIGTERM under load costs no call (its
//!   calls in flight finish, the gateway's connection to it receives GOAWAY and
//!   the next calls go elsewhere, a refused connection afterwards sets it aside);
//! - identity: an endpoint presenting another service's certificate, listed among
//!   the user service's, is refused by the gateway and answers nothing, at no cost.
//!
//! Every count comes from the servers' own `/metrics` (the harness's RPC duration
//! histogram, per method) and from the gateway's answers to the test.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{DevCerts, Server, eventually, free_addr, free_port_on, loopback, one_item_order, run_id};
use suite_proto::suite::order::v1::order_service_client::OrderServiceClient;
use suite_proto::suite::user::v1 as user_pb;
use suite_proto::suite::user::v1::user_service_client::UserServiceClient;
use suite_testkit::TestDatabase;
use suite_tests::bench::metrics::{ServerCounters, scrape, sum};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Calls the load keeps in flight at once, over one connection to the gateway.
const CONCURRENCY: usize = 16;
/// Calls in flight at once in the drain test.
const DRAIN_CONCURRENCY: usize = 128;
/// How long one call may take before the test counts it failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on every wait for a condition: generous, since seven debug binaries
/// share the machine with the rest of the suite; never a measured duration.
const PATIENCE: Duration = Duration::from_secs(20);
const USER_SERVICE: &str = "suite.user.v1.UserService";
const ORDER_SERVICE: &str = "suite.order.v1.OrderService";

/// `ips` on `port` as a routes file's `address`: "host:port,host:port,...".
fn address_list(ips: &[Ipv4Addr], port: u16) -> String {
    ips.iter().map(|ip| format!("{ip}:{port}")).collect::<Vec<_>>().join(",")
}

/// Calls of `method` (of `service`) the server behind `admin` has answered, by its own `/metrics`.
async fn calls_answered(admin: SocketAddr, service: &str, method: &str) -> u64 {
    let text = scrape(admin).await.unwrap();
    sum(
        &text,
        "rpc_server_call_duration_seconds_count",
        &[("rpc_service", service), ("rpc_method", method)],
    )
    .unwrap()
}

async fn calls_answered_by(replicas: &[Server], service: &str, method: &str) -> Vec<u64> {
    let mut counts = Vec::with_capacity(replicas.len());
    for replica in replicas {
        counts.push(calls_answered(replica.admin, service, method).await);
    }
    counts
}

/// Replicas of `name` on `ips`, all on `port`, sharing `database_url`, started at
/// once with `extra` flags; each keeps its log under a directory of its own in `data`.
async fn start_replicas(
    name: &'static str,
    ips: &[Ipv4Addr],
    port: u16,
    certs: &Arc<DevCerts>,
    data: &Path,
    database_url: &str,
    extra: &[String],
) -> Vec<Server> {
    let starts: Vec<_> = ips
        .iter()
        .map(|ip| {
            let (certs, database_url, extra) = (certs.clone(), database_url.to_owned(), extra.to_vec());
            let dir = data.join(format!("{name}-{ip}"));
            std::fs::create_dir_all(&dir).unwrap();
            let grpc = SocketAddr::from((*ip, port));
            tokio::spawn(async move {
                let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
                Server::start_service_on(grpc, name, certs, &dir, Some(&database_url), &extra).await
            })
        })
        .collect();
    let mut replicas = Vec::with_capacity(starts.len());
    for start in starts {
        replicas.push(start.await.unwrap());
    }
    replicas
}

/// The gateway binary with a routes file listing `users` and `orders` (each a
/// routes file `address`), its per-subject rate limit out of the way of the load.
async fn start_gateway(certs: &Arc<DevCerts>, data: &Path, users: &str, orders: &str) -> Server {
    let dir = data.join("edge-gateway");
    std::fs::create_dir_all(&dir).unwrap();
    let routes = dir.join("scale-out-routes.toml");
    std::fs::write(
        &routes,
        format!(
            "[[upstreams]]\nname = \"user-service\"\naddress = \"{users}\"\nservices = [\"{USER_SERVICE}\"]\n\n\
             [[upstreams]]\nname = \"order-service\"\naddress = \"{orders}\"\nservices = [\"{ORDER_SERVICE}\"]\n"
        ),
    )
    .unwrap();
    let (grpc, admin) = (free_addr(), free_addr());
    // The harness writes a routes file for one address per upstream; this one replaces it.
    let placeholder = (free_addr(), free_addr());
    let mut command = Server::gateway_command(grpc, admin, certs, &dir, placeholder, "warn");
    command
        .env("GATEWAY_ROUTES", &routes)
        .env("RATE_LIMIT_PER_SECOND", "1000000")
        .env("RATE_LIMIT_BURST", "1000000")
        // The load is one admin token's: its calls in flight are not capped here.
        .env("MAX_IN_FLIGHT_PER_SUBJECT", "1000000")
        .stdout(std::fs::File::create(dir.join("edge-gateway.log")).unwrap());
    Server::spawn("edge-gateway", command, grpc, admin, certs.clone()).await
}

/// A client's channel to the gateway: server-authenticated TLS (the dev listener
/// certificate names localhost), no client certificate.
async fn gateway_channel(gateway: &Server) -> Channel {
    let ca = std::fs::read(gateway.certs.path("ca.pem")).unwrap();
    Endpoint::from_shared(format!("https://127.0.0.1:{}", gateway.grpc.port()))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// `message` with `authorization: Bearer <token>`.
fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// A user of the suite: its id and its own token.
#[derive(Clone)]
struct User {
    id: String,
    token: String,
}

/// `count` users created through the gateway by an admin, each with a token of its own.
async fn create_users(channel: &Channel, certs: &DevCerts, admin_token: &str, count: usize) -> Vec<User> {
    let mut client = UserServiceClient::new(channel.clone());
    let mut users = Vec::with_capacity(count);
    for index in 0..count {
        let user = client
            .create_user(with_token(
                user_pb::CreateUserRequest {
                    email: format!("gateway-scale-{index}-{}@example.com", std::process::id()),
                    display_name: format!("Gateway Scale {index}"),
                },
                admin_token,
            ))
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        let token = certs.dev_token(&user.id, "");
        users.push(User { id: user.id, token });
    }
    users
}

/// What the load sends.
#[derive(Clone)]
struct Mix {
    admin_token: String,
    users: Arc<[User]>,
    /// Every `order_every`-th call is a CreateOrder (with the user's own token);
    /// the others are GetUser (with the admin's). `None`: GetUser only.
    order_every: Option<u64>,
}

impl Mix {
    fn is_order(&self, n: u64) -> bool {
        self.order_every.is_some_and(|every| n % every == every - 1)
    }

    /// How many of the first `total` calls are CreateOrder.
    fn orders_among(&self, total: u64) -> u64 {
        self.order_every.map_or(0, |every| total / every)
    }
}

/// Calls through the gateway from `CONCURRENCY` tasks over one connection to it,
/// until `limit` calls were made, or until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    succeeded: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(channel: &Channel, mix: Mix, concurrency: usize, limit: Option<u64>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicU64::new(0));
        let succeeded = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let run = run_id();
        let tasks = (0..concurrency)
            .map(|_| {
                let mut users = UserServiceClient::new(channel.clone());
                let mut orders = OrderServiceClient::new(channel.clone());
                let (stop, started, succeeded, failures, mix, run) = (
                    stop.clone(),
                    started.clone(),
                    succeeded.clone(),
                    failures.clone(),
                    mix.clone(),
                    run.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let n = started.fetch_add(1, Ordering::Relaxed);
                        if limit.is_some_and(|limit| n >= limit) {
                            break;
                        }
                        let user = &mix.users[usize::try_from(n).unwrap() % mix.users.len()];
                        let (what, outcome) = if mix.is_order(n) {
                            let request = with_token(one_item_order(&user.id, &format!("{run}-{n}")), &user.token);
                            (
                                "CreateOrder",
                                tokio::time::timeout(CALL_TIMEOUT, orders.create_order(request))
                                    .await
                                    .map(|reply| reply.map(drop)),
                            )
                        } else {
                            let request = with_token(user_pb::GetUserRequest { id: user.id.clone() }, &mix.admin_token);
                            (
                                "GetUser",
                                tokio::time::timeout(CALL_TIMEOUT, users.get_user(request))
                                    .await
                                    .map(|reply| reply.map(drop)),
                            )
                        };
                        match outcome {
                            Ok(Ok(())) => {
                                succeeded.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(Err(status)) => failures.lock().unwrap().push(format!("call {n} ({what}): {status:?}")),
                            Err(_) => failures
                                .lock()
                                .unwrap()
                                .push(format!("call {n} ({what}): no answer within {CALL_TIMEOUT:?}")),
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            succeeded,
            failures,
            tasks,
        }
    }

    fn succeeded(&self) -> u64 {
        self.succeeded.load(Ordering::Relaxed)
    }

    /// Waits until `count` calls have succeeded in all, failing the test at once if any call failed.
    async fn wait_for_successes(&self, what: &str, count: u64) {
        eventually(what, PATIENCE, || async {
            self.assert_no_failure(what);
            self.succeeded() >= count
        })
        .await;
    }

    fn assert_no_failure(&self, when: &str) {
        // Copied out, so that the failing assertion does not poison the lock the tasks use.
        let failures = self.failures.lock().unwrap().clone();
        assert!(
            failures.is_empty(),
            "{} calls failed ({when}; {} succeeded); the first: {:#?}",
            failures.len(),
            self.succeeded(),
            &failures[..failures.len().min(5)]
        );
    }

    /// Waits for the calls under way (all of them, for a load with a limit), stopping
    /// the load first if `stop`; returns how many succeeded and fails the test if any failed.
    async fn finish(mut self, stop: bool) -> u64 {
        if stop {
            self.stop.store(true, Ordering::Relaxed);
        }
        for task in self.tasks.drain(..) {
            task.await.unwrap();
        }
        self.assert_no_failure("under load");
        self.succeeded()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Each replica's share of the calls it answered between `before` and `after`
/// (per replica counts), checked to lie between 25% and 42%; returns the total.
fn assert_each_serves_its_share(what: &str, before: &[u64], after: &[u64]) -> u64 {
    let served: Vec<u64> = after.iter().zip(before).map(|(after, before)| after - before).collect();
    let total: u64 = served.iter().sum();
    for (replica, count) in served.iter().enumerate() {
        // Integer percent bounds: 25% <= count/total <= 42%.
        assert!(
            count * 100 >= total * 25 && count * 100 <= total * 42,
            "{what}: replica {replica} answered {count} of {total} ({served:?}); a third each is the ideal"
        );
    }
    total
}

/// Three user replicas and three order replicas (each order replica calling the
/// user replicas), the gateway listing each upstream's three addresses: over
/// ~3,000 calls through the gateway (GetUser, and every fifth a CreateOrder),
/// each replica answers between 25% and 42% of its upstream's calls. (A third
/// each is the ideal; the gateway's power of two choices is random per call.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_through_the_gateway_spread_over_every_replica_of_each_upstream() {
    const CALLS: u64 = 3_000;
    let Some(users_db) = TestDatabase::create().await else { return };
    let Some(orders_db) = TestDatabase::create().await else { return };
    let certs = DevCerts::issue();
    let data = tempfile::tempdir().unwrap();
    let ips = [loopback(2), loopback(3), loopback(4)];
    let (user_port, order_port) = (free_port_on(&ips), free_port_on(&ips));
    let user_addresses = address_list(&ips, user_port);
    let order_addresses = address_list(&ips, order_port);
    let users_start = start_replicas("user-service", &ips, user_port, &certs, data.path(), &users_db.url, &[]);
    let order_flags = ["--user-service-addr".to_owned(), user_addresses.clone()];
    let orders_start = start_replicas("order-service", &ips, order_port, &certs, data.path(), &orders_db.url, &order_flags);
    let gateway_start = start_gateway(&certs, data.path(), &user_addresses, &order_addresses);
    let (user_replicas, order_replicas, gateway) = tokio::join!(users_start, orders_start, gateway_start);

    let channel = gateway_channel(&gateway).await;
    let admin_token = certs.dev_token("operator", "admin");
    let users = create_users(&channel, &certs, &admin_token, 6).await;
    let gets_before = calls_answered_by(&user_replicas, USER_SERVICE, "GetUser").await;
    let creates_before = calls_answered_by(&order_replicas, ORDER_SERVICE, "CreateOrder").await;

    let mix = Mix {
        admin_token,
        users: users.into(),
        order_every: Some(5),
    };
    let load = Load::start(&channel, mix.clone(), CONCURRENCY, Some(CALLS));
    assert_eq!(load.finish(false).await, CALLS);

    // Every CreateOrder also made the order service ask the user service (its own
    // balancing over the same replicas); a server counts a call as its last byte leaves.
    let orders = mix.orders_among(CALLS);
    let gets = CALLS - orders;
    let deadline = Instant::now() + PATIENCE;
    let (gets_after, creates_after) = loop {
        let gets_after = calls_answered_by(&user_replicas, USER_SERVICE, "GetUser").await;
        let creates_after = calls_answered_by(&order_replicas, ORDER_SERVICE, "CreateOrder").await;
        let grown = |after: &[u64], before: &[u64]| after.iter().sum::<u64>() - before.iter().sum::<u64>();
        if grown(&gets_after, &gets_before) >= gets + orders && grown(&creates_after, &creates_before) >= orders {
            break (gets_after, creates_after);
        }
        assert!(
            Instant::now() < deadline,
            "not every call counted by the replicas: {gets_before:?} -> {gets_after:?}, {creates_before:?} -> {creates_after:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let get_total = assert_each_serves_its_share("user-service GetUser", &gets_before, &gets_after);
    let create_total = assert_each_serves_its_share("order-service CreateOrder", &creates_before, &creates_after);
    assert_eq!(create_total, orders, "each CreateOrder answered once: {creates_after:?}");
    assert!(get_total >= gets + orders, "{gets_after:?}");
}

/// Under continuous load through the gateway (GetUser, and CreateOrder whose
/// order replicas call the user replicas too), one user replica is stopped with
/// SIGTERM: no call fails. It drains (its calls in flight finish, new ones go
/// elsewhere) and exits cleanly, and the load goes on over the other two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_replica_stopped_under_load_through_the_gateway_costs_no_call() {
    let Some(users_db) = TestDatabase::create().await else { return };
    let Some(orders_db) = TestDatabase::create().await else { return };
    let certs = DevCerts::issue();
    let data = tempfile::tempdir().unwrap();
    let ips = [loopback(2), loopback(3), loopback(4)];
    let (user_port, order_port) = (free_port_on(&ips), free_port_on(&ips));
    let user_addresses = address_list(&ips, user_port);
    let order_addresses = address_list(&ips, order_port);
    let users_start = start_replicas("user-service", &ips, user_port, &certs, data.path(), &users_db.url, &[]);
    let order_flags = ["--user-service-addr".to_owned(), user_addresses.clone()];
    let orders_start = start_replicas("order-service", &ips, order_port, &certs, data.path(), &orders_db.url, &order_flags);
    let gateway_start = start_gateway(&certs, data.path(), &user_addresses, &order_addresses);
    let (mut user_replicas, _order_replicas, gateway) = tokio::join!(users_start, orders_start, gateway_start);

    let channel = gateway_channel(&gateway).await;
    let admin_token = certs.dev_token("operator", "admin");
    let users = create_users(&channel, &certs, &admin_token, 6).await;
    let mix = Mix {
        admin_token,
        users: users.into(),
        order_every: Some(5),
    };
    // Enough calls at once that the gateway's connection to the replica has
    // streams in flight, and others queued not yet written, when GOAWAY comes.
    let load = Load::start(&channel, mix, DRAIN_CONCURRENCY, None);
    // Every replica is busy with the load before one of them is stopped.
    load.wait_for_successes("load under way", 300).await;
    let stopped = user_replicas.remove(1);
    let served_before_stop = calls_answered(stopped.admin, USER_SERVICE, "GetUser").await;
    assert!(served_before_stop > 0, "the replica stopped was serving");
    stopped.terminate();
    let mut stopped = stopped;
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = stopped.child.try_wait().unwrap() {
            break status;
        }
        load.assert_no_failure("while the replica drained");
        assert!(Instant::now() < deadline, "the stopped replica never exited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "the stopped replica drains and exits cleanly: {status}");

    // It is gone: its address now refuses connections, and the load carries on.
    let others_before = calls_answered_by(&user_replicas, USER_SERVICE, "GetUser").await;
    let after_exit = load.succeeded();
    load.wait_for_successes("calls after the replica exited", after_exit + 600).await;
    let total = load.finish(true).await;
    let others_after = calls_answered_by(&user_replicas, USER_SERVICE, "GetUser").await;
    for (replica, (after, before)) in others_after.iter().zip(&others_before).enumerate() {
        assert!(
            after > before,
            "replica {replica} kept serving: {others_before:?} -> {others_after:?}"
        );
    }
    assert!(total >= after_exit + 600);
}

/// A user-service process presenting the order service's certificate, listed
/// among the user upstream's addresses: the gateway checks the identity on every
/// connection, refuses it (its handshakes fail, no call reaches it) and sends
/// every call to the real replicas; no call fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_presenting_another_identity_is_refused_at_no_cost() {
    const CALLS: u64 = 900;
    let Some(users_db) = TestDatabase::create().await else { return };
    let certs = DevCerts::issue();
    let data = tempfile::tempdir().unwrap();
    let (good, impostor_ip) = ([loopback(2), loopback(3)], loopback(5));
    let port = free_port_on(&[good[0], good[1], impostor_ip]);
    let replicas_start = start_replicas("user-service", &good, port, &certs, data.path(), &users_db.url, &[]);

    // The user service's binary and policy, the order service's certificate.
    let impostor_dir = data.path().join("impostor");
    std::fs::create_dir_all(&impostor_dir).unwrap();
    let (impostor_grpc, impostor_admin) = (SocketAddr::from((impostor_ip, port)), free_addr());
    let mut command = Server::service_command(
        impostor_grpc,
        impostor_admin,
        "user-service",
        &certs,
        &impostor_dir,
        Some(&users_db.url),
    );
    command
        .env("TLS_CERT", certs.path("order-service.pem"))
        .env("TLS_KEY", certs.path("order-service-key.pem"))
        .args(["--log-filter", "warn"]);
    let impostor_log = impostor_dir.join("user-service.log");
    command.stdout(std::fs::File::create(&impostor_log).unwrap());
    let impostor_start = Server::spawn_logging_to(
        "user-service",
        command,
        impostor_grpc,
        impostor_admin,
        certs.clone(),
        Some(impostor_log),
    );

    // The order upstream is never called here.
    let user_addresses = address_list(&[good[0], impostor_ip, good[1]], port);
    let unused = free_addr().to_string();
    let gateway_start = start_gateway(&certs, data.path(), &user_addresses, &unused);
    let (replicas, impostor, gateway) = tokio::join!(replicas_start, impostor_start, gateway_start);

    let channel = gateway_channel(&gateway).await;
    let admin_token = certs.dev_token("operator", "admin");
    let users = create_users(&channel, &certs, &admin_token, 4).await;
    let before = calls_answered_by(&replicas, USER_SERVICE, "GetUser").await;
    let mix = Mix {
        admin_token,
        users: users.into(),
        order_every: None,
    };
    let load = Load::start(&channel, mix, CONCURRENCY, Some(CALLS));
    assert_eq!(load.finish(false).await, CALLS, "no call fails");

    eventually("every call counted by the real replicas", PATIENCE, || async {
        let after = calls_answered_by(&replicas, USER_SERVICE, "GetUser").await;
        after.iter().sum::<u64>() - before.iter().sum::<u64>() >= CALLS
    })
    .await;
    let impostor_text = scrape(impostor.admin).await.unwrap();
    let answered = sum(
        &impostor_text,
        "rpc_server_call_duration_seconds_count",
        &[("rpc_service", USER_SERVICE)],
    )
    .unwrap();
    assert_eq!(answered, 0, "the impostor answered no call:\n{impostor_text}");
    // The gateway did try it (the test is not vacuous), and refused its certificate.
    let handshakes = ServerCounters::parse(&impostor_text).unwrap().handshakes;
    assert_eq!(handshakes.accepted, 0, "{handshakes:?}");
    assert!(handshakes.rejected >= 1, "the gateway tried the impostor: {handshakes:?}");
}
