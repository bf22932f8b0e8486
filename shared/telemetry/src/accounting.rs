//! Where every finished span went: exported, lost in a failed export, or
//! dropped because the export queue was full. A collector that is down must be
//! visible on `/metrics`, not only in a log line at shutdown.

use std::sync::atomic::{AtomicU64, Ordering};

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

/// `spans` the collector accepted, or that were lost with their export.
pub(crate) fn export_finished(spans: usize, accepted: bool) {
    let counter = if accepted { &EXPORTED } else { &FAILED };
    counter.fetch_add(spans as u64, Ordering::Relaxed);
}

/// `spans` dropped before export: the queue was full, or closed at shutdown.
pub(crate) fn dropped(spans: usize) {
    DROPPED.fetch_add(spans as u64, Ordering::Relaxed);
}
