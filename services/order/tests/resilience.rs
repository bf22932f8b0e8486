//! How the order service behaves when the user service misbehaves: stopped
//! (the breaker opens and CreateOrder fails fast while reads keep working, then
//! it recovers by itself), slow (the caller's deadline holds and the outgoing
//! call carries less of it), and across mutual TLS with identities checked.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Suite, TestDb, fast_user_service_args, item, mtls, order_request, start_order_service, start_user_service};
use suite_grpc::SecurityArgs;
use suite_proto::suite::order::v1 as pb;
use suite_proto::suite::order::v1::order_service_client::OrderServiceClient;
use suite_proto::suite::user::v1 as user_pb;
use suite_proto::suite::user::v1::user_service_server::{UserService, UserServiceServer};
use suite_testkit::TestPki;
use tokio::sync::Mutex;
use tonic::{Code, Request, Response, Status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_user_service_down_the_breaker_fails_creates_fast_and_reads_keep_working() {
    let db = TestDb::sqlite();
    let mut suite = Suite::start(&db).await;
    let user = suite.create_user("outage@example.com").await;
    let before = suite.create(order_request(&user, "before", vec![item("A", 1, 10)])).await.unwrap();

    let user_addr = suite.user_service.as_ref().unwrap().grpc_addr;
    suite.user_service.take().unwrap().stop().await;

    // Failures until the breaker opens (five calls in the test settings) ...
    for index in 0..5 {
        let status = suite
            .create(order_request(&user, &format!("down-{index}"), vec![item("A", 1, 10)]))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    // ... then CreateOrder fails in milliseconds, not at its deadline.
    let mut request = Request::new(order_request(&user, "fast-fail", vec![item("A", 1, 10)]));
    request.set_timeout(Duration::from_secs(5));
    let started = Instant::now();
    let status = suite.orders.clone().create_order(request).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("circuit breaker"), "{status:?}");
    assert!(took < Duration::from_millis(500), "failing fast took {took:?}");
    let metrics = suite.order_service.metrics().await;
    assert!(
        metrics.contains(r#"client_circuit_state{dependency="user-service"} 1"#),
        "{metrics}"
    );

    // Reads do not need the user service; neither does a retry of a create that succeeded.
    assert_eq!(suite.get(&before.id).await.unwrap(), before);
    let listed = suite
        .orders
        .clone()
        .list_orders(pb::ListOrdersRequest {
            user_id: user.clone(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.orders.len(), 1, "failed creates stored nothing");
    let replay = suite.create(order_request(&user, "before", vec![item("A", 1, 10)])).await.unwrap();
    assert_eq!(replay.id, before.id);

    // The user service comes back on the same address: no restart of the order service.
    let _user_service = start_user_service(suite.user_db.config(), user_addr, SecurityArgs::insecure_plaintext()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        match suite.create(order_request(&user, "after", vec![item("A", 1, 10)])).await {
            Ok(order) => break order,
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(Instant::now() < deadline, "never recovered: {status:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(after.status(), pb::OrderStatus::Pending);
    let metrics = suite.order_service.metrics().await;
    assert!(
        metrics.contains(r#"client_circuit_state{dependency="user-service"} 0"#),
        "{metrics}"
    );
}

/// A user service that answers GetUser only after `delay`, recording the
/// `grpc-timeout` each call arrived with. Only the timing is fake: it is a
/// real gRPC server the order service reaches over the network.
struct SlowUserService {
    delay: Duration,
    timeouts_seen: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl UserService for SlowUserService {
    async fn get_user(&self, request: Request<user_pb::GetUserRequest>) -> Result<Response<user_pb::GetUserResponse>, Status> {
        let timeout = request
            .metadata()
            .get("grpc-timeout")
            .map(|value| value.to_str().unwrap().to_owned());
        self.timeouts_seen.lock().await.push(timeout.unwrap_or_default());
        tokio::time::sleep(self.delay).await;
        Err(Status::not_found("too late to matter"))
    }

    async fn create_user(&self, _: Request<user_pb::CreateUserRequest>) -> Result<Response<user_pb::CreateUserResponse>, Status> {
        Err(Status::unimplemented("not needed"))
    }

    async fn update_user(&self, _: Request<user_pb::UpdateUserRequest>) -> Result<Response<user_pb::UpdateUserResponse>, Status> {
        Err(Status::unimplemented("not needed"))
    }

    async fn delete_user(&self, _: Request<user_pb::DeleteUserRequest>) -> Result<Response<user_pb::DeleteUserResponse>, Status> {
        Err(Status::unimplemented("not needed"))
    }

    async fn list_users(&self, _: Request<user_pb::ListUsersRequest>) -> Result<Response<user_pb::ListUsersResponse>, Status> {
        Err(Status::unimplemented("not needed"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_user_service_costs_the_callers_deadline_and_gets_a_shorter_one() {
    let timeouts_seen = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow_addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(UserServiceServer::new(SlowUserService {
                delay: Duration::from_secs(10),
                timeouts_seen: timeouts_seen.clone(),
            }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let db = TestDb::sqlite();
    let order_service = start_order_service(db.config(), fast_user_service_args(slow_addr), SecurityArgs::insecure_plaintext()).await;
    let mut orders = OrderServiceClient::new(suite_grpc::client::connect_insecure(order_service.grpc_addr).await.unwrap());

    let incoming = Duration::from_millis(400);
    let mut request = Request::new(order_request("0190d7a4-0000-7000-8000-000000000000", "slow", vec![item("A", 1, 1)]));
    request.set_timeout(incoming);
    let started = Instant::now();
    let status = orders.create_order(request).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(took < Duration::from_secs(2), "the caller waited {took:?} on a 400 ms deadline");

    let seen = timeouts_seen.lock().await.clone();
    assert_eq!(seen.len(), 1, "a timed-out call is not retried: {seen:?}");
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert("grpc-timeout", seen[0].parse().unwrap());
    let outgoing = suite_grpc::client::Deadline::of_request(&metadata, Duration::from_secs(60)).remaining();
    assert!(
        outgoing < incoming,
        "outgoing grpc-timeout {} is not shorter than the incoming 400 ms",
        seen[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_service_calls_the_user_service_as_itself_over_mutual_tls() {
    let pki = TestPki::new();
    let operator = "[[allow]]\ncallers = [\"spiffe://suite.test/ns/test/sa/operator\"]\nmethods = [\"*\"]\n";
    let user_policy = format!(
        "{operator}[[allow]]\ncallers = [\"spiffe://suite.test/ns/test/sa/order-service\"]\nmethods = [\"suite.user.v1.UserService/GetUser\"]\n"
    );
    let user_db = TestDb::sqlite();
    let user_service = start_user_service(
        user_db.config(),
        "127.0.0.1:0".parse().unwrap(),
        mtls(&pki, "user-service", &user_policy),
    )
    .await;
    let order_db = TestDb::sqlite();
    let order_service = start_order_service(
        order_db.config(),
        fast_user_service_args(user_service.grpc_addr),
        mtls(&pki, "order-service", operator),
    )
    .await;

    let operator_cert = pki.service("operator");
    let users = suite_grpc::client::connect_mtls(user_service.grpc_addr, pki.connector(&operator_cert, "user-service"))
        .await
        .unwrap();
    let user = suite_proto::suite::user::v1::user_service_client::UserServiceClient::new(users)
        .create_user(user_pb::CreateUserRequest {
            email: "tls@example.com".into(),
            display_name: "TLS".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let orders = suite_grpc::client::connect_mtls(order_service.grpc_addr, pki.connector(&operator_cert, "order-service"))
        .await
        .unwrap();
    let mut orders = OrderServiceClient::new(orders);
    let order = orders
        .create_order(order_request(&user.id, "tls-1", vec![item("A", 1, 5)]))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(order.user_id, user.id);
    let status = orders
        .create_order(order_request(
            "0190d7a4-0000-7000-8000-000000000000",
            "tls-2",
            vec![item("A", 1, 5)],
        ))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "NOT_FOUND crossed the mTLS hop intact: {status:?}"
    );
}
