//! Mutual TLS on the user service's gRPC port: which certificates get through
//! the handshake, which identities get past the per-method policy, how the
//! client side checks the server, and certificate rotation under load.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{AppSettings, TestApp, TestDb, spawn_app_with};
use suite_grpc::{Listeners, SecurityArgs, SecurityError};
use suite_proto::suite::user::v1 as pb;
use suite_proto::suite::user::v1::user_service_client::UserServiceClient;
use suite_testkit::pki::hours_from_now;
use suite_testkit::{RawTlsConnector, TestCert, TestPki};
use suite_tls::TlsArgs;
use tokio::io::AsyncReadExt;
use tonic::Code;
use tonic::transport::Endpoint;

/// The operator may call anything; the order service only GetUser.
const POLICY: &str = r#"
[[allow]]
callers = ["spiffe://suite.test/ns/test/sa/operator"]
methods = ["*"]

[[allow]]
callers = ["spiffe://suite.test/ns/test/sa/order-service"]
methods = ["suite.user.v1.UserService/GetUser"]
"#;

fn security(pki: &TestPki, server: &TestCert, policy: &str) -> SecurityArgs {
    let policy_path = pki.dir.path().join("authz.toml");
    std::fs::write(&policy_path, policy).unwrap();
    SecurityArgs {
        tls: TlsArgs {
            tls_cert: Some(server.cert.clone()),
            tls_key: Some(server.key.clone()),
            tls_ca: Some(pki.ca_path()),
            tls_reload_interval_ms: 100,
            tls_handshake_timeout_ms: 2_000,
            ..TlsArgs::default()
        },
        authz_policy: Some(policy_path),
    }
}

/// The user service on mutual TLS, with the operator's client connected.
async fn secure_app(pki: &TestPki, db: &TestDb, adjust: impl FnOnce(&mut SecurityArgs)) -> (TestApp, TestCert) {
    let server = pki.service("user-service");
    let operator = pki.service("operator");
    let mut settings = AppSettings::new(db.config());
    settings.security = security(pki, &server, POLICY);
    adjust(&mut settings.security);
    settings.client_tls = Some(pki.connector(&operator, "user-service"));
    (spawn_app_with(settings).await, server)
}

/// A health check over a connection made by `connector`: Ok only if the server
/// accepted the handshake and answered.
async fn health_over(app: &TestApp, connector: RawTlsConnector) -> Result<(), String> {
    let attempt = async {
        let channel = Endpoint::from_shared(format!("http://{}", app.grpc_addr))
            .unwrap()
            .connect_with_connector(connector)
            .await
            .map_err(|error| format!("connect: {}", suite_grpc::status::error_chain(&error)))?;
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        health
            .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
            .await
            .map(|_| ())
            .map_err(|status| format!("call: {status:?}"))
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .unwrap_or_else(|_| Err("no answer within 10 s".into()))
}

async fn metric(app: &TestApp, series: &str) -> f64 {
    suite_testkit::metric_value(&app.metrics().await, series).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_rejects_every_untrusted_client_certificate() {
    let pki = TestPki::new();
    let db = TestDb::sqlite();
    let (app, _) = secure_app(&pki, &db, |_| {}).await;
    let other_pki = TestPki::new();
    let foreign = other_pki.service("order-service");
    let caller = "order-service";

    let cases: Vec<(&str, RawTlsConnector)> = vec![
        ("no client certificate", pki.raw_client(None)),
        (
            "certificate from another CA",
            RawTlsConnector::new(&pki.ca_path(), Some(&foreign), rustls::DEFAULT_VERSIONS),
        ),
        (
            "expired certificate",
            pki.raw_client(Some(&pki.service_with(caller, |spec| {
                spec.not_before = hours_from_now(-48);
                spec.not_after = hours_from_now(-1);
            }))),
        ),
        (
            "not-yet-valid certificate",
            pki.raw_client(Some(&pki.service_with(caller, |spec| {
                spec.not_before = hours_from_now(1);
                spec.not_after = hours_from_now(48);
            }))),
        ),
        (
            "no URI SAN",
            pki.raw_client(Some(&pki.service_with(caller, |spec| spec.uris.clear()))),
        ),
        (
            "URI SAN without the /ns/../sa/.. path",
            pki.raw_client(Some(
                &pki.service_with(caller, |spec| spec.uris = vec!["spiffe://suite.test/order-service".into()]),
            )),
        ),
        (
            "URI SAN that is not spiffe://",
            pki.raw_client(Some(&pki.service_with(caller, |spec| {
                spec.uris = vec!["https://suite.test/ns/test/sa/order-service".into()]
            }))),
        ),
        (
            "two URI SANs",
            pki.raw_client(Some(
                &pki.service_with(caller, |spec| spec.uris.push("spiffe://suite.test/ns/test/sa/operator".into())),
            )),
        ),
        (
            "identity in another trust domain",
            pki.raw_client(Some(&pki.service_with(caller, |spec| {
                spec.uris = vec!["spiffe://elsewhere.test/ns/test/sa/order-service".into()]
            }))),
        ),
        (
            "CA certificate used as a leaf",
            pki.raw_client(Some(&pki.service_with(caller, |spec| spec.is_ca = true))),
        ),
        ("TLS 1.2 (not enabled)", pki.raw_tls12_client(&pki.service(caller))),
    ];
    let rejected_before = metric(&app, r#"tls_server_handshakes_total{outcome="rejected"}"#).await;
    for (case, connector) in &cases {
        let outcome = health_over(&app, connector.clone()).await;
        assert!(outcome.is_err(), "{case}: the server accepted it");
    }
    let rejected = metric(&app, r#"tls_server_handshakes_total{outcome="rejected"}"#).await - rejected_before;
    assert!(
        rejected >= cases.len() as f64,
        "{rejected} handshakes counted as rejected for {} cases",
        cases.len()
    );

    // The same client code with a good certificate gets through, so the
    // rejections above are the certificates' doing.
    health_over(&app, pki.raw_client(Some(&pki.service(caller)))).await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_are_authorized_per_method() {
    let pki = TestPki::new();
    let db = TestDb::sqlite();
    let (app, _) = secure_app(&pki, &db, |_| {}).await;
    let user = app.create("authz@example.com", "Authz").await;

    let order_channel = suite_grpc::client::connect_mtls(app.grpc_addr, pki.connector(&pki.service("order-service"), "user-service"))
        .await
        .unwrap();
    let mut order = UserServiceClient::new(order_channel.clone());
    let fetched = order.get_user(pb::GetUserRequest { id: user.id.clone() }).await.unwrap();
    assert_eq!(fetched.into_inner().user.unwrap().email, "authz@example.com");

    let denied = order
        .delete_user(pb::DeleteUserRequest {
            id: user.id.clone(),
            version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(
        denied.message().contains("spiffe://suite.test/ns/test/sa/order-service")
            && denied.message().contains("spiffe://suite.test/ns/test/sa/user-service"),
        "the denial names caller and server: {}",
        denied.message()
    );
    assert_eq!(
        app.get(&user.id).await.unwrap().version,
        user.version,
        "a denied call changes nothing"
    );

    // A valid certificate the policy does not mention: denied everything but health.
    let stranger_channel = suite_grpc::client::connect_mtls(app.grpc_addr, pki.connector(&pki.service("billing"), "user-service"))
        .await
        .unwrap();
    let status = UserServiceClient::new(stranger_channel.clone())
        .get_user(pb::GetUserRequest { id: user.id.clone() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let health = tonic_health::pb::health_client::HealthClient::new(stranger_channel)
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .unwrap();
    assert_eq!(health.into_inner().status, 1, "health is open to every authenticated peer");

    let denied_deletes = metric(
        &app,
        r#"rpc_server_call_duration_seconds_count{rpc_service="suite.user.v1.UserService",rpc_method="DeleteUser",rpc_grpc_status_code="7"}"#,
    )
    .await;
    assert_eq!(denied_deletes, 1.0);
    app.stop().await;
}

/// A denial a gateway relays to its end users names no identity: only workloads
/// calling directly (an operator's grpcurl, another service) learn who was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_to_an_end_user_gateway_names_no_identity() {
    let pki = TestPki::new();
    let db = TestDb::sqlite();
    // Top-level keys come before the first table.
    let policy = format!(
        "end_user_gateways = [\"spiffe://suite.test/ns/test/sa/edge-gateway\"]\n{POLICY}\n\
         [[allow]]\ncallers = [\"spiffe://suite.test/ns/test/sa/edge-gateway\"]\nmethods = [\"suite.user.v1.UserService/GetUser\"]\n"
    );
    let policy_path = pki.dir.path().join("gateway-authz.toml");
    std::fs::write(&policy_path, policy).unwrap();
    let (app, _) = secure_app(&pki, &db, |security| security.authz_policy = Some(policy_path)).await;
    let user = app.create("relayed@example.com", "Relayed").await;

    let gateway_channel = suite_grpc::client::connect_mtls(app.grpc_addr, pki.connector(&pki.service("edge-gateway"), "user-service"))
        .await
        .unwrap();
    let mut request = tonic::Request::new(pb::DeleteUserRequest {
        id: user.id.clone(),
        version: None,
    });
    request.metadata_mut().insert("x-suite-subject", user.id.parse().unwrap());
    let denied = UserServiceClient::new(gateway_channel).delete_user(request).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert_eq!(denied.message(), "permission denied");
    assert_eq!(
        app.get(&user.id).await.unwrap().version,
        user.version,
        "a denied call changes nothing"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_refuses_a_server_with_another_identity() {
    let pki = TestPki::new();
    let db = TestDb::sqlite();
    let (app, _) = secure_app(&pki, &db, |_| {}).await;
    let connector = pki.connector(&pki.service("operator"), "order-service");
    let error = suite_grpc::client::connect_mtls(app.grpc_addr, connector).await.unwrap_err();
    let chain = suite_grpc::status::error_chain(&error);
    assert!(
        chain.contains("expected spiffe://suite.test/ns/test/sa/order-service"),
        "the refusal says which identity was expected: {chain}"
    );
    app.stop().await;
}

/// Calls GetUser in a loop on one held connection until stopped.
struct CallLoop {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl CallLoop {
    fn start(app: &TestApp, id: String) -> Self {
        let (ok, failed, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let mut client = app.client.clone();
        let task = tokio::spawn({
            let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
            async move {
                let mut errors = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match client.get_user(pb::GetUserRequest { id: id.clone() }).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(status) => {
                            errors.push(format!("{status:?}"));
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
                errors
            }
        });
        Self { ok, failed, stop, task }
    }

    async fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let errors = self.task.await.unwrap();
        (self.ok.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed), errors)
    }
}

/// Waits (bounded) until a new connection is served the certificate with `serial`.
async fn wait_for_served_serial(app: &TestApp, probe: &RawTlsConnector, serial: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        probe.connect(app.grpc_addr.port()).await.unwrap();
        if probe.last_server_serial().as_deref() == Some(serial) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "server still presents {:?}, not {serial}",
            probe.last_server_serial()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_under_load_drops_no_call() {
    let pki = TestPki::new();
    let db = TestDb::sqlite();
    let (app, server) = secure_app(&pki, &db, |_| {}).await;
    let user = app.create("rotate@example.com", "Rotate").await;
    let probe = pki.raw_client(Some(&pki.service("probe")));
    wait_for_served_serial(&app, &probe, &server.serial).await;

    let calls = CallLoop::start(&app, user.id.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Rotation the way a careless writer does it: certificate first, key a
    // moment later, in place. In between the pair does not match and must be refused.
    let renewed = pki
        .ca
        .issue(&suite_devcerts::LeafSpec::service(
            "user-service",
            &TestPki::id("user-service").to_string(),
            Duration::from_secs(3600),
        ))
        .unwrap();
    suite_testkit::pki::overwrite(&server.cert, renewed.certificate_pem.as_bytes());
    tokio::time::sleep(Duration::from_millis(250)).await;
    suite_testkit::pki::overwrite(&server.key, renewed.key_pem.as_bytes());
    wait_for_served_serial(&app, &probe, &renewed.serial).await;
    assert!(
        metric(&app, r#"tls_credential_reloads_total{outcome="rejected"}"#).await >= 1.0,
        "the mismatched pair was refused"
    );
    assert_eq!(metric(&app, r#"tls_credential_reloads_total{outcome="applied"}"#).await, 1.0);

    // A truncated certificate leaves the renewed one in use.
    let rejected_before = metric(&app, r#"tls_credential_reloads_total{outcome="rejected"}"#).await;
    let next = pki
        .ca
        .issue(&suite_devcerts::LeafSpec::service(
            "user-service",
            &TestPki::id("user-service").to_string(),
            Duration::from_secs(3600),
        ))
        .unwrap();
    let half = &next.certificate_pem.as_bytes()[..next.certificate_pem.len() / 2];
    suite_testkit::pki::overwrite(&server.cert, half);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&app, r#"tls_credential_reloads_total{outcome="rejected"}"#).await <= rejected_before {
        assert!(Instant::now() < deadline, "the truncated file was never looked at");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    probe.connect(app.grpc_addr.port()).await.unwrap();
    assert_eq!(probe.last_server_serial().as_deref(), Some(renewed.serial.as_str()));
    health_over(&app, probe.clone()).await.unwrap();

    tokio::time::sleep(Duration::from_millis(200)).await;
    let (ok, failed, errors) = calls.finish().await;
    assert_eq!(failed, 0, "calls failed during rotation: {errors:?}");
    assert!(ok > 20, "the call loop made only {ok} calls");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connection_is_dropped_after_the_handshake_timeout() {
    let pki = TestPki::new();
    let db = TestDb::sqlite();
    let (app, _) = secure_app(&pki, &db, |security| security.tls.tls_handshake_timeout_ms = 300).await;
    let started = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(app.grpc_addr).await.unwrap();
    let mut buffer = [0_u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buffer))
        .await
        .expect("the server kept a silent connection open");
    assert!(matches!(read, Ok(0) | Err(_)), "expected the connection closed, read {read:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed before the timeout: {:?}",
        started.elapsed()
    );
    assert_eq!(metric(&app, r#"tls_server_handshakes_total{outcome="timeout"}"#).await, 1.0);
    // Everyone else is unaffected.
    app.get(&app.create("after-silence@example.com", "After").await.id).await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_with_unusable_security() {
    let pki = TestPki::new();
    let db = TestDb::sqlite();
    let server = pki.service("user-service");

    let start = |security: SecurityArgs| {
        let mut config = common::serve_config(AppSettings::new(db.config()));
        config.security = security;
        async move {
            let listeners = Listeners::bind("127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            user_service::app::serve(config, listeners, std::future::pending())
                .await
                .unwrap_err()
        }
    };

    let neither = start(SecurityArgs::default()).await;
    assert!(matches!(neither.downcast_ref(), Some(SecurityError::Config(_))), "{neither:#}");
    assert!(format!("{neither:#}").contains("--insecure-plaintext"), "{neither:#}");

    let mut half = security(&pki, &server, POLICY);
    half.tls.tls_key = None;
    let half = start(half).await;
    assert!(format!("{half:#}").contains("TLS_KEY"), "{half:#}");

    let typo = start(security(
        &pki,
        &server,
        "[[allow]]\ncallers = [\"spiffe://suite.test/ns/test/sa/operator\"]\nmethods = [\"suite.user.v1.UserService/GetUsers\"]\n",
    ))
    .await;
    assert!(format!("{typo:#}").contains("GetUsers is not served here"), "{typo:#}");

    let garbage = pki.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    let mut broken = security(&pki, &server, POLICY);
    broken.tls.tls_cert = Some(garbage);
    let broken = start(broken).await;
    assert!(matches!(broken.downcast_ref(), Some(SecurityError::Material(_))), "{broken:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_is_accepted_when_enabled() {
    let pki = TestPki::new();
    let db = TestDb::sqlite();
    let (app, _) = secure_app(&pki, &db, |security| security.tls.tls_allow_tls12 = true).await;
    health_over(&app, pki.raw_tls12_client(&pki.service("order-service")))
        .await
        .unwrap();
    app.stop().await;
}
