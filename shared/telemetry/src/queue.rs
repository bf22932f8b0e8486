//! Finished spans waiting for export, already encoded.
//!
//! A span is written into the batch being filled the moment it ends, on the
//! thread that ended it, under a short lock: no span record is built, moved
//! through a channel or freed on another thread (the SDK's batch processor did
//! all three, which cost more than the export itself). A batch that reaches
//! `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` spans is set aside for the export task,
//! which is woken once two batches wait (sooner if waiting could drop spans);
//! past `OTEL_BSP_MAX_QUEUE_SIZE` spans waiting, new ones are dropped and
//! counted, so a collector that is down or slow never makes a request wait.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::accounting;
use crate::otlp::{self, FinishedSpan};

/// Encoded `Span` messages, ready to be framed into one export request.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// `room` bytes kept for the request's framing ([`otlp::frame_request`]), then the spans.
    pub(crate) spans: Vec<u8>,
    pub(crate) count: usize,
}

/// Full batches that wake the export task, when the queue has room to wait for them.
const BATCHES_PER_WAKE: usize = 2;

#[derive(Debug)]
pub(crate) struct SpanQueue {
    state: Mutex<State>,
    /// Signalled when a batch fills up (and at shutdown).
    batch_full: Notify,
    max_queued: usize,
    batch_size: usize,
    /// Bytes kept in front of each batch, so the export request is framed around
    /// the spans where they lie instead of being copied into a new buffer.
    room: usize,
}

#[derive(Debug, Default)]
struct State {
    filling: Batch,
    full: VecDeque<Batch>,
    /// Spans in `filling` and `full` together.
    queued: usize,
    /// The size of the last batch that filled up.
    last_batch_bytes: usize,
    closed: bool,
}

impl SpanQueue {
    pub(crate) fn new(max_queued: usize, batch_size: usize, room: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            batch_full: Notify::new(),
            max_queued: max_queued.max(1),
            batch_size: batch_size.clamp(1, max_queued.max(1)),
            room,
        }
    }

    /// Bytes kept in front of the spans of every batch.
    pub(crate) fn room(&self) -> usize {
        self.room
    }

    /// Queues `span`, or drops and counts it when the queue is full or closed.
    pub(crate) fn push(&self, span: &FinishedSpan<'_>) {
        let mut state = self.lock();
        if state.queued >= self.max_queued || state.closed {
            drop(state);
            accounting::dropped(1);
            return;
        }
        if state.filling.count == 0 {
            // Room for a batch like the last one up front: growing it span by span would
            // copy it several times, and each large allocation costs the allocator more.
            let expected = state.last_batch_bytes.max(self.room + self.batch_size * 256);
            state.filling.spans.reserve(expected + expected / 8);
            state.filling.spans.resize(self.room, 0);
        }
        otlp::encode_span(&mut state.filling.spans, span);
        state.filling.count += 1;
        state.queued += 1;
        if state.filling.count >= self.batch_size {
            let full = std::mem::take(&mut state.filling);
            state.last_batch_bytes = full.spans.len();
            state.full.push_back(full);
            // Each wake of the export thread costs a few context switches and a wait for the
            // collector's answer, as much as sending the batch itself: it is woken once two
            // batches wait, and sends them together; sooner when the next batch could not fill
            // without dropping spans.
            let wake = state.full.len() >= BATCHES_PER_WAKE || state.queued + self.batch_size > self.max_queued;
            drop(state);
            if wake {
                self.batch_full.notify_one();
            }
        }
    }

    /// Waits until batches are full enough to send (see [`Self::push`]) or the queue is closed.
    pub(crate) async fn batch_filled(&self) {
        self.batch_full.notified().await;
    }

    /// The oldest full batch; with `partial`, else the one being filled if it holds any span.
    pub(crate) fn take(&self, partial: bool) -> Option<Batch> {
        let mut state = self.lock();
        let batch = match state.full.pop_front() {
            Some(batch) => batch,
            None if partial && state.filling.count > 0 => std::mem::take(&mut state.filling),
            None => return None,
        };
        state.queued -= batch.count;
        Some(batch)
    }

    /// Stops accepting spans; those queued can still be taken.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.batch_full.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::SystemTime;

    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};

    use super::*;

    fn push_one(queue: &SpanQueue) {
        queue.push(&FinishedSpan {
            context: &SpanContext::empty_context(),
            parent_span_id: SpanId::INVALID,
            parent_is_remote: false,
            name: "span",
            kind: &SpanKind::Internal,
            start_time: SystemTime::now(),
            end_time: SystemTime::now(),
            attributes: &[],
            dropped_attributes_count: 0,
            events: &[],
            dropped_events_count: 0,
            links: &[],
            dropped_links_count: 0,
            status: &Status::Unset,
        });
    }

    #[test]
    fn full_batches_come_first_and_a_partial_one_only_when_asked() {
        let queue = SpanQueue::new(10, 3, 0);
        for _ in 0..4 {
            push_one(&queue);
        }
        assert_eq!(queue.take(false).map(|batch| batch.count), Some(3));
        assert!(queue.take(false).is_none());
        assert_eq!(queue.take(true).map(|batch| batch.count), Some(1));
        assert!(queue.take(true).is_none());
    }

    #[test]
    fn past_the_bound_spans_are_dropped_and_counted_until_batches_are_taken() {
        let queue = SpanQueue::new(4, 2, 0);
        let dropped_before = accounting::span_export_stats().dropped;
        for _ in 0..6 {
            push_one(&queue);
        }
        assert!(accounting::span_export_stats().dropped >= dropped_before + 2);
        assert_eq!(queue.take(false).map(|batch| batch.count), Some(2));
        push_one(&queue);
        assert_eq!(queue.take(false).map(|batch| batch.count), Some(2));
        assert_eq!(queue.take(true).map(|batch| batch.count), Some(1));

        queue.close();
        push_one(&queue);
        assert!(queue.take(true).is_none(), "a closed queue takes no more spans");
    }

    /// An export task: once woken, it takes `takes` full batches (or finds none) and
    /// returns their sizes.
    fn exporter_taking(queue: &std::sync::Arc<SpanQueue>, takes: usize) -> tokio::task::JoinHandle<Vec<Option<usize>>> {
        let queue = queue.clone();
        tokio::spawn(async move {
            queue.batch_filled().await;
            (0..takes).map(|_| queue.take(false).map(|batch| batch.count)).collect()
        })
    }

    #[tokio::test]
    async fn full_batches_wake_the_exporter_two_at_a_time() {
        let queue = std::sync::Arc::new(SpanQueue::new(8, 2, 0));
        let waiter = exporter_taking(&queue, 3);
        for _ in 0..2 {
            push_one(&queue);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "one full batch waits for another while there is room");
        for _ in 0..2 {
            push_one(&queue);
        }
        assert_eq!(waiter.await.unwrap(), [Some(2), Some(2), None]);
    }

    #[tokio::test]
    async fn a_full_batch_wakes_the_exporter_when_waiting_could_drop_spans() {
        // Room for six spans: once four wait, the next batch of four could not fill.
        let queue = std::sync::Arc::new(SpanQueue::new(6, 4, 0));
        let waiter = exporter_taking(&queue, 1);
        for _ in 0..4 {
            push_one(&queue);
        }
        assert_eq!(waiter.await.unwrap(), [Some(4)]);
    }
}
