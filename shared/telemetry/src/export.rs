//! Span export over OTLP/gRPC, kept away from request handling.
//!
//! Finished spans go into the SDK's batch processor: a bounded queue drained
//! by its own thread. A full queue drops the span (never waits), so a collector
//! that is down or slow costs requests nothing. The tonic channel the exporter
//! sends on lives on a one-thread tokio runtime of its own ("otel-export"),
//! so exports neither run on a service's runtime (the gateway's is a single
//! thread) nor depend on it still running during shutdown.
//!
//! An `https://` collector is reached over rustls (on ring), verified against
//! the configured CA bundle or else the public web roots, presenting a client
//! certificate when one is configured. The files were read and checked by
//! [`TracingConfig::from_env`], so nothing here can fail on them.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::TelemetryError;
use crate::accounting::{BoundedProcessor, CountingExporter, QueueDepth};
use crate::otlp::OtlpExporter;
use crate::tracing_config::{CollectorTls, SamplerConfig, TracingConfig};

#[derive(Debug)]
pub(crate) struct TraceExport {
    provider: SdkTracerProvider,
    shutdown_timeout: std::time::Duration,
    stop_runtime: tokio::sync::oneshot::Sender<()>,
}

impl TraceExport {
    pub(crate) fn start(config: &TracingConfig) -> Result<Self, TelemetryError> {
        let endpoint = config
            .endpoint
            .clone()
            .ok_or_else(|| TelemetryError::Export("no endpoint".to_owned()))?;
        let timeout = config.export_timeout;
        let tls = endpoint.starts_with("https://").then(|| client_tls(&config.collector_tls));
        let (built_tx, built_rx) = std::sync::mpsc::channel();
        let (stop_runtime, stopped) = tokio::sync::oneshot::channel::<()>();
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
                    let _ = built_tx.send(exporter(endpoint, tls, timeout));
                    let _ = stopped.await;
                });
            })
            .map_err(|error| TelemetryError::Export(error.to_string()))?;
        let exporter = built_rx
            .recv()
            .map_err(|_| TelemetryError::Export("the export thread ended".to_owned()))?
            .map_err(TelemetryError::Export)?;

        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(config.max_queue_size)
            .with_max_export_batch_size(config.max_export_batch_size)
            .with_scheduled_delay(config.schedule_delay)
            .build();
        let queued = QueueDepth::default();
        let processor = BoundedProcessor::new(
            BatchSpanProcessor::builder(CountingExporter::new(exporter, queued.clone()))
                .with_batch_config(batch)
                .build(),
            queued,
            config.max_queue_size,
        );
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
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(sampler(config.sampler))
            .with_resource(resource)
            .build();
        Ok(Self {
            provider,
            shutdown_timeout: config.shutdown_timeout,
            stop_runtime,
        })
    }

    pub(crate) fn tracer(&self) -> SdkTracer {
        self.provider.tracer("suite")
    }

    /// Flushes what is queued within the shutdown timeout, then stops the export thread.
    pub(crate) fn shutdown(self) {
        if let Err(error) = self.provider.shutdown_with_timeout(self.shutdown_timeout) {
            tracing::warn!(%error, "trace export did not finish within its shutdown timeout; remaining spans are lost");
        }
        let _ = self.stop_runtime.send(());
    }
}

/// The OTLP exporter ([`OtlpExporter`]) on a lazy channel: it connects on the first export and
/// reconnects after a failure. Every step of an export is bounded by `timeout`.
/// tonic's request timeout only starts once a connection is ready, so the TCP
/// connect (an address that drops SYNs) and the TLS handshake (a collector that
/// accepts and never answers) get their own bounds; without them one stuck
/// export would hold the batch processor, and every batch after it, for good.
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
