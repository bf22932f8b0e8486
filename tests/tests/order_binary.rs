//! The real `order-service` binary beside the real `user-service` binary, as
//! `just up` runs them: mutual TLS between them with the `dev-certs`
//! identities, grpcurl as the operator, start-up order, flags and exit codes.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{DevCerts, Server, free_addr, one_item_order};
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
    let early = client
        .create_order(one_item_order("0190d7a4-0000-7000-8000-000000000000", "early"))
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
        match client.create_order(one_item_order(&user.id, "late")).await {
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

/// The JSON log lines a process wrote to `path`.
fn json_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Trace export off (no collector configured): every log line written while
/// serving a call still carries a trace id and span id. A trusted caller's
/// trace id continues through both services; a trace the order service starts
/// for its own logs is not passed on (the user service names the call itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_trace_export_log_lines_still_carry_trace_ids_across_both_services() {
    const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER_SPAN: &str = "00f067aa0ba902b7";
    let certs = DevCerts::issue();
    let data = tempfile::tempdir().unwrap();
    let log = |name: &str| std::fs::File::create(data.path().join(format!("{name}.log"))).unwrap();
    let start = |name: &'static str, extra: Vec<String>| {
        let (grpc, admin) = (free_addr(), free_addr());
        let mut command = Server::service_command(grpc, admin, name, &certs, data.path(), None);
        // The harness's per-call debug line is one every call writes for sure.
        command
            .args(["--log-filter", "info,suite_grpc=debug"])
            .args(extra)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .stdout(log(name));
        Server::spawn(name, command, grpc, admin, certs.clone())
    };
    let mut users = start("user-service", vec![]).await;
    let mut orders = start("order-service", vec!["--user-service-addr".into(), users.grpc.to_string()]).await;

    let user = suite_proto::suite::user::v1::user_service_client::UserServiceClient::new(users.channel().await)
        .create_user(suite_proto::suite::user::v1::CreateUserRequest {
            email: "logs@example.com".into(),
            display_name: "Logs".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let mut client = OrderServiceClient::new(orders.channel().await);
    let create = |key: &str, request_id: &'static str, traceparent: Option<String>| {
        let mut request = tonic::Request::new(one_item_order(&user.id, key));
        request.metadata_mut().insert("x-request-id", request_id.parse().unwrap());
        if let Some(traceparent) = traceparent {
            request.metadata_mut().insert("traceparent", traceparent.parse().unwrap());
        }
        request
    };
    client
        .create_order(create(
            "continued",
            "logs-continued",
            Some(format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")),
        ))
        .await
        .unwrap();
    client.create_order(create("started", "logs-started", None)).await.unwrap();
    drop(client);
    // The per-call line is written when the call's last byte has gone: stop both to flush their logs.
    for server in [&mut orders, &mut users] {
        server.terminate();
        assert!(server.child.wait().unwrap().success());
    }
    let order_lines = json_lines(&data.path().join("order-service.log"));
    let user_lines = json_lines(&data.path().join("user-service.log"));
    let call_lines = |lines: &[serde_json::Value], request_id: &str| -> Vec<serde_json::Value> {
        lines
            .iter()
            .filter(|line| line["span"]["request_id"] == request_id)
            .cloned()
            .collect()
    };
    let ids = |line: &serde_json::Value| -> (String, String) {
        let id = |key: &str| line[key].as_str().unwrap_or_else(|| panic!("no {key} in {line}")).to_owned();
        (id("trace_id"), id("span_id"))
    };

    // Continued: the caller's trace id on every line of both hops, each hop with a span id of its own.
    let (order_calls, user_calls) = (
        call_lines(&order_lines, "logs-continued"),
        call_lines(&user_lines, "logs-continued"),
    );
    assert!(!order_calls.is_empty() && !user_calls.is_empty(), "{order_lines:?}\n{user_lines:?}");
    let mut span_ids = std::collections::HashSet::new();
    for line in order_calls.iter().chain(&user_calls) {
        let (trace_id, span_id) = ids(line);
        assert_eq!(trace_id, CALLER_TRACE, "{line}");
        assert_ne!(span_id, CALLER_SPAN, "{line}");
        span_ids.insert(span_id);
    }
    assert_eq!(span_ids.len(), 2, "one span id per hop: {span_ids:?}");

    // Started here: the order service's lines share one new trace id; the user service's call has another.
    let (order_calls, user_calls) = (call_lines(&order_lines, "logs-started"), call_lines(&user_lines, "logs-started"));
    assert!(!order_calls.is_empty() && !user_calls.is_empty());
    let order_traces: std::collections::HashSet<String> = order_calls.iter().map(|line| ids(line).0).collect();
    let user_traces: std::collections::HashSet<String> = user_calls.iter().map(|line| ids(line).0).collect();
    assert_eq!(order_traces.len(), 1, "{order_traces:?}");
    assert_eq!(user_traces.len(), 1, "{user_traces:?}");
    let order_trace = order_traces.iter().next().unwrap();
    assert!(order_trace.len() == 32 && order_trace != CALLER_TRACE, "{order_trace}");
    assert!(user_traces.is_disjoint(&order_traces), "a log-only trace is not passed on");
}
