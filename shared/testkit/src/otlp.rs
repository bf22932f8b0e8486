//! A real OTLP/gRPC trace receiver: the collector's
//! `opentelemetry.proto.collector.trace.v1.TraceService` served by tonic on an
//! ephemeral port, keeping every span it is sent so tests can check what the
//! suite's binaries export (ids, parent links, kinds, attributes, status).
//! It serves plain HTTP/2 or TLS, optionally requiring client certificates.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use tokio::net::TcpListener;
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

/// One exported span, flattened with its resource's `service.name`.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    pub name: String,
    /// Lower-case hex, as in `traceparent` and in the logs.
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub kind: i32,
    pub status_code: i32,
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
}

#[derive(Debug, Default)]
struct Collected {
    spans: Mutex<Vec<ReceivedSpan>>,
    export_calls: std::sync::atomic::AtomicU64,
    span_count: std::sync::atomic::AtomicU64,
}

struct Receiver {
    collected: Arc<Collected>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.collected.export_calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let request = request.into_inner();
        let count: usize = request
            .resource_spans
            .iter()
            .flat_map(|resource| &resource.scope_spans)
            .map(|scope| scope.spans.len())
            .sum();
        self.collected
            .span_count
            .fetch_add(count as u64, std::sync::atomic::Ordering::Relaxed);
        let mut received = Vec::new();
        for resource_spans in request.resource_spans {
            let resource_attributes = resource_spans.resource.map(|resource| resource.attributes).unwrap_or_default();
            let service = attributes(&resource_attributes)
                .remove("service.name")
                .and_then(|value| match value {
                    Attribute::Str(name) => Some(name),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    received.push(ReceivedSpan {
                        service: service.clone(),
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        kind: span.kind,
                        status_code: span.status.map_or(status::UNSET, |status| status.code),
                        attributes: attributes(&span.attributes),
                    });
                }
            }
        }
        self.collected
            .spans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
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

/// A running receiver; stopped (its port and every connection closed) on
/// [`OtlpReceiver::stop`] or drop.
///
/// It serves on a runtime of its own, on its own thread, so stopping it drops
/// every connection at once, as when a collector process dies, and `stop`
/// returns only once they are closed. (tonic's own shutdown would close them
/// gracefully, after their calls in flight, in tasks left on the caller's runtime.)
#[derive(Debug)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    tls: bool,
    collected: Arc<Collected>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    stopped: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl OtlpReceiver {
    /// Serves on a fresh port of 127.0.0.1.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(loopback()).await
    }

    /// Serves on `addr`, which may be the address of a receiver stopped before.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        Self::serve(addr, None).await
    }

    /// Serves TLS on a fresh port of 127.0.0.1 with `server`'s certificate and key;
    /// with `client_ca`, only clients presenting a certificate issued by that CA get through.
    pub async fn start_tls(server: &TestCert, client_ca: Option<&Path>) -> std::io::Result<Self> {
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(std::fs::read(&server.cert)?, std::fs::read(&server.key)?));
        if let Some(ca) = client_ca {
            tls = tls.client_ca_root(Certificate::from_pem(std::fs::read(ca)?));
        }
        Self::serve(loopback(), Some(tls)).await
    }

    async fn serve(addr: SocketAddr, tls: Option<ServerTlsConfig>) -> std::io::Result<Self> {
        let collected = Arc::new(Collected::default());
        let mut builder = tonic::transport::Server::builder();
        let is_tls = tls.is_some();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).map_err(std::io::Error::other)?;
        }
        let router = builder.add_service(TraceServiceServer::new(Receiver {
            collected: collected.clone(),
        }));
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
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                // Not a graceful shutdown: a stopped collector does not wait for its clients.
                tokio::select! {
                    _ = router.serve_with_incoming(incoming) => {}
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
            tls: is_tls,
            collected,
            stop: Some(stop),
            stopped: Some(stopped),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What `OTEL_EXPORTER_OTLP_ENDPOINT` should say.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.collected.spans.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// How many spans arrived, kept or not.
    pub fn span_count(&self) -> u64 {
        self.collected.span_count.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many export calls arrived.
    pub fn export_calls(&self) -> u64 {
        self.collected.export_calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `done` holds for the spans received, or `timeout` passes;
    /// returns the spans either way.
    pub async fn wait_for(&self, timeout: Duration, done: impl Fn(&[ReceivedSpan]) -> bool) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) || Instant::now() >= deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Closes the port and every connection (in-flight exports fail); returns once they are closed.
    pub async fn stop(mut self) {
        self.stop.take();
        if let Some(stopped) = self.stopped.take() {
            let _ = stopped.await;
        }
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}
