//! The export pipeline, all of it OpenTelemetry's own: the SDK's tracer provider and
//! batch span processor, and `opentelemetry-otlp`'s exporter over gRPC (tonic) or
//! HTTP/protobuf (a blocking reqwest client), with the exporter's retries of
//! retryable failures within its timeout.
//!
//! Kept away from request handling: the batch processor runs exports on a thread of
//! its own, and the gRPC exporter's connection lives on a one-thread tokio runtime
//! of its own ("otel-export"), so neither a service's runtime (the gateway's is a
//! single thread) nor its shutdown carries export work. A full queue drops spans,
//! never waits, so a collector that is down or slow costs requests nothing.
//!
//! Around the SDK's parts, two thin wrappers through its own extension points make a
//! collector's trouble visible on `/metrics` ([`crate::span_export_stats`]): a span
//! processor that enforces the queue bound where a drop can be counted, and an
//! exporter that counts what each export did.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Context, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, Span, SpanData, SpanExporter, SpanLimits, SpanProcessor,
};

use crate::tracing_config::{OtlpExport, OtlpProtocol, SamplerConfig, TracingConfig};
use crate::{RateLimitedLog, TelemetryError, accounting, spans};

/// The instrumentation scope of the suite's own spans.
const SCOPE: &str = "suite";

#[derive(Debug)]
pub(crate) struct TraceExport {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    shutdown_timeout: Duration,
    /// Where the gRPC exporter's connection runs; stopped once the provider has flushed.
    runtime: Option<ExportRuntime>,
}

impl TraceExport {
    pub(crate) fn start(config: &TracingConfig, export: &OtlpExport) -> Result<Self, TelemetryError> {
        let (exporter, runtime) = match export.protocol {
            OtlpProtocol::Grpc => {
                let (exporter, runtime) = ExportRuntime::start(export)?;
                (exporter, Some(runtime))
            }
            OtlpProtocol::HttpProtobuf => (http_exporter(export)?, None),
        };
        let queued = Arc::new(AtomicUsize::new(0));
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(config.batch.max_queue_size)
            .with_max_export_batch_size(config.batch.max_export_batch_size)
            .with_scheduled_delay(config.batch.schedule_delay)
            .build();
        let processor = BatchSpanProcessor::builder(AccountedExporter {
            inner: exporter,
            queued: queued.clone(),
            failures: RateLimitedLog::new(Duration::from_secs(60)),
        })
        .with_batch_config(batch)
        .build();
        let limits = &config.limits;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BoundedQueue {
                inner: processor,
                queued,
                max_queued: config.batch.max_queue_size,
                value_length_limit: limits.attribute_value_length,
            })
            .with_sampler(sampler(config.sampler))
            .with_span_limits(SpanLimits {
                max_events_per_span: limits.event_count,
                max_attributes_per_span: limits.attribute_count,
                max_links_per_span: limits.link_count,
                max_attributes_per_event: limits.event_attribute_count,
                max_attributes_per_link: limits.link_attribute_count,
            })
            .with_resource(resource(config))
            .build();
        let tracer = provider.tracer_with_scope(InstrumentationScope::builder(SCOPE).with_version(env!("CARGO_PKG_VERSION")).build());
        Ok(Self {
            provider,
            tracer,
            shutdown_timeout: config.shutdown_timeout,
            runtime,
        })
    }

    /// The tracer of the `tracing` bridge and of the call spans.
    pub(crate) fn tracer(&self) -> SdkTracer {
        self.tracer.clone()
    }

    /// Makes this pipeline the one of the call spans and of `opentelemetry::global`
    /// (code that asks the global API for a tracer).
    pub(crate) fn install_globally(&self) {
        spans::install(self.tracer.clone());
        opentelemetry::global::set_tracer_provider(self.provider.clone());
    }

    /// Sends what is queued within the shutdown timeout, then stops the export runtime.
    pub(crate) fn shutdown(self) {
        if let Err(error) = self.provider.shutdown_with_timeout(self.shutdown_timeout) {
            tracing::warn!(%error, "trace export did not finish within its shutdown timeout; remaining spans are lost");
        }
        if let Some(runtime) = self.runtime {
            runtime.stop();
        }
    }
}

/// The one-thread runtime the gRPC exporter's channel is built in, so its connection
/// task and timers run there. The batch processor's thread awaits each export on it.
#[derive(Debug)]
struct ExportRuntime {
    stop: tokio::sync::oneshot::Sender<()>,
}

impl ExportRuntime {
    fn start(export: &OtlpExport) -> Result<(opentelemetry_otlp::SpanExporter, Self), TelemetryError> {
        let (built_tx, built_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let export = export.clone();
        std::thread::Builder::new()
            .name("otel-export".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = built_tx.send(Err(error.to_string()));
                        return;
                    }
                };
                let built = runtime.block_on(async { grpc_exporter(&export) });
                let serving = built.is_ok();
                let _ = built_tx.send(built);
                if serving {
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                }
            })
            .map_err(|error| TelemetryError::Export(error.to_string()))?;
        let exporter = built_rx
            .recv()
            .map_err(|_| TelemetryError::Export("the export thread ended".to_owned()))?
            .map_err(TelemetryError::Export)?;
        Ok((exporter, Self { stop }))
    }

    fn stop(self) {
        let _ = self.stop.send(());
    }
}

/// OTLP/gRPC on a lazy channel: it connects on the first export and reconnects after a
/// failure. The channel is the suite's so that connecting (an address that drops SYNs)
/// and the TLS handshake (a collector that accepts and never answers) are bounded like
/// the request: tonic's request timeout starts only once a connection is ready, and
/// without those bounds one stuck export would hold the batch thread for good.
fn grpc_exporter(export: &OtlpExport) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(export.endpoint.clone())
        .map_err(|error| error.to_string())?
        .timeout(export.timeout)
        .connect_timeout(export.timeout);
    if export.endpoint.starts_with("https://") {
        endpoint = endpoint
            .tls_config(export.tls.tonic_config().timeout(export.timeout))
            .map_err(|error| error.to_string())?;
    }
    let metadata = export
        .headers
        .iter()
        .filter_map(|(name, value)| {
            Some((
                http::HeaderName::from_bytes(name.as_bytes()).ok()?,
                http::HeaderValue::from_str(value).ok()?,
            ))
        })
        .collect::<http::HeaderMap>();
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_channel(endpoint.connect_lazy())
        .with_timeout(export.timeout)
        .with_metadata(tonic::metadata::MetadataMap::from_headers(metadata));
    if export.gzip {
        builder = builder.with_compression(opentelemetry_otlp::Compression::Gzip);
    }
    builder.build().map_err(|error| error.to_string())
}

/// OTLP/HTTP with protobuf bodies through a blocking reqwest client (the batch
/// processor's thread waits for each export anyway), with rustls on ring and the
/// collector's CA or the web roots.
fn http_exporter(export: &OtlpExport) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    let tls = export.tls.rustls_config().map_err(TelemetryError::Export)?;
    let timeout = export.timeout;
    // The blocking client runs a runtime of its own; it must not be built inside the
    // service's (the services' `main` is async).
    let client = std::thread::spawn(move || {
        reqwest::blocking::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .tls_backend_preconfigured(tls)
            .build()
    })
    .join()
    .map_err(|_| TelemetryError::Export("building the HTTP client panicked".to_owned()))?
    .map_err(|error| TelemetryError::Export(format!("cannot build the HTTP client: {error}")))?;
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(export.endpoint.clone())
        .with_timeout(timeout)
        .with_headers(export.headers.iter().cloned().collect::<HashMap<_, _>>());
    if export.gzip {
        builder = builder.with_compression(opentelemetry_otlp::Compression::Gzip);
    }
    builder.build().map_err(|error| TelemetryError::Export(error.to_string()))
}

/// The SDK's resource detectors read `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`
/// (and add `telemetry.sdk.*`); the suite adds what they leave unset: the binary's name,
/// its version, and an id of this process, so the replicas of a Deployment tell apart.
fn resource(config: &TracingConfig) -> Resource {
    let mut builder = Resource::builder();
    if !config.service_name_from_env {
        builder = builder.with_service_name(config.default_service_name.clone());
    }
    if !config.version_from_env {
        builder = builder.with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    }
    if !config.instance_id_from_env {
        builder = builder.with_attribute(KeyValue::new("service.instance.id", uuid::Uuid::new_v4().to_string()));
    }
    builder.build()
}

fn sampler(config: SamplerConfig) -> Sampler {
    match config {
        SamplerConfig::AlwaysOn => Sampler::AlwaysOn,
        SamplerConfig::AlwaysOff => Sampler::AlwaysOff,
        SamplerConfig::TraceIdRatio(ratio) => Sampler::TraceIdRatioBased(ratio),
        SamplerConfig::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerConfig::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        SamplerConfig::ParentBasedTraceIdRatio(ratio) => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))),
    }
}

/// The batch processor, with its queue bound enforced in front of it where a dropped
/// span can be counted (the SDK counts its drops but does not say how many), sampled
/// spans only (the SDK hands processors the spans it records without sampling too),
/// and string values cut to the attribute value length limit, which the SDK does not apply.
#[derive(Debug)]
struct BoundedQueue<P> {
    inner: P,
    /// Spans handed to the batch processor and not yet taken by an export.
    queued: Arc<AtomicUsize>,
    max_queued: usize,
    value_length_limit: Option<usize>,
}

impl<P: SpanProcessor> SpanProcessor for BoundedQueue<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, mut span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.max_queued {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            accounting::dropped(1);
            return;
        }
        if let Some(limit) = self.value_length_limit {
            let events = span.events.events.iter_mut().flat_map(|event| event.attributes.iter_mut());
            let links = span.links.links.iter_mut().flat_map(|link| link.attributes.iter_mut());
            for attribute in span.attributes.iter_mut().chain(events).chain(links) {
                truncate(&mut attribute.value, limit);
            }
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Cuts a string value, or each string of an array, to `limit` characters.
fn truncate(value: &mut Value, limit: usize) {
    let cut = |text: &StringValue| -> Option<StringValue> {
        let (end, _) = text.as_str().char_indices().nth(limit)?;
        Some(StringValue::from(text.as_str()[..end].to_owned()))
    };
    match value {
        Value::String(text) => {
            if let Some(short) = cut(text) {
                *text = short;
            }
        }
        Value::Array(opentelemetry::Array::String(texts)) => {
            for text in texts {
                if let Some(short) = cut(text) {
                    *text = short;
                }
            }
        }
        _ => {}
    }
}

/// The exporter, counting what each export did: spans the collector accepted, or
/// lost with a failed export (after the exporter's own retries).
#[derive(Debug)]
struct AccountedExporter<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
    failures: RateLimitedLog,
}

impl<E: SpanExporter> SpanExporter for AccountedExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        // Taken off the queue: room for as many new spans.
        self.queued.fetch_sub(spans, Ordering::AcqRel);
        let result = self.inner.export(batch).await;
        accounting::export_finished(spans, result.is_ok());
        if let Err(error) = &result
            && let Some(suppressed) = self.failures.should_log()
        {
            tracing::warn!(%error, spans, failures_not_logged = suppressed, "trace export failed; its spans are lost");
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use opentelemetry::Array;

    use super::*;

    #[test]
    fn values_are_cut_to_the_limit_in_characters() {
        let mut text = Value::from("añb€c");
        truncate(&mut text, 3);
        assert_eq!(text, Value::from("añb"));
        let mut short = Value::from("ab");
        truncate(&mut short, 3);
        assert_eq!(short, Value::from("ab"));
        let mut texts = Value::Array(Array::String(vec!["abcd".into(), "x".into()]));
        truncate(&mut texts, 2);
        assert_eq!(texts, Value::Array(Array::String(vec!["ab".into(), "x".into()])));
        let mut number = Value::from(123_456_i64);
        truncate(&mut number, 2);
        assert_eq!(number, Value::from(123_456_i64));
    }
}
