//! The real `order-service` binary beside the real `user-service` binary, as
//! `just up` runs them: mutual TLS between them with the `dev-certs`
//! identities, grpcurl as the operator, start-up order, flags and exit codes.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{DevCerts, Server, free_addr};
use suite_proto::suite::order::v1 as pb;
use suite_proto::suite::order::v1::order_service_client::OrderServiceClient;
use suite_testkit::workspace_binary;
use tonic::Code;

fn order_json(user_id: &str, key: &str) -> String {
    format!(
        r#"{{"user_id":"{user_id}","idempotency_key":"{key}","items":[{{"sku":"BOOK-1","quantity":2,"unit_price":{{"currency_code":"EUR","amount_minor":1250}}}}]}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_creates_an_order_for_a_user_across_both_services() {
    let Some(grpcurl_bin) = suite_testkit::grpcurl() else { return };
    let certs = DevCerts::issue();
    let data = tempfile::tempdir().unwrap();
    let users = Server::start_service("user-service", certs.clone(), data.path(), None, &[]).await;
    let user_addr = users.grpc.to_string();
    // By name, as a Kubernetes Service is reached: the order service resolves it at each connection.
    let user_name_addr = format!("localhost:{}", users.grpc.port());
    let orders = Server::start_service("order-service", certs, data.path(), None, &["--user-service-addr", &user_name_addr]).await;
    let order_addr = orders.grpc.to_string();

    let services = orders.grpcurl(&grpcurl_bin, &[&order_addr, "list"]);
    assert!(services.lines().any(|line| line == "suite.order.v1.OrderService"), "{services}");
    let description = orders.grpcurl(&grpcurl_bin, &[&order_addr, "describe", "suite.order.v1.OrderService"]);
    for method in ["CreateOrder", "GetOrder", "ListOrders", "ConfirmOrder", "ShipOrder", "CancelOrder"] {
        assert!(description.contains(&format!("rpc {method}")), "{description}");
    }

    let user = users.grpcurl(
        &grpcurl_bin,
        &[
            "-d",
            r#"{"email":"e2e@example.com","display_name":"E2E"}"#,
            &user_addr,
            "suite.user.v1.UserService/CreateUser",
        ],
    );
    let user: serde_json::Value = serde_json::from_str(&user).unwrap();
    let user_id = user["user"]["id"].as_str().unwrap();
    let created = orders.grpcurl(
        &grpcurl_bin,
        &[
            "-d",
            &order_json(user_id, "e2e-1"),
            &order_addr,
            "suite.order.v1.OrderService/CreateOrder",
        ],
    );
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    assert_eq!(created["order"]["userId"], user_id);
    assert_eq!(created["order"]["total"]["amountMinor"], "2500");
    assert_eq!(created["order"]["status"], "ORDER_STATUS_PENDING");

    let again = orders.grpcurl(
        &grpcurl_bin,
        &[
            "-d",
            &order_json(user_id, "e2e-1"),
            &order_addr,
            "suite.order.v1.OrderService/CreateOrder",
        ],
    );
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(
        again["order"]["id"], created["order"]["id"],
        "a retried create returns the same order"
    );
}

/// The order service starts without the user service (its channel is lazy),
/// answers CreateOrder with UNAVAILABLE meanwhile, and works once the user
/// service is up: no start-up ordering between the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_service_may_start_before_the_user_service() {
    let certs = DevCerts::issue();
    let data = tempfile::tempdir().unwrap();
    let user_addr = free_addr();
    let orders = Server::start_service(
        "order-service",
        certs.clone(),
        data.path(),
        None,
        &["--user-service-addr", &user_addr.to_string()],
    )
    .await;
    let mut client = OrderServiceClient::new(orders.channel().await);
    let request = |key: &str, user_id: &str| pb::CreateOrderRequest {
        user_id: user_id.into(),
        idempotency_key: key.into(),
        items: vec![pb::LineItem {
            sku: "A".into(),
            quantity: 1,
            unit_price: Some(pb::Money {
                currency_code: "EUR".into(),
                amount_minor: 1,
            }),
            line_total: None,
        }],
    };
    let early = client
        .create_order(request("early", "0190d7a4-0000-7000-8000-000000000000"))
        .await
        .unwrap_err();
    assert_eq!(early.code(), Code::Unavailable, "{early:?}");

    let users = Server::start_service_on(user_addr, "user-service", certs, data.path(), None, &[]).await;
    let user = suite_proto::suite::user::v1::user_service_client::UserServiceClient::new(users.channel().await)
        .create_user(suite_proto::suite::user::v1::CreateUserRequest {
            email: "late@example.com".into(),
            display_name: "Late".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match client.create_order(request("late", &user.id)).await {
            Ok(_) => break,
            Err(status) if status.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => panic!("the order service never reached the user service: {status:?}"),
        }
    }
}

#[test]
fn help_lists_the_client_stack_settings_and_missing_tls_exits_64() {
    let binary = workspace_binary("order-service");
    let help = Command::new(&binary).args(["serve", "--help"]).output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    for flag in [
        "[env: USER_SERVICE_ADDR=",
        "[env: USER_SERVICE_IDENTITY=",
        "[env: USER_SERVICE_MAX_ATTEMPTS=",
        "[env: USER_SERVICE_RETRY_BUDGET_RATIO=",
        "[env: USER_SERVICE_BREAKER_FAILURE_RATIO=",
        "[env: USER_SERVICE_MAX_CONCURRENT_CALLS=",
        "[env: TLS_CERT=",
        "[env: AUTHZ_POLICY=",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}: {help}");
    }
    let data = tempfile::tempdir().unwrap();
    let no_tls = Command::new(&binary)
        .args(["serve", "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data.path())
        .env_remove("TLS_CERT")
        .env_remove("INSECURE_PLAINTEXT")
        .output()
        .unwrap();
    assert_eq!(no_tls.status.code(), Some(64), "{}", String::from_utf8_lossy(&no_tls.stdout));
}
