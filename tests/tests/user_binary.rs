//! The real `user-service` binary as operators run it: over mutual TLS with the
//! certificates `dev-certs` issues and the shipped development policy, grpcurl
//! against it, SIGTERM while requests are in flight, replicas racing to
//! migrate, exit codes.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Server, free_addr, grpcurl, grpcurl_fails};
use suite_proto::suite::user::v1 as pb;
use suite_proto::suite::user::v1::user_service_client::UserServiceClient;
use suite_testkit::{FaultProxy, ProxyMode, TestDatabase, workspace_binary, workspace_root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_describes_and_calls_the_user_service() {
    let Some(grpcurl_bin) = suite_testkit::grpcurl() else { return };
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), None).await;
    let addr = server.grpc.to_string();

    let services = server.grpcurl(&grpcurl_bin, &[&addr, "list"]);
    assert!(services.lines().any(|line| line == "suite.user.v1.UserService"), "{services}");
    assert!(services.lines().any(|line| line == "grpc.health.v1.Health"), "{services}");
    let description = server.grpcurl(&grpcurl_bin, &[&addr, "describe", "suite.user.v1.UserService"]);
    for method in ["CreateUser", "GetUser", "UpdateUser", "DeleteUser", "ListUsers"] {
        assert!(description.contains(&format!("rpc {method}")), "{description}");
    }

    let created = server.grpcurl(
        &grpcurl_bin,
        &[
            "-d",
            r#"{"email":"grace@example.com","display_name":"Grace Hopper"}"#,
            &addr,
            "suite.user.v1.UserService/CreateUser",
        ],
    );
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let id = created["user"]["id"].as_str().unwrap();
    let fetched = server.grpcurl(
        &grpcurl_bin,
        &["-d", &format!(r#"{{"id":"{id}"}}"#), &addr, "suite.user.v1.UserService/GetUser"],
    );
    let fetched: serde_json::Value = serde_json::from_str(&fetched).unwrap();
    assert_eq!(fetched["user"], created["user"]);

    let health = grpcurl(
        &grpcurl_bin,
        &[
            "-plaintext",
            "-d",
            r#"{"service":"suite.user.v1.UserService"}"#,
            &server.admin.to_string(),
            "grpc.health.v1.Health/Check",
        ],
    );
    assert!(health.contains("SERVING"), "{health}");
}

/// Without the operator's certificate grpcurl gets nowhere, and with another
/// service's certificate it gets only what the policy allows that service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_without_a_client_certificate_or_the_right_identity_is_refused() {
    let Some(grpcurl_bin) = suite_testkit::grpcurl() else { return };
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), None).await;
    let addr = server.grpc.to_string();
    let certs = &server.certs;

    grpcurl_fails(&grpcurl_bin, &["-cacert", &certs.path_str("ca.pem"), &addr, "list"]);
    grpcurl_fails(&grpcurl_bin, &["-plaintext", "-connect-timeout", "2", &addr, "list"]);

    let as_order_service = [
        "-cacert",
        &certs.path_str("ca.pem"),
        "-cert",
        &certs.path_str("order-service.pem"),
        "-key",
        &certs.path_str("order-service-key.pem"),
    ];
    // The order service may not even list: reflection is the operator's.
    let denied = grpcurl_fails(&grpcurl_bin, &[&as_order_service[..], &[&addr, "list"]].concat());
    assert!(denied.contains("PermissionDenied"), "{denied}");
    let proto = workspace_root().join("proto");
    let denied = grpcurl_fails(
        &grpcurl_bin,
        &[
            &as_order_service[..],
            &[
                "-import-path",
                proto.to_str().unwrap(),
                "-proto",
                "suite/user/v1/user.proto",
                "-d",
                r#"{"id":"0190d7a4-0000-7000-8000-000000000000"}"#,
                &addr,
                "suite.user.v1.UserService/DeleteUser",
            ],
        ]
        .concat(),
    );
    assert!(denied.contains("PermissionDenied"), "{denied}");
    assert!(denied.contains("spiffe://suite.local/ns/dev/sa/order-service"), "{denied}");
}

/// SIGTERM while requests wait on a slow database: they all complete, the
/// process exits 0, and it no longer accepts connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_and_exits_zero() {
    let Some(db) = TestDatabase::create().await else { return };
    let proxy = FaultProxy::start(db.server_addr()).await;
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(data.path(), Some(&db.url_via(proxy.addr()))).await;
    let client = UserServiceClient::new(server.channel().await);
    let mut ids = Vec::new();
    for index in 0..6 {
        let request = pb::CreateUserRequest {
            email: format!("drain{index}@example.com"),
            display_name: "Drain".into(),
        };
        ids.push(client.clone().create_user(request).await.unwrap().into_inner().user.unwrap().id);
    }

    proxy.set_mode(ProxyMode::Delay(Duration::from_millis(100)));
    let in_flight: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let mut client = client.clone();
            tokio::spawn(async move { client.get_user(pb::GetUserRequest { id }).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.terminate();
    for request in in_flight {
        let reply = request.await.unwrap();
        assert!(reply.is_ok(), "an in-flight request failed during shutdown: {reply:?}");
    }
    let status = tokio::task::spawn_blocking(move || {
        let status = server.child.wait().unwrap();
        drop(server);
        status
    })
    .await
    .unwrap();
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_to_migrate_all_succeed() {
    let Some(db) = TestDatabase::create().await else { return };
    let replicas: Vec<Child> = (0..3)
        .map(|_| {
            Command::new(workspace_binary("user-service"))
                .args(["migrate", "--log-filter", "warn"])
                .env("DATABASE_URL", &db.url)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut replica in replicas {
        assert!(replica.wait().unwrap().success(), "a racing migrate failed");
    }
    // And the schema is usable: a server on it serves.
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), Some(&db.url)).await;
    let request = pb::CreateUserRequest {
        email: "migrated@example.com".into(),
        display_name: "M".into(),
    };
    UserServiceClient::new(server.channel().await).create_user(request).await.unwrap();
}

#[test]
fn help_succeeds_and_bad_configuration_exits_64() {
    let binary = workspace_binary("user-service");
    let help = Command::new(&binary).args(["serve", "--help"]).output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    for flag in [
        "--grpc-addr",
        "[env: GRPC_ADDR=",
        "--database-url",
        "--redis-url",
        "--migrate-on-start",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}: {help}");
    }
    let bad = Command::new(&binary)
        .args(["serve", "--grpc-addr", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(64), "{}", String::from_utf8_lossy(&bad.stderr));

    let data = tempfile::tempdir().unwrap();
    let no_tls = Command::new(&binary)
        .args(["serve", "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data.path())
        .env_remove("TLS_CERT")
        .env_remove("INSECURE_PLAINTEXT")
        .output()
        .unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&no_tls.stdout),
        String::from_utf8_lossy(&no_tls.stderr)
    );
    assert_eq!(no_tls.status.code(), Some(64), "{output}");
    assert!(output.contains("--insecure-plaintext"), "the error says how to proceed: {output}");
}

/// Plaintext needs the explicit flag, and then the process says so loudly.
#[test]
fn insecure_plaintext_is_announced_at_start_up() {
    let data = tempfile::tempdir().unwrap();
    let (grpc, admin) = (free_addr(), free_addr());
    let mut child = Command::new(workspace_binary("user-service"))
        .args(["--log-format", "json", "serve", "--insecure-plaintext"])
        .args(["--grpc-addr", &grpc.to_string(), "--admin-addr", &admin.to_string()])
        .arg("--data-dir")
        .arg(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let warning = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|line| line.contains("INSECURE"));
    let _ = child.kill();
    let _ = child.wait();
    let warning = warning.expect("no INSECURE warning in the log");
    assert!(warning.contains(r#""level":"WARN""#), "{warning}");
}

/// `user-service healthcheck`, what `helm test` and a shell in the pod run: readiness
/// follows the database, liveness does not, unknown names and closed ports fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_subcommand_answers_as_the_probes_see_the_server() {
    let Some(db) = TestDatabase::create().await else { return };
    let proxy = FaultProxy::start(db.server_addr()).await;
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_service(
        "user-service",
        common::DevCerts::issue(),
        data.path(),
        Some(&db.url_via(proxy.addr())),
        &["--readiness-interval-ms", "100"],
    )
    .await;
    let admin = server.admin.to_string();
    let healthcheck = |addr: &str, services: &[&str]| {
        let mut command = Command::new(workspace_binary("user-service"));
        command.args(["healthcheck", "--addr", addr, "--timeout-ms", "2000"]);
        for service in services {
            command.args(["--service", service]);
        }
        let output = command.env_clear().output().unwrap();
        (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
    };

    let (code, stdout) = healthcheck(&admin, &["", "liveness", "suite.user.v1.UserService"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(
        stdout,
        "\"\": SERVING\n\"liveness\": SERVING\n\"suite.user.v1.UserService\": SERVING\n"
    );

    let (code, stdout) = healthcheck(&admin, &["no.such.Service"]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("NotFound"), "{stdout}");

    proxy.set_mode(ProxyMode::Refuse);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (code, stdout) = healthcheck(&admin, &[""]);
        if code == Some(1) {
            assert_eq!(stdout.lines().next(), Some("\"\": NOT_SERVING"), "{stdout}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "readiness still {stdout} with the database cut off"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, stdout) = healthcheck(&admin, &["liveness"]);
    assert_eq!(code, Some(0), "liveness must not follow the database: {stdout}");

    let closed = free_addr().to_string();
    let started = std::time::Instant::now();
    let (code, stdout) = healthcheck(&closed, &[""]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a closed port took {:?}",
        started.elapsed()
    );
}
