//! The server harness every service of the suite runs in.
//!
//! It always mounts gRPC health and reflection (v1 and v1alpha) beside the
//! service's own APIs, wraps them in RPC metrics and load shedding, serves a
//! plaintext admin port (Prometheus `/metrics` and gRPC health for Kubernetes
//! probes), keeps readiness in step with the service's dependencies, and shuts
//! down in the order a rolling update needs:
//! signal -> NOT_SERVING -> stop accepting -> drain (bounded) -> return.
//!
//! Every call gets a server span (continued from the caller's trace context)
//! and an `x-request-id` before anything else runs (see [`crate::layers::trace`]).
//!
//! With mutual TLS the gRPC port terminates TLS itself (see [`crate::connection`])
//! and every request passes the authorization policy before its handler runs.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use futures::future::BoxFuture;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::{Routes, RoutesBuilder};
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use crate::authz::PolicyError;
use crate::config::ServerConfig;
use crate::connection::{ConnectionLimits, incoming};
use crate::layers::authz::AuthorizationLayer;
use crate::layers::limit::ConcurrencyLimitLayer;
use crate::layers::metrics::{RpcMetricsLayer, RpcServerMetrics};
use crate::layers::trace::{RemoteTraceContext, TraceLayer};
use crate::methods::method_paths;
use crate::security::Transport;

/// Health service name a liveness probe asks for. It stays SERVING while the
/// process runs (even when a dependency is down or the server drains), so
/// Kubernetes restarts a pod only when the process itself is stuck.
pub const LIVENESS_SERVICE: &str = "liveness";

const REFLECTION_PATHS: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

type ReadinessCheck = Arc<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>;

/// A server's routes (its services, health, reflection) as one boxed service,
/// for a server that puts its own handling in front of them (see [`GrpcServer::wrap_routes`]).
pub type RouteService = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>;

type RouteWrapper = Arc<dyn Fn(RouteService) -> RouteService + Send + Sync>;

/// The listeners a server runs on, bound by the caller (tests bind port 0).
#[derive(Debug)]
pub struct Listeners {
    /// The gRPC API port.
    pub grpc: TcpListener,
    /// The plaintext admin port: `/metrics` and probe health.
    pub admin: TcpListener,
}

impl Listeners {
    pub async fn bind(grpc: SocketAddr, admin: SocketAddr) -> std::io::Result<Self> {
        Ok(Self {
            grpc: TcpListener::bind(grpc).await?,
            admin: TcpListener::bind(admin).await?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid descriptor set for reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("admin server failed: {0}")]
    Admin(#[from] std::io::Error),
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// Builder for one service's server; see the module documentation.
pub struct GrpcServer {
    config: ServerConfig,
    transport: Transport,
    routes: RoutesBuilder,
    registry: Registry,
    descriptor_sets: Vec<&'static [u8]>,
    service_names: Vec<&'static str>,
    health_reporter: HealthReporter,
    health_service: HealthServer<HealthService>,
    readiness: Option<ReadinessCheck>,
    route_wrapper: Option<RouteWrapper>,
    remote_trace_context: RemoteTraceContext,
}

impl std::fmt::Debug for GrpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServer")
            .field("services", &self.service_names)
            .finish_non_exhaustive()
    }
}

impl GrpcServer {
    pub fn new(config: ServerConfig, transport: Transport) -> Self {
        let health_reporter = HealthReporter::new();
        let health_service = HealthServer::new(HealthService::from_health_reporter(health_reporter.clone()));
        Self {
            config,
            transport,
            routes: RoutesBuilder::default(),
            registry: Registry::default(),
            // Health for describing probes; google.rpc so grpcurl can decode error details.
            descriptor_sets: vec![tonic_health::pb::FILE_DESCRIPTOR_SET, tonic_types::pb::FILE_DESCRIPTOR_SET],
            service_names: Vec::new(),
            health_reporter,
            health_service,
            readiness: None,
            route_wrapper: None,
            remote_trace_context: RemoteTraceContext::Trust,
        }
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The registry served at `/metrics`; services add their own metrics here.
    pub fn metrics_registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Mounts a generated tonic service; its name joins health and metrics.
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<http::Request<Body>, Error = Infallible> + NamedService + Clone + Send + Sync + 'static,
        S::Response: IntoResponse,
        S::Future: Send + 'static,
    {
        self.service_names.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// Adds an encoded `FileDescriptorSet` for reflection and method metrics.
    pub fn with_descriptor_set(mut self, descriptor_set: &'static [u8]) -> Self {
        self.descriptor_sets.push(descriptor_set);
        self
    }

    /// Readiness follows `check` (for example: the database answers a ping),
    /// re-run every `readiness_interval`. Without it, the server is ready once listening.
    pub fn with_readiness<F, Fut>(mut self, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.readiness = Some(Arc::new(move || Box::pin(check())));
        self
    }

    /// Whether callers' W3C trace context is continued (the default: callers
    /// are services behind mutual TLS) or ignored (an edge facing the internet).
    pub fn with_remote_trace_context(mut self, remote: RemoteTraceContext) -> Self {
        self.remote_trace_context = remote;
        self
    }

    /// Puts `wrapper`'s service between the harness's layers (metrics, authorization,
    /// load shedding) and the routes: the edge gateway authenticates, rate limits
    /// and proxies there, and hands health and reflection to the routes it is given.
    pub fn wrap_routes<F>(mut self, wrapper: F) -> Self
    where
        F: Fn(RouteService) -> RouteService + Send + Sync + 'static,
    {
        self.route_wrapper = Some(Arc::new(wrapper));
        self
    }

    /// Serves until `shutdown` completes, then drains within the grace period.
    pub async fn serve(mut self, listeners: Listeners, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServeError> {
        let known_paths = self.known_paths();
        let (tls, authorization) = match std::mem::replace(&mut self.transport, Transport::InsecurePlaintext) {
            Transport::Mtls { tls, policy } => {
                tls.metrics().register(&mut self.registry);
                (Some(tls), AuthorizationLayer::enforce(policy.compile(&known_paths)?))
            }
            Transport::ServerOnlyTls { tls } => {
                tls.metrics().register(&mut self.registry);
                (Some(tls), AuthorizationLayer::disabled())
            }
            Transport::InsecurePlaintext => {
                tracing::warn!(
                    "INSECURE: the gRPC port is PLAINTEXT, with no client authentication and no authorization; \
                     anyone who can reach it can call every method. For local development only."
                );
                (None, AuthorizationLayer::disabled())
            }
        };
        let transport = match &tls {
            Some(tls) => tls.describe(),
            None => "INSECURE plaintext".to_owned(),
        };
        let trace = TraceLayer::new(self.remote_trace_context, known_paths.iter().cloned());
        let metrics = RpcServerMetrics::register(&mut self.registry, known_paths);
        // A gauge rather than an OpenMetrics info metric, which Prometheus's text-format tools reject.
        let build_info = prometheus_client::metrics::family::Family::<
            Vec<(&'static str, &'static str)>,
            prometheus_client::metrics::gauge::Gauge,
        >::default();
        build_info.get_or_create(&vec![("version", env!("CARGO_PKG_VERSION"))]).set(1);
        self.registry
            .register("suite_build_info", "The running build, by version (always 1).", build_info);
        self.registry.register_collector(Box::new(SpanExportMetrics));
        let max_active_calls = prometheus_client::metrics::gauge::Gauge::<i64>::default();
        max_active_calls.set(i64::try_from(self.config.max_concurrent_requests).unwrap_or(i64::MAX));
        self.registry.register(
            "rpc_server_max_active_calls",
            "Calls handled at once before more are shed (GRPC_MAX_CONCURRENT_REQUESTS); saturation is rpc_server_active_calls over this.",
            max_active_calls,
        );
        let health = Health {
            reporter: self.health_reporter.clone(),
            service_names: self.service_names.clone(),
        };
        health.reporter.set_service_status(LIVENESS_SERVICE, ServingStatus::Serving).await;
        let readiness_task = tokio::spawn(health.clone().follow(self.readiness.take(), self.config.readiness_interval()));

        let registry = Arc::new(std::mem::take(&mut self.registry));
        let admin_addr = listeners.admin.local_addr()?;
        let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin_routes = admin_routes(self.health_service.clone(), registry)?;
        let admin = tokio::spawn(serve_admin(listeners.admin, admin_routes, admin_stopped));

        let mut routes = std::mem::take(&mut self.routes);
        routes.add_service(self.health_service.clone());
        routes.add_service(self.reflection().build_v1()?);
        routes.add_service(self.reflection().build_v1alpha()?);
        let grpc_addr = listeners.grpc.local_addr()?;
        let (start_drain, drain_started) = tokio::sync::oneshot::channel::<()>();
        let config = &self.config;
        let mut builder = tonic::transport::Server::builder();
        let max_connection_age = config.max_connection_age();
        if let Some(age) = max_connection_age {
            // Not tonic's own grace: with one set, it closes the connection at age plus grace
            // without the GOAWAY at the age. The accept loop closes it (`ConnectionLimits`).
            builder = builder.max_connection_age(age);
        }
        let limits = ConnectionLimits {
            idle_timeout: config.idle_timeout(),
            lifetime: max_connection_age.map(|age| age + config.max_connection_age_grace()),
        };
        let server = builder
            .timeout(config.request_timeout())
            .max_concurrent_streams(Some(config.max_concurrent_streams))
            .http2_max_header_list_size(Some(config.max_header_list_bytes))
            .max_frame_size(Some(config.max_frame_bytes))
            .http2_max_pending_accept_reset_streams(Some(config.max_pending_reset_streams))
            .http2_keepalive_interval(Some(Duration::from_millis(config.keepalive_interval_ms)))
            .http2_keepalive_timeout(Some(Duration::from_millis(config.keepalive_timeout_ms)))
            .layer(
                ServiceBuilder::new()
                    .layer(trace)
                    .layer(RpcMetricsLayer::new(metrics))
                    .layer(authorization)
                    .layer(ConcurrencyLimitLayer::new(config.max_concurrent_requests))
                    .option_layer(
                        self.route_wrapper
                            .take()
                            .map(|wrapper| tower::layer::layer_fn(move |routes: Routes| wrapper(RouteService::new(routes)))),
                    ),
            )
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(incoming(listeners.grpc, tls, limits), async {
                let _ = drain_started.await;
            });
        tokio::pin!(server);
        tracing::info!(%grpc_addr, %admin_addr, %transport, services = ?self.service_names, "serving");

        let outcome = tokio::select! {
            result = &mut server => result.map_err(ServeError::from),
            () = shutdown => {
                tracing::info!(grace_ms = config.shutdown_grace_ms, "shutdown requested; draining in-flight requests");
                readiness_task.abort();
                health.set(ServingStatus::NotServing).await;
                let _ = start_drain.send(());
                match tokio::time::timeout(config.shutdown_grace(), &mut server).await {
                    Ok(result) => result.map_err(ServeError::from),
                    Err(_) => {
                        tracing::warn!("grace period over with requests still in flight; closing connections");
                        Ok(())
                    }
                }
            }
        };
        let _ = stop_admin.send(());
        match tokio::time::timeout(Duration::from_secs(1), admin).await {
            Ok(Ok(Err(error))) => tracing::warn!(%error, "admin server ended with an error"),
            Ok(_) => {}
            Err(_) => tracing::warn!("admin server did not stop within a second"),
        }
        tracing::info!("server stopped");
        outcome
    }

    fn reflection(&self) -> tonic_reflection::server::Builder<'static> {
        self.descriptor_sets
            .iter()
            .fold(tonic_reflection::server::Builder::configure(), |builder, set| {
                builder.register_encoded_file_descriptor_set(set)
            })
    }

    /// `/package.Service/Method` for every method in the descriptor sets, plus reflection.
    fn known_paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = REFLECTION_PATHS.iter().map(|path| (*path).to_owned()).collect();
        for encoded in &self.descriptor_sets {
            paths.extend(method_paths(encoded));
        }
        paths
    }
}

/// Health of the service names this server answers for.
#[derive(Clone)]
struct Health {
    reporter: HealthReporter,
    service_names: Vec<&'static str>,
}

impl Health {
    /// Sets the overall status ("") and every service's status.
    async fn set(&self, status: ServingStatus) {
        self.reporter.set_service_status("", status).await;
        for name in &self.service_names {
            self.reporter.set_service_status(*name, status).await;
        }
    }

    /// Keeps readiness in step with `check`, logging each change once.
    async fn follow(self, check: Option<ReadinessCheck>, interval: Duration) {
        let Some(check) = check else {
            self.set(ServingStatus::Serving).await;
            return;
        };
        self.set(ServingStatus::NotServing).await;
        let mut ready = None;
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let now_ready = check().await;
            if ready != Some(now_ready) {
                if now_ready {
                    tracing::info!("dependencies reachable; serving");
                } else {
                    tracing::warn!("a dependency is unreachable; health reports NOT_SERVING");
                }
                self.set(if now_ready {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                })
                .await;
                ready = Some(now_ready);
            }
        }
    }
}

/// The admin port's routes: Prometheus text at `/metrics`, gRPC health for
/// probes, and reflection so grpcurl can query health there too.
fn admin_routes(health: HealthServer<HealthService>, registry: Arc<Registry>) -> Result<axum::Router, ServeError> {
    let reflection =
        || tonic_reflection::server::Builder::configure().register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    Ok(Routes::new(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .into_axum_router()
        .route(
            "/metrics",
            axum::routing::get(move |headers: http::HeaderMap| {
                let registry = registry.clone();
                async move { render_metrics(&registry, &headers) }
            }),
        ))
}

async fn serve_admin(listener: TcpListener, routes: axum::Router, stop: tokio::sync::oneshot::Receiver<()>) -> std::io::Result<()> {
    axum::serve(listener, routes)
        .with_graceful_shutdown(async {
            let _ = stop.await;
        })
        .await
}

/// OpenMetrics text (with exemplars linking latency buckets to traces) for a
/// scraper that asks for it, as Prometheus does; for anyone else (curl,
/// promtool, older scrapers) the same families in the classic text format,
/// which has no place for exemplars.
fn render_metrics(registry: &Registry, request_headers: &http::HeaderMap) -> axum::response::Response {
    let mut text = String::with_capacity(16 * 1024);
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, registry) {
        tracing::error!(%error, "cannot encode metrics");
        return http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let wants_openmetrics = request_headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("application/openmetrics-text"));
    if wants_openmetrics {
        return (
            [(
                http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response();
    }
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        classic_text(&text),
    )
        .into_response()
}

/// The classic Prometheus text format (0.0.4) from OpenMetrics text: sample
/// lines lose their ` # {labels} value` exemplar, a counter family is named
/// after its `_total` samples as that format expects, `# UNIT` lines go.
fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") {
            continue;
        }
        let metadata = line
            .strip_prefix("# HELP ")
            .map(|rest| ("# HELP ", rest))
            .or_else(|| line.strip_prefix("# TYPE ").map(|rest| ("# TYPE ", rest)));
        match metadata {
            Some((prefix, rest)) => match rest.split_once(' ') {
                Some((name, tail)) if counters.contains(name) => {
                    text.push_str(&format!("{prefix}{name}_total {tail}"));
                }
                _ => text.push_str(line),
            },
            None if line.starts_with('#') => text.push_str(line),
            None => text.push_str(line.split_once(" # {").map_or(line, |(sample, _)| sample)),
        }
        text.push('\n');
    }
    text
}

/// Where this process's finished spans went (all zero while traces are not exported).
#[derive(Debug)]
struct SpanExportMetrics;

impl prometheus_client::collector::Collector for SpanExportMetrics {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        let stats = suite_telemetry::span_export_stats();
        for (name, help, value) in [
            ("telemetry_spans_exported", "Spans the collector accepted.", stats.exported),
            (
                "telemetry_spans_export_failed",
                "Spans lost because their export failed (collector down, slow or refusing).",
                stats.failed,
            ),
            (
                "telemetry_spans_dropped",
                "Spans dropped because the export queue (OTEL_BSP_MAX_QUEUE_SIZE) was full; requests never wait for it.",
                stats.dropped,
            ),
        ] {
            let counter = prometheus_client::metrics::counter::ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        Ok(())
    }
}

/// Completes on SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM; only SIGINT will stop the server");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => tracing::info!("received SIGINT"),
            _ = terminate.recv() => tracing::info!("received SIGTERM"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text_drops_exemplars_and_names_counters_after_their_samples() {
        let openmetrics = "# HELP a_seconds Latency # {not an exemplar}.\n\
                           # TYPE a_seconds histogram\n\
                           a_seconds_bucket{le=\"0.1\"} 3 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.05\n\
                           a_seconds_count 3\n\
                           # HELP calls Calls made.\n\
                           # TYPE calls counter\n\
                           # UNIT calls calls\n\
                           calls_total 7\n\
                           # EOF\n";
        assert_eq!(
            classic_text(openmetrics),
            "# HELP a_seconds Latency # {not an exemplar}.\n# TYPE a_seconds histogram\na_seconds_bucket{le=\"0.1\"} 3\n\
             a_seconds_count 3\n# HELP calls_total Calls made.\n# TYPE calls_total counter\ncalls_total 7\n# EOF\n"
        );
    }
}
