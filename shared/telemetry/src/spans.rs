//! Spans recorded without the OpenTelemetry SDK, for the few that every call
//! makes: the RPC server and client spans and the cache span.
//!
//! `tracing` spans reach OpenTelemetry through the tracing-opentelemetry
//! bridge, which per span keeps a registry entry and a span builder, converts
//! every field into an attribute with allocations of its own, and swaps the
//! current context on every poll; the SDK span under it is a boxed, locked
//! object whose data is copied into a channel when it ends. Measured in the
//! gateway benchmark, that was several microseconds per span before any
//! export. A [`DirectSpan`] is a plain value: ids, start time, static name and
//! attributes; when it ends it is written straight into the export queue as
//! protobuf ([`crate::queue`]).
//!
//! These spans still nest with `tracing` spans both ways: a `tracing` span
//! started while one of these is the current context (the request's future
//! runs inside it) becomes its child, and these take the current context,
//! whichever made it, as their parent. Sampling is the SDK's own sampler, so
//! both kinds of span decide alike.

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceContextExt as _};
use opentelemetry::{Context, KeyValue, StringValue};
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample as _};

use crate::otlp::FinishedSpan;
use crate::queue::SpanQueue;

/// How direct spans are sampled and where they go when they end.
#[derive(Debug)]
pub(crate) struct Recorder {
    sampler: Sampler,
    queue: Arc<SpanQueue>,
}

impl Recorder {
    pub(crate) fn new(sampler: Sampler, queue: Arc<SpanQueue>) -> Self {
        Self { sampler, queue }
    }
}

static RECORDER: OnceLock<Recorder> = OnceLock::new();

/// Makes `recorder` the one direct spans use; called once, when export starts.
pub(crate) fn install(recorder: Recorder) {
    let _ = RECORDER.set(recorder);
}

/// One span, ended when dropped. Its [`Self::context`] is what the work it
/// covers runs in (`opentelemetry::context::FutureExt::with_context`) and what
/// is written into outgoing calls' headers. A span the sampler dropped still
/// has its own context (with the sampled flag off, so the next hops do not
/// record either) but records nothing.
#[derive(Debug)]
pub struct DirectSpan {
    context: Context,
    recording: Option<Recording>,
}

/// What a sampled span writes when it ends.
#[derive(Debug)]
struct Recording {
    /// The installed recorder's queue: a plain reference, so starting and ending
    /// spans on several threads does not contend on one reference count.
    queue: &'static SpanQueue,
    name: StringValue,
    kind: SpanKind,
    parent_span_id: SpanId,
    parent_is_remote: bool,
    start_time: SystemTime,
    attributes: Vec<KeyValue>,
    status: Status,
}

impl DirectSpan {
    /// A span of `kind` under `parent`, its name and attributes from `describe`;
    /// `None` when this process exports no spans. `describe` runs only for a
    /// span that is sampled, so nothing is allocated for one that is not.
    /// Static and shared (`Arc<str>`) strings in names and attributes are kept as they are.
    pub fn start<N: Into<StringValue>>(kind: SpanKind, parent: &Context, describe: impl FnOnce() -> (N, Vec<KeyValue>)) -> Option<Self> {
        let recorder = RECORDER.get().filter(|_| crate::tracing_enabled())?;
        Some(Self::record(recorder, kind, parent, describe))
    }

    fn record<N: Into<StringValue>>(
        recorder: &'static Recorder,
        kind: SpanKind,
        parent: &Context,
        describe: impl FnOnce() -> (N, Vec<KeyValue>),
    ) -> Self {
        let ids = RandomIdGenerator::default();
        let parent_span = parent.span();
        let parent_context = parent_span.span_context();
        let (trace_id, parent_span_id) = if parent_context.is_valid() {
            (parent_context.trace_id(), parent_context.span_id())
        } else {
            (ids.new_trace_id(), SpanId::INVALID)
        };
        // The SDK's samplers read neither the name nor the attributes, which are not built yet.
        let sampling = recorder.sampler.should_sample(Some(parent), trace_id, "", &kind, &[], &[]);
        let sampled = sampling.decision == SamplingDecision::RecordAndSample;
        let own = SpanContext::new(
            trace_id,
            ids.new_span_id(),
            parent_context.trace_flags().with_sampled(sampled),
            false,
            sampling.trace_state,
        );
        let recording = sampled.then(|| {
            let (name, attributes) = describe();
            Recording {
                queue: &recorder.queue,
                name: name.into(),
                kind,
                parent_span_id,
                parent_is_remote: parent_context.is_remote(),
                start_time: SystemTime::now(),
                attributes,
                status: Status::Unset,
            }
        });
        Self {
            context: parent.with_remote_span_context(own),
            recording,
        }
    }

    /// [`Self::start`] under the current context, read only when a span is made.
    pub fn start_in_current<N: Into<StringValue>>(kind: SpanKind, describe: impl FnOnce() -> (N, Vec<KeyValue>)) -> Option<Self> {
        if !crate::tracing_enabled() {
            return None;
        }
        Self::start(kind, &Context::current(), describe)
    }

    /// The context with this span current.
    pub fn context(&self) -> &Context {
        &self.context
    }

    pub fn set_attribute(&mut self, attribute: KeyValue) {
        if let Some(recording) = &mut self.recording {
            recording.attributes.push(attribute);
        }
    }

    /// Marks the span failed (status ERROR).
    pub fn fail(&mut self) {
        if let Some(recording) = &mut self.recording {
            recording.status = Status::error("");
        }
    }
}

impl Drop for DirectSpan {
    fn drop(&mut self) {
        let Some(recording) = &self.recording else {
            return;
        };
        let end_time = SystemTime::now();
        let span = self.context.span();
        recording.queue.push(&FinishedSpan {
            context: span.span_context(),
            parent_span_id: recording.parent_span_id,
            parent_is_remote: recording.parent_is_remote,
            name: recording.name.as_str(),
            kind: &recording.kind,
            start_time: recording.start_time,
            end_time,
            attributes: &recording.attributes,
            dropped_attributes_count: 0,
            events: &[],
            dropped_events_count: 0,
            links: &[],
            dropped_links_count: 0,
            status: &recording.status,
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use http::{HeaderMap, HeaderValue};
    use opentelemetry::InstrumentationScope;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use opentelemetry_proto::tonic::trace::v1::{Span, span, status};
    use opentelemetry_sdk::Resource;
    use prost::Message as _;

    use super::*;
    use crate::otlp::{Envelope, frame_request, request_room};

    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// Spans reach their recorder by a `'static` reference, as they reach the installed one.
    fn recorder(sampler: Sampler) -> &'static Recorder {
        let room = request_room(&envelope());
        Box::leak(Box::new(Recorder::new(sampler, Arc::new(SpanQueue::new(64, 64, room)))))
    }

    /// What the recorder queued, as a collector would decode it.
    fn recorded(recorder: &Recorder) -> Vec<Span> {
        let Some(batch) = recorder.queue.take(true) else {
            return Vec::new();
        };
        let message = frame_request(&envelope(), batch.spans, recorder.queue.room());
        let request = ExportTraceServiceRequest::decode(&message[5..]).unwrap();
        request.resource_spans[0].scope_spans[0].spans.clone()
    }

    fn envelope() -> Envelope {
        Envelope::new(&Resource::builder_empty().build(), &InstrumentationScope::builder("suite").build())
    }

    fn caller(traceparent: &'static str) -> Context {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static(traceparent));
        crate::propagation::extract(&headers)
    }

    fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a any_value::Value> {
        span.attributes
            .iter()
            .find(|attribute| attribute.key == key)
            .and_then(|attribute| attribute.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn spans_are_written_with_their_parents_attributes_and_status() {
        let recorder = recorder(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
        let caller = caller(CALLER);
        let mut server = DirectSpan::record(recorder, SpanKind::Server, &caller, || {
            ("suite.user.v1.UserService/GetUser", vec![KeyValue::new("rpc.system", "grpc")])
        });
        let mut client = DirectSpan::record(recorder, SpanKind::Client, server.context(), || {
            (String::from("cache GET"), vec![KeyValue::new("db.system", "redis")])
        });
        client.set_attribute(KeyValue::new("cache.outcome", "hit"));
        let (server_context, client_context) = (server.context().clone(), client.context().clone());
        drop(client);
        server.set_attribute(KeyValue::new("rpc.grpc.status_code", 13));
        server.fail();
        drop(server);

        let spans = recorded(recorder);
        assert_eq!(spans.len(), 2, "{spans:?}");
        let (client, server) = (&spans[0], &spans[1]);
        let trace_id = hex(&server.trace_id);
        assert_eq!(trace_id, "4bf92f3577b34da6a3ce929d0e0e4736", "the caller's trace goes on");
        assert_eq!(hex(&client.trace_id), trace_id);

        assert_eq!(server.name, "suite.user.v1.UserService/GetUser");
        assert_eq!(server.kind, span::SpanKind::Server as i32);
        assert_eq!(hex(&server.parent_span_id), "00f067aa0ba902b7");
        assert_eq!(hex(&server.span_id), server_context.span().span_context().span_id().to_string());
        assert_eq!(server.flags, 0x301, "sampled, parent remote");
        assert_eq!(attribute(server, "rpc.grpc.status_code"), Some(&any_value::Value::IntValue(13)));
        assert_eq!(server.status.as_ref().unwrap().code, status::StatusCode::Error as i32);
        assert!(server.end_time_unix_nano >= server.start_time_unix_nano && server.start_time_unix_nano > 0);

        assert_eq!(client.name, "cache GET");
        assert_eq!(client.kind, span::SpanKind::Client as i32);
        assert_eq!(client.parent_span_id, server.span_id);
        assert_eq!(hex(&client.span_id), client_context.span().span_context().span_id().to_string());
        assert_eq!(client.flags, 0x101, "sampled, parent local");
        assert_eq!(
            attribute(client, "cache.outcome"),
            Some(&any_value::Value::StringValue("hit".into()))
        );
        assert_eq!(client.status.as_ref().unwrap().code, status::StatusCode::Unset as i32);
    }

    #[test]
    fn a_root_span_starts_a_trace() {
        let recorder = recorder(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
        let span = DirectSpan::record(recorder, SpanKind::Server, &Context::new(), || ("root", Vec::new()));
        let own = span.context().span().span_context().clone();
        assert!(own.is_valid() && own.is_sampled() && !own.is_remote());
        drop(span);
        let spans = recorded(recorder);
        assert_eq!(spans.len(), 1);
        assert!(spans[0].parent_span_id.is_empty());
        assert_eq!(hex(&spans[0].trace_id), own.trace_id().to_string());
    }

    #[test]
    fn a_span_not_sampled_records_nothing_and_tells_the_next_hop() {
        for (sampler, parent) in [
            (Sampler::AlwaysOff, Context::new()),
            (Sampler::TraceIdRatioBased(0.0), Context::new()),
            // The caller did not sample: neither does this hop.
            (
                Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
                caller("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
            ),
        ] {
            let recorder = recorder(sampler);
            let mut span = DirectSpan::record(recorder, SpanKind::Server, &parent, || -> (&'static str, Vec<KeyValue>) {
                panic!("a span that is not sampled is not described")
            });
            span.set_attribute(KeyValue::new("rpc.grpc.status_code", 0));
            let own = span.context().span().span_context().clone();
            assert!(own.is_valid() && !own.is_sampled());
            assert_ne!(own.span_id(), SpanId::from(0x00f0_67aa_0ba9_02b7));
            drop(span);
            assert!(recorded(recorder).is_empty());
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}
