//! One request through the real binaries (gateway -> order service -> user
//! service) with trace export to a real OTLP/gRPC receiver: one trace, with
//! server and client spans on every hop linked parent to child, the RPC
//! semantic-convention attributes, cache and database spans, and the same
//! trace id in the log lines every hop wrote. A collector that is down, hung
//! or stopped mid-run costs requests nothing, its lost spans are counted, export
//! resumes when it is back, and shutdown stays bounded. Export over TLS verifies
//! the collector and presents a client certificate when one is configured.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{DevCerts, Server, free_addr, grpcurl};
use suite_proto::suite::user::v1 as pb;
use suite_testkit::otlp::{ReceivedSpan, kind, status};
use suite_testkit::{OtlpReceiver, TestPki};

/// A W3C trace id and parent span id the test client claims as its own.
const CLIENT_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN_ID: &str = "00f067aa0ba902b7";
const REQUEST_ID: &str = "e2e-request-1";

/// Export settings: everything sampled, batches sent every 100 ms, over the receiver's
/// protocol, with `extra` on top (headers, compression).
fn export_env(command: &mut Command, receiver: &OtlpReceiver, extra: &[(&str, &str)]) {
    command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", receiver.protocol())
        .env("OTEL_TRACES_SAMPLER", "parentbased_always_on")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_PROPAGATORS")
        .envs(extra.iter().copied());
}

/// The three binaries exporting to `receiver`, each writing its JSON logs to a file.
struct TracedSuite {
    gateway: Server,
    orders: Server,
    users: Server,
    certs: Arc<DevCerts>,
    data: tempfile::TempDir,
}

impl TracedSuite {
    async fn start(receiver: &OtlpReceiver, trust_client_trace_context: bool, extra_env: &[(&str, &str)]) -> Self {
        let certs = DevCerts::issue();
        let data = tempfile::tempdir().unwrap();
        let log = |name: &str| File::create(data.path().join(format!("{name}.log"))).unwrap();
        // Debug lines of the harness: its per-call line is what every hop writes for sure.
        let filter = "info,suite_grpc=debug";

        let (grpc, admin) = (free_addr(), free_addr());
        let mut command = Server::service_command(grpc, admin, "user-service", &certs, data.path(), None);
        command.args(["--log-filter", filter]).stdout(log("user-service"));
        export_env(&mut command, receiver, extra_env);
        let users = Server::spawn("user-service", command, grpc, admin, certs.clone()).await;

        let (grpc, admin) = (free_addr(), free_addr());
        let mut command = Server::service_command(grpc, admin, "order-service", &certs, data.path(), None);
        command
            .args(["--log-filter", filter, "--user-service-addr", &users.grpc.to_string()])
            .stdout(log("order-service"));
        export_env(&mut command, receiver, extra_env);
        let orders = Server::spawn("order-service", command, grpc, admin, certs.clone()).await;

        let (grpc, admin) = (free_addr(), free_addr());
        let mut command = Server::gateway_command(grpc, admin, &certs, data.path(), (users.grpc, orders.grpc), filter);
        command
            .env("TRUST_CLIENT_TRACE_CONTEXT", trust_client_trace_context.to_string())
            .stdout(log("edge-gateway"));
        export_env(&mut command, receiver, extra_env);
        let gateway = Server::spawn("edge-gateway", command, grpc, admin, certs.clone()).await;
        Self {
            gateway,
            orders,
            users,
            certs,
            data,
        }
    }

    /// grpcurl through the gateway with `token`, extra headers and body `data`; `-v` shows response headers.
    fn call(&self, grpcurl_bin: &Path, token: &str, headers: &[String], data: &str, method: &str) -> String {
        let mut args = vec![
            "-v".to_owned(),
            "-cacert".to_owned(),
            self.certs.path_str("ca.pem"),
            "-H".to_owned(),
            format!("authorization: Bearer {token}"),
        ];
        // On the call only: grpcurl's reflection requests would otherwise join the trace too.
        for header in headers {
            args.extend(["-rpc-header".to_owned(), header.clone()]);
        }
        args.extend([
            "-d".to_owned(),
            data.to_owned(),
            format!("localhost:{}", self.gateway.grpc.port()),
            method.to_owned(),
        ]);
        grpcurl(grpcurl_bin, &args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn log_path(&self, service: &str) -> PathBuf {
        self.data.path().join(format!("{service}.log"))
    }
}

/// The JSON log lines of `service` that carry `trace_id`.
fn log_lines_with_trace(suite: &TracedSuite, service: &str, trace_id: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(suite.log_path(service))
        .unwrap()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["trace_id"] == trace_id)
        .collect()
}

fn one<'a>(spans: &'a [ReceivedSpan], what: &str, matches: impl Fn(&ReceivedSpan) -> bool) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|span| matches(span)).collect();
    assert_eq!(found.len(), 1, "expected one {what}, found {}: {spans:#?}", found.len());
    found[0]
}

/// Whether `ancestor` is `span`'s parent, grandparent, ... within `spans`.
fn descends_from(spans: &[ReceivedSpan], span: &ReceivedSpan, ancestor: &ReceivedSpan) -> bool {
    let by_id: HashMap<&str, &ReceivedSpan> = spans.iter().map(|span| (span.span_id.as_str(), span)).collect();
    let mut current = span;
    for _ in 0..32 {
        if current.parent_span_id == ancestor.span_id {
            return true;
        }
        match by_id.get(current.parent_span_id.as_str()) {
            Some(parent) => current = parent,
            None => return false,
        }
    }
    false
}

fn assert_rpc(span: &ReceivedSpan, service: &str, span_kind: i32, rpc_service: &str, rpc_method: &str) {
    assert_eq!(span.service, service, "{span:#?}");
    assert_eq!(span.kind, span_kind, "{span:#?}");
    assert_eq!(span.name, format!("{rpc_service}/{rpc_method}"), "{span:#?}");
    assert_eq!(span.str("rpc.system"), Some("grpc"), "{span:#?}");
    assert_eq!(span.str("rpc.service"), Some(rpc_service), "{span:#?}");
    assert_eq!(span.str("rpc.method"), Some(rpc_method), "{span:#?}");
    assert_eq!(span.int("rpc.grpc.status_code"), Some(0), "{span:#?}");
    assert_ne!(span.status_code, status::ERROR, "{span:#?}");
}

/// Creates a user as an admin, then, as that user, an order sent with the
/// client's own `traceparent` and `x-request-id`; returns grpcurl's verbose output.
fn create_user_then_order(suite: &TracedSuite, grpcurl_bin: &Path) -> String {
    let admin = suite.certs.dev_token("operator", "admin");
    let created = suite.call(
        grpcurl_bin,
        &admin,
        &[],
        r#"{"email":"traced@example.com","display_name":"Traced"}"#,
        "suite.user.v1.UserService/CreateUser",
    );
    let body = &created[created.find('{').unwrap()..created.rfind('}').unwrap() + 1];
    let user_id = serde_json::from_str::<serde_json::Value>(body).unwrap()["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The user's own order, sent with the client's trace context and request id.
    let own = suite.certs.dev_token(&user_id, "");
    let order = format!(
        r#"{{"user_id":"{user_id}","idempotency_key":"traced-1","items":[{{"sku":"BOOK-1","quantity":1,"unit_price":{{"currency_code":"EUR","amount_minor":1250}}}}]}}"#
    );
    suite.call(
        grpcurl_bin,
        &own,
        &[
            format!("traceparent: 00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"),
            format!("x-request-id: {REQUEST_ID}"),
        ],
        &order,
        "suite.order.v1.OrderService/CreateOrder",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_through_gateway_order_and_user_is_one_trace_in_spans_and_logs_over_otlp_grpc() {
    let Some(grpcurl_bin) = suite_testkit::grpcurl() else { return };
    let receiver = OtlpReceiver::start().await.unwrap();
    one_request_is_one_trace(
        &grpcurl_bin,
        &receiver,
        &[("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=secret")],
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_through_gateway_order_and_user_is_one_trace_over_otlp_http_with_gzip() {
    let Some(grpcurl_bin) = suite_testkit::grpcurl() else { return };
    let receiver = OtlpReceiver::start_http().await.unwrap();
    let env = [
        ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-api-key=secret,x-tenant=core%20platform"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
    ];
    one_request_is_one_trace(&grpcurl_bin, &receiver, &env, true).await;
    let exports = receiver.exports();
    assert!(
        exports
            .iter()
            .all(|export| export.headers.get("x-tenant").is_some_and(|value| value == "core platform")),
        "{exports:#?}"
    );
}

/// One CreateOrder through the three binaries exporting to `receiver` with `env`: one trace
/// with every hop's spans, the receiver seeing the configured `x-api-key` on every export
/// from opentelemetry-otlp, gzip bodies when `gzip`, and the trace id in every hop's logs.
async fn one_request_is_one_trace(grpcurl_bin: &Path, receiver: &OtlpReceiver, env: &[(&str, &str)], gzip: bool) {
    let suite = TracedSuite::start(receiver, true, env).await;
    let answered = create_user_then_order(&suite, grpcurl_bin);
    assert!(
        answered.contains(&format!("x-request-id: {REQUEST_ID}")),
        "the request id comes back: {answered}"
    );

    let in_trace =
        |spans: &[ReceivedSpan]| -> Vec<ReceivedSpan> { spans.iter().filter(|span| span.trace_id == CLIENT_TRACE_ID).cloned().collect() };
    let spans = receiver
        .wait_for(Duration::from_secs(15), |spans| {
            let trace = in_trace(spans);
            ["edge-gateway", "order-service", "user-service"]
                .iter()
                .all(|service| trace.iter().any(|span| span.service == *service && span.kind == kind::SERVER))
                && trace.iter().any(|span| span.name == "SELECT users")
        })
        .await;
    let trace = in_trace(&spans);

    // gateway: one span for the call it forwards, continuing the client's context.
    let gateway_server = one(&trace, "gateway server span", |span| {
        span.service == "edge-gateway" && span.kind == kind::SERVER
    });
    assert_rpc(
        gateway_server,
        "edge-gateway",
        kind::SERVER,
        "suite.order.v1.OrderService",
        "CreateOrder",
    );
    assert_eq!(gateway_server.parent_span_id, CLIENT_SPAN_ID, "continues the client's span");
    assert!(gateway_server.str("network.peer.address").is_some(), "{gateway_server:#?}");
    assert!(
        trace.iter().all(|span| span.service != "edge-gateway" || span.kind == kind::SERVER),
        "a proxy's hop is one span: {trace:#?}"
    );

    // order service: server span under the gateway's; its user check below it.
    let order_server = one(&trace, "order server span", |span| {
        span.service == "order-service" && span.kind == kind::SERVER
    });
    assert_rpc(
        order_server,
        "order-service",
        kind::SERVER,
        "suite.order.v1.OrderService",
        "CreateOrder",
    );
    assert_eq!(order_server.parent_span_id, gateway_server.span_id);
    let order_client = one(&trace, "order client span", |span| {
        span.service == "order-service" && span.kind == kind::CLIENT && span.str("rpc.system") == Some("grpc")
    });
    assert_rpc(order_client, "order-service", kind::CLIENT, "suite.user.v1.UserService", "GetUser");
    assert!(descends_from(&trace, order_client, order_server));
    let order_insert = one(&trace, "order insert", |span| span.name == "INSERT orders");
    assert_eq!(order_insert.str("db.system"), Some("sqlite"));
    assert_eq!(order_insert.str("db.operation.name"), Some("INSERT"));
    assert_eq!(order_insert.kind, kind::CLIENT);
    assert!(descends_from(&trace, order_insert, order_server));

    // user service: server span under the order service's client span; cache miss, then the database.
    let user_server = one(&trace, "user server span", |span| {
        span.service == "user-service" && span.kind == kind::SERVER
    });
    assert_rpc(user_server, "user-service", kind::SERVER, "suite.user.v1.UserService", "GetUser");
    assert_eq!(user_server.parent_span_id, order_client.span_id);
    let cache_get = one(&trace, "cache read", |span| {
        span.service == "user-service" && span.name == "cache GET"
    });
    assert_eq!(cache_get.str("cache.outcome"), Some("miss"));
    assert!(descends_from(&trace, cache_get, user_server));
    let select = one(&trace, "user select", |span| span.name == "SELECT users");
    assert_eq!(select.str("db.system"), Some("sqlite"));
    assert_eq!(select.str("db.collection.name"), Some("users"));
    assert!(descends_from(&trace, select, user_server));
    assert!(
        select.attributes.keys().all(|key| key != "id" && key != "user_id"),
        "no bound values on database spans: {select:#?}"
    );

    // Every export came from opentelemetry-otlp with the configured header, compressed as asked.
    let exports = receiver.exports();
    assert!(!exports.is_empty());
    for export in &exports {
        assert!(export.accepted, "{export:#?}");
        assert_eq!(
            export.headers.get("x-api-key").map(|value| value.as_bytes()),
            Some(&b"secret"[..]),
            "{export:#?}"
        );
        let agent = export
            .headers
            .get("user-agent")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        assert!(agent.contains("OTel-OTLP-Exporter-Rust/"), "{export:#?}");
        assert_eq!(export.compressed, gzip, "{export:#?}");
    }
    // The resource: the SDK's own attributes, the environment's, and one instance id per process.
    let mut instances = std::collections::HashSet::new();
    for span in [gateway_server, order_server, user_server] {
        assert_eq!(span.resource_str("deployment.environment"), Some("test"), "{span:#?}");
        assert_eq!(span.resource_str("telemetry.sdk.name"), Some("opentelemetry"), "{span:#?}");
        assert_eq!(span.resource_str("service.version"), Some(env!("CARGO_PKG_VERSION")), "{span:#?}");
        assert_eq!(span.scope, "suite", "{span:#?}");
        instances.insert(span.resource_str("service.instance.id").unwrap().to_owned());
    }
    assert_eq!(instances.len(), 3, "one service.instance.id per process: {instances:?}");

    // The order service's latency histogram links the call's bucket to the trace.
    let metrics = suite_testkit::scrape_openmetrics(suite.orders.admin).await;
    assert!(metrics.contains("application/openmetrics-text"), "{metrics}");
    let exemplar = format!("# {{trace_id=\"{CLIENT_TRACE_ID}\"}}");
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("rpc_server_call_duration_seconds_bucket")
                && line.contains(r#"rpc_method="CreateOrder""#)
                && line.contains(&exemplar)),
        "an exemplar with the trace id on a CreateOrder bucket:\n{metrics}"
    );
    assert!(metrics.contains("suite_build_info{version="), "{metrics}");
    // Counted when the export call returns, a moment after the receiver has the spans.
    let exported = async {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let metrics = suite_testkit::scrape_openmetrics(suite.orders.admin).await;
            let exported = suite_testkit::metric_value(&metrics, "telemetry_spans_exported_total").unwrap_or_default();
            if exported > 0.0 || std::time::Instant::now() > deadline {
                return (exported, metrics);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (exported, exported_metrics) = exported.await;
    assert!(
        exported > 0.0,
        "the order service counts the spans it exported:\n{exported_metrics}"
    );
    // Its call to the user service, timed on the client side: exactly one, answered OK.
    assert_eq!(
        suite_testkit::metric_value(
            &metrics,
            r#"rpc_client_call_duration_seconds_count{dependency="user-service",rpc_service="suite.user.v1.UserService",rpc_method="GetUser",rpc_grpc_status_code="0"}"#
        ),
        Some(1.0),
        "{metrics}"
    );

    // Every binary's /metrics, exemplars included, passes Prometheus's own checker.
    if let Some(promtool) = suite_testkit::promtool() {
        for (service, admin) in [
            ("edge-gateway", suite.gateway.admin),
            ("order-service", suite.orders.admin),
            ("user-service", suite.users.admin),
        ] {
            let scraped = suite_testkit::scrape_metrics(admin).await;
            assert!(!scraped.contains("# {trace_id"), "no exemplars in the classic text format");
            let checked = suite_testkit::run_promtool(&promtool, &["check", "metrics"], suite_testkit::metrics_body(&scraped));
            assert!(checked.is_ok(), "{service}: promtool check metrics: {checked:?}\n{scraped}");
        }
    }

    // Every hop's log lines for the call carry the trace id, and the request id travelled with it.
    for service in ["edge-gateway", "order-service", "user-service"] {
        let lines = log_lines_with_trace(&suite, service, CLIENT_TRACE_ID);
        assert!(!lines.is_empty(), "{service} wrote no line with the trace id");
        assert!(
            lines.iter().any(|line| line["span"]["request_id"] == REQUEST_ID),
            "{service}'s lines carry the request id: {lines:#?}"
        );
        for line in &lines {
            assert_eq!(line["span_id"].as_str().map(str::len), Some(16), "{line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_clients_trace_context_is_not_continued() {
    let Some(grpcurl_bin) = suite_testkit::grpcurl() else { return };
    let receiver = OtlpReceiver::start().await.unwrap();
    let suite = TracedSuite::start(&receiver, false, &[]).await;
    create_user_then_order(&suite, &grpcurl_bin);

    let is_order_call =
        |span: &ReceivedSpan| span.service == "edge-gateway" && span.kind == kind::SERVER && span.str("rpc.method") == Some("CreateOrder");
    let spans = receiver
        .wait_for(Duration::from_secs(15), |spans| {
            spans.iter().any(is_order_call)
                && spans
                    .iter()
                    .any(|span| span.service == "user-service" && span.str("rpc.method") == Some("GetUser"))
        })
        .await;
    let gateway_server = one(&spans, "gateway CreateOrder span", is_order_call);
    assert_ne!(gateway_server.trace_id, CLIENT_TRACE_ID);
    assert!(gateway_server.parent_span_id.is_empty(), "a new root: {gateway_server:#?}");
    assert!(
        spans.iter().all(|span| span.trace_id != CLIENT_TRACE_ID),
        "the client's trace id went nowhere"
    );
    let user_server = one(&spans, "user GetUser span", |span| {
        span.service == "user-service" && span.str("rpc.method") == Some("GetUser") && span.kind == kind::SERVER
    });
    assert_eq!(
        user_server.trace_id, gateway_server.trace_id,
        "the gateway's own trace reaches the user service"
    );
}

/// A user service exporting to `endpoint` (or not exporting at all) with the
/// further variables `env`, stdout discarded; not yet started.
fn user_service_command(endpoint: Option<&str>, env: &[(&str, &str)], data_dir: &Path) -> (Command, SocketAddr, SocketAddr, Arc<DevCerts>) {
    let certs = DevCerts::issue();
    let (grpc, admin) = (free_addr(), free_addr());
    let mut command = Server::service_command(grpc, admin, "user-service", &certs, data_dir, None);
    command
        .args(["--log-filter", "warn"])
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env("OTEL_TRACES_SAMPLER", "always_on")
        // A small queue that fills at once, short export attempts, a one-second flush bound.
        .env("OTEL_BSP_MAX_QUEUE_SIZE", "64")
        .env("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "32")
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "2000")
        .env("TELEMETRY_SHUTDOWN_TIMEOUT_MS", "1000")
        .envs(env.iter().copied())
        .stdout(Stdio::null());
    match endpoint {
        Some(endpoint) => command.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        None => command.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT"),
    };
    (command, grpc, admin, certs)
}

/// [`user_service_command`], started and serving.
async fn user_service_exporting_to(endpoint: Option<&str>, env: &[(&str, &str)], data_dir: &Path) -> Server {
    let (command, grpc, admin, certs) = user_service_command(endpoint, env, data_dir);
    Server::spawn("user-service", command, grpc, admin, certs).await
}

/// A client of a user service and a user it created, for cache-hit GetUser calls.
struct UserProbe {
    client: pb::user_service_client::UserServiceClient<tonic::transport::Channel>,
    id: String,
}

impl UserProbe {
    async fn new(server: &Server) -> Self {
        let mut client = pb::user_service_client::UserServiceClient::new(server.channel().await);
        let user = client
            .create_user(pb::CreateUserRequest {
                email: "latency@example.com".into(),
                display_name: "Latency".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        Self { client, id: user.id }
    }

    /// Median and worst latency of `calls` calls, every one of which must succeed.
    async fn latencies(&mut self, calls: usize) -> (Duration, Duration) {
        let mut latencies = Vec::with_capacity(calls);
        for _ in 0..calls {
            let started = std::time::Instant::now();
            self.client.get_user(pb::GetUserRequest { id: self.id.clone() }).await.unwrap();
            latencies.push(started.elapsed());
        }
        latencies.sort();
        (latencies[calls / 2], latencies[calls - 1])
    }

    /// One call continuing the caller's trace `trace_id`, so its server span can be told apart.
    async fn get_user_in_trace(&mut self, trace_id: &str) {
        let mut request = tonic::Request::new(pb::GetUserRequest { id: self.id.clone() });
        request
            .metadata_mut()
            .insert("traceparent", format!("00-{trace_id}-{CLIENT_SPAN_ID}-01").parse().unwrap());
        self.client.get_user(request).await.unwrap();
    }
}

/// A service's span accounting, from its `/metrics`.
#[derive(Debug, Clone, Copy)]
struct SpanCounters {
    exported: f64,
    failed: f64,
    dropped: f64,
}

impl SpanCounters {
    async fn scrape(admin: SocketAddr) -> Self {
        let metrics = suite_testkit::scrape_metrics(admin).await;
        let value = |name: &str| suite_testkit::metric_value(&metrics, name).unwrap_or_else(|| panic!("no {name}:\n{metrics}"));
        Self {
            exported: value("telemetry_spans_exported_total"),
            failed: value("telemetry_spans_export_failed_total"),
            dropped: value("telemetry_spans_dropped_total"),
        }
    }

    /// Scrapes until `done` holds or `timeout` passes; returns the last scrape either way.
    /// (The counters move when an export call returns, a moment after the receiver has the spans.)
    async fn wait_for(admin: SocketAddr, timeout: Duration, done: impl Fn(&Self) -> bool) -> Self {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let counters = Self::scrape(admin).await;
            if done(&counters) || std::time::Instant::now() >= deadline {
                return counters;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn lost(&self) -> f64 {
        self.failed + self.dropped
    }
}

fn is_get_user_server_span(span: &ReceivedSpan) -> bool {
    span.service == "user-service" && span.kind == kind::SERVER && span.str("rpc.method") == Some("GetUser")
}

/// SIGTERM, then the time until the process has exited (it must exit 0).
fn time_to_exit(server: &mut Server) -> Duration {
    let started = std::time::Instant::now();
    server.terminate();
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the process did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_or_hung_costs_requests_nothing_and_shutdown_stays_bounded() {
    let data = tempfile::tempdir().unwrap();
    // Down: nothing listens on the port. Hung: the kernel accepts the connection, nobody ever
    // answers, neither HTTP/2 nor, for an https:// collector, the TLS handshake.
    let down = free_addr();
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_addr = hung.local_addr().unwrap();
    let pki = TestPki::new();
    let ca = pki.ca_path();
    let tls = [("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.to_str().unwrap())];

    let mut untraced = user_service_exporting_to(None, &[], &data.path().join("untraced")).await;
    let (baseline_median, _) = UserProbe::new(&untraced).await.latencies(300).await;
    let untraced_exit = time_to_exit(&mut untraced);

    for (endpoint, env) in [
        (format!("http://{down}"), &[][..]),
        (format!("http://{hung_addr}"), &[][..]),
        (format!("https://{hung_addr}"), &tls[..]),
    ] {
        let data_dir = data.path().join(endpoint.replace([':', '/'], "_"));
        let mut server = user_service_exporting_to(Some(&endpoint), env, &data_dir).await;
        // Far more spans than the queue holds: the overflow is dropped, nothing waits.
        let (median, worst) = UserProbe::new(&server).await.latencies(300).await;
        assert!(
            median <= baseline_median * 3 + Duration::from_millis(2),
            "collector at {endpoint}: median {median:?} against {baseline_median:?} without export"
        );
        // An export attempt takes up to 2 s; no request may have waited for one.
        assert!(
            worst < Duration::from_millis(500),
            "collector at {endpoint}: slowest call {worst:?}"
        );
        // Each export gives up within its timeout and is counted, so the next batch gets its turn.
        let counters = SpanCounters::wait_for(server.admin, Duration::from_secs(15), |counters| counters.failed > 0.0).await;
        assert!(counters.failed > 0.0, "collector at {endpoint}: no export gave up: {counters:?}");
        // Shutdown gives the flush one second (TELEMETRY_SHUTDOWN_TIMEOUT_MS), then leaves.
        let exit = time_to_exit(&mut server);
        assert!(
            exit < untraced_exit + Duration::from_secs(3),
            "collector at {endpoint}: exit took {exit:?} (without export {untraced_exit:?})"
        );
    }
    drop(hung);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_stopped_mid_run_costs_requests_nothing_and_export_resumes_when_it_is_back() {
    let data = tempfile::tempdir().unwrap();
    let mut untraced = user_service_exporting_to(None, &[], &data.path().join("untraced")).await;
    let untraced_exit = time_to_exit(&mut untraced);

    let receiver = OtlpReceiver::start().await.unwrap();
    let collector = receiver.addr();
    let mut server = user_service_exporting_to(Some(&receiver.endpoint()), &[], &data.path().join("traced")).await;
    let mut users = UserProbe::new(&server).await;

    // Up: the calls' spans arrive and are counted as exported.
    let (up_median, _) = users.latencies(300).await;
    let spans = receiver
        .wait_for(Duration::from_secs(15), |spans| spans.iter().any(is_get_user_server_span))
        .await;
    assert!(spans.iter().any(is_get_user_server_span), "no GetUser span arrived: {spans:#?}");
    let up = SpanCounters::wait_for(server.admin, Duration::from_secs(10), |counters| counters.exported > 0.0).await;
    assert!(up.exported > 0.0, "{up:?}");

    // Stopped: the exporter's connection is closed under it.
    receiver.stop().await;
    let stopped = SpanCounters::scrape(server.admin).await;

    // Down: every call succeeds at the latency it had with the collector up.
    const CALLS: usize = 300;
    let (median, worst) = users.latencies(CALLS).await;
    assert!(
        median <= up_median * 3 + Duration::from_millis(2),
        "collector stopped: median {median:?} against {up_median:?} while it was up"
    );
    assert!(worst < Duration::from_millis(500), "collector stopped: slowest call {worst:?}");
    // The exporter saw the collector go: its exports fail, and are counted. Each call ended at
    // least its server span, none of which can be exported or kept past the queue bound: every
    // one is counted as lost, in a failed export or dropped at the full queue.
    let down = SpanCounters::wait_for(server.admin, Duration::from_secs(20), |counters| {
        counters.failed > stopped.failed && counters.lost() - stopped.lost() >= CALLS as f64
    })
    .await;
    assert!(
        down.failed > stopped.failed && down.lost() - stopped.lost() >= CALLS as f64,
        "{CALLS} calls' spans made while the collector was down, counted lost: {stopped:?} -> {down:?}"
    );

    // Back on the same address: export resumes, the service untouched. The queue's leftovers go
    // first and may fill it for a moment, so the call is repeated until a span of the trace it
    // started (proof that spans made now arrive) is in.
    let receiver = OtlpReceiver::start_on(collector).await.unwrap();
    let after_restart = "5e1f0e5a7c0f4b7d9a3c2b1d0e9f8a7b";
    let in_new_trace = |spans: &[ReceivedSpan]| {
        spans
            .iter()
            .any(|span| span.trace_id == after_restart && is_get_user_server_span(span))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !in_new_trace(&receiver.spans()) && std::time::Instant::now() < deadline {
        users.get_user_in_trace(after_restart).await;
        receiver.wait_for(Duration::from_millis(500), in_new_trace).await;
    }
    assert!(
        in_new_trace(&receiver.spans()),
        "export did not resume after the collector came back: {:?}",
        SpanCounters::scrape(server.admin).await
    );
    let back = SpanCounters::wait_for(server.admin, Duration::from_secs(10), |counters| counters.exported > down.exported).await;
    assert!(back.exported > down.exported, "{down:?} -> {back:?}");

    // Down again, with spans queued: SIGTERM still exits within the flush bound.
    receiver.stop().await;
    users.latencies(50).await;
    let exit = time_to_exit(&mut server);
    assert!(
        exit < untraced_exit + Duration::from_secs(3),
        "exit with the collector stopped took {exit:?} (without export {untraced_exit:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_answering_unavailable_then_ok_gets_the_gzipped_spans_through_the_exporters_retries() {
    let data = tempfile::tempdir().unwrap();
    for receiver in [OtlpReceiver::start().await.unwrap(), OtlpReceiver::start_http().await.unwrap()] {
        let protocol = receiver.protocol();
        receiver.refuse_next(2);
        let mut server = user_service_exporting_to(
            Some(&receiver.endpoint()),
            &[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ],
            &data.path().join(protocol.replace('/', "-")),
        )
        .await;
        let (median, worst) = UserProbe::new(&server).await.latencies(20).await;
        assert!(
            worst < Duration::from_millis(500),
            "{protocol}: slowest call {worst:?} (median {median:?})"
        );
        let spans = receiver
            .wait_for(Duration::from_secs(15), |spans| spans.iter().any(is_get_user_server_span))
            .await;
        assert!(spans.iter().any(is_get_user_server_span), "{protocol}: no span arrived: {spans:#?}");
        let exports = receiver.exports();
        assert_eq!(receiver.refused_calls(), 2, "{protocol}: {exports:#?}");
        assert!(
            !exports[0].accepted && !exports[1].accepted && exports[2].accepted,
            "{protocol}: {exports:#?}"
        );
        // The refused batch was sent again, not lost.
        let counters = SpanCounters::wait_for(server.admin, Duration::from_secs(10), |counters| counters.exported > 0.0).await;
        assert!(counters.exported > 0.0, "{protocol}: {counters:?}");
        assert_eq!(counters.lost(), 0.0, "{protocol}: {counters:?}");
        time_to_exit(&mut server);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_tls_collector_only_through_its_ca_and_with_a_client_certificate_when_it_asks() {
    let data = tempfile::tempdir().unwrap();
    let collector_pki = TestPki::new();
    let collector_cert = collector_pki.service("otel-collector");
    let client_cert = collector_pki.service("user-service");
    let ca = collector_pki.ca_path();
    let ca = ca.to_str().unwrap();
    let (cert, key) = (client_cert.cert.to_str().unwrap(), client_cert.key.to_str().unwrap());
    let other_pki = TestPki::new();
    let wrong_ca = other_pki.ca_path();

    // The collector's CA: spans arrive over TLS.
    let receiver = OtlpReceiver::start_tls(&collector_cert, None).await.unwrap();
    assert!(receiver.endpoint().starts_with("https://"));
    let server = user_service_exporting_to(
        Some(&receiver.endpoint()),
        &[("OTEL_EXPORTER_OTLP_CERTIFICATE", ca)],
        &data.path().join("right-ca"),
    )
    .await;
    assert_exports_arrive(&server, &receiver, "TLS").await;

    // Any other CA: the collector is not trusted, nothing reaches it, the calls still succeed
    // and the lost spans are counted.
    let receiver = OtlpReceiver::start_tls(&collector_cert, None).await.unwrap();
    let server = user_service_exporting_to(
        Some(&receiver.endpoint()),
        &[("OTEL_EXPORTER_OTLP_CERTIFICATE", wrong_ca.to_str().unwrap())],
        &data.path().join("wrong-ca"),
    )
    .await;
    assert_exports_fail(&server, &receiver, "a collector certificate from another CA").await;

    // No CA configured: the public web roots, which do not vouch for a private CA either.
    let receiver = OtlpReceiver::start_tls(&collector_cert, None).await.unwrap();
    let server = user_service_exporting_to(Some(&receiver.endpoint()), &[], &data.path().join("web-roots")).await;
    assert_exports_fail(&server, &receiver, "a private CA checked against the web roots").await;

    // A collector that requires client certificates refuses an exporter without one ...
    let receiver = OtlpReceiver::start_tls(&collector_cert, Some(&collector_pki.ca_path()))
        .await
        .unwrap();
    let server = user_service_exporting_to(
        Some(&receiver.endpoint()),
        &[("OTEL_EXPORTER_OTLP_CERTIFICATE", ca)],
        &data.path().join("no-client-cert"),
    )
    .await;
    assert_exports_fail(&server, &receiver, "no client certificate").await;

    // ... and takes the spans of one presenting a certificate from the CA it trusts.
    let server = user_service_exporting_to(
        Some(&receiver.endpoint()),
        &[
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", ca),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", cert),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", key),
        ],
        &data.path().join("client-cert"),
    )
    .await;
    assert_exports_arrive(&server, &receiver, "mutual TLS").await;
}

/// Calls `server` and waits for its GetUser server spans at `receiver`, reached over `how`.
async fn assert_exports_arrive(server: &Server, receiver: &OtlpReceiver, how: &str) {
    UserProbe::new(server).await.latencies(20).await;
    let spans = receiver
        .wait_for(Duration::from_secs(15), |spans| spans.iter().any(is_get_user_server_span))
        .await;
    assert!(spans.iter().any(is_get_user_server_span), "no span arrived over {how}: {spans:#?}");
}

/// Calls `server` while its exports to `receiver` cannot get through: every call
/// succeeds, the failed exports are counted, and the receiver gets nothing.
async fn assert_exports_fail(server: &Server, receiver: &OtlpReceiver, why: &str) {
    UserProbe::new(server).await.latencies(20).await;
    let counters = SpanCounters::wait_for(server.admin, Duration::from_secs(15), |counters| counters.failed > 0.0).await;
    assert!(counters.failed > 0.0, "{why}: no failed export counted: {counters:?}");
    assert_eq!(counters.exported, 0.0, "{why}: {counters:?}");
    assert_eq!(receiver.span_count(), 0, "{why}: spans arrived: {:#?}", receiver.spans());
}

#[test]
fn a_collector_certificate_setting_that_cannot_work_stops_start_up_with_exit_64() {
    let data = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let client = pki.service("user-service");
    let (ca, cert) = (pki.ca_path(), client.cert.to_str().unwrap().to_owned());
    let missing = data.path().join("missing-ca.pem");
    for (endpoint, env, named) in [
        (
            "https://127.0.0.1:4317",
            vec![("OTEL_EXPORTER_OTLP_CERTIFICATE", missing.to_str().unwrap())],
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
        ),
        (
            "https://127.0.0.1:4317",
            vec![("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", cert.as_str())],
            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        ),
        (
            "http://127.0.0.1:4317",
            vec![("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", ca.to_str().unwrap())],
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
        ),
    ] {
        let (mut command, ..) = user_service_command(Some(endpoint), &env, data.path());
        let output = command.stderr(Stdio::piped()).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{env:?}: {stderr}");
        assert!(stderr.contains(named), "{env:?}: the message names {named}: {stderr}");
    }
}
