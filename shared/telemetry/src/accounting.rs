//! Where every finished span went: exported, lost in a failed export, or
//! dropped because the export queue was full. A collector that is down must be
//! visible on `/metrics`, not only in a log line at shutdown.
//!
//! The SDK's batch processor drops silently when its queue is full, so the
//! queue bound is enforced here, one step earlier: a span is counted as queued
//! when it ends and as gone when the exporter takes its batch; past the bound
//! it is dropped (and counted) before the SDK would have had to.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor};

/// Span counts since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpanExportStats {
    pub exported: u64,
    pub failed: u64,
    pub dropped: u64,
}

static EXPORTED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// What happened to the spans this process finished so far.
pub fn span_export_stats() -> SpanExportStats {
    SpanExportStats {
        exported: EXPORTED.load(Ordering::Relaxed),
        failed: FAILED.load(Ordering::Relaxed),
        dropped: DROPPED.load(Ordering::Relaxed),
    }
}

/// Spans handed to the batch processor and not yet taken by the exporter.
#[derive(Debug, Clone, Default)]
pub(crate) struct QueueDepth(Arc<AtomicUsize>);

/// The batch processor behind the queue bound.
#[derive(Debug)]
pub(crate) struct BoundedProcessor {
    inner: BatchSpanProcessor,
    queued: QueueDepth,
    max_queue_size: usize,
}

impl BoundedProcessor {
    pub(crate) fn new(inner: BatchSpanProcessor, queued: QueueDepth, max_queue_size: usize) -> Self {
        Self {
            inner,
            queued,
            max_queue_size,
        }
    }
}

impl SpanProcessor for BoundedProcessor {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.queued.0.fetch_add(1, Ordering::AcqRel) >= self.max_queue_size {
            self.queued.0.fetch_sub(1, Ordering::AcqRel);
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
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

/// The OTLP exporter, counting each batch's spans out of the queue and by outcome.
#[derive(Debug)]
pub(crate) struct CountingExporter<E> {
    inner: E,
    queued: QueueDepth,
}

impl<E> CountingExporter<E> {
    pub(crate) fn new(inner: E, queued: QueueDepth) -> Self {
        Self { inner, queued }
    }
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        // Saturating: the SDK may export spans this wrapper never counted in (none today).
        let _ = self
            .queued
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| Some(queued.saturating_sub(spans)));
        let result = self.inner.export(batch).await;
        let counter = if result.is_ok() { &EXPORTED } else { &FAILED };
        counter.fetch_add(spans as u64, Ordering::Relaxed);
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
