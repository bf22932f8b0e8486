//! Per-method RPC metrics: a duration histogram labelled with service, method
//! and gRPC status code (its count is the request count), and in-flight gauges.
//!
//! The status of a normal reply travels in the trailers, so the recorder rides
//! along in the response body and records when the trailers pass, or on drop
//! (a client that went away is counted as CANCELLED).
//!
//! When the process exports traces, each observation carries the call's trace
//! id as an OpenMetrics exemplar, so a latency bucket links to a trace.

use std::fmt::Write as _;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::{BoxFuture, FutureExt};
use http::HeaderMap;
use opentelemetry::trace::TraceContextExt as _;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tonic::Code;
use tower::{Layer, Service};

use super::body::{GuardedBody, ResponseGuard};
use crate::connection::{OpenStream, PeerInfo};
use crate::methods::KnownMethods;

/// Latency buckets in seconds, from half a millisecond (a cache hit) to ten seconds.
const DURATION_BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MethodLabels {
    rpc_service: &'static str,
    rpc_method: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CallLabels {
    rpc_service: &'static str,
    rpc_method: &'static str,
    rpc_grpc_status_code: i32,
}

/// The exemplar of a duration observation: the trace it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TraceExemplar {
    trace_id: HexTraceId,
}

/// A trace id, written as the 32 hex digits of W3C and OTLP when the metrics
/// are scraped: every call keeps an exemplar, few of them are ever read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct HexTraceId(opentelemetry::TraceId);

impl EncodeLabelValue for HexTraceId {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        write!(encoder, "{:032x}", self.0)
    }
}

impl TraceExemplar {
    /// The sampled trace of the span entered around the caller, if traces are exported.
    fn current() -> Option<Self> {
        if !suite_telemetry::tracing_enabled() {
            return None;
        }
        opentelemetry::Context::map_current(|context| {
            let span = context.span();
            let ids = span.span_context();
            (ids.is_valid() && ids.is_sampled()).then(|| Self {
                trace_id: HexTraceId(ids.trace_id()),
            })
        })
    }
}

type DurationHistogram = HistogramWithExemplars<TraceExemplar>;

/// The server-side RPC metric families, registered once per server.
#[derive(Debug, Clone)]
pub struct RpcServerMetrics {
    duration: Family<CallLabels, DurationHistogram>,
    in_flight: Family<MethodLabels, Gauge>,
    /// Every path the server does not serve is labelled `unknown`, so a client
    /// cannot create new time series by calling made-up methods.
    known_methods: KnownMethods,
}

impl RpcServerMetrics {
    /// Registers the families; `known_paths` are the `/package.Service/Method`
    /// paths the server serves, each labelled as itself.
    pub fn register(registry: &mut Registry, known_paths: impl IntoIterator<Item = String>) -> Self {
        let duration =
            Family::<CallLabels, DurationHistogram>::new_with_constructor(|| DurationHistogram::new(DURATION_BUCKETS.into_iter()));
        let in_flight = Family::<MethodLabels, Gauge>::default();
        registry.register(
            "rpc_server_call_duration_seconds",
            "Duration of gRPC calls handled by this server, by method and status code.",
            duration.clone(),
        );
        registry.register("rpc_server_active_calls", "gRPC calls being handled right now.", in_flight.clone());
        Self {
            duration,
            in_flight,
            known_methods: KnownMethods::new(known_paths),
        }
    }

    fn labels_for(&self, path: &str) -> MethodLabels {
        let names = self.known_methods.names(path);
        MethodLabels {
            rpc_service: names.service,
            rpc_method: names.method,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RpcMetricsLayer {
    metrics: RpcServerMetrics,
}

impl RpcMetricsLayer {
    pub fn new(metrics: RpcServerMetrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RpcMetricsService<S> {
    inner: S,
    metrics: RpcServerMetrics,
}

impl<S, ReqBody> Service<http::Request<ReqBody>> for RpcMetricsService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<tonic::body::Body>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let mut recorder = CallRecorder::start(&self.metrics, self.metrics.labels_for(request.uri().path()));
        // The connection counts as busy (not idle) until the response is fully sent.
        recorder.stream = request.extensions().get::<PeerInfo>().map(|info| info.activity.stream_opened());
        self.inner
            .call(request)
            .map(move |result| {
                let response = result?;
                // A trailers-only reply (errors, shed load) has its status in the headers.
                recorder.on_trailers(response.headers());
                Ok(response.map(|body| GuardedBody::wrap(body, recorder)))
            })
            .boxed()
    }
}

/// Measures one call from arrival until its status is known; records on drop.
struct CallRecorder {
    metrics: RpcServerMetrics,
    labels: MethodLabels,
    started: Instant,
    status: Option<Code>,
    recorded: bool,
    stream: Option<OpenStream>,
    exemplar: Option<TraceExemplar>,
}

impl CallRecorder {
    fn start(metrics: &RpcServerMetrics, labels: MethodLabels) -> Self {
        metrics.in_flight.get_or_create(&labels).inc();
        Self {
            metrics: metrics.clone(),
            labels,
            started: Instant::now(),
            status: None,
            recorded: false,
            stream: None,
            // The server span is entered while the call is handed on, so its trace is current here.
            exemplar: TraceExemplar::current(),
        }
    }

    fn record(&mut self) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        self.metrics.in_flight.get_or_create(&self.labels).dec();
        // Dropped before any status: the client cancelled or the connection broke.
        let code = self.status.unwrap_or(Code::Cancelled);
        let call = CallLabels {
            rpc_service: self.labels.rpc_service,
            rpc_method: self.labels.rpc_method,
            rpc_grpc_status_code: code as i32,
        };
        self.metrics
            .duration
            .get_or_create(&call)
            .observe(self.started.elapsed().as_secs_f64(), self.exemplar.take(), None);
    }
}

impl ResponseGuard for CallRecorder {
    fn on_trailers(&mut self, trailers: &HeaderMap) {
        if let Some(value) = trailers.get("grpc-status") {
            let code = value
                .to_str()
                .ok()
                .and_then(|code| code.parse::<i32>().ok())
                .map_or(Code::Unknown, Code::from_i32);
            self.status = Some(code);
            self.record();
        }
    }
}

impl Drop for CallRecorder {
    fn drop(&mut self) {
        self.record();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_paths_keep_their_names_and_others_collapse_to_unknown() {
        let mut registry = Registry::default();
        let metrics = RpcServerMetrics::register(&mut registry, ["/suite.user.v1.UserService/GetUser".to_owned()]);
        let known = metrics.labels_for("/suite.user.v1.UserService/GetUser");
        assert_eq!((known.rpc_service, known.rpc_method), ("suite.user.v1.UserService", "GetUser"));
        let unknown = metrics.labels_for("/made.up.Service/Method");
        assert_eq!((unknown.rpc_service, unknown.rpc_method), ("unknown", "unknown"));
    }

    #[test]
    fn exemplars_carry_the_trace_id_as_w3c_writes_it() {
        let mut registry = Registry::default();
        let histogram = DurationHistogram::new(DURATION_BUCKETS.into_iter());
        registry.register("call_duration_seconds", "Call durations.", histogram.clone());
        let trace_id = HexTraceId(opentelemetry::TraceId::from(0x00f0_67aa_u128));
        histogram.observe(0.002, Some(TraceExemplar { trace_id }), None);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains(r#"call_duration_seconds_bucket{le="0.0025"} 1 # {trace_id="00000000000000000000000000f067aa"} 0.002"#),
            "{text}"
        );
    }

    #[test]
    fn dropped_call_counts_as_cancelled() {
        let mut registry = Registry::default();
        let metrics = RpcServerMetrics::register(&mut registry, ["/a.B/C".to_owned()]);
        drop(CallRecorder::start(&metrics, metrics.labels_for("/a.B/C")));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains(r#"rpc_server_call_duration_seconds_count{rpc_service="a.B",rpc_method="C",rpc_grpc_status_code="1"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"rpc_server_active_calls{rpc_service="a.B",rpc_method="C"} 0"#),
            "{text}"
        );
    }
}
