//! Span export over OTLP/gRPC, kept away from request handling.
//!
//! Finished spans are encoded into a bounded queue as they end ([`SpanQueue`]):
//! direct spans by [`spans::DirectSpan`], `tracing` spans (through the
//! tracing-opentelemetry bridge and the SDK) by [`QueueProcessor`]. One task
//! drains it, sending the batches waiting together, on a one-thread tokio runtime of its own
//! ("otel-export"), so exports neither run on a service's runtime (the
//! gateway's is a single thread) nor depend on it still running during
//! shutdown. A full queue drops spans (never waits), so a collector that is
//! down or slow costs requests nothing; a failed export is counted, not retried.
//!
//! An `https://` collector is reached over rustls (on ring), verified against
//! the configured CA bundle or else the public web roots, presenting a client
//! certificate when one is configured. The files were read and checked by
//! [`TracingConfig::from_env`], so nothing here can fail on them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, Span, SpanData, SpanProcessor};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::otlp::{Envelope, FinishedSpan, OtlpExporter, frame_request, request_room};
use crate::queue::{Batch, SpanQueue};
use crate::tracing_config::{CollectorTls, SamplerConfig, TracingConfig};
use crate::{RateLimitedLog, TelemetryError, accounting, spans};

/// The instrumentation scope of every span the suite exports.
const SCOPE: &str = "suite";

#[derive(Debug)]
pub(crate) struct TraceExport {
    /// The SDK, for the spans of the `tracing` bridge only.
    provider: SdkTracerProvider,
    queue: Arc<SpanQueue>,
    sampler: SamplerConfig,
    shutdown_timeout: Duration,
    /// Tells the export task to send what is queued by the given instant, and stop.
    stop: tokio::sync::oneshot::Sender<Instant>,
    stopped: std::sync::mpsc::Receiver<()>,
}

impl TraceExport {
    pub(crate) fn start(config: &TracingConfig) -> Result<Self, TelemetryError> {
        let endpoint = config
            .endpoint
            .clone()
            .ok_or_else(|| TelemetryError::Export("no endpoint".to_owned()))?;
        let timeout = config.export_timeout;
        let tls = endpoint.starts_with("https://").then(|| client_tls(&config.collector_tls));
        let resource = Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .with_attributes(
                config
                    .resource_attributes
                    .iter()
                    .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
            )
            .with_attributes([
                KeyValue::new("telemetry.sdk.name", "opentelemetry"),
                KeyValue::new("telemetry.sdk.language", "rust"),
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            ])
            .build();
        let envelope = Envelope::new(&resource, &InstrumentationScope::builder(SCOPE).build());
        let queue = Arc::new(SpanQueue::new(
            config.max_queue_size,
            config.max_export_batch_size,
            request_room(&envelope),
        ));
        let schedule_delay = config.schedule_delay;

        let (built_tx, built_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<Instant>();
        let (stopped_tx, stopped) = std::sync::mpsc::channel();
        let drained = queue.clone();
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
                runtime.block_on(async move {
                    let exporter = match exporter(endpoint, tls, timeout) {
                        Ok(exporter) => {
                            let _ = built_tx.send(Ok(()));
                            exporter
                        }
                        Err(error) => {
                            let _ = built_tx.send(Err(error));
                            return;
                        }
                    };
                    let export = BatchExport {
                        queue: drained,
                        exporter,
                        envelope,
                        failures: RateLimitedLog::new(Duration::from_secs(60)),
                    };
                    export.run(schedule_delay, stop_rx).await;
                });
                let _ = stopped_tx.send(());
            })
            .map_err(|error| TelemetryError::Export(error.to_string()))?;
        built_rx
            .recv()
            .map_err(|_| TelemetryError::Export("the export thread ended".to_owned()))?
            .map_err(TelemetryError::Export)?;

        let provider = SdkTracerProvider::builder()
            .with_span_processor(QueueProcessor { queue: queue.clone() })
            .with_sampler(sampler(config.sampler))
            .with_resource(resource)
            .build();
        Ok(Self {
            provider,
            queue,
            sampler: config.sampler,
            shutdown_timeout: config.shutdown_timeout,
            stop,
            stopped,
        })
    }

    /// The tracer of the `tracing` bridge.
    pub(crate) fn tracer(&self) -> SdkTracer {
        self.provider.tracer(SCOPE)
    }

    /// What direct spans are sampled by and queued in.
    pub(crate) fn recorder(&self) -> spans::Recorder {
        spans::Recorder::new(sampler(self.sampler), self.queue.clone())
    }

    /// Sends what is queued within the shutdown timeout, then stops the export thread.
    pub(crate) fn shutdown(self) {
        let deadline = Instant::now() + self.shutdown_timeout;
        // Its processor holds nothing back: bridge spans are queued as they end.
        let _ = self.provider.shutdown();
        if self.stop.send(deadline).is_ok() && self.stopped.recv_timeout(self.shutdown_timeout).is_err() {
            tracing::warn!("trace export did not finish within its shutdown timeout; remaining spans are lost");
        }
    }
}

/// The task that drains the queue into the collector.
struct BatchExport {
    queue: Arc<SpanQueue>,
    exporter: OtlpExporter,
    envelope: Envelope,
    failures: RateLimitedLog,
}

impl BatchExport {
    /// Sends each batch as it fills, and whatever is queued every `schedule_delay`;
    /// on `stop`, what is left, until the instant it names.
    async fn run(&self, schedule_delay: Duration, mut stop: tokio::sync::oneshot::Receiver<Instant>) {
        let deadline = loop {
            tokio::select! {
                biased;
                deadline = &mut stop => break deadline.ok(),
                () = self.queue.batch_filled() => self.send_queued(false).await,
                () = tokio::time::sleep(schedule_delay) => self.send_queued(true).await,
            }
        };
        self.queue.close();
        if let Some(deadline) = deadline {
            let _ = tokio::time::timeout_at(deadline.into(), self.send_queued(true)).await;
        }
    }

    /// Full batches; with `partial`, the one being filled too. The batches
    /// waiting are sent together, as concurrent calls on the one connection,
    /// so their answers are awaited once.
    async fn send_queued(&self, partial: bool) {
        loop {
            let waiting: Vec<Batch> = std::iter::from_fn(|| self.queue.take(partial)).collect();
            if waiting.is_empty() {
                return;
            }
            futures::future::join_all(waiting.into_iter().map(|batch| self.send(batch))).await;
        }
    }

    async fn send(&self, batch: Batch) {
        let request = frame_request(&self.envelope, batch.spans, self.queue.room());
        let result = self.exporter.send(request).await;
        accounting::export_finished(batch.count, result.is_ok());
        if let Err(error) = result
            && let Some(suppressed) = self.failures.should_log()
        {
            tracing::warn!(%error, spans = batch.count, failures_not_logged = suppressed, "trace export failed; its spans are lost");
        }
    }
}

/// Queues the SDK's spans (the `tracing` bridge's) as they end, beside the direct ones.
#[derive(Debug)]
struct QueueProcessor {
    queue: Arc<SpanQueue>,
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        // The SDK ends spans it records without sampling too; only sampled ones are exported.
        if span.span_context.is_sampled() {
            self.queue.push(&FinishedSpan::from(&span));
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The OTLP exporter ([`OtlpExporter`]) on a lazy channel: it connects on the first export and
/// reconnects after a failure. Every step of an export is bounded by `timeout`.
/// tonic's request timeout only starts once a connection is ready, so the TCP
/// connect (an address that drops SYNs) and the TLS handshake (a collector that
/// accepts and never answers) get their own bounds; without them one stuck
/// export would hold the export task, and every batch after it, for good.
fn exporter(endpoint: String, tls: Option<ClientTlsConfig>, timeout: Duration) -> Result<OtlpExporter, String> {
    let mut channel = Endpoint::from_shared(endpoint)
        .map_err(|error| error.to_string())?
        .timeout(timeout)
        .connect_timeout(timeout);
    if let Some(tls) = tls {
        channel = channel.tls_config(tls.timeout(timeout)).map_err(|error| error.to_string())?;
    }
    Ok(OtlpExporter::new(channel.connect_lazy()))
}

fn client_tls(tls: &CollectorTls) -> ClientTlsConfig {
    // A configured CA bundle replaces the web roots: a private collector's CA
    // is all that should vouch for it.
    let config = match &tls.ca_pem {
        Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
        None => ClientTlsConfig::new().with_webpki_roots(),
    };
    match &tls.client_identity {
        Some(identity) => config.identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem)),
        None => config,
    }
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
