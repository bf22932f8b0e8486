//! The real `edge-gateway` binary in front of the real services, as `just up`
//! runs them: TLS for clients, tokens from `edge-gateway dev-token` checked
//! against the JWKS `dev-certs` wrote, grpcurl through the gateway.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;

use common::{DevCerts, Server, free_addr, grpcurl, grpcurl_fails};
use suite_testkit::workspace_binary;

/// The user and order services, and the gateway in front of them.
struct Suite {
    gateway: Server,
    _users: Server,
    _orders: Server,
    certs: Arc<DevCerts>,
    _data: tempfile::TempDir,
}

impl Suite {
    async fn start() -> Self {
        let certs = DevCerts::issue();
        let data = tempfile::tempdir().unwrap();
        let users = Server::start_service("user-service", certs.clone(), data.path(), None, &[]).await;
        let user_addr = users.grpc.to_string();
        let orders = Server::start_service(
            "order-service",
            certs.clone(),
            data.path(),
            None,
            &["--user-service-addr", &user_addr],
        )
        .await;
        let (grpc, admin) = (free_addr(), free_addr());
        let mut command = Server::gateway_command(grpc, admin, &certs, data.path(), (users.grpc, orders.grpc), "warn");
        command.stdout(Stdio::null());
        let gateway = Server::spawn("edge-gateway", command, grpc, admin, certs.clone()).await;
        Self {
            gateway,
            _users: users,
            _orders: orders,
            certs,
            _data: data,
        }
    }

    /// grpcurl through the gateway: server-authenticated TLS only, with `token` if any.
    /// `data` is the request body (`-d`), `command` what follows the address.
    fn grpcurl_args(&self, token: Option<&str>, data: Option<&str>, command: &[&str]) -> Vec<String> {
        let mut all = vec!["-cacert".to_owned(), self.certs.path_str("ca.pem")];
        if let Some(token) = token {
            all.extend(["-H".to_owned(), format!("authorization: Bearer {token}")]);
        }
        if let Some(data) = data {
            all.extend(["-d".to_owned(), data.to_owned()]);
        }
        // The dev certificate names localhost; grpcurl checks it.
        all.push(format!("localhost:{}", self.gateway.grpc.port()));
        all.extend(command.iter().map(|arg| (*arg).to_owned()));
        all
    }
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_describes_and_calls_through_the_gateway_with_a_dev_token() {
    let Some(grpcurl_bin) = suite_testkit::grpcurl() else { return };
    let suite = Suite::start().await;
    let admin = suite.certs.dev_token("operator", "admin");

    let listed = grpcurl(&grpcurl_bin, &strs(&suite.grpcurl_args(Some(&admin), None, &["list"])));
    for service in ["suite.user.v1.UserService", "suite.order.v1.OrderService", "grpc.health.v1.Health"] {
        assert!(listed.lines().any(|line| line == service), "{service} not listed:\n{listed}");
    }
    let described = grpcurl(
        &grpcurl_bin,
        &strs(&suite.grpcurl_args(Some(&admin), None, &["describe", "suite.order.v1.OrderService.CreateOrder"])),
    );
    assert!(described.contains("rpc CreateOrder"), "{described}");

    let created = grpcurl(
        &grpcurl_bin,
        &strs(&suite.grpcurl_args(
            Some(&admin),
            Some(r#"{"email":"gw@example.com","display_name":"Gateway"}"#),
            &["suite.user.v1.UserService/CreateUser"],
        )),
    );
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let user_id = created["user"]["id"].as_str().unwrap();

    // The user's own token creates and reads an order.
    let own = suite.certs.dev_token(user_id, "");
    let order = format!(
        r#"{{"user_id":"{user_id}","idempotency_key":"gw-1","items":[{{"sku":"BOOK-1","quantity":1,"unit_price":{{"currency_code":"EUR","amount_minor":1250}}}}]}}"#
    );
    let order = grpcurl(
        &grpcurl_bin,
        &strs(&suite.grpcurl_args(Some(&own), Some(&order), &["suite.order.v1.OrderService/CreateOrder"])),
    );
    let order: serde_json::Value = serde_json::from_str(&order).unwrap();
    let order_id = order["order"]["id"].as_str().unwrap();
    let read = grpcurl(
        &grpcurl_bin,
        &strs(&suite.grpcurl_args(
            Some(&own),
            Some(&format!(r#"{{"id":"{order_id}"}}"#)),
            &["suite.order.v1.OrderService/GetOrder"],
        )),
    );
    assert!(read.contains(order_id), "{read}");

    // Without a token: reflection and health are public, the API is not.
    let anonymous = grpcurl(&grpcurl_bin, &strs(&suite.grpcurl_args(None, None, &["list"])));
    assert!(anonymous.contains("suite.user.v1.UserService"));
    let refused = grpcurl_fails(
        &grpcurl_bin,
        &strs(&suite.grpcurl_args(None, Some(r#"{"id":"x"}"#), &["suite.user.v1.UserService/GetUser"])),
    );
    assert!(refused.contains("Unauthenticated"), "{refused}");
    // Another user's token may not read this user's order, nor learn that it exists.
    let stranger = suite.certs.dev_token("01a20b09-dc56-77ed-af76-000000000000", "");
    let hidden = grpcurl_fails(
        &grpcurl_bin,
        &strs(&suite.grpcurl_args(
            Some(&stranger),
            Some(&format!(r#"{{"id":"{order_id}"}}"#)),
            &["suite.order.v1.OrderService/GetOrder"],
        )),
    );
    assert!(
        hidden.contains("NotFound") && hidden.contains(&format!("order {order_id} not found")),
        "{hidden}"
    );
}

#[test]
fn the_gateway_refuses_to_start_without_token_keys() {
    let output = Command::new(workspace_binary("edge-gateway"))
        .env_clear()
        .args([
            "serve",
            "--insecure-plaintext",
            "--grpc-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    // The log line (stdout) names what to set.
    let log = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(64), "{log}");
    assert!(log.contains("JWT_ISSUER"), "the message names the fix: {log}");
}
