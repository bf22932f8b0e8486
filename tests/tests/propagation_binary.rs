//! Trace context and baggage across the real binaries, carried by OpenTelemetry's
//! propagators as `OTEL_PROPAGATORS` chooses. The last hop is a stand-in for the
//! user service (a tonic server with the user service's dev certificate, so the
//! gateway and the order service verify it as they would the real one) that
//! records the headers of every call it gets: what the suite writes on the wire
//! is what is checked. An invalid `traceparent` starts a new trace and never fails
//! the call.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{DevCerts, Server, free_addr, grpcurl};
use suite_proto::suite::user::v1 as pb;
use suite_proto::suite::user::v1::user_service_server::{UserService, UserServiceServer};
use suite_testkit::OtlpReceiver;
use suite_testkit::otlp::kind;
use tonic::transport::{Identity, ServerTlsConfig};
use tonic::{Request, Response, Status};

const CLIENT_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN_ID: &str = "00f067aa0ba902b7";
/// The end user of these calls: the token's subject, and the user the stand-in knows.
const USER_ID: &str = "0190a5d2-7c7e-7cc0-8000-000000000001";

/// The user service's GetUser, answering for [`USER_ID`] and keeping every call's headers.
#[derive(Clone, Default)]
struct RecordingUsers {
    calls: Arc<Mutex<Vec<http::HeaderMap>>>,
}

impl RecordingUsers {
    /// Serves over TLS with the user service's dev certificate on a fresh port.
    async fn start(certs: &DevCerts) -> (Self, SocketAddr) {
        let recorder = Self::default();
        let identity = Identity::from_pem(
            std::fs::read(certs.path("user-service.pem")).unwrap(),
            std::fs::read(certs.path("user-service-key.pem")).unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tonic::transport::Server::builder()
            .tls_config(ServerTlsConfig::new().identity(identity))
            .unwrap()
            .add_service(UserServiceServer::new(recorder.clone()));
        tokio::spawn(server.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
        (recorder, addr)
    }

    fn calls(&self) -> Vec<http::HeaderMap> {
        self.calls.lock().unwrap().clone()
    }
}

#[tonic::async_trait]
impl UserService for RecordingUsers {
    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Result<Response<pb::GetUserResponse>, Status> {
        self.calls.lock().unwrap().push(request.metadata().clone().into_headers());
        Ok(Response::new(pb::GetUserResponse {
            user: Some(pb::User {
                id: request.into_inner().id,
                email: "recorded@example.com".into(),
                display_name: "Recorded".into(),
                version: 1,
                ..Default::default()
            }),
        }))
    }

    async fn create_user(&self, _: Request<pb::CreateUserRequest>) -> Result<Response<pb::CreateUserResponse>, Status> {
        Err(Status::unimplemented("a stand-in"))
    }

    async fn update_user(&self, _: Request<pb::UpdateUserRequest>) -> Result<Response<pb::UpdateUserResponse>, Status> {
        Err(Status::unimplemented("a stand-in"))
    }

    async fn delete_user(&self, _: Request<pb::DeleteUserRequest>) -> Result<Response<pb::DeleteUserResponse>, Status> {
        Err(Status::unimplemented("a stand-in"))
    }

    async fn list_users(&self, _: Request<pb::ListUsersRequest>) -> Result<Response<pb::ListUsersResponse>, Status> {
        Err(Status::unimplemented("a stand-in"))
    }
}

/// The gateway (trusting its client's context) and the order service, both with `env`,
/// in front of the recording stand-in of the user service.
struct Chain {
    gateway: Server,
    _orders: Server,
    users: RecordingUsers,
    certs: Arc<DevCerts>,
    _data: tempfile::TempDir,
}

impl Chain {
    async fn start(env: &[(&str, &str)]) -> Self {
        let certs = DevCerts::issue();
        let data = tempfile::tempdir().unwrap();
        let (users, users_addr) = RecordingUsers::start(&certs).await;

        let (grpc, admin) = (free_addr(), free_addr());
        let mut command = Server::service_command(grpc, admin, "order-service", &certs, data.path(), None);
        command
            .args(["--log-filter", "warn", "--user-service-addr", &users_addr.to_string()])
            .env_remove("OTEL_PROPAGATORS")
            .envs(env.iter().copied())
            .stdout(Stdio::null());
        let orders = Server::spawn("order-service", command, grpc, admin, certs.clone()).await;

        let (grpc, admin) = (free_addr(), free_addr());
        let mut command = Server::gateway_command(grpc, admin, &certs, data.path(), (users_addr, orders.grpc), "warn");
        command
            .env("TRUST_CLIENT_TRACE_CONTEXT", "true")
            .env_remove("OTEL_PROPAGATORS")
            .envs(env.iter().copied())
            .stdout(Stdio::null());
        let gateway = Server::spawn("edge-gateway", command, grpc, admin, certs.clone()).await;
        Self {
            gateway,
            _orders: orders,
            users,
            certs,
            _data: data,
        }
    }

    /// As the end user, through the gateway, with the client's trace context and baggage:
    /// GetUser (gateway -> user service) and CreateOrder (gateway -> order -> user service).
    fn call_with_client_context(&self, grpcurl_bin: &Path) {
        let token = self.certs.dev_token(USER_ID, "");
        let order = format!(
            r#"{{"user_id":"{USER_ID}","idempotency_key":"baggage-1","items":[{{"sku":"BOOK-1","quantity":1,"unit_price":{{"currency_code":"EUR","amount_minor":1250}}}}]}}"#
        );
        for (data, method) in [
            (format!(r#"{{"id":"{USER_ID}"}}"#), "suite.user.v1.UserService/GetUser"),
            (order, "suite.order.v1.OrderService/CreateOrder"),
        ] {
            grpcurl(
                grpcurl_bin,
                &[
                    "-cacert",
                    &self.certs.path_str("ca.pem"),
                    "-H",
                    &format!("authorization: Bearer {token}"),
                    "-rpc-header",
                    &format!("traceparent: 00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"),
                    "-rpc-header",
                    "baggage: tenant=acme",
                    "-d",
                    &data,
                    &format!("localhost:{}", self.gateway.grpc.port()),
                    method,
                ],
            );
        }
    }
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_and_baggage_reach_the_user_service_through_every_hop_with_export_on_and_off() {
    let Some(grpcurl_bin) = suite_testkit::grpcurl() else { return };
    let receiver = OtlpReceiver::start().await.unwrap();
    let endpoint = receiver.endpoint();
    // Kept running until their spans have been exported.
    let mut chains = Vec::new();
    for env in [
        // Export off: each hop continues the client's trace under span ids of its own.
        &[("OTEL_PROPAGATORS", "tracecontext,baggage")][..],
        // Export on (the propagators' default): each hop's client span is the next one's parent.
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    ] {
        let chain = Chain::start(env).await;
        chain.call_with_client_context(&grpcurl_bin);
        let calls = chain.users.calls();
        assert_eq!(calls.len(), 2, "GetUser from the gateway, then from the order service: {calls:#?}");
        for headers in &calls {
            assert_eq!(header(headers, "baggage"), Some("tenant=acme"), "{env:?}: {headers:#?}");
            let traceparent = header(headers, "traceparent").unwrap_or_else(|| panic!("{env:?}: {headers:#?}"));
            assert!(traceparent.starts_with(&format!("00-{CLIENT_TRACE_ID}-")), "{env:?}: {traceparent}");
            assert!(!traceparent.contains(CLIENT_SPAN_ID), "each hop names its own span: {traceparent}");
        }
        chains.push(chain);
    }
    // With export on, the hops' spans are in the client's trace.
    let spans = receiver
        .wait_for(Duration::from_secs(15), |spans| {
            spans
                .iter()
                .filter(|span| span.trace_id == CLIENT_TRACE_ID && span.kind == kind::SERVER)
                .count()
                >= 3
        })
        .await;
    let servers: Vec<_> = spans
        .iter()
        .filter(|span| span.trace_id == CLIENT_TRACE_ID && span.kind == kind::SERVER)
        .map(|span| (span.service.as_str(), span.name.as_str()))
        .collect();
    for expected in [
        ("edge-gateway", "suite.user.v1.UserService/GetUser"),
        ("edge-gateway", "suite.order.v1.OrderService/CreateOrder"),
        ("order-service", "suite.order.v1.OrderService/CreateOrder"),
    ] {
        assert!(servers.contains(&expected), "{expected:?} in {servers:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propagators_none_carries_nothing_not_even_the_clients_own_headers() {
    let Some(grpcurl_bin) = suite_testkit::grpcurl() else { return };
    let chain = Chain::start(&[("OTEL_PROPAGATORS", "none")]).await;
    chain.call_with_client_context(&grpcurl_bin);
    let calls = chain.users.calls();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    for headers in &calls {
        for name in ["traceparent", "tracestate", "baggage"] {
            assert_eq!(header(headers, name), None, "{name} went on: {headers:#?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_traceparent_starts_a_new_trace_and_never_fails_the_call() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let certs = DevCerts::issue();
    let (grpc, admin) = (free_addr(), free_addr());
    let mut command = Server::service_command(grpc, admin, "user-service", &certs, data.path(), None);
    command
        .args(["--log-filter", "warn"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env("OTEL_TRACES_SAMPLER", "parentbased_always_on")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env_remove("OTEL_PROPAGATORS")
        .stdout(Stdio::null());
    let users = Server::spawn("user-service", command, grpc, admin, certs).await;
    let mut client = pb::user_service_client::UserServiceClient::new(users.channel().await);
    let user = client
        .create_user(pb::CreateUserRequest {
            email: "invalid-context@example.com".into(),
            display_name: "Invalid".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();

    let invalid = [
        // A version W3C reserves as invalid.
        format!("ff-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"),
        // All-zero ids.
        format!("00-{}-{CLIENT_SPAN_ID}-01", "0".repeat(32)),
        format!("00-{CLIENT_TRACE_ID}-{}-01", "0".repeat(16)),
        // Wrong length: a field too many for version 00, a field missing.
        format!("00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01-extra"),
        format!("00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}"),
        // Upper-case hex.
        format!("00-{}-{CLIENT_SPAN_ID}-01", CLIENT_TRACE_ID.to_uppercase()),
        "not a traceparent".to_owned(),
    ];
    for traceparent in &invalid {
        let mut request = Request::new(pb::GetUserRequest { id: user.id.clone() });
        request.metadata_mut().insert("traceparent", traceparent.parse().unwrap());
        let answer = client.get_user(request).await;
        assert!(answer.is_ok(), "{traceparent}: {answer:?}");
    }

    let is_invalid_call = |span: &suite_testkit::ReceivedSpan| span.kind == kind::SERVER && span.str("rpc.method") == Some("GetUser");
    let spans = receiver
        .wait_for(Duration::from_secs(15), |spans| {
            spans.iter().filter(|span| is_invalid_call(span)).count() == invalid.len()
        })
        .await;
    let servers: Vec<_> = spans.iter().filter(|span| is_invalid_call(span)).collect();
    assert_eq!(servers.len(), invalid.len(), "{spans:#?}");
    let mut trace_ids: Vec<_> = servers.iter().map(|span| span.trace_id.clone()).collect();
    for span in &servers {
        assert!(span.parent_span_id.is_empty(), "a new root: {span:#?}");
        assert_ne!(span.trace_id, CLIENT_TRACE_ID, "{span:#?}");
        assert_eq!(span.int("rpc.grpc.status_code"), Some(0));
    }
    trace_ids.sort();
    trace_ids.dedup();
    assert_eq!(trace_ids.len(), invalid.len(), "one new trace per call");
}
