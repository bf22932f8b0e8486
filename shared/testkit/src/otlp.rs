//! A real OTLP/gRPC trace receiver: the collector's
//! `opentelemetry.proto.collector.trace.v1.TraceService` served by tonic on an
//! ephemeral port, keeping every span it is sent so tests can check what the
//! suite's binaries export (ids, parent links, kinds, attributes, status).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use tokio::net::TcpListener;

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
    /// A sink (benchmarks) only counts, so a long run does not fill memory.
    count_only: bool,
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
        if self.collected.count_only {
            return Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }));
        }
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

/// A running receiver; stopped (its port closed) on [`OtlpReceiver::stop`] or drop.
#[derive(Debug)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    collected: Arc<Collected>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl OtlpReceiver {
    /// Serves on a fresh port of 127.0.0.1.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0".parse().map_err(std::io::Error::other)?).await
    }

    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        Self::serve(addr, false).await
    }

    /// A sink that counts the spans it is sent and keeps none (for benchmarks).
    pub async fn start_counting(addr: SocketAddr) -> std::io::Result<Self> {
        Self::serve(addr, true).await
    }

    async fn serve(addr: SocketAddr, count_only: bool) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let collected = Arc::new(Collected {
            count_only,
            ..Collected::default()
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = TraceServiceServer::new(Receiver {
            collected: collected.clone(),
        });
        let task = tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            collected,
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What `OTEL_EXPORTER_OTLP_ENDPOINT` should say.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
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

    /// Closes the port (in-flight exports are dropped).
    pub async fn stop(mut self) {
        self.shut_down().await;
    }

    async fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
