//! Real OTLP trace receivers, each on an ephemeral port: the collector's
//! OTLP/gRPC `opentelemetry.proto.collector.trace.v1.TraceService` served by
//! tonic, and OTLP/HTTP's `POST /v1/traces` served by hyper.
//!
//! They keep every span they are sent, so tests can check what the suite's
//! binaries export (ids, parent links, kinds, attributes, status, resource),
//! and every export call, so tests can check how it was exported (the headers
//! the exporter sent, whether it compressed). Told to, they refuse the next
//! exports with a retryable failure, to see the exporters retry. The gRPC
//! receiver serves plain HTTP/2 or TLS, optionally requiring client
//! certificates; the HTTP receiver serves HTTP/1.1 and h2c.

mod http_server;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::pki::TestCert;

/// `SpanKind` values of the OTLP protocol.
pub mod kind {
    pub const INTERNAL: i32 = 1;
    pub const SERVER: i32 = 2;
    pub const CLIENT: i32 = 3;
}

/// `Status.code` values of the OTLP protocol.
pub mod status {
    pub const UNSET: i32 = 0;
    pub const OK: i32 = 1;
    pub const ERROR: i32 = 2;
}

/// An attribute value as exported.
#[derive(Debug, Clone, PartialEq)]
pub enum Attribute {
    Str(String),
    Int(i64),
    Bool(bool),
    Double(f64),
    Other,
}

/// One exported span, flattened with its resource and instrumentation scope.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// The resource's `service.name`, empty when it has none.
    pub service: String,
    /// Every attribute of the span's resource (`service.name`, `service.version`,
    /// `service.instance.id`, `deployment.environment`...).
    pub resource: HashMap<String, Attribute>,
    /// Name of the instrumentation scope that recorded the span.
    pub scope: String,
    pub name: String,
    /// Lower-case hex, as in `traceparent` and in the logs.
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// The W3C `tracestate`, as exported.
    pub trace_state: String,
    /// OTLP `SpanFlags`: the W3C trace flags in bits 0-7 (bit 0: sampled); bit 8 says
    /// whether the exporter knew if the parent was remote, bit 9 that it was.
    pub flags: u32,
    pub kind: i32,
    pub status_code: i32,
    /// The status description; empty unless the status is an error that gave one.
    pub status_message: String,
    pub attributes: HashMap<String, Attribute>,
}

impl ReceivedSpan {
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.attributes.get(key) {
            Some(Attribute::Str(value)) => Some(value),
            _ => None,
        }
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        match self.attributes.get(key) {
            Some(Attribute::Int(value)) => Some(*value),
            _ => None,
        }
    }

    /// A string attribute of the span's resource, such as `service.version`.
    pub fn resource_str(&self, key: &str) -> Option<&str> {
        match self.resource.get(key) {
            Some(Attribute::Str(value)) => Some(value),
            _ => None,
        }
    }
}

/// One export call as it arrived, accepted or not.
#[derive(Debug, Clone)]
pub struct ReceivedExport {
    /// The request's headers: for gRPC its metadata (`user-agent`, `grpc-encoding`,
    /// `te`...), for HTTP its header section (`content-type`, `content-encoding`...),
    /// with whatever headers the exporter was configured to add (`x-api-key`...).
    pub headers: http::HeaderMap,
    /// Whether the payload came gzipped: `grpc-encoding: gzip` (message compression)
    /// or `Content-Encoding: gzip` (body compression).
    pub compressed: bool,
    /// How many spans the call held; 0 when its payload could not be read.
    pub spans: usize,
    /// Whether the receiver accepted the call and kept its spans. A refused call
    /// ([`OtlpReceiver::refuse_next`]) or, over HTTP, one whose payload could not be
    /// read (400, 413, 415) was not.
    pub accepted: bool,
}

/// What a receiver has been sent. Spans and calls are kept under one lock so a
/// test that saw a span also sees the call that brought it.
#[derive(Debug, Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    exports: Vec<ReceivedExport>,
    span_count: u64,
    refused_calls: u64,
}

#[derive(Debug, Default)]
struct Collected {
    received: Mutex<Received>,
    refusals_pending: AtomicUsize,
}

impl Collected {
    fn received(&self) -> MutexGuard<'_, Received> {
        self.received.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a readable export call. Returns false when a scripted refusal
    /// answers it, in which case its spans are counted but not kept.
    fn export(&self, headers: http::HeaderMap, compressed: bool, request: ExportTraceServiceRequest) -> bool {
        let refused = self
            .refusals_pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |pending| pending.checked_sub(1))
            .is_ok();
        let spans = flatten(request);
        let mut received = self.received();
        received.span_count += spans.len() as u64;
        received.exports.push(ReceivedExport {
            headers,
            compressed,
            spans: spans.len(),
            accepted: !refused,
        });
        if refused {
            received.refused_calls += 1;
        } else {
            received.spans.extend(spans);
        }
        !refused
    }

    /// Records an export call whose payload could not be read.
    fn unreadable(&self, headers: http::HeaderMap, compressed: bool) {
        self.received().exports.push(ReceivedExport {
            headers,
            compressed,
            spans: 0,
            accepted: false,
        });
    }
}

fn flatten(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = attributes(&resource_spans.resource.map(|resource| resource.attributes).unwrap_or_default());
        let service = match resource.get("service.name") {
            Some(Attribute::Str(name)) => name.clone(),
            _ => String::new(),
        };
        for scope_spans in resource_spans.scope_spans {
            let scope = scope_spans.scope.map(|scope| scope.name).unwrap_or_default();
            for span in scope_spans.spans {
                let (status_code, status_message) = span
                    .status
                    .map_or((status::UNSET, String::new()), |status| (status.code, status.message));
                received.push(ReceivedSpan {
                    service: service.clone(),
                    resource: resource.clone(),
                    scope: scope.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    trace_state: span.trace_state,
                    flags: span.flags,
                    kind: span.kind,
                    status_code,
                    status_message,
                    attributes: attributes(&span.attributes),
                });
            }
        }
    }
    received
}

fn attributes(pairs: &[KeyValue]) -> HashMap<String, Attribute> {
    pairs
        .iter()
        .map(|pair| {
            let value = match pair.value.as_ref().and_then(|AnyValue { value }| value.as_ref()) {
                Some(Value::StringValue(text)) => Attribute::Str(text.clone()),
                Some(Value::IntValue(number)) => Attribute::Int(*number),
                Some(Value::BoolValue(flag)) => Attribute::Bool(*flag),
                Some(Value::DoubleValue(number)) => Attribute::Double(*number),
                _ => Attribute::Other,
            };
            (pair.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

struct GrpcReceiver {
    collected: Arc<Collected>,
}

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let (metadata, _extensions, request) = request.into_parts();
        let headers = metadata.into_headers();
        let compressed = headers
            .get("grpc-encoding")
            .is_some_and(|encoding| encoding.as_bytes().eq_ignore_ascii_case(b"gzip"));
        if self.collected.export(headers, compressed, request) {
            Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
        } else {
            Err(tonic::Status::unavailable("the test receiver refused this export"))
        }
    }
}

/// How a receiver is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Grpc,
    GrpcTls,
    Http,
}

/// A running receiver; stopped (its port and every connection closed) on
/// [`OtlpReceiver::stop`] or drop.
///
/// It serves on a runtime of its own, on its own thread, so stopping it drops
/// every connection at once, as when a collector process dies, and `stop`
/// returns only once they are closed. (tonic's and hyper's own shutdowns would
/// close them gracefully, after their calls in flight, in tasks left on the
/// caller's runtime.)
///
/// Counting: [`exports`](Self::exports) and [`export_calls`](Self::export_calls)
/// cover every export call answered, accepted or not; [`refused_calls`](Self::refused_calls)
/// those answered by a scripted refusal; [`span_count`](Self::span_count) the spans
/// of every readable call, refused or not; [`spans`](Self::spans) only the spans
/// of accepted calls. Over gRPC, a call tonic cannot decode is answered by tonic
/// itself and recorded nowhere; over HTTP it is recorded, not accepted.
#[derive(Debug)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    transport: Transport,
    collected: Arc<Collected>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    stopped: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl OtlpReceiver {
    /// Serves OTLP/gRPC on a fresh port of 127.0.0.1.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(loopback()).await
    }

    /// Serves OTLP/gRPC on `addr`, which may be the address of a receiver stopped before.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        Self::serve_grpc(addr, None).await
    }

    /// Serves OTLP/gRPC over TLS on a fresh port of 127.0.0.1 with `server`'s certificate
    /// and key; with `client_ca`, only clients presenting a certificate issued by that CA
    /// get through.
    pub async fn start_tls(server: &TestCert, client_ca: Option<&Path>) -> std::io::Result<Self> {
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(std::fs::read(&server.cert)?, std::fs::read(&server.key)?));
        if let Some(ca) = client_ca {
            tls = tls.client_ca_root(Certificate::from_pem(std::fs::read(ca)?));
        }
        Self::serve_grpc(loopback(), Some(tls)).await
    }

    /// Serves OTLP/HTTP (`POST /v1/traces`, binary protobuf) on a fresh port of 127.0.0.1.
    pub async fn start_http() -> std::io::Result<Self> {
        Self::start_http_on(loopback()).await
    }

    /// Serves OTLP/HTTP on `addr`, which may be the address of a receiver stopped before.
    pub async fn start_http_on(addr: SocketAddr) -> std::io::Result<Self> {
        let collected = Arc::new(Collected::default());
        let serving = collected.clone();
        Self::spawn(addr, Transport::Http, collected, move |listener| {
            http_server::serve(listener, serving)
        })
        .await
    }

    async fn serve_grpc(addr: SocketAddr, tls: Option<ServerTlsConfig>) -> std::io::Result<Self> {
        let collected = Arc::new(Collected::default());
        let mut builder = tonic::transport::Server::builder();
        let transport = if tls.is_some() { Transport::GrpcTls } else { Transport::Grpc };
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).map_err(std::io::Error::other)?;
        }
        let service = TraceServiceServer::new(GrpcReceiver {
            collected: collected.clone(),
        })
        .accept_compressed(CompressionEncoding::Gzip);
        let router = builder.add_service(service);
        Self::spawn(addr, transport, collected, move |listener| async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            // A serving error ends this receiver as a stop would; the test sees its
            // exports fail, which is what a broken collector looks like.
            let _ = router.serve_with_incoming(incoming).await;
        })
        .await
    }

    /// Binds `addr` and runs `serve` on it on a thread and runtime of the receiver's own.
    async fn spawn<Serve, Serving>(addr: SocketAddr, transport: Transport, collected: Arc<Collected>, serve: Serve) -> std::io::Result<Self>
    where
        Serve: FnOnce(TcpListener) -> Serving + Send + 'static,
        Serving: Future<Output = ()>,
    {
        let (bound_tx, bound) = tokio::sync::oneshot::channel();
        let (stop, stop_requested) = tokio::sync::oneshot::channel::<()>();
        let (stopped_tx, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new().name("otlp-receiver".to_owned()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = bound_tx.send(Err(error));
                    return;
                }
            };
            runtime.block_on(async move {
                // tokio binds with SO_REUSEADDR: a restart on the same port is not refused
                // for the previous run's connections in TIME_WAIT.
                let listener = match TcpListener::bind(addr).await {
                    Ok(listener) => listener,
                    Err(error) => {
                        let _ = bound_tx.send(Err(error));
                        return;
                    }
                };
                let _ = bound_tx.send(listener.local_addr());
                // Not a graceful shutdown: a stopped collector does not wait for its clients.
                tokio::select! {
                    () = serve(listener) => {}
                    _ = stop_requested => {}
                }
            });
            // Dropping the runtime drops the listener and every connection task: all sockets close.
            drop(runtime);
            let _ = stopped_tx.send(());
        })?;
        let addr = bound
            .await
            .map_err(|_| std::io::Error::other("the receiver thread ended before binding"))??;
        Ok(Self {
            addr,
            transport,
            collected,
            stop: Some(stop),
            stopped: Some(stopped),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What `OTEL_EXPORTER_OTLP_ENDPOINT` should say: the base URL, to which the
    /// HTTP exporter appends `/v1/traces`.
    pub fn endpoint(&self) -> String {
        let scheme = if self.transport == Transport::GrpcTls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// What `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` should say, which exporters take as
    /// is: the full URL of the traces endpoint over HTTP; over gRPC, which has no
    /// path to add, the same as [`endpoint`](Self::endpoint).
    pub fn traces_url(&self) -> String {
        match self.transport {
            Transport::Http => format!("{}{}", self.endpoint(), http_server::TRACES_PATH),
            Transport::Grpc | Transport::GrpcTls => self.endpoint(),
        }
    }

    /// What `OTEL_EXPORTER_OTLP_PROTOCOL` should say: `grpc` or `http/protobuf`.
    pub fn protocol(&self) -> &'static str {
        match self.transport {
            Transport::Grpc | Transport::GrpcTls => "grpc",
            Transport::Http => "http/protobuf",
        }
    }

    /// Makes the next `n` export calls fail with a retryable error (gRPC `UNAVAILABLE`,
    /// HTTP 503) without keeping their spans; the calls after them are accepted again.
    /// Replaces any refusals still pending; 0 cancels them.
    pub fn refuse_next(&self, n: usize) {
        self.collected.refusals_pending.store(n, Ordering::SeqCst);
    }

    /// Every span of the accepted export calls so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.collected.received().spans.clone()
    }

    /// Every export call answered so far, in arrival order, accepted or not.
    pub fn exports(&self) -> Vec<ReceivedExport> {
        self.collected.received().exports.clone()
    }

    /// How many spans arrived, kept or not (refused calls' spans included).
    pub fn span_count(&self) -> u64 {
        self.collected.received().span_count
    }

    /// How many export calls arrived, accepted or not (the length of [`exports`](Self::exports)).
    pub fn export_calls(&self) -> u64 {
        self.collected.received().exports.len() as u64
    }

    /// How many export calls a scripted refusal ([`refuse_next`](Self::refuse_next)) answered.
    pub fn refused_calls(&self) -> u64 {
        self.collected.received().refused_calls
    }

    /// Waits until `done` holds for the spans received, or `timeout` passes;
    /// returns the spans either way.
    pub async fn wait_for(&self, timeout: Duration, done: impl Fn(&[ReceivedSpan]) -> bool) -> Vec<ReceivedSpan> {
        poll_until(timeout, || self.spans(), |spans| done(spans)).await
    }

    /// Waits until `done` holds for the export calls answered, or `timeout` passes;
    /// returns the calls either way.
    pub async fn wait_for_exports(&self, timeout: Duration, done: impl Fn(&[ReceivedExport]) -> bool) -> Vec<ReceivedExport> {
        poll_until(timeout, || self.exports(), |exports| done(exports)).await
    }

    /// Closes the port and every connection (in-flight exports fail); returns once they are closed.
    pub async fn stop(mut self) {
        self.stop.take();
        if let Some(stopped) = self.stopped.take() {
            let _ = stopped.await;
        }
    }
}

async fn poll_until<T>(timeout: Duration, read: impl Fn() -> Vec<T>, done: impl Fn(&[T]) -> bool) -> Vec<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let items = read();
        if done(&items) || Instant::now() >= deadline {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}
